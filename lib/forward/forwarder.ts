/**
 * The forward command's logic: subscribe to a WebSocks server over WebSocket and replay each
 * webhook, byte for byte, to a local target. Events go one at a time and in order; the last one
 * done is kept in a state file so a restart resumes with `lastEventId` and loses nothing.
 */
import { z } from "zod";
import { envelopeBytes, queryParams } from "../shared/envelope.ts";

/** The webhook envelope as the server sends it (only the fields forwarding needs). */
export const envelopeSchema = z.object({
  type: z.literal("webhook"),
  id: z.string().min(1),
  endpoint: z.string(),
  method: z.string().min(1),
  path: z.string(),
  query: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
  headers: z.record(z.string(), z.string()),
  body: z.string().optional(),
  bodyBase64: z.string().optional(),
  /** Set when the sender waits for an answer (respond mode). */
  respond: z.boolean().optional(),
});

/** A webhook envelope. */
export type Envelope = z.infer<typeof envelopeSchema>;

/** Everything the forwarder needs; `forward.ts` fills it from flags and environment. */
export interface ForwardOptions {
  /** WebSocks server base URL (http or https). */
  url: string;
  token: string;
  /** Where webhooks go; the envelope's path is appended. */
  target: string;
  /** Only forward this endpoint's webhooks (others are skipped, but still count as done). */
  endpoint?: string;
  stateFile: string;
  /** Attempts per event before it is reported as failed. */
  attempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  pingIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** Per-attempt timeout for the target, so a hung target cannot stall the stream forever. */
  requestTimeoutMs: number;
}

/** Defaults for the tuning knobs. */
export const DEFAULTS = {
  attempts: 6,
  retryBaseMs: 500,
  retryMaxMs: 30_000,
  pingIntervalMs: 15_000,
  heartbeatTimeoutMs: 30_000,
  requestTimeoutMs: 30_000,
} as const;

/** Exit codes a script can rely on. */
export const EXIT = { ok: 0, badArguments: 2, unauthorized: 3, unreachable: 4 } as const;

/** Where the output goes; injectable so tests of the pure parts need no process. */
export interface Output {
  line(text: string): void;
  error(text: string): void;
}

const consoleOutput: Output = {
  line: (text) => console.log("%s", text),
  error: (text) => console.error("%s", text),
};

// Hop-by-hop headers describe one connection, not the message; `host` and `content-length`
// must match the new request, which fetch sets itself.
const DROPPED_HEADERS = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "trailers",
  "host",
  "content-length",
]);

/** The headers to send on: the original ones minus hop-by-hop ones. */
export function forwardHeaders(original: Record<string, string>): Headers {
  // Names listed in Connection are hop-by-hop too (RFC 9110 §7.6.1).
  const listed = (original["connection"] ?? "").split(",").map((s) => s.trim().toLowerCase());
  const headers = new Headers();
  for (const [name, value] of Object.entries(original)) {
    const lower = name.toLowerCase();
    if (DROPPED_HEADERS.has(lower) || lower.startsWith("proxy-") || listed.includes(lower)) {
      continue;
    }
    headers.append(name, value);
  }
  return headers;
}

/** The target URL for an envelope: target path + envelope path, then the query. */
export function targetUrl(target: string, path: string, query: Envelope["query"]): string {
  const url = new URL(target);
  // The envelope path is the raw (still percent-encoded) suffix, so it is joined as text.
  if (path !== "/" && path !== "") {
    url.pathname = url.pathname.replace(/\/+$/, "") + (path.startsWith("/") ? path : `/${path}`);
  }
  // Appended, so a query the target URL already has is kept.
  for (const [name, value] of queryParams(query)) url.searchParams.append(name, value);
  return url.toString();
}

/** The request to send to the target for one envelope. */
export function targetRequest(target: string, envelope: Envelope): Request {
  const method = envelope.method.toUpperCase();
  const body = method === "GET" || method === "HEAD" ? null : envelopeBytes(envelope);
  return new Request(targetUrl(target, envelope.path, envelope.query), {
    method,
    headers: forwardHeaders(envelope.headers),
    body: body as BodyInit | null,
    // A redirect is the target's answer; following it would send the body somewhere else.
    redirect: "manual",
  });
}

