/**
 * Respond mode: a sender waits for the first connected client's answer to its webhook. Waiters
 * and answers meet by event id, and only an answer from the event's owner counts: a waiter is
 * bound to the owner's user id, and answers carry the id of the user whose connection sent them
 * (through the broker too). An answer that comes before its waiter (the client was faster than
 * our own bookkeeping) is kept briefly, under its sender's user, so it still counts. An answer
 * with no waiter in this isolate also goes through the broker, to whichever isolate or instance
 * holds the sender.
 *
 * The answer is served on the ingest URL, which may be the dashboard's own origin, so what a
 * client may set is limited: `answerHeaders` checks and filters the headers when the answer
 * arrives, and `senderHeaders` adds a sandbox CSP and nosniff to what the sender gets.
 */
import type { Broker, ClientResponse } from "./broker.ts";

export type { ClientResponse };

/** What became of an answer: handed on, too late (answered or timed out), or another user's. */
export type AnswerOutcome = "taken" | "late" | "not_yours";

/** Waiters for client answers, in this process. */
export interface Responses {
  /** The first answer for `id` from `userId` (its owner), or null when none came in time. */
  wait(id: string, userId: string, timeoutMs: number): Promise<ClientResponse | null>;
  /** Hands an answer sent by `userId`'s connection to its waiter, if `userId` owns the event. */
  answer(id: string, userId: string, response: ClientResponse): AnswerOutcome;
  /** Stops listening to the broker. */
  stop(): void;
}

const EARLY_ANSWER_MS = 30_000;

/** Creates the registry; with a broker, answers cross to other isolates and instances. */
export function createResponses(options: { broker?: Broker } = {}): Responses {
  const waiters = new Map<string, { userId: string; resolve: (r: ClientResponse) => void }>();
  // Keyed by user and id, so an answer from another user can never take the owner's place.
  const early = new Map<string, { response: ClientResponse; at: number }>();
  const answered = new Set<string>();
  const { broker } = options;
  const keyOf = (id: string, userId: string) => `${userId} ${id}`;

  function accept(id: string, userId: string, response: ClientResponse): AnswerOutcome {
    const waiter = waiters.get(id);
    if (waiter) {
      if (waiter.userId !== userId) return "not_yours";
      answered.add(id);
      waiter.resolve(response);
      return "taken";
    }
    const key = keyOf(id, userId);
    if (answered.has(id) || early.has(key)) return "late";
    const now = Date.now();
    for (const [k, value] of early) if (now - value.at > EARLY_ANSWER_MS) early.delete(k);
    if (answered.size > 10_000) answered.clear();
    if (early.size >= 1_000) early.delete(early.keys().next().value!);
    early.set(key, { response, at: now });
    return "taken";
  }

  const unsubscribe = broker?.subscribe((message) => {
    // A message without a user (from an older peer) matches no waiter's owner: refused.
    if (message.kind === "response") accept(message.id, message.userId, message.response);
  });

  return {
    wait(id, userId, timeoutMs) {
      const key = keyOf(id, userId);
      const ready = early.get(key);
      if (ready) {
        early.delete(key);
        return Promise.resolve(ready.response);
      }
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiters.delete(id);
          resolve(null);
        }, timeoutMs);
        waiters.set(id, {
          userId,
          resolve(response) {
            clearTimeout(timer);
            waiters.delete(id);
            resolve(response);
          },
        });
      });
    },
    answer(id, userId, response) {
      if (waiters.has(id) || !broker || broker.peers() === 0) return accept(id, userId, response);
      if (answered.has(id) || early.has(keyOf(id, userId))) return "late";
      broker.publish({ kind: "response", id, userId, response });
      return "taken";
    },
    stop() {
      unsubscribe?.();
    },
  };
}

/**
 * Headers a client's answer may set; everything else is dropped. These describe the body and
 * its caching and nothing more: no cookies, redirects (Location, Refresh), CORS, CSP, Link
 * preloads or other headers browsers act on.
 */
export const ANSWER_HEADERS: readonly string[] = [
  "cache-control",
  "content-language",
  "content-type",
  "etag",
  "expires",
  "last-modified",
  "retry-after",
];

/**
 * Custom `x-` headers pass too, except these: ones browsers act on, ones reverse proxies obey
 * in an upstream's answer (nginx's X-Accel-Redirect serves an internal file), and our own.
 */
const BLOCKED_X_HEADERS = [
  "x-accel-",
  "x-sendfile",
  "x-lighttpd-send-file",
  "x-litespeed-",
  "x-reproxy-",
  "x-websocks-",
  "x-frame-options",
  "x-xss-protection",
  "x-content-type-options",
  "x-content-security-policy",
  "x-webkit-csp",
  "x-dns-prefetch-control",
  "x-permitted-cross-domain-policies",
  "x-download-options",
  "x-ua-compatible",
];

/** What the sender's answer always carries: no script, no plugin, no sniffing, any reader. */
export const ANSWER_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "Content-Security-Policy": "sandbox; default-src 'none'",
  "X-Content-Type-Options": "nosniff",
  "Access-Control-Allow-Origin": "*",
};

/** A header an answer may carry (`name` in lower case). */
export function isAnswerHeader(name: string): boolean {
  if (ANSWER_HEADERS.includes(name)) return true;
  return name.startsWith("x-") && !BLOCKED_X_HEADERS.some((blocked) => name.startsWith(blocked));
}

// RFC 9110: a name is a token; a value is visible ASCII or Latin-1, spaces and tabs.
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const MAX_ANSWER_HEADER_CHARS = 16_000;

/**
 * Checks a client's answer headers and keeps the allowed ones; a problem is a sentence for the
 * client (an invalid header must not become a 500 to the sender).
 */
export function answerHeaders(
  headers: Record<string, string>,
): { headers: Record<string, string> } | { problem: string } {
  const kept: Record<string, string> = {};
  let chars = 0;
  for (const [name, value] of Object.entries(headers)) {
    const shown = JSON.stringify(name.slice(0, 100));
    if (!HEADER_NAME.test(name)) return { problem: `header ${shown} is not a valid header name` };
    if (!HEADER_VALUE.test(value)) {
      return {
        problem: `header ${shown} has an invalid value (line breaks, control characters or ` +
          "characters beyond Latin-1 are not allowed)",
      };
    }
    chars += name.length + value.length;
    if (chars > MAX_ANSWER_HEADER_CHARS) {
      return { problem: `headers exceed ${MAX_ANSWER_HEADER_CHARS} characters` };
    }
    const lower = name.toLowerCase();
    if (isAnswerHeader(lower)) kept[lower] = value;
  }
  return { headers: kept };
}

/** The headers the sender gets: the answer's allowed ones, then the security headers. */
export function senderHeaders(response: ClientResponse): Headers {
  const headers = new Headers();
  // Checked when the answer arrived; checked again here, as it may come from another instance.
  const checked = answerHeaders(response.headers);
  if ("headers" in checked) {
    for (const [name, value] of Object.entries(checked.headers)) headers.set(name, value);
  }
  for (const [name, value] of Object.entries(ANSWER_SECURITY_HEADERS)) headers.set(name, value);
  return headers;
}
