// @ts-self-types="./websocks.d.ts"
/**
 * The WebSocks client library: subscribe to a WebSocks server's webhooks over WebSocket or
 * Server-Sent Events, handle them one at a time and in order, and never lose or repeat one across
 * reconnects and restarts. One ES module with no dependencies: it runs unchanged in browsers,
 * Node 22 (global fetch and WebSocket) and Deno. Types: websocks.d.ts; guide: README.md.
 *
 * SSE is read over fetch rather than EventSource (which Node lacks, and which can neither report
 * a connect's status nor be paused): reading only when the handler is ready is what lets a slow
 * handler hold the server back instead of filling memory.
 */

/** Connection states, in the order a healthy subscription goes through them. */
export const STATES = /** @type {const} */ (["connecting", "live", "backing-off", "closed"]);

/** An error of the client: `status` is the server's HTTP status when it answered one. */
export class WebSocksError extends Error {
  /**
   * @param {string} message
   * @param {{ status?: number | null, fatal?: boolean, cause?: unknown }} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "WebSocksError";
    this.status = options.status ?? null;
    this.fatal = options.fatal ?? false;
  }
}

/** Keeps the last handled id in memory: resumes across reconnects, not across restarts. */
export function memoryStorage(initial = null) {
  let id = initial;
  return {
    get: () => id,
    set: (value) => {
      id = value;
    },
  };
}

/** Keeps the last handled id in the browser's localStorage under `key`. */
export function localStorageStorage(key) {
  if (typeof key !== "string" || key === "") {
    throw new TypeError("localStorageStorage: key must be a non-empty string");
  }
  return {
    get: () => globalThis.localStorage.getItem(key),
    set: (id) => globalThis.localStorage.setItem(key, id),
  };
}

// A variable, not a literal: bundlers for the browser then leave the import alone, and browsers
// never run it.
const FS_MODULE = "node:fs/promises";

/**
 * Keeps the last handled id in a JSON file (Node and Deno), written to a temporary file and
 * renamed over the old one so a crash mid-write never leaves a torn file.
 */
export function fileStorage(path) {
  if (typeof path !== "string" || path === "") {
    throw new TypeError("fileStorage: path must be a non-empty string");
  }
  return {
    async get() {
      const fs = await import(FS_MODULE);
      let text;
      try {
        text = await fs.readFile(path, "utf8");
      } catch (error) {
        if (error && error.code === "ENOENT") return null;
        throw error;
      }
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new WebSocksError(`fileStorage: ${path} is not JSON; delete it to start over`);
      }
      const id = parsed?.lastEventId;
      return typeof id === "string" && id !== "" ? id : null;
    },
    async set(id) {
      const fs = await import(FS_MODULE);
      const temporary = `${path}.${Math.random().toString(36).slice(2)}.tmp`;
      await fs.writeFile(temporary, JSON.stringify({ lastEventId: id }) + "\n");
      await fs.rename(temporary, path);
    },
  };
}

const DEFAULTS = {
  minDelayMs: 500,
  maxDelayMs: 30_000,
  // Heartbeats come every 15 s (HEARTBEAT_SECONDS, at most 25); three missed means dead.
  idleTimeoutMs: 45_000,
  connectTimeoutMs: 15_000,
  // Below the server's WS_MAX_UNACKED (1000), so every queued event can still be acked.
  maxQueued: 500,
  maxQueuedChars: 64 * 1024 * 1024,
  // A connection live this long (or that handled an event) was healthy: backoff starts over.
  healthyMs: 10_000,
};

/**
 * Subscribes to a server's webhooks. `onWebhook` is called with each envelope, one at a time, in
 * order; once it resolves, the event is acked (WebSocket), answered (respond mode) and its id
 * stored, so a reconnect or a restart resumes after it. Returns a handle: `state`, `close()`.
 */