/** The last event id done, or null when there is no (readable) state yet. */
export async function readState(file: string): Promise<string | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  const parsed = z.object({ lastEventId: z.string().min(1).nullable() }).safeParse(
    (() => {
      try {
        return JSON.parse(text);
      } catch {
        return null;
      }
    })(),
  );
  if (!parsed.success) throw new Error(`state file ${file} is not valid; delete it to start over`);
  return parsed.data.lastEventId;
}

/** Records the last event id done; temp file + rename, so a crash never leaves half a file. */
export async function writeState(file: string, lastEventId: string): Promise<void> {
  const temp = `${file}.${Deno.pid}.tmp`;
  const text = JSON.stringify({ lastEventId, updatedAt: new Date().toISOString() }) + "\n";
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, file);
}

/** Delay before retry `attempt` (1-based): exponential, capped, with "equal jitter". */
export function backoffDelay(
  attempt: number,
  options: { baseMs: number; maxMs: number },
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** (attempt - 1));
  // Half fixed, half random: many forwarders restarting together spread out, yet never hammer.
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** Resolves after `ms`, or rejects at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** How one event's delivery ended. */
export interface DeliveryResult {
  /** The target's final status, or null when it never answered with one below 500. */
  status: number | null;
  /** The last thing that went wrong, for the failed line. */
  error: string | null;
  attempts: number;
  latencyMs: number;
  /** The target's answer (status below 500), for respond mode. */
  answer: { headers: Record<string, string>; body: Uint8Array } | null;
}

/**
 * Sends one envelope to the target, retrying network errors and 5xx with backoff. A 4xx is a
 * final answer. Rejects with the signal's reason when stopped mid-retry, so the event is not
 * recorded as done and is sent again after a restart.
 */
export async function deliver(
  envelope: Envelope,
  options: Pick<
    ForwardOptions,
    "target" | "attempts" | "retryBaseMs" | "retryMaxMs" | "requestTimeoutMs"
  >,
  signal?: AbortSignal,
): Promise<DeliveryResult> {
  const started = performance.now();
  let error: string | null = null;
  let status: number | null = null;
  for (let attempt = 1; attempt <= options.attempts; attempt++) {
    if (attempt > 1) {
      await sleep(
        backoffDelay(attempt - 1, { baseMs: options.retryBaseMs, maxMs: options.retryMaxMs }),
        signal,
      );
    }
    try {
      // The attempt itself is not aborted by `signal`: once sent, its answer decides whether
      // the event is done, so a stop waits for it (bounded by the request timeout).
      const response = await fetch(targetRequest(options.target, envelope), {
        signal: AbortSignal.timeout(options.requestTimeoutMs),
      });
      status = response.status;
      if (status < 500) {
        // Kept for respond mode, where the sender gets exactly what the target said.
        const body = new Uint8Array(await response.arrayBuffer());
        const headers: Record<string, string> = {};
        for (const [name, value] of forwardHeaders(Object.fromEntries(response.headers))) {
          headers[name] = value;
        }
        return {
          status,
          error: null,
          attempts: attempt,
          latencyMs: elapsed(started),
          answer: { headers, body },
        };
      }
      await response.body?.cancel();
      error = `HTTP ${status}`;
    } catch (caught) {
      error = caught instanceof Error ? caught.message : String(caught);
    }
  }
  return {
    status: null,
    error,
    attempts: options.attempts,
    latencyMs: elapsed(started),
    answer: null,
  };
}

/**
 * Tells the server what happened: an ack with the target's status for the dashboard, and in
 * respond mode the target's real answer (502 when it never gave one) for the waiting sender.
 */
