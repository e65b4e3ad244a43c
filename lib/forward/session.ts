/**
 * One WebSocket connection to the server, until it closes: envelopes are queued and forwarded
 * one at a time, in order; each is acked (and answered in respond mode) and recorded as done.
 */
import { type WebhookEnvelope, webhookEnvelopeSchema } from "../shared/envelope.ts";
import {
  deliver,
  type DeliveryResult,
  eventLine,
  handshakeLine,
  skippedLine,
} from "./forward_event.ts";
import { createRouter } from "./routes.ts";
import { patternMatcher } from "../shared/event_pattern.ts";
import type { ForwardOptions, Output, Totals } from "./options.ts";
import { writeState } from "./state.ts";

/** How one connection ended. */
export type SessionEnd = "stopped" | "revoked" | "dropped" | "refused";

/** What a session shares with the run it belongs to. */
export interface SessionContext {
  options: ForwardOptions;
  signal: AbortSignal;
  out: Output;
  totals: Totals;
}

/**
 * The WebSocket URL for a server base URL, with the filters, resuming after `lastEventId` when
 * given: the server then replays exactly the matching events missed.
 */
export function socketUrl(
  server: string,
  token: string,
  lastEventId: string | null,
  filters: { endpoints: string[]; events: string[] } = { endpoints: [], events: [] },
): string {
  const url = new URL(server);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.pathname = url.pathname.replace(/\/+$/, "") + "/";
  url.search = "";
  url.searchParams.set("token", token);
  for (const endpoint of filters.endpoints) url.searchParams.append("endpoint", endpoint);
  for (const event of filters.events) url.searchParams.append("event", event);
  if (lastEventId) url.searchParams.set("lastEventId", lastEventId);
  return url.toString();
}

/**
 * Tells the server what happened: an ack with the target's status for the dashboard, and in
 * respond mode the target's real answer (502 when it never gave one) for the waiting sender.
 */
function reportBack(socket: WebSocket, envelope: WebhookEnvelope, result: DeliveryResult): void {
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

/**
 * One WebSocket connection, resuming after `after`, until it closes; events are processed in
 * order and `done` hears each id once it is recorded in the state file.
 */
export function runSession(
  context: SessionContext,
  after: string | null,
  done: (id: string) => void,
): Promise<SessionEnd> {
  const { options, signal, out, totals } = context;
  return new Promise<SessionEnd>((resolve) => {
    const socket = new WebSocket(socketUrl(options.url, options.token, after, options));
    const route = createRouter(options);
    // The server filters; checked here too, so a server that predates filters cannot widen them.
    const wanted = options.events.length ? patternMatcher(options.events) : null;
    const queue: WebhookEnvelope[] = [];
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
          if (envelope.handshake) {
            // A provider's URL handshake, answered by the relay: no webhook for the target.
            out.line(handshakeLine(envelope));
            if (socket.readyState === WebSocket.OPEN) {
              socket.send(JSON.stringify({ type: "ack", id: envelope.id, status: null }));
            }
          } else if (
            (!options.endpoints.length || options.endpoints.includes(envelope.endpoint)) &&
            (!wanted || wanted(envelope.eventType ?? null))
          ) {
            const destination = route(envelope.eventType ?? null);
            if (destination === null) {
              totals.skipped++;
              out.line(skippedLine(envelope));
              if (socket.readyState === WebSocket.OPEN) {
                socket.send(JSON.stringify({ type: "ack", id: envelope.id, status: null }));
              }
            } else {
              const result = await deliver(
                envelope,
                { ...options, target: destination.target },
                signal,
              );
              if (result.status === null) totals.failed++;
              else if (result.status >= 400) totals.rejected++;
              else totals.forwarded++;
              const via = options.routes.length ? destination.pattern : undefined;
              out.line(eventLine(envelope, result, new Date(), via));
              reportBack(socket, envelope, result);
            }
          }
          await writeState(options.stateFile, options.url, envelope.id);
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
      const parsed = webhookEnvelopeSchema.safeParse(json);
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