export function subscribe(options) {
  const settings = readOptions(options);
  const { onWebhook, storage } = settings;
  const stopper = new AbortController();
  /** @type {"connecting" | "live" | "backing-off" | "closed"} */
  let state = "connecting";
  let fatal = null;
  /** The last id handled (or the start point): nothing at or below it is handed over again. */
  let lastHandled = null;

  const setState = (next, info = {}) => {
    if (state === "closed") return;
    state = next;
    if (settings.onState) {
      try {
        settings.onState(next, info);
      } catch (error) {
        report(error);
      }
    }
  };
  const report = (error) => {
    try {
      settings.onError(error);
    } catch {
      // The caller's error handler failed: nothing sensible is left to tell.
    }
  };
  /** Calls an optional hook of the caller; what it throws or rejects goes to onError. */
  const tell = (hook, value) => {
    if (!hook) return;
    try {
      Promise.resolve(hook(value)).catch(report);
    } catch (error) {
      report(error);
    }
  };

  /**
   * Hands one envelope to the caller, then answers, acks and stores it. Throws what onWebhook
   * throws: the event is then not handled, and the session ends so it is tried again.
   */
  const handleOne = async (envelope, send) => {
    if (lastHandled !== null && envelope.id <= lastHandled) {
      tell(settings.onRepeat, envelope);
      return false;
    }
    const result = await onWebhook(envelope);
    if (send) {
      let status = Number.isInteger(result?.status) ? result.status : null;
      if (envelope.respond === true) {
        const answer = responseMessage(envelope.id, result);
        send(answer);
        status = answer.status;
      }
      send({ type: "ack", id: envelope.id, status });
    }
    lastHandled = envelope.id;
    try {
      await storage.set(envelope.id);
    } catch (error) {
      report(
        new WebSocksError(`Cannot store the last event id: ${message(error)}`, {
          cause: error,
        }),
      );
    }
    return true;
  };

  const session = settings.transport === "sse" ? sseSession : webSocketSession;
  const context = {
    settings,
    stopper,
    setState,
    report,
    handleOne,
    notice: (value) => tell(settings.onNotice, value),
    repeat: (envelope) => tell(settings.onRepeat, envelope),
    resumeAfter: () => lastHandled,
  };

  const run = async () => {
    const stored = await storage.get();
    lastHandled = laterId(stored ?? null, settings.lastEventId);
    if (lastHandled === null && !stopper.signal.aborted) {
      lastHandled = await newestId(settings, stopper.signal);
    }
    let failures = 0;
    while (!stopper.signal.aborted) {
      setState("connecting");
      const outcome = await session(context);
      if (stopper.signal.aborted) break;
      if (outcome.fatal) {
        fatal = outcome.fatal;
        // Told twice: a caller listening only for errors still learns why it stopped.
        report(fatal);
        setState("closed", { error: fatal });
        return;
      }
      failures = outcome.healthy ? 1 : failures + 1;
      const delayMs = Math.max(
        backoffDelay(failures, settings),
        Math.min(outcome.retryAfterMs ?? 0, settings.maxDelayMs),
      );
      setState("backing-off", { delayMs, attempt: failures, error: outcome.error });
      await sleep(delayMs, stopper.signal);
    }
    setState("closed", {});
  };

  const closed = run().catch((error) => {
    // storage.get() failed: there is no safe place to resume from.
    fatal = new WebSocksError(`Cannot start: ${message(error)}`, { fatal: true, cause: error });
    setState("closed", { error: fatal });
  });

  const close = () => {
    stopper.abort();
    return closed;
  };
  if (settings.signal) {
    if (settings.signal.aborted) close();
    else settings.signal.addEventListener("abort", close, { once: true });
  }

  return {
    get state() {
      return state;
    },
    get lastEventId() {
      return lastHandled;
    },
    get error() {
      return fatal;
    },
    closed,
    close,
  };
}

