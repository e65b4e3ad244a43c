/**
 * Respond mode: a sender waits for the first connected client's answer to its webhook. Waiters
 * and answers meet by event id; an answer that comes before its waiter (the client was faster
 * than our own bookkeeping) is kept briefly so it still counts. An answer with no waiter in this
 * isolate also goes through the broker, to whichever isolate or instance holds the sender.
 */
import type { Broker } from "./broker.ts";

/** What a client answers for the sender. */
export interface ClientResponse {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** Waiters for client answers, in this process. */
export interface Responses {
  /** The first answer for `id`, or null when none came within `timeoutMs`. */
  wait(id: string, timeoutMs: number): Promise<ClientResponse | null>;
  /** Hands an answer to its waiter; false when nobody waits any more (timed out, answered). */
  deliver(id: string, response: ClientResponse): boolean;
  /** Stops listening to the broker. */
  stop(): void;
}

const EARLY_ANSWER_MS = 30_000;

/** Creates the registry; with a broker, answers cross to other isolates and instances. */
export function createResponses(options: { broker?: Broker } = {}): Responses {
  const waiters = new Map<string, (response: ClientResponse) => void>();
  const early = new Map<string, { response: ClientResponse; at: number }>();
  const answered = new Set<string>();
  const { broker } = options;

  function accept(id: string, response: ClientResponse): boolean {
    const waiter = waiters.get(id);
    if (waiter) {
      answered.add(id);
      waiter(response);
      return true;
    }
    if (answered.has(id) || early.has(id)) return false;
    const now = Date.now();
    for (const [key, value] of early) if (now - value.at > EARLY_ANSWER_MS) early.delete(key);
    if (answered.size > 10_000) answered.clear();
    if (early.size >= 1_000) early.delete(early.keys().next().value!);
    early.set(id, { response, at: now });
    return true;
  }

  const unsubscribe = broker?.subscribe((message) => {
    if (message.kind === "response") accept(message.id, message.response);
  });

  return {
    wait(id, timeoutMs) {
      const ready = early.get(id);
      if (ready) {
        early.delete(id);
        return Promise.resolve(ready.response);
      }
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiters.delete(id);
          resolve(null);
        }, timeoutMs);
        waiters.set(id, (response) => {
          clearTimeout(timer);
          waiters.delete(id);
          resolve(response);
        });
      });
    },
    deliver(id, response) {
      if (waiters.has(id) || !broker || broker.peers() === 0) return accept(id, response);
      if (answered.has(id) || early.has(id)) return false;
      broker.publish({ kind: "response", id, response });
      return true;
    },
    stop() {
      unsubscribe?.();
    },
  };
}
