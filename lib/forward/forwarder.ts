/**
 * The forward command's logic: subscribe to a WebSocks server over WebSocket and forward each
 * webhook, byte for byte, to a local target. Events go one at a time and in order; the last one
 * done is kept in a state file so a restart resumes with `lastEventId` and loses nothing.
 *
 * This folder's parts: options.ts (settings, exit codes, output), target_request.ts (the request
 * to the target), forward_event.ts (one event, with retries), backoff.ts, state.ts (the state
 * file), routes.ts (which target an event goes to), session.ts (what each event gets); this file
 * runs them: check the token, then subscribe with the client library (client/websocks.js), which
 * owns the connection, its order, resume point and reconnects.
 */
import { backoffDelay, sleep } from "./backoff.ts";
import { consoleOutput, EXIT, type ForwardOptions, type Output, type Totals } from "./options.ts";
import { forwardHandler } from "./session.ts";
import { prepareStateDir, readState, writeState } from "./state.ts";
import { subscribe } from "../../client/websocks.js";

/**
 * Asks the server whether it is there and takes the token: "ok", "unauthorized" or
 * "unreachable". It asks the event stream, which a stream-only token may read (`/api/me` is a
 * management call), and hangs up at once.
 */
export async function checkToken(
  server: string,
  token: string,
): Promise<"ok" | "unauthorized" | "unreachable"> {
  try {
    const url = new URL("/api/events/stream", server);
    url.searchParams.set("token", token);
    const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
    await response.body?.cancel();
    if (response.status === 401) return "unauthorized";
    // 403 (a token without the scope) and 400 (a bad filter) are the subscription's to report,
    // in the server's words; a 5xx or 429 is a server not ready yet.
    return response.status < 500 && response.status !== 429 ? "ok" : "unreachable";
  } catch {
    return "unreachable";
  }
}

/** The summary line printed on exit. */
export function summaryLine(totals: Totals): string {
  const skipped = totals.skipped > 0 ? `, ${totals.skipped} skipped (no route)` : "";
  return `summary: ${totals.forwarded} forwarded, ${totals.rejected} rejected (4xx), ` +
    `${totals.failed} failed${skipped}`;
}

/**
 * Runs until `signal` aborts or the token is refused or revoked: check the token, then forward
 * what the subscription hands over.
 * Returns the exit code; prints one line per event and the summary.
 */
export async function runForwarder(
  options: ForwardOptions,
  signal: AbortSignal,
  out: Output = consoleOutput,
): Promise<number> {
  const totals: Totals = { forwarded: 0, rejected: 0, failed: 0, skipped: 0 };
  const finish = (code: number) => {
    out.line(summaryLine(totals));
    return code;
  };

  // First, before any network: a state file of another server must stop us at once.
  let lastEventId: string | null;
  try {
    await prepareStateDir(options.stateFile);
    lastEventId = await readState(options.stateFile, options.url);
  } catch (error) {
    out.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    return EXIT.badArguments;
  }

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

  // The connection, its resume point, order and reconnects are the client library's.
  const subscription = subscribe({
    url: options.url,
    token: options.token,
    transport: "websocket",
    endpoint: options.endpoints,
    event: options.events,
    lastEventId,
    storage: {
      get: () => lastEventId,
      set: (id) => writeState(options.stateFile, options.url, id),
    },
    minDelayMs: 500,
    maxDelayMs: 15_000,
    idleTimeoutMs: options.heartbeatTimeoutMs,
    signal,
    onWebhook: forwardHandler({ options, signal, out, totals }),
    onState: (state, info) => {
      if (state === "live") {
        const after = subscription.lastEventId;
        const resume = after ? ` (resuming after ${after})` : "";
        out.line(`${new Date().toISOString()} connected to ${options.url}${resume}`);
      } else if (state === "backing-off") {
        const why = info.error ? ` (${info.error.message})` : "";
        out.line(
          `${new Date().toISOString()} disconnected${why}, reconnecting in ${info.delayMs}ms`,
        );
      }
    },
    onError: (error) => {
      // Stopped mid-retry is said by the handler's own line.
      if (!signal.aborted) out.error(`error: ${error.message}`);
    },
  });
  await subscription.closed;
  const fatal = subscription.error;
  if (fatal) {
    if (fatal.status === 401 || fatal.status === 403) {
      out.error(
        fatal.message.startsWith("The connection closed")
          ? `error: the server closed the connection: token revoked (${fatal.message})`
          : `error: the server at ${options.url} refused the token (${fatal.message})`,
      );
      return finish(EXIT.unauthorized);
    }
    out.error(`error: ${fatal.message}`);
    return finish(EXIT.badArguments);
  }
  return finish(EXIT.ok);
}