/** Checks the options and fills in defaults; a mistake throws at once, not on connect. */
function readOptions(options) {
  if (!options || typeof options !== "object") {
    throw new TypeError("subscribe: options must be an object");
  }
  const { url, onWebhook } = options;
  if (typeof url !== "string" && !(url instanceof URL)) {
    throw new TypeError("subscribe: url must be the server's URL, e.g. https://websocks.example");
  }
  const base = new URL(url);
  if (!["http:", "https:", "ws:", "wss:"].includes(base.protocol)) {
    throw new TypeError(`subscribe: url must be http(s) or ws(s), not ${base.protocol}`);
  }
  if (typeof onWebhook !== "function") throw new TypeError("subscribe: onWebhook is required");
  const transport = options.transport ?? "websocket";
  if (transport !== "websocket" && transport !== "sse") {
    throw new TypeError('subscribe: transport must be "websocket" or "sse"');
  }
  const storage = options.storage ?? memoryStorage();
  if (typeof storage.get !== "function" || typeof storage.set !== "function") {
    throw new TypeError("subscribe: storage must have get() and set(id)");
  }
  const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
  if (transport === "websocket" && typeof WebSocketClass !== "function") {
    throw new TypeError(
      "subscribe: no global WebSocket here (Node before 22?): pass options.WebSocket, " +
        'or use transport: "sse"',
    );
  }
  const number = (name) => {
    const value = options[name] ?? DEFAULTS[name];
    if (typeof value !== "number" || !(value > 0)) {
      throw new TypeError(`subscribe: ${name} must be a positive number`);
    }
    return value;
  };
  const settings = {
    base,
    token: options.token ?? null,
    transport,
    filters: {
      endpoint: list(options.endpoint, "endpoint"),
      event: list(options.event, "event"),
      method: list(options.method, "method"),
      path: list(options.path, "path"),
    },
    group: options.group ?? null,
    lastEventId: options.lastEventId ?? null,
    onWebhook,
    onState: options.onState ?? null,
    onNotice: hook(options.onNotice, "onNotice"),
    onRepeat: hook(options.onRepeat, "onRepeat"),
    // Never silent: a failing handler that nobody hears of looks like a stuck stream.
    onError: options.onError ?? ((error) => console.error("websocks:", error)),
    storage,
    signal: options.signal ?? null,
    WebSocket: WebSocketClass,
    fetch: options.fetch ?? ((...args) => globalThis.fetch(...args)),
    minDelayMs: number("minDelayMs"),
    maxDelayMs: number("maxDelayMs"),
    idleTimeoutMs: number("idleTimeoutMs"),
    connectTimeoutMs: number("connectTimeoutMs"),
    maxQueued: number("maxQueued"),
    maxQueuedChars: number("maxQueuedChars"),
    healthyMs: number("healthyMs"),
  };
  return settings;
}

/** An optional callback: a function or nothing. */
function hook(value, name) {
  if (value === undefined || value === null) return null;
  if (typeof value !== "function") throw new TypeError(`subscribe: ${name} must be a function`);
  return value;
}

/** A filter option as a list: a string, a list of strings, or nothing. */
function list(value, name) {
  if (value === undefined || value === null) return [];
  const values = typeof value === "string" ? [value] : value;
  if (!Array.isArray(values) || values.some((one) => typeof one !== "string")) {
    throw new TypeError(`subscribe: ${name} must be a string or a list of strings`);
  }
  return values;
}

/** The later of two ids (ids sort by arrival, as strings); null when both are. */
function laterId(a, b) {
  if (a === null) return b;
  if (b === null) return a;
  return a > b ? a : b;
}

/**
 * The newest retained event's id, so a subscriber with no id of its own still gets every event
 * from now on, even if its first connection drops before it is sent one. Null when history
 * cannot be read (say, a page of another origin): the first connection then starts live.
 */
async function newestId(settings, stop) {
  if (settings.token === null) return null;
  try {
    const url = new URL(prefix(settings.base) + "/api/events", httpBase(settings.base));
    url.searchParams.set("limit", "1");
    const response = await settings.fetch(url, {
      headers: { Authorization: `Bearer ${settings.token}` },
      signal: withTimeout(stop, 10_000),
    });
    if (!response.ok) {
      await response.body?.cancel();
      return null;
    }
    const page = await response.json();
    const id = page?.events?.[0]?.id;
    return typeof id === "string" ? id : null;
  } catch {
    return null;
  }
}