function reportBack(socket: WebSocket, envelope: Envelope, result: DeliveryResult): void {
  if (socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ type: "ack", id: envelope.id, status: result.status }));
  if (!envelope.respond) return;
  const answer = result.answer ?? {
    headers: { "content-type": "text/plain; charset=utf-8" },
    body: new TextEncoder().encode(`The forward target failed: ${result.error ?? "no answer"}`),
  };
  socket.send(JSON.stringify({
    type: "response",
    id: envelope.id,
    status: result.status !== null && result.status >= 200 ? result.status : 502,
    headers: answer.headers,
    bodyBase64: answer.body.toBase64(),
  }));
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started);
}

/** One readable line for a finished event. */
export function eventLine(envelope: Envelope, result: DeliveryResult, now = new Date()): string {
  const outcome = result.status === null ? `failed (${result.error})` : String(result.status);
  const tries = result.attempts > 1 ? ` after ${result.attempts} attempts` : "";
  return `${now.toISOString()} ${envelope.method} ${envelope.endpoint} ${envelope.path} -> ` +
    `${outcome} ${result.latencyMs}ms${tries}`;
}

/** The WebSocket URL for a server base URL, resuming after `lastEventId` when given. */
export function socketUrl(server: string, token: string, lastEventId: string | null): string {
  const url = new URL(server);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.pathname = url.pathname.replace(/\/+$/, "") + "/";
  url.search = "";
  url.searchParams.set("token", token);
  if (lastEventId) url.searchParams.set("lastEventId", lastEventId);
  return url.toString();
}

