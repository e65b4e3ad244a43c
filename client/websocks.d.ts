/**
 * Types of the WebSocks client library (websocks.js): subscribe to a WebSocks server's webhooks
 * over WebSocket or SSE, in browsers, Node 22 and Deno. See README.md beside this file.
 */

/** A subscription's connection state. */
export type State = "connecting" | "live" | "backing-off" | "closed";

/** Connection states, in the order a healthy subscription goes through them. */
export declare const STATES: readonly ["connecting", "live", "backing-off", "closed"];

/** One webhook as the server delivers it (README.md, "Receiving: the envelope"). */
export interface WebhookEnvelope {
  type: "webhook";
  /** Unique; ids sort by arrival, as strings. */
  id: string;
  /** The endpoint's slug. */
  endpoint: string;
  receivedAt: string;
  method: string;
  /** The path after the slug, `/` at least. */
  path: string;
  /** Repeated names are arrays, in order. */
  query: Record<string, string | string[]>;
  headers: Record<string, string>;
  contentType: string | null;
  /** The provider's name for the event (`invoice.paid`, `issues.opened`), or null. */
  eventType?: string | null;
  /** The parsed body (JSON, or a form's fields), else null. */
  payload: unknown;
  /** The raw body when it is UTF-8 text; else `bodyBase64` carries its bytes. */
  body?: string;
  bodyBase64?: string;
  /** The provider signature check, when the endpoint names a provider. */
  verified?: { provider: string; ok: true } | { provider: string; ok: false; reason: string };
  /** A provider's URL handshake the relay answered itself: not a webhook to act on. */
  handshake?: true;
  /** The sender waits for an answer: onWebhook's return value (WebSocket only). */
  respond?: boolean;
}

/**
 * What onWebhook may return. For a respond-mode event (`envelope.respond`) it is the answer the
 * waiting sender gets: `status` (default 200), `headers`, and `body` as text, bytes, or any other
 * value as JSON (with `content-type: application/json` unless given). For any event, `status` is
 * the status recorded with the ack (`GET /api/events/:id/deliveries`).
 */
export interface WebhookResult {
  status?: number;
  headers?: Record<string, string> | Headers;
  body?: string | Uint8Array | ArrayBuffer | ArrayBufferView | unknown;
}

/** Where the last handled id is kept, so a restart resumes after it. */
export interface Storage {
  get(): string | null | Promise<string | null>;
  set(id: string): void | Promise<void>;
}

/**
 * A notice from the server, never a webhook: `{"type": "quota", "level", "used", "limit",
 * "resetsAt"}` at 80% and 100% of the month's limit, `{"type": "group", …}` for a group member
 * over SSE, and over SSE `{"type": "close", "reason"}` just before the server ends the stream.
 */
export interface Notice {
  type: string;
  [field: string]: unknown;
}

/** What onState hears with a state. */
export interface StateInfo {
  /** Why: the drop that led to "backing-off", the fatal error that led to "closed". */
  error?: WebSocksError | Error;
  /** With "backing-off": how long until the next try, and which try it is. */
  delayMs?: number;
  attempt?: number;
}

/**
 * A WebSocket class of the standard API (the global one, or `ws`'s): the client sets its
 * `onopen`, `onmessage`, `onerror` and `onclose` and uses these members.
 */
export type WebSocketClass = new (url: string) => {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
};

/** Options of subscribe(). */
export interface SubscribeOptions {
  /** The server's base URL: `https://websocks.example` (ws:// and wss:// work too). */
  url: string | URL;
  /** An API token (`wsk_…`); without one, the page's session cookie (same origin only). */
  token?: string;
  /** `"websocket"` (the default: acks and respond mode) or `"sse"` (read only). */
  transport?: "websocket" | "sse";
  /** Only these endpoints' events (slugs). */
  endpoint?: string | string[];
  /** Only events whose type matches one of these patterns (`invoice.*`). */
  event?: string | string[];
  /** Only events sent with these methods. */
  method?: string | string[];
  /** Only events whose path after the slug starts with one of these. */
  path?: string | string[];
  /** A consumer group's name, passed to the server as `group=`. */
  group?: string;
  /**
   * Called with each event, one at a time, in order. Once it resolves the event is handled:
   * acked, answered (respond mode) and its id stored. If it throws, the event is not handled:
   * the connection is dropped and the event handed over again after a backoff.
   */
  onWebhook(envelope: WebhookEnvelope): void | WebhookResult | Promise<void | WebhookResult>;
  /** Start after this id when the storage holds none (or an earlier one). */
  lastEventId?: string | null;
  /** Where the last handled id is kept; `memoryStorage()` by default. */
  storage?: Storage;
  /** Hears every state change. */
  onState?(state: State, info: StateInfo): void;
  /**
   * Hears the server's notices: SSE's named events; over WebSocket, given this option, the
   * client connects with `notices=1` to receive them.
   */
  onNotice?(notice: Notice): void | Promise<void>;
  /**
   * Hears an event at or below the last handled id that came again: a resend someone asked for
   * (`POST /api/events/:id/resend`). It is not handed to onWebhook, acked or stored again.
   */
  onRepeat?(envelope: WebhookEnvelope): void | Promise<void>;
  /**
   * Hears problems (a handler that threw, a failing storage, the server's error messages) and
   * the refusal that closed the subscription, if one did; console.error by default.
   */
  onError?(error: Error): void;
  /** Aborting it closes the subscription, as close() does. */
  signal?: AbortSignal;
  /** First reconnect delay's ceiling (500 ms); doubled each try up to maxDelayMs (30 s). */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** A connection silent this long (45 s) is taken for dead and replaced. */
  idleTimeoutMs?: number;
  /** A WebSocket that has not opened after this long (15 s) is given up and tried again. */
  connectTimeoutMs?: number;
  /** WebSocket: events waiting for onWebhook (500) or their characters (64 Mi) before the connection is dropped and resumed. */
  maxQueued?: number;
  maxQueuedChars?: number;
  /** A connection live this long (10 s), or that handled an event, resets the backoff. */
  healthyMs?: number;
  /** A WebSocket class, where there is no global one (Node before 22: `ws`'s). */
  WebSocket?: WebSocketClass;
  /** A fetch function, instead of the global one. */
  fetch?: typeof fetch;
}

/** A running subscription. */
export interface Subscription {
  readonly state: State;
  /** The last id handled (or the point it started after). */
  readonly lastEventId: string | null;
  /** The fatal error that closed it, if one did. */
  readonly error: WebSocksError | null;
  /** Settles once closed and the event in hand, if any, is recorded. */
  readonly closed: Promise<void>;
  /** Stops: no more events are handed over; resolves as `closed` does. */
  close(): Promise<void>;
}

/** An error of the client: `status` is the server's HTTP status when it answered one. */
export declare class WebSocksError extends Error {
  constructor(
    message: string,
    options?: { status?: number | null; fatal?: boolean; cause?: unknown },
  );
  readonly status: number | null;
  /** True when the subscription stopped for it (401, 403, 400 at connect, a revoked token). */
  readonly fatal: boolean;
}

/** Subscribes to a server's webhooks; see SubscribeOptions. */
export declare function subscribe(options: SubscribeOptions): Subscription;

/** Keeps the last handled id in memory: resumes across reconnects, not restarts. */
export declare function memoryStorage(initial?: string | null): Storage;

/** Keeps the last handled id in the browser's localStorage under `key`. */
export declare function localStorageStorage(key: string): Storage;

/** Keeps the last handled id in a JSON file (Node and Deno), replaced atomically. */
export declare function fileStorage(path: string): Storage;
