/** The Server-Sent Events transport: one stream per client, frames shared across clients. */
import type { Connections, Sink } from "./connections.ts";

const encoder = new TextEncoder();
const HEARTBEAT = encoder.encode(": heartbeat\n\n");

/** Opens an SSE stream for an authenticated user, catching up after `after` when given. */
export function openSseStream(
  connections: Connections,
  options: {
    userId: string;
    credential: string;
    after: string | null;
    retryMs: number;
  },
): Response {
  let close: (() => void) | null = null;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      let ended = false;
      const enqueue = (bytes: Uint8Array) => {
        if (!ended) controller.enqueue(bytes);
      };
      const sink: Sink = {
        send(event) {
          enqueue(event.sse());
        },
        backlog() {
          return -(controller.desiredSize ?? 0); // high-water mark 0: minus the queued bytes
        },
        heartbeat() {
          enqueue(HEARTBEAT);
        },
        notice(name, json) {
          // Named, so the docs' `onmessage` handlers see only webhooks.
          enqueue(encoder.encode(`event: ${name}\ndata: ${json}\n\n`));
        },
        close(_code, reason) {
          if (ended) return;
          enqueue(encoder.encode(`event: close\ndata: ${JSON.stringify({ reason })}\n\n`));
          ended = true;
          controller.close();
        },
      };
      enqueue(encoder.encode(`retry: ${options.retryMs}\n: connected\n\n`));
      const connection = connections.open({
        userId: options.userId,
        credential: options.credential,
        transport: "sse",
        sink,
        after: options.after ?? undefined,
      });
      close = () => {
        ended = true;
        connections.remove(connection);
      };
    },
    cancel() {
      close?.();
    },
  }, { highWaterMark: 0, size: (chunk) => chunk.byteLength });
  return new Response(stream, {
    headers: {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache, no-transform",
      "X-Accel-Buffering": "no",
    },
  });
}