/** Asks `/api/me` whether the token is good: "ok", "unauthorized" or "unreachable". */
export async function checkToken(
  server: string,
  token: string,
): Promise<"ok" | "unauthorized" | "unreachable"> {
  try {
    const response = await fetch(new URL("/api/me", server), {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
    await response.body?.cancel();
    if (response.status === 401) return "unauthorized";
    return response.ok ? "ok" : "unreachable";
  } catch {
    return "unreachable";
  }
}

/** Counts for the summary line. */
export interface Totals {
  forwarded: number;
  rejected: number;
  failed: number;
}

/** The summary line printed on exit. */
export function summaryLine(totals: Totals): string {
  return `summary: ${totals.forwarded} forwarded, ${totals.rejected} rejected (4xx), ` +
    `${totals.failed} failed`;
}

/** How one connection ended. */
type SessionEnd = "stopped" | "revoked" | "dropped" | "refused";

/**
 * Runs until `signal` aborts or the token is revoked: connect, forward, reconnect with backoff.
 * Returns the exit code; prints one line per event and the summary.
 */
export async function runForwarder(
  options: ForwardOptions,
  signal: AbortSignal,
  out: Output = consoleOutput,
): Promise<number> {
  const totals: Totals = { forwarded: 0, rejected: 0, failed: 0 };
  const finish = (code: number) => {
    out.line(summaryLine(totals));
    return code;
  };

  // A bad token fails the WebSocket handshake without saying why, so ask /api/me first.
  const startAttempts = 4;
  for (let attempt = 1;; attempt++) {
    const check = await checkToken(options.url, options.token);
    if (check === "ok") break;
    if (check === "unauthorized") {
      out.error(`error: the server at ${options.url} refused the token (401 unauthorized)`);
      return EXIT.unauthorized;
    }
    if (attempt >= startAttempts) {
      out.error(`error: cannot reach the WebSocks server at ${options.url}`);
      return EXIT.unreachable;
    }
    try {
      await sleep(backoffDelay(attempt, { baseMs: 250, maxMs: 2_000 }), signal);
    } catch {
      return finish(EXIT.ok);
    }
  }

  let lastEventId = await readState(options.stateFile);
  let failures = 0;
  while (!signal.aborted) {
    const end = await session(lastEventId, (id) => (lastEventId = id));
    if (end === "stopped") break;
    if (end === "revoked") {
      out.error("error: the server closed the connection: token revoked");
      return finish(EXIT.unauthorized);
    }
    if (end === "refused") {
      failures++;
      // A refused handshake may be a token revoked while we were away: a 401 is final.
      if ((await checkToken(options.url, options.token)) === "unauthorized") {
        out.error(`error: the server at ${options.url} refused the token (401 unauthorized)`);
        return finish(EXIT.unauthorized);
      }
    } else {
      failures = 0;
    }
    const delay = backoffDelay(failures + 1, { baseMs: 500, maxMs: 15_000 });
    out.line(`${new Date().toISOString()} disconnected, reconnecting in ${delay}ms`);
    try {
      await sleep(delay, signal);
    } catch {
      break;
    }
  }
  return finish(EXIT.ok);

  /** One WebSocket connection, until it closes; events are processed in order. */
  function session(after: string | null, done: (id: string) => void): Promise<SessionEnd> {
    return new Promise<SessionEnd>((resolve) => {
      const socket = new WebSocket(socketUrl(options.url, options.token, after));
      const queue: Envelope[] = [];
      let opened = false;
      let ended: SessionEnd | null = null;
      let working = false;
      let lastHeard = Date.now();
      let lastDone = after;
      let pinger: ReturnType<typeof setInterval> | undefined;

      const settle = () => {
        // Wait for the event in flight: its result must be recorded before a reconnect replays.
        if (ended && !working) {
          clearInterval(pinger);
          signal.removeEventListener("abort", onAbort);
          resolve(ended);
        }
      };
      const end = (why: SessionEnd) => {
        ended ??= why;
        // Unprocessed events are dropped: the next connection replays them after lastDone.
        queue.length = 0;
        if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
          socket.close(1000, "forwarder stopping");
        }
        settle();
      };
      const onAbort = () => end("stopped");
      signal.addEventListener("abort", onAbort, { once: true });

      const pump = async () => {
        if (working) return;
        working = true;
        while (queue.length > 0 && !ended) {
          const envelope = queue.shift()!;
          try {
            // Ids sort by arrival, so anything at or below the last done one is a repeat.
            if (lastDone !== null && envelope.id <= lastDone) continue;
            if (!options.endpoint || envelope.endpoint === options.endpoint) {
              const result = await deliver(envelope, options, signal);
              if (result.status === null) totals.failed++;
              else if (result.status >= 400) totals.rejected++;
              else totals.forwarded++;
              out.line(eventLine(envelope, result));
              reportBack(socket, envelope, result);
            }
            await writeState(options.stateFile, envelope.id);
            lastDone = envelope.id;
            done(envelope.id);
          } catch (error) {
            // Stopped mid-retry: leave the event undone so a restart sends it again.
            if (signal.aborted) {
              out.line(
                `${new Date().toISOString()} stopped while retrying ${envelope.id}; ` +
                  "it is sent again on the next start",
              );
              break;
            }
            out.error(`error: ${error instanceof Error ? error.message : String(error)}`);
            end("dropped");
          }
        }
        working = false;
        settle();
      };

      socket.onopen = () => {
        opened = true;
        lastHeard = Date.now();
        const resume = after ? ` (resuming after ${after})` : "";
        out.line(`${new Date().toISOString()} connected to ${options.url}${resume}`);
        pinger = setInterval(() => {
          if (Date.now() - lastHeard > options.heartbeatTimeoutMs) {
            out.line(`${new Date().toISOString()} no heartbeat from server, reconnecting`);
            return end("dropped");
          }
          if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping" }));
        }, Math.min(options.pingIntervalMs, options.heartbeatTimeoutMs / 2));
      };
      socket.onmessage = (message) => {
        lastHeard = Date.now();
        if (typeof message.data !== "string") return;
        let json: unknown;
        try {
          json = JSON.parse(message.data);
        } catch {
          return;
        }
        const parsed = envelopeSchema.safeParse(json);
        if (!parsed.success) return; // pong, replayed, notices: liveness only
        queue.push(parsed.data);
        pump();
      };
      socket.onerror = () => {}; // close follows; the reason is decided there
      socket.onclose = (event) => {
        if (event.code === 4001) return end("revoked");
        end(opened ? "dropped" : "refused");
      };
    });
  }
}
