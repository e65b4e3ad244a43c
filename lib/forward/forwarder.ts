/**
 * The forward command's logic: subscribe to a WebSocks server over WebSocket and forward each
 * webhook, byte for byte, to a local target. Events go one at a time and in order; the last one
 * done is kept in a state file so a restart resumes with `lastEventId` and loses nothing.
 *
 * This folder's parts: options.ts (settings, exit codes, output), target_request.ts (the request
 * to the target), forward_event.ts (one event, with retries), backoff.ts, state.ts (the state
 * file), routes.ts (which target an event goes to), session.ts (one connection); this file runs them: check the token, connect, reconnect.
 */
import { backoffDelay, sleep } from "./backoff.ts";
import { consoleOutput, EXIT, type ForwardOptions, type Output, type Totals } from "./options.ts";
import { runSession } from "./session.ts";
import { prepareStateDir, readState } from "./state.ts";

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

/** The summary line printed on exit. */
export function summaryLine(totals: Totals): string {
  const skipped = totals.skipped > 0 ? `, ${totals.skipped} skipped (no route)` : "";
  return `summary: ${totals.forwarded} forwarded, ${totals.rejected} rejected (4xx), ` +
    `${totals.failed} failed${skipped}`;
}

/**
 * Runs until `signal` aborts or the token is revoked: connect, forward, reconnect with backoff.
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

  let failures = 0;
  while (!signal.aborted) {
    const end = await runSession(
      { options, signal, out, totals },
      lastEventId,
      (id) => (lastEventId = id),
    );
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
}