function prefix(base) {
  return base.pathname.replace(/\/+$/, "");
}

function httpBase(base) {
  const url = new URL(base);
  if (url.protocol === "ws:") url.protocol = "http:";
  if (url.protocol === "wss:") url.protocol = "https:";
  return url;
}

/** A stream URL with the token, filters, group and resume point as query parameters. */
function streamUrl(settings, kind, after) {
  const url = httpBase(settings.base);
  url.pathname = prefix(settings.base) + (kind === "sse" ? "/api/events/stream" : "/ws");
  if (kind === "ws") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  // In the query, not headers: a browser's WebSocket cannot send headers, and a cross-origin
  // fetch with them would need a preflight.
  if (settings.token !== null) url.searchParams.set("token", settings.token);
  for (const [name, values] of Object.entries(settings.filters)) {
    for (const value of values) url.searchParams.append(name, value);
  }
  if (settings.group !== null) url.searchParams.set("group", settings.group);
  // WebSocket clients get notices only when they ask; SSE always has them, as named events.
  if (kind === "ws" && settings.onNotice !== null) url.searchParams.set("notices", "1");
  if (after !== null) url.searchParams.set("lastEventId", after);
  return url.toString();
}

/** Delay before reconnect `attempt` (1-based): exponential, capped, half of it random. */
function backoffDelay(attempt, { minDelayMs, maxDelayMs }) {
  const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(attempt - 1, 30));
  // Many clients dropped together (a server restart) come back spread out.
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/** A signal that aborts with `signal` or after `ms`; by hand where AbortSignal.any is missing. */
function withTimeout(signal, ms) {
  if (typeof AbortSignal.any === "function") {
    return AbortSignal.any([signal, AbortSignal.timeout(ms)]);
  }
  const controller = new AbortController();
  const abort = () => controller.abort();
  const timer = setTimeout(abort, ms);
  signal.addEventListener("abort", abort, { once: true });
  controller.signal.addEventListener("abort", () => {
    clearTimeout(timer);
    signal.removeEventListener("abort", abort);
  }, { once: true });
  return controller.signal;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function message(error) {
  return error instanceof Error ? error.message : String(error);
}

/** Seconds of a Retry-After header as milliseconds, or null. */
function retryAfterMs(response) {
  const seconds = Number(response.headers.get("retry-after"));
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : null;
}

/**
 * What an HTTP status at connect means. 4xx but 408 and 429 is final (a bad or revoked token, a
 * bad filter, a missing scope): retrying would only hammer the server with the same mistake.
 */
async function statusOutcome(response) {
  let reason = "";
  try {
    const body = await response.json();
    if (typeof body?.error === "string") reason = `: ${body.error}`;
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  const status = response.status;
  const error = new WebSocksError(`The server refused the connection (HTTP ${status})${reason}`, {
    status,
    fatal: status >= 400 && status < 500 && status !== 408 && status !== 429,
  });
  if (error.fatal) return { fatal: error };
  return { error, retryAfterMs: retryAfterMs(response) };
}

/** Whether a 200 is a WebSocks event stream rather than some other page. */
function isEventStream(response) {
  return (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
}

/**
 * A WebSocket handshake that fails says nothing of why, so ask the same question over HTTP:
 * the SSE stream takes the same token, filters and resume point, and answers 401/403/400 plainly.
 */
async function probe(settings, after, stop) {
  let response;
  try {
    response = await settings.fetch(streamUrl(settings, "sse", after), {
      headers: { Accept: "text/event-stream" },
      signal: withTimeout(stop, 10_000),
    });
  } catch (error) {
    return {
      error: new WebSocksError(`Cannot reach the server: ${message(error)}`, { cause: error }),
    };
  }
  if (response.ok) {
    await response.body?.cancel().catch(() => {});
    return { error: new WebSocksError("The WebSocket connection failed; the server is up") };
  }
  return await statusOutcome(response);
}

/** The `{"type":"response"}` message answering a respond-mode event with onWebhook's result. */
function responseMessage(id, result) {
  const status = Number.isInteger(result?.status) ? result.status : 200;
  const headers = {};
  const given = result?.headers;
  if (given && typeof given.forEach === "function" && !Array.isArray(given)) {
    given.forEach((value, name) => (headers[name] = value));
  } else if (given) {
    for (const [name, value] of Object.entries(given)) headers[name] = String(value);
  }
  const answer = { type: "response", id, status, headers };
  const body = result?.body;
  if (body === undefined || body === null) {
    answer.body = "";
  } else if (typeof body === "string") {
    answer.body = body;
  } else if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    const bytes = body instanceof ArrayBuffer
      ? new Uint8Array(body)
      : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    answer.bodyBase64 = toBase64(bytes);
  } else {
    answer.body = JSON.stringify(body);
    const named = Object.keys(headers).some((name) => name.toLowerCase() === "content-type");
    if (!named) headers["content-type"] = "application/json";
  }
  return answer;
}

function toBase64(bytes) {
  // btoa over binary text in slices: everywhere, unlike Uint8Array.prototype.toBase64.
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  }
  return btoa(binary);
}

/** Parses one message; null when it is not JSON. */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** WebSocket messages that are the protocol's own, not notices for the caller. */
const QUIET = ["pong", "subscribed", "replayed", "webhook"];

/**
 * One WebSocket connection, until it ends and the event in hand is done. Messages are queued as
 * they come (a WebSocket cannot be paused), up to `maxQueued` events or `maxQueuedChars`; past
 * that the connection is dropped and resumed later from the last handled id.
 */
function webSocketSession(context) {
  const { settings, stopper, setState, report, handleOne, notice, repeat } = context;
  const after = context.resumeAfter();
  return new Promise((resolve) => {
    let socket;
    try {
      socket = new settings.WebSocket(streamUrl(settings, "ws", after));
    } catch (error) {
      resolve({ fatal: new WebSocksError(`Cannot connect: ${message(error)}`, { fatal: true }) });
      return;
    }
    const queue = [];
    let queuedChars = 0;
    let lastQueued = after;
    let working = false;
    let opened = false;
    let openedAt = 0;
    let handled = 0;
    let failed = false;
    let behind = false;
    let ended = null;
    let lastHeard = Date.now();
    let pinger;
    // A WebSocket that neither opens nor fails (Node 20's, to a server that is restarting) would
    // otherwise wait for ever, and hold nothing that keeps Node's event loop alive.
    const connecting = setTimeout(() => {
      if (!opened) {
        finish({
          error: new WebSocksError(
            `The connection did not open within ${settings.connectTimeoutMs} ms`,
          ),
        });
      }
    }, settings.connectTimeoutMs);

    const send = (value) => {
      if (socket.readyState === 1) socket.send(JSON.stringify(value));
    };
    const finish = (outcome) => {
      ended ??= outcome;
      queue.length = 0;
      queuedChars = 0;
      if (socket.readyState === 0 || socket.readyState === 1) socket.close(1000, "client leaving");
      settle();
    };
    const settle = () => {
      // The event in hand must be recorded before a reconnect asks to resume after it.
      if (ended === null || working) return;
      clearInterval(pinger);
      clearTimeout(connecting);
      stopper.signal.removeEventListener("abort", onAbort);
      const healthy = !failed &&
        (handled > 0 || behind || (opened && Date.now() - openedAt >= settings.healthyMs));
      resolve({ ...ended, healthy });
    };
    const onAbort = () => finish({});
    stopper.signal.addEventListener("abort", onAbort, { once: true });

    const pump = async () => {
      if (working) return;
      working = true;
      while (queue.length > 0 && ended === null) {
        const { envelope, chars } = queue.shift();
        queuedChars -= chars;
        try {
          if (await handleOne(envelope, send)) handled++;
        } catch (error) {
          failed = true;
          report(
            new WebSocksError(`onWebhook failed for ${envelope.id}: ${message(error)}`, {
              cause: error,
            }),
          );
          finish({ error: new WebSocksError(`onWebhook failed for ${envelope.id}; retrying`) });
        }
        lastHeard = Date.now();
      }
      working = false;
      settle();
    };

    socket.onopen = () => {
      clearTimeout(connecting);
      opened = true;
      openedAt = Date.now();
      lastHeard = openedAt;
      setState("live");
      // Any message proves the server alive; a ping makes sure one comes.
      pinger = setInterval(() => {
        if (!working && Date.now() - lastHeard > settings.idleTimeoutMs) {
          return finish({
            error: new WebSocksError(
              `Nothing heard from the server for ${settings.idleTimeoutMs} ms`,
            ),
          });
        }
        send({ type: "ping" });
      }, settings.idleTimeoutMs / 3);
    };
    socket.onmessage = (event) => {
      lastHeard = Date.now();
      if (ended !== null || typeof event.data !== "string") return;
      const value = parseJson(event.data);
      if (value?.type === "error") {
        report(new WebSocksError(`The server says: ${value.message}`));
        return;
      }
      if (value?.type !== "webhook" || typeof value.id !== "string") {
        if (typeof value?.type === "string" && !QUIET.includes(value.type)) notice(value);
        return;
      }
      if (lastQueued !== null && value.id <= lastQueued) {
        // Only a handled one is a repeat: one still queued is handed over from the queue.
        const handledUpTo = context.resumeAfter();
        if (handledUpTo !== null && value.id <= handledUpTo) repeat(value);
        return;
      }
      lastQueued = value.id;
      queue.push({ envelope: value, chars: event.data.length });
      queuedChars += event.data.length;
      if (
        queue.length > 1 &&
        (queue.length > settings.maxQueued || queuedChars > settings.maxQueuedChars)
      ) {
        // Healthy still: the handler is slow, not the server. It resumes where it stopped.
        behind = true;
        return finish({
          error: new WebSocksError(
            `${queue.length} events waiting for onWebhook; reconnecting after the current one`,
          ),
        });
      }
      pump();
    };
    socket.onerror = () => {}; // "close" follows and decides
    socket.onclose = async (event) => {
      if (ended !== null) return settle();
      if (!opened) {
        if (stopper.signal.aborted) return finish({});
        return finish(await probe(settings, after, stopper.signal));
      }
      const why = `The connection closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`;
      if (event.code === 4001) {
        return finish({ fatal: new WebSocksError(why, { status: 401, fatal: true }) });
      }
      finish({ error: new WebSocksError(why) });
    };
  });
}

/**
 * One SSE stream over fetch, until it ends. The next frame is read only once the event before
 * it is handled, so a slow handler holds the stream back and the server, not this process,
 * decides when it is too far behind.
 */
async function sseSession(context) {
  const { settings, stopper, setState, report, handleOne, notice } = context;
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  stopper.signal.addEventListener("abort", onAbort, { once: true });
  let working = false;
  let lastHeard = Date.now();
  let timer;
  let handled = 0;
  let openedAt = 0;
  try {
    let response;
    try {
      response = await settings.fetch(streamUrl(settings, "sse", context.resumeAfter()), {
        headers: { Accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal,
      });
    } catch (error) {
      if (stopper.signal.aborted) return {};
      return {
        error: new WebSocksError(`Cannot reach the server: ${message(error)}`, { cause: error }),
      };
    }
    if (!response.ok) return await statusOutcome(response);
    if (!isEventStream(response) || !response.body) {
      await response.body?.cancel().catch(() => {});
      return {
        fatal: new WebSocksError(
          `Not a WebSocks server: ${response.url} answered ` +
            `${response.headers.get("content-type") ?? "no content type"}`,
          { status: response.status, fatal: true },
        ),
      };
    }
    openedAt = Date.now();
    setState("live");
    let idle = false;
    timer = setInterval(() => {
      if (!working && Date.now() - lastHeard > settings.idleTimeoutMs) {
        idle = true;
        abort.abort();
      }
    }, settings.idleTimeoutMs / 3);
    let closeReason = null;
    try {
      // A U+FEFF at the start of a chunk is text, not a mark: Deno's decoder dropped it at every
      // chunk's start, and a large body is written as chunks of its own (the stream never begins
      // with one).
      const chunks = response.body.pipeThrough(new TextDecoderStream("utf-8", { ignoreBOM: true }));
      for await (const frame of sseFrames(chunks, () => (lastHeard = Date.now()))) {
        if (frame.event !== "message") {
          // Named events are notices (`quota`, `group`, and `close` with the server's reason).
          const data = parseJson(frame.data);
          const value = data !== null && typeof data === "object" && !Array.isArray(data)
            ? { ...data, type: frame.event }
            : { type: frame.event, data: frame.data };
          if (frame.event === "close") closeReason = value.reason ?? null;
          notice(value);
          continue;
        }
        const envelope = parseJson(frame.data);
        if (envelope?.type !== "webhook" || typeof envelope.id !== "string") continue;
        working = true;
        try {
          if (await handleOne(envelope, null)) handled++;
        } catch (error) {
          report(
            new WebSocksError(`onWebhook failed for ${envelope.id}: ${message(error)}`, {
              cause: error,
            }),
          );
          return { error: new WebSocksError(`onWebhook failed for ${envelope.id}; retrying`) };
        } finally {
          working = false;
          lastHeard = Date.now();
        }
        if (stopper.signal.aborted) return {};
      }
    } catch (error) {
      if (stopper.signal.aborted) return {};
      const why = idle
        ? `Nothing heard from the server for ${settings.idleTimeoutMs} ms`
        : message(error);
      return {
        error: new WebSocksError(`The stream broke: ${why}`, { cause: error }),
        healthy: healthy(),
      };
    }
    const reason = closeReason ? `: ${closeReason}` : "";
    return { error: new WebSocksError(`The server ended the stream${reason}`), healthy: healthy() };
  } finally {
    clearInterval(timer);
    stopper.signal.removeEventListener("abort", onAbort);
    abort.abort();
  }

  function healthy() {
    return handled > 0 || (openedAt > 0 && Date.now() - openedAt >= settings.healthyMs);
  }
}

/**
 * The event-stream format's frames (`{event, data, id}`) from decoded text. Lines are found in
 * each new chunk only, so a 30 MiB `data:` line costs linear time.
 */
async function* sseFrames(chunks, onChunk) {
  let parts = [];
  let pendingCR = false;
  let first = true;
  let data = [];
  let event = "";
  let id = null;
  // A reader, not `for await`: some browsers' streams are not async iterable.
  const reader = chunks.getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    let chunk = value;
    onChunk();
    if (first && chunk.length > 0) {
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
      first = false;
    }
    let start = 0;
    if (pendingCR) {
      pendingCR = false;
      if (chunk[0] === "\n") start = 1;
    }
    // Native searches, each redone only once passed: linear in the chunk however many lines.
    let nextLF = -2;
    let nextCR = -2;
    while (start <= chunk.length) {
      if (nextLF !== -1 && nextLF < start) nextLF = chunk.indexOf("\n", start);
      if (nextCR !== -1 && nextCR < start) nextCR = chunk.indexOf("\r", start);
      let at = nextLF === -1 ? nextCR : nextCR === -1 ? nextLF : Math.min(nextLF, nextCR);
      if (at === -1) {
        if (start < chunk.length) parts.push(chunk.slice(start));
        break;
      }
      const line = parts.length ? parts.join("") + chunk.slice(start, at) : chunk.slice(start, at);
      parts = [];
      if (chunk.charCodeAt(at) === 13) {
        if (at + 1 === chunk.length) pendingCR = true;
        else if (chunk.charCodeAt(at + 1) === 10) at++;
      }
      start = at + 1;
      if (line === "") {
        if (data.length > 0) yield { event: event || "message", data: data.join("\n"), id };
        data = [];
        event = "";
        continue;
      }
      if (line.charCodeAt(0) === 58) continue; // ":" comment, the heartbeat
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") event = value;
      else if (field === "id" && !value.includes("\0")) id = value;
    }
  }
}
