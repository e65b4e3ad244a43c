/**
 * The Server-Sent Events transport: one stream per client, frames shared across clients.
 *
 * A large event's frame is not held: it is produced piece by piece from the log as the client
 * reads (the stream pulls), and whatever is sent meanwhile waits behind it so frames never
 * interleave. The backlog counts only bytes held in memory, so a client reading a 25 MiB frame
 * at a healthy pace is not taken for a slow one, while one that stops reading still is.
 */
import {
  CLOSE,
  type Connection,
  type Connections,
  queuedLargeBytes,
  type Sink,
} from "./connections.ts";
import type { LargeEvent, LiveEvent } from "../log/envelope_json.ts";
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

/** The stream's queuing strategy: nothing is queued ahead of the client's reads. */
const STRATEGY: QueuingStrategy<Uint8Array> = {
  highWaterMark: 0,
  size: (chunk) => chunk.byteLength,
};
/** The response headers, the same for every stream. */
const HEADERS = {
  "Content-Type": "text/event-stream; charset=utf-8",
  "Cache-Control": "no-cache, no-transform",
  "X-Accel-Buffering": "no",
};

/**
 * One stream's underlying source and sink in one object: its methods live on the prototype, so
 * an idle stream costs no closures (memory per idle connection is a benchmark target).
 */
class SseSource implements Sink, UnderlyingDefaultSource<Uint8Array> {
  controller!: ReadableStreamDefaultController<Uint8Array>;
  connection!: Connection;
  ended = false;
  /** Frames waiting behind a large one, in order; null when none is being streamed. */
  waiting: (Uint8Array | LargeEvent)[] | null = null;
  waitingBytes = 0;
  /** The large frame being streamed: its remaining pieces, and when the last one went. */
  pieces: AsyncGenerator<string> | null = null;
  pieceAt = 0;
  producing: Promise<void> | null = null;

  constructor(readonly connections: Connections, readonly options: SseOptions) {}

  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.controller = controller;
    const options = this.options;
    this.enqueue(encoder.encode(`retry: ${options.retryMs}\n: connected\n\n`));
    const connection = this.connection = this.connections.open({
      userId: options.userId,
      credential: options.credential,
      transport: "sse",
      sink: this,
      after: options.after ?? undefined,
      filter: options.filter,
      group: options.group,
      seesUsage: options.seesUsage,
      stands: options.stands,
    });
    if (options.group) {
      // SSE has no back channel: the member acks over HTTP, naming this connection. Sent
      // before any event (those are claimed in KV first), and only to group members.
      this.notice(
        "group",
        JSON.stringify({ type: "group", group: options.group.name, connectionId: connection.id }),
      );
    }
  }

  async pull(): Promise<void> {
    // A production started by `put` may still be settling: this read needs its own piece.
    while (this.producing) await this.producing;
    if (this.waiting !== null && (this.controller.desiredSize ?? 0) >= 0) await this.produce();
  }

  cancel(): void {
    this.ended = true;
    this.pieces?.return(undefined).catch(() => {});
    this.pieces = null;
    this.waiting = null;
    if (this.connection) this.connections.remove(this.connection);
  }

  enqueue(bytes: Uint8Array): void {
    if (!this.ended) this.controller.enqueue(bytes);
  }

  put(item: Uint8Array | LargeEvent): void {
    if (this.ended) return;
    if (this.waiting === null && item instanceof Uint8Array) return this.enqueue(item);
    (this.waiting ??= []).push(item);
    this.waitingBytes += weight(item);
    // Nothing queued for the client: start now rather than on its next read.
    if ((this.controller.desiredSize ?? 0) >= 0) this.produce();
  }

  /** Puts the next piece of what waits in the stream's queue. */
  async produceOne(): Promise<void> {
    while (!this.ended && this.waiting !== null) {
      if (this.pieces) {
        const next = await this.pieces.next();
        if (this.ended) return;
        this.pieceAt = Date.now();
        if (!next.done) return this.enqueue(encoder.encode(next.value));
        this.pieces = null;
        return this.enqueue(encoder.encode("\n\n"));
      }
      const item: Uint8Array | LargeEvent | undefined = this.waiting.shift();
      if (item === undefined) {
        this.waiting = null;
        return;
      }
      this.waitingBytes -= weight(item);
      if (item instanceof Uint8Array) return this.enqueue(item);
      this.pieces = this.connections.envelopePieces(item);
      this.pieceAt = Date.now();
      return this.enqueue(encoder.encode(`id: ${item.id}\ndata: `));
    }
  }

  produce(): Promise<void> {
    return this.producing ??= this.produceOne().catch((error) => {
      // The event's body could not be read (its chunks expired or the store failed): end
      // the stream mid-frame, which EventSource drops; the client resumes by its last id.
      log.error("streaming a large event failed", error);
      this.connections.close(this.connection, {
        code: 1011,
        reason: "Could not read an event; reconnect to resume",
      });
    }).finally(() => {
      this.producing = null;
    });
  }

  send(event: LiveEvent): void {
    this.put(event.large ? event : event.sse());
  }

  backlog(): number {
    // High-water mark 0: minus desiredSize is what the stream holds unread.
    return -(this.controller.desiredSize ?? 0) + this.waitingBytes;
  }

  heartbeat(): void {
    // Behind a large frame, data is flowing anyway; never inside one.
    if (this.waiting === null) return this.enqueue(HEARTBEAT);
    if (this.pieces !== null && Date.now() - this.pieceAt > FRAME_STALL_MS) {
      this.connections.close(this.connection, CLOSE.slow);
    }
  }

  notice(name: string, json: string): void {
    // Named, so the docs' `onmessage` handlers see only webhooks.
    this.put(encoder.encode(`event: ${name}\ndata: ${json}\n\n`));
  }

  close(_code: number, reason: string): void {
    if (this.ended) return;
    // Mid-frame, a close event would land inside the frame: just end the stream.
    if (this.pieces === null) {
      this.enqueue(encoder.encode(`event: close\ndata: ${JSON.stringify({ reason })}\n\n`));
    }
    this.ended = true;
    this.pieces?.return(undefined).catch(() => {});
    this.pieces = null;
    this.waiting = null;
    try {
      this.controller.close();
    } catch {
      // The client had already gone: the stream was cancelled first.
    }
  }
}

/** What opening a stream takes (see openSseStream). */
interface SseOptions {
  userId: string;
  credential: string;
  after: string | null;
  retryMs: number;
  filter?: Filter | null;
  /** Joins a consumer group (groups.ts); `after` is then ignored. */
  group?: { name: string; ackTimeoutMs: number } | null;
  /** Whether the credential still stands, once registered (see Connections.open). */
  stands?: () => Promise<boolean>;
  /** Whether the credential may see the account's usage: quota notices. */
  seesUsage?: boolean;
}

/**
 * The answer to HEAD: a stream's headers and no stream. Deno drops a HEAD answer's body without
 * cancelling it, so a stream opened for one would stay registered with no client behind it.
 */
export function sseHeadAnswer(): Response {
  return new Response(null, { headers: HEADERS });
}

/**
 * Opens an SSE stream for an authenticated user, catching up after `after` when given, with
 * only the events `filter` lets through (all when null).
 */
export function openSseStream(connections: Connections, options: SseOptions): Response {
  const stream = new ReadableStream<Uint8Array>(new SseSource(connections, options), STRATEGY);
  return new Response(stream, { headers: HEADERS });
}
