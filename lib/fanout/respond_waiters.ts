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
import { RESPOND_TIMEOUT } from "../endpoints/endpoints.ts";
import { idTime } from "../store/ids.ts";

export type { ClientResponse };

/** What became of an answer: handed on, too late (answered or timed out), or another user's. */
export type AnswerOutcome = "taken" | "late" | "not_yours";

/** Waiters for client answers, in this process. */
export interface Responses {
  /**
   * The first answer for `id` from `userId` (its owner), or null when none came in time or
   * `signal` gave up first.
   */
  wait(
    id: string,
    userId: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<ClientResponse | null>;
  /** Hands an answer sent by `userId`'s connection to its waiter, if `userId` owns the event. */
  answer(id: string, userId: string, response: ClientResponse): AnswerOutcome;
  /** Stops listening to the broker. */
  stop(): void;
}

const EARLY_ANSWER_MS = 30_000;
/**
 * Bytes of bodies all early answers may hold together. A client may answer every event it is
 * sent (a replay sends old ones again), so without this one account could park gigabytes here.
 */
const EARLY_ANSWER_BYTES = 32 * 1024 * 1024;

/**
 * How young an event must be for an answer without a waiter to be kept as early: the waiter is
 * registered right after the commit that sent the event, so only a new event's answer can beat
 * it. Older ones (replayed, redelivered, timed out, never awaited) are refused as late.
 */
const EARLY_WINDOW_MS = 5_000;
/** No sender waits longer than this (the longest respond timeout, and clock slack). */
const LONGEST_WAIT_MS = RESPOND_TIMEOUT.maxMs + 5_000;

/** Whether `id` is younger than `ms`, by the time in the id. */
function youngerThan(id: string, ms: number): boolean {
  return Date.now() - idTime(id) <= ms;
}

/** Creates the registry; with a broker, answers cross to other isolates and instances. */
export function createResponses(options: { broker?: Broker } = {}): Responses {
  const waiters = new Map<string, { userId: string; resolve: (r: ClientResponse) => void }>();
  // Keyed by user and id, so an answer from another user can never take the owner's place.
  const early = new Map<string, { response: ClientResponse; at: number }>();
  let earlyBytes = 0;
  /** Ids answered or timed out: a later answer is late, never an early one. */
  const answered = new Set<string>();
  const { broker } = options;
  const forget = (key: string) => {
    earlyBytes -= early.get(key)?.response.body.byteLength ?? 0;
    early.delete(key);
  };
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
    const now = Date.now();
    if (answered.has(id) || early.has(key) || !youngerThan(id, EARLY_WINDOW_MS)) return "late";
    for (const [k, value] of early) if (now - value.at > EARLY_ANSWER_MS) forget(k);
    if (answered.size > 10_000) answered.clear();
    const bytes = response.body.byteLength;
    if (bytes > EARLY_ANSWER_BYTES) return "late";
    while (early.size >= 1_000 || (early.size > 0 && earlyBytes + bytes > EARLY_ANSWER_BYTES)) {
      forget(early.keys().next().value!);
    }
    early.set(key, { response, at: now });
    earlyBytes += bytes;
    return "taken";
  }

  const unsubscribe = broker?.subscribe((message) => {
    // A message without a user (from an older peer) matches no waiter's owner: refused.
    if (message.kind === "response") accept(message.id, message.userId, message.response);
  });

  return {
    wait(id, userId, timeoutMs, signal) {
      const key = keyOf(id, userId);
      const ready = early.get(key);
      if (ready) {
        forget(key);
        answered.add(id);
        return Promise.resolve(ready.response);
      }
      return new Promise((resolve) => {
        const settle = (response: ClientResponse | null) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", giveUp);
          waiters.delete(id);
          if (response === null) answered.add(id);
          resolve(response);
        };
        const giveUp = () => settle(null);
        const timer = setTimeout(giveUp, timeoutMs);
        signal?.addEventListener("abort", giveUp, { once: true });
        waiters.set(id, { userId, resolve: settle });
      });
    },
    answer(id, userId, response) {
      if (waiters.has(id) || !broker || broker.peers() === 0) return accept(id, userId, response);
      if (answered.has(id) || early.has(keyOf(id, userId)) || !youngerThan(id, LONGEST_WAIT_MS)) {
        return "late";
      }
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
 * nothing more: no cookies, redirects (Location, Refresh), CORS, CSP, Link preloads or other
 * headers browsers act on, and no caching (a cache in front of the relay would keep serving a
 * tenant's answer, and later webhooks of the same URL would never arrive).
 */
export const ANSWER_HEADERS: readonly string[] = [
  "content-language",
  "content-type",
  "etag",
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

/**
 * What the sender's answer always carries: no script, no plugin, no sniffing, any reader, no
 * cache.
 */
export const ANSWER_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "Content-Security-Policy": "sandbox; default-src 'none'",
  "X-Content-Type-Options": "nosniff",
  "Access-Control-Allow-Origin": "*",
  "Cache-Control": "no-store",
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

/**
 * The headers the sender gets: the answer's allowed ones, then the security headers; its type
 * is text when a browser loads the URL as a page or resource (`Sec-Fetch-Dest`).
 */
export function senderHeaders(
  response: ClientResponse,
  options: { fetchDest: string | null; fetchMode?: string | null },
): Headers {
  const headers = new Headers();
  // Checked when the answer arrived; checked again here, as it may come from another instance.
  const checked = answerHeaders(response.headers);
  if ("headers" in checked) {
    for (const [name, value] of Object.entries(checked.headers)) headers.set(name, value);
  }
  for (const [name, value] of Object.entries(ANSWER_SECURITY_HEADERS)) headers.set(name, value);
  // A browser loading the URL as a page, script, style, image or frame, not a sender: the
  // answer is text. The ingest URL may share the dashboard's origin, where a tenant's script
  // would pass its `script-src 'self'`, and a page or a download would wear its address.
  // A same-origin `<a download>` says `empty`, but navigates.
  if (
    (options.fetchDest !== null && options.fetchDest !== "empty") ||
    options.fetchMode === "navigate"
  ) {
    headers.set("Content-Type", "text/plain; charset=utf-8");
  }
  return headers;
}
