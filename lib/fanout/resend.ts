/**
 * Resending a stored event to every connected client of its account, on request. Each resend
 * reaches all of the account's connections (and, with BROKER=kv, writes a mailbox entry), so
 * the rate per account is limited like acks are.
 */
import type { Broker } from "./broker.ts";
import type { Presence } from "./presence.ts";
import { type EventMatch, getEvent } from "../log/events.ts";
import { HttpError } from "../http/http_error.ts";
import type { RateLimiter } from "../intake/rate_limit.ts";

/** Resends events on request. */
export interface Resender {
  /**
   * Sends event `id` again to the user's clients; 429 past the rate, 404 when not retained or
   * when `match` (the caller's endpoint limit) refuses it. `clients` counts the connected
   * clients, only those limited to `within` endpoint ids when given (see Presence.list).
   */
  resend(
    options: { userId: string; id: string; match?: EventMatch; within?: readonly string[] | null },
  ): Promise<{ clients: number }>;
}

/** Creates the resender; `limiter` allows `perSecond` resends per account (named in the 429). */
export function createResender(options: {
  kv: Deno.Kv;
  broker: Broker;
  presence: Presence;
  limiter: RateLimiter;
  perSecond: number;
}): Resender {
  const { kv, broker, presence, limiter, perSecond } = options;
  return {
    async resend({ userId, id, match, within }) {
      // Before the read, so refused resends cost no KV read either.
      const wait = limiter.take(userId);
      if (wait > 0) {
        throw new HttpError(
          429,
          `Cannot resend: more than ${perSecond} resends a second for this account; ` +
            `retry in ${wait} s`,
          { "Retry-After": String(wait) },
        );
      }
      const event = await getEvent(kv, { userId, id, match });
      if (!event) throw new HttpError(404, `Cannot resend event: no retained event ${id}`);
      broker.publish({ kind: "resend", userId, event });
      return { clients: (await presence.list(userId, within)).length };
    },
  };
}
