/**
 * The Server-Sent Events transport: one stream per client, frames shared across clients.
 *
 * A large event's frame is not held: it is produced piece by piece from the log as the client
 * reads (the stream pulls), and whatever is sent meanwhile waits behind it so frames never
 * interleave. The backlog counts only bytes held in memory, so a client reading a 25 MiB frame
 * at a healthy pace is not taken for a slow one, while one that stops reading still is.
 */
import { CLOSE, type Connections, queuedLargeBytes, type Sink } from "./connections.ts";
import type { LargeEvent } from "../log/envelope_json.ts";
import type { Filter } from "./filters.ts";
import { log } from "../observe/log.ts";

const encoder = new TextEncoder();
const HEARTBEAT = encoder.encode(": heartbeat\n\n");
/**
 * A large frame the client has not read any of for this long closes the stream as too slow
 * (looked at on each heartbeat): while a frame is in progress nothing else reaches the client,
 * so the backlog cannot tell.
 */
const FRAME_STALL_MS = 10_000;

/** What a waiting item counts for in the backlog: its bytes, or a large event's weight. */
function weight(item: Uint8Array | LargeEvent): number {
  return item instanceof Uint8Array ? item.byteLength : queuedLargeBytes(item);
}

/**
 * Opens an SSE stream for an authenticated user, catching up after `after` when given, with
 * only the events `filter` lets through (all when null).
 */
export function openSseStream(
  connections: Connections,
  options: {
    userId: string;
    credential: string;
    after: string | null;
    retryMs: number;
    filter?: Filter | null;
    /** Joins a consumer group (groups.ts); `after` is then ignored. */
    group?: { name: string; ackTimeoutMs: number } | null;
  },
): Response {
  let close: (() => void) | null = null;
  let pull: (() => Promise<void>) | null = null;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      let ended = false;
      /** Frames waiting behind a large one, in order; null when none is being streamed. */
      let waiting: (Uint8Array | LargeEvent)[] | null = null;
      let waitingBytes = 0;
      /** The large frame being streamed: its remaining pieces, and when the last one went. */
      let pieces: AsyncGenerator<string> | null = null;
      let pieceAt = 0;
      let producing: Promise<void> | null = null;

      const enqueue = (bytes: Uint8Array) => {
        if (!ended) controller.enqueue(bytes);
      };
      const put = (item: Uint8Array | LargeEvent) => {
        if (ended) return;
        if (waiting === null && item instanceof Uint8Array) return enqueue(item);
        (waiting ??= []).push(item);
        waitingBytes += weight(item);
        // Nothing queued for the client: start now rather than on its next read.
        if ((controller.desiredSize ?? 0) >= 0) produce();
      };
      /** Puts the next piece of what waits in the stream's queue. */
      const produceOne = async () => {
        while (!ended && waiting !== null) {
          if (pieces) {
            const next = await pieces.next();
            if (ended) return;
            pieceAt = Date.now();
            if (!next.done) return enqueue(encoder.encode(next.value));
            pieces = null;
            return enqueue(encoder.encode("\n\n"));
          }
          const item = waiting.shift();
          if (item === undefined) {
            waiting = null;
            return;
          }
          waitingBytes -= weight(item);
          if (item instanceof Uint8Array) return enqueue(item);
          pieces = connections.envelopePieces(item);
          pieceAt = Date.now();
          return enqueue(encoder.encode(`id: ${item.id}\ndata: `));
        }
      };
      const produce = () =>
        producing ??= produceOne().catch((error) => {
          // The event's body could not be read (its chunks expired or the store failed): end
          // the stream mid-frame, which EventSource drops; the client resumes by its last id.
          log.error("streaming a large event failed", error);
          connections.close(connection, {
            code: 1011,
            reason: "Could not read an event; reconnect to resume",
          });
        }).finally(() => {
          producing = null;
        });
      pull = async () => {
        // A production started by `put` may still be settling: this read needs its own piece.
        while (producing) await producing;
        if (waiting !== null && (controller.desiredSize ?? 0) >= 0) await produce();
      };

      const sink: Sink = {
        send(event) {
          put(event.large ? event : event.sse());
        },
        backlog() {
          // High-water mark 0: minus desiredSize is what the stream holds unread.
          return -(controller.desiredSize ?? 0) + waitingBytes;
        },
        heartbeat() {
          // Behind a large frame, data is flowing anyway; never inside one.
          if (waiting === null) return enqueue(HEARTBEAT);
          if (pieces !== null && Date.now() - pieceAt > FRAME_STALL_MS) {
            connections.close(connection, CLOSE.slow);
          }
        },
        notice(name, json) {
          // Named, so the docs' `onmessage` handlers see only webhooks.
          put(encoder.encode(`event: ${name}\ndata: ${json}\n\n`));
        },
        close(_code, reason) {
          if (ended) return;
          // Mid-frame, a close event would land inside the frame: just end the stream.
          if (pieces === null) {
            enqueue(encoder.encode(`event: close\ndata: ${JSON.stringify({ reason })}\n\n`));
          }
          ended = true;
          pieces?.return(undefined).catch(() => {});
          pieces = null;
          waiting = null;
          try {
            controller.close();
          } catch {
            // The client had already gone: the stream was cancelled first.
          }
        },
      };
      enqueue(encoder.encode(`retry: ${options.retryMs}\n: connected\n\n`));
      const connection = connections.open({
        userId: options.userId,
        credential: options.credential,
        transport: "sse",
        sink,
        after: options.after ?? undefined,
        filter: options.filter,
        group: options.group,
      });
      if (options.group) {
        // SSE has no back channel: the member acks over HTTP, naming this connection. Sent
        // before any event (those are claimed in KV first), and only to group members.
        sink.notice(
          "group",
          JSON.stringify({ type: "group", group: options.group.name, connectionId: connection.id }),
        );
      }
      close = () => {
        ended = true;
        pieces?.return(undefined).catch(() => {});
        pieces = null;
        waiting = null;
        connections.remove(connection);
      };
    },
    pull() {
      return pull?.();
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
