/**
 * Forwarding one event to the local target: retries of network errors and 5xx with backoff, the
 * target's answer kept for respond mode, and the line printed for the result.
 */
import type { WebhookEnvelope } from "../shared/envelope.ts";
import { backoffDelay, sleep } from "./backoff.ts";
import type { ForwardOptions } from "./options.ts";
import { forwardHeaders, targetRequest, targetUrl } from "./target_request.ts";

/** How one event's delivery ended. */
export interface DeliveryResult {
  /** The target's final status, or null when it never answered with one below 500. */
  status: number | null;
  /** The last thing that went wrong, for the failed line. */
  error: string | null;
  attempts: number;
  latencyMs: number;
  /**
   * The target's answer (status below 500), for respond mode only; `status` is set when the
   * sender is to get another status than the target's (an answer too large to relay).
   */
  answer: { status?: number; headers: Record<string, string>; body: Uint8Array } | null;
}

/**
 * The most of a target's answer relayed to a respond-mode sender: its base64 fits the server's
 * 2 MiB WebSocket message (WS_MAX_MESSAGE_BYTES), and a stranger's request cannot make the
 * forwarder buffer a large local resource.
 */
export const MAX_ANSWER_BYTES = 1024 * 1024;

/**
 * Sends one envelope to the target, retrying network errors and 5xx with backoff. A 4xx is a
 * final answer. Rejects with the signal's reason when stopped mid-retry, so the event is not
 * recorded as done and is sent again after a restart.
 */
export async function deliver(
  envelope: WebhookEnvelope,
  options:
    & { target: string }
    & Pick<
      ForwardOptions,
      "attempts" | "retryBaseMs" | "retryMaxMs" | "requestTimeoutMs"
    >,
  signal?: AbortSignal,
): Promise<DeliveryResult> {
  const started = performance.now();
  let error: string | null = null;
  let status: number | null = null;
  let url: string;
  try {
    url = targetUrl(options.target, envelope.path, envelope.query);
  } catch (refused) {
    // Not the target's failure: no request is sent, and trying again cannot change it.
    error = refused instanceof Error ? refused.message : String(refused);
    return { status: null, error, attempts: 0, latencyMs: elapsed(started), answer: null };
  }
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
      const response = await fetch(targetRequest(url, envelope), {
        signal: AbortSignal.timeout(options.requestTimeoutMs),
      });
      status = response.status;
      if (status < 500) {
        // Kept for respond mode, where the sender gets exactly what the target said.
        let answer: DeliveryResult["answer"] = null;
        if (envelope.respond) answer = await readAnswer(response);
        else await response.body?.cancel();
        return { status, error: null, attempts: attempt, latencyMs: elapsed(started), answer };
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

/** The target's answer for the sender, or a 502 saying it is over MAX_ANSWER_BYTES. */
async function readAnswer(response: Response): Promise<NonNullable<DeliveryResult["answer"]>> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body?.getReader();
  for (;;) {
    const read = await reader?.read();
    if (!read || read.done) break;
    size += read.value.byteLength;
    if (size > MAX_ANSWER_BYTES) {
      await reader!.cancel();
      return {
        status: 502,
        headers: { "content-type": "text/plain; charset=utf-8" },
        body: new TextEncoder().encode(
          `The forward target's answer is over ${MAX_ANSWER_BYTES} bytes; it was not relayed`,
        ),
      };
    }
    chunks.push(read.value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of forwardHeaders(Object.fromEntries(response.headers))) {
    headers[name] = value;
  }
  return { headers, body };
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started);
}

/**
 * One readable line for a finished event; its type and, when routes are used, the route's
 * pattern that chose its target (`default` for `--target`).
 */
export function eventLine(
  envelope: WebhookEnvelope,
  result: DeliveryResult,
  now = new Date(),
  route?: string | null,
): string {
  const outcome = result.status === null ? `failed (${result.error})` : String(result.status);
  const tries = result.attempts > 1 ? ` after ${result.attempts} attempts` : "";
  return `${now.toISOString()} ${envelope.method} ${envelope.endpoint} ${envelope.path} -> ` +
    `${outcome} ${result.latencyMs}ms${tries}${verifiedNote(envelope)}${typeNote(envelope, route)}`;
}

/** The event's type and the route taken, for a line; "" when there is neither. */
function typeNote(envelope: WebhookEnvelope, route: string | null | undefined): string {
  const type = envelope.eventType ?? null;
  if (route === undefined) return type === null ? "" : ` (${type})`;
  return ` (${type ?? "no type"} via ${route ?? "default"})`;
}

/** The line for an event no route takes and no `--target` catches: acked, not forwarded. */
export function skippedLine(envelope: WebhookEnvelope, now = new Date()): string {
  return `${now.toISOString()} ${envelope.method} ${envelope.endpoint} ${envelope.path} -> ` +
    `skipped: no --route matches ${
      envelope.eventType ? `"${envelope.eventType}"` : "an event with no type"
    } and there is no --target`;
}

/** The provider check's verdict for a log line, or "" when the endpoint names no provider. */
function verifiedNote(envelope: WebhookEnvelope): string {
  const verified = envelope.verified;
  if (!verified) return "";
  return verified.ok
    ? ` [${verified.provider}: verified]`
    : ` [${verified.provider}: NOT verified, ${verified.reason}]`;
}

/** The line for a provider's URL handshake, which the relay answered and is not forwarded. */
export function handshakeLine(envelope: WebhookEnvelope, now = new Date()): string {
  return `${now.toISOString()} ${envelope.method} ${envelope.endpoint} ${envelope.path} -> ` +
    `handshake answered by the relay, not forwarded${verifiedNote(envelope)}`;
}
