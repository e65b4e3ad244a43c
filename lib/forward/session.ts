/**
 * What the forwarder does with each event the client library hands it: forward it to its route
 * (or skip it, or note a handshake), print its line, and give back what the library acks with
 * and, in respond mode, answers the waiting sender with. The connection, its order, resume point
 * and reconnects are the library's (client/websocks.js).
 */
import { type WebhookEnvelope, webhookEnvelopeSchema } from "../shared/envelope.ts";
import { deliver, eventLine, handshakeLine, skippedLine } from "./forward_event.ts";
import { createRouter } from "./routes.ts";
import { patternMatcher } from "../shared/event_pattern.ts";
import type { ForwardOptions, Output, Totals } from "./options.ts";
import type { WebhookResult } from "../../client/websocks.js";

/** What the handler shares with the run it belongs to. */
export interface SessionContext {
  options: ForwardOptions;
  signal: AbortSignal;
  out: Output;
  totals: Totals;
}

/**
 * The library's `onWebhook` for a forward run. Resolves once the event is done (acked with the
 * target's status); rejects when stopped mid-retry, so the event is not recorded as done and is
 * sent again on the next start.
 */
export function forwardHandler(
  context: SessionContext,
): (envelope: unknown) => Promise<WebhookResult | undefined> {
  const { options, signal, out, totals } = context;
  const route = createRouter(options);
  // The server filters; checked here too, so a server that predates filters cannot widen them.
  const wanted = options.events.length ? patternMatcher(options.events) : null;
  return async (received) => {
    const parsed = webhookEnvelopeSchema.safeParse(received);
    if (!parsed.success) {
      out.error(`error: skipped a malformed event: ${parsed.error.issues[0]?.message}`);
      return undefined;
    }
    const envelope: WebhookEnvelope = parsed.data;
    if (envelope.handshake) {
      // A provider's URL handshake, answered by the relay: no webhook for the target.
      out.line(handshakeLine(envelope));
      return undefined;
    }
    if (
      (options.endpoints.length && !options.endpoints.includes(envelope.endpoint)) ||
      (wanted && !wanted(envelope.eventType ?? null))
    ) {
      return undefined;
    }
    const destination = route(envelope.eventType ?? null);
    if (destination === null) {
      totals.skipped++;
      out.line(skippedLine(envelope));
      return undefined;
    }
    let result;
    try {
      result = await deliver(envelope, { ...options, target: destination.target }, signal);
    } catch (error) {
      if (signal.aborted) {
        out.line(
          `${new Date().toISOString()} stopped while retrying ${envelope.id}; ` +
            "it is sent again on the next start",
        );
      }
      throw error;
    }
    if (result.status === null) totals.failed++;
    else if (result.status >= 400) totals.rejected++;
    else totals.forwarded++;
    const via = options.routes.length ? destination.pattern : undefined;
    out.line(eventLine(envelope, result, new Date(), via));
    if (!envelope.respond) return { status: result.status ?? undefined };
    // The sender gets exactly what the target said, or 502 when it never answered.
    const answer = result.answer ?? {
      headers: { "content-type": "text/plain; charset=utf-8" },
      body: new TextEncoder().encode(`The forward target failed: ${result.error ?? "no answer"}`),
    };
    return {
      status: answer.status ??
        (result.status !== null && result.status >= 200 ? result.status : 502),
      headers: answer.headers,
      body: answer.body,
    };
  };
}
