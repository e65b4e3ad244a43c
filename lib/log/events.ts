/**
 * The event log: stored webhooks in packs, their body chunks, and reads for catch-up and history.
 * The envelope clients receive is built in envelope_json.ts.
 *
 * The raw body is kept byte for byte. Bodies too large for one KV value (64 KiB) are split into
 * chunks written before the event itself, so the event becomes visible, complete, in one commit.
 */
import {
  eventBodyChunkKey,
  eventBodyPrefix,
  eventKey,
  eventsOfUserPrefix,
} from "../store/kv_keys.ts";
import type { EventSummary } from "../shared/wire.ts";
import {
  type EnvelopeSource,
  type EventFacts,
  eventFacts,
  type LiveEvent,
  toLargeEvent,
  toLiveEvent,
} from "./envelope_json.ts";
import { decodePack, PACK_BYTES } from "./pack_codec.ts";

/**
 * An event as stored in KV: what the envelope is built from, plus where its body lives. `body`
 * is null when it was split into `chunks` pieces.
 */
export interface StoredEvent extends EnvelopeSource {
  endpointId: string;
  expiresAt: number;
  size: number;
  body: Uint8Array | null;
  blobId: string | null;
  chunks: number;
  /**
   * Set when the body was streamed into chunks as it arrived (over STREAM_BODY_BYTES): it is
   * never held whole, and clients get its envelope in pieces read from the chunks. `utf8` says
   * whether the envelope carries it as `body` (text) or `bodyBase64`.
   */
  large?: LargeBodyFacts;
}

/**
 * What ingest learnt of a large body on its way in. For UTF-8 text, its length in characters,
 * as a JSON string (escaped), and whether any character is beyond Latin-1 (V8 then keeps the
 * text at two bytes a character): what building its envelope will take, known before it is built.
 */
export interface LargeBodyFacts {
  utf8: boolean;
  chars?: number;
  escapedChars?: number;
  wide?: boolean;
}

/** Bytes of one body chunk: below KV's 64 KiB value limit with room for the key. */
export const CHUNK_BYTES = 60_000;
/** Bodies up to this size are stored inside the event record. */
export const INLINE_BODY_BYTES = 48 * 1024;
/** Chunk writes per commit, under KV's 800 KiB per-commit limit. */
const CHUNKS_PER_COMMIT = 12;

/** Writes a large body's chunks ahead of its event; they expire with the retention window. */
export async function stageBody(
  kv: Deno.Kv,
  options: { userId: string; body: Uint8Array; expireIn: number },
): Promise<{ blobId: string; chunks: number }> {
  const blobId = crypto.randomUUID();
  const chunks = Math.ceil(options.body.byteLength / CHUNK_BYTES);
  for (let first = 0; first < chunks; first += CHUNKS_PER_COMMIT) {
    const op = kv.atomic();
    for (let n = first; n < Math.min(chunks, first + CHUNKS_PER_COMMIT); n++) {
      const part = options.body.subarray(n * CHUNK_BYTES, (n + 1) * CHUNK_BYTES);
      op.set(eventBodyChunkKey(options.userId, blobId, n), part, { expireIn: options.expireIn });
    }
    await op.commit();
  }
  return { blobId, chunks };
}

/** Deletes staged chunks of a body whose event was never committed. */
export async function discardBody(
  kv: Deno.Kv,
  options: { userId: string; blobId: string; chunks: number },
): Promise<void> {
  for (let first = 0; first < options.chunks; first += CHUNKS_PER_COMMIT) {
    const op = kv.atomic();
    for (let n = first; n < Math.min(options.chunks, first + CHUNKS_PER_COMMIT); n++) {
      op.delete(eventBodyChunkKey(options.userId, options.blobId, n));
    }
    await op.commit();
  }
}

/** Chunks one streamed body commits at a time: what a sender holds of memory while streaming. */
const STREAM_CHUNKS_PER_COMMIT = 4;

/** A body being written into KV chunks as it arrives (createBodyStager). */
export interface BodyStager {
  /** Bytes the stager may hold in memory at most (its staging buffer). */
  readonly capacity: number;
  /** Bytes taken so far. */
  readonly size: number;
  /**
   * Takes the next piece of the body (copied: the caller may reuse it once this settles). The
   * promise settles once any chunks it completed are committed, so awaiting it slows a fast
   * sender to the store's pace.
   */
  write(piece: Uint8Array): Promise<void>;
  /** Commits what is left; the body's chunks, to be named by its event. */
  finish(): Promise<{ blobId: string; chunks: number; size: number }>;
  /** Deletes every chunk written so far (after any commit in flight): the body was abandoned. */
  discard(): Promise<void>;
}

/**
 * Stages a body of unknown length into chunks as it arrives (see BodyStager); they expire with
 * the retention window, and the event naming them is committed after the last one.
 */
export function createBodyStager(
  kv: Deno.Kv,
  options: { userId: string; expireIn: number },
): BodyStager {
  const blobId = crypto.randomUUID();
  const capacity = CHUNK_BYTES * STREAM_CHUNKS_PER_COMMIT;
  const buffer = new Uint8Array(capacity);
  let filled = 0;
  let size = 0;
  /** Chunks committed (or being committed) so far. */
  let chunks = 0;
  let pending: Promise<void> = Promise.resolve();
  let discarded = false;
  const flush = async () => {
    if (filled === 0) return;
    // A discard may have come while a write waited on the previous commit: write no more.
    if (discarded) throw new Error("Cannot stage: the body was discarded");
    const op = kv.atomic();
    const count = Math.ceil(filled / CHUNK_BYTES);
    for (let n = 0; n < count; n++) {
      const part = buffer.subarray(n * CHUNK_BYTES, Math.min(filled, (n + 1) * CHUNK_BYTES));
      op.set(eventBodyChunkKey(options.userId, blobId, chunks + n), part, {
        expireIn: options.expireIn,
      });
    }
    // Counted before the commit: a discard racing it deletes these keys too, written or not.
    chunks += count;
    pending = op.commit().then(() => {});
    await pending;
    filled = 0;
  };
  return {
    capacity,
    get size() {
      return size;
    },
    async write(piece) {
      if (discarded) throw new Error("Cannot stage: the body was discarded");
      let offset = 0;
      while (offset < piece.byteLength) {
        const take = Math.min(capacity - filled, piece.byteLength - offset);
        buffer.set(piece.subarray(offset, offset + take), filled);
        filled += take;
        offset += take;
        size += take;
        if (filled === capacity) await flush();
      }
    },
    async finish() {
      await flush();
      return { blobId, chunks, size };
    },
    async discard() {
      discarded = true;
      await pending.catch(() => {});
      await discardBody(kv, { userId: options.userId, blobId, chunks });
    },
  };
}

/**
 * A staged body's chunks in order, a few in memory at a time. Given the body's `size`, they are
 * checked to add up to it: a chunk gone (expired, deleted) fails the read, naming the event.
 */
export async function* readStagedBody(
  kv: Deno.Kv,
  options: { userId: string; blobId: string; size?: number; id?: string },
): AsyncGenerator<Uint8Array> {
  const prefix = eventBodyPrefix(options.userId, options.blobId);
  let seen = 0;
  for await (const entry of kv.list<Uint8Array>({ prefix }, { batchSize: 4 })) {
    seen += entry.value.byteLength;
    yield entry.value;
  }
  if (options.size !== undefined && seen !== options.size) {
    throw new Error(
      `Cannot read event ${
        options.id ?? options.blobId
      }: its body has ${seen} of ${options.size} bytes`,
    );
  }
}

/** The full body of a stored event, joining its chunks when it was split. */
export async function loadBody(kv: Deno.Kv, event: StoredEvent): Promise<Uint8Array> {
  if (event.body) return event.body;
  if (!event.blobId) return new Uint8Array();
  const out = new Uint8Array(event.size);
  let offset = 0;
  const { id, userId, blobId, size } = event;
  for await (const chunk of readStagedBody(kv, { id, userId, blobId, size })) {
    // More than its size: the read ends with the error naming the event, not a RangeError here.
    if (offset + chunk.byteLength <= size) out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Any UTF-16 code unit beyond Latin-1: V8 then stores the whole string with two bytes each. */
const BEYOND_LATIN1 = /[\u0100-\uffff]/;

/**
 * Bytes a string takes in a KV value: V8's serializer writes one byte per character when every
 * character is Latin-1, else two per UTF-16 code unit.
 */
export function storedBytes(text: string): number {
  return BEYOND_LATIN1.test(text) ? 2 * text.length : text.length;
}

/** Bytes a webhook's path, headers and query take as stored: what MAX_METADATA_BYTES bounds. */
export function metadataBytes(
  event: { path: string; headersJson: string; queryJson: string },
): number {
  return storedBytes(event.path) + storedBytes(event.headersJson) + storedBytes(event.queryJson);
}

/** Field names, ids, dates and numbers of one stored event: 385 bytes measured, with room. */
const EVENT_OVERHEAD_BYTES = 600;

/**
 * The most bytes an event can add to a pack: every string it carries counted at two bytes per
 * code unit, the most V8's serializer writes (a string held two-byte internally is written so
 * even when its text is Latin-1), so a pack within PACK_BYTES always fits a KV value.
 */
export function packedSize(
  event: {
    body: Uint8Array | null;
    headersJson: string;
    queryJson: string;
    path: string;
    method: string;
    contentType: string | null;
    eventType?: string | null;
  },
): number {
  const units = event.headersJson.length + event.queryJson.length + event.path.length +
    event.method.length + (event.contentType?.length ?? 0) + (event.eventType?.length ?? 0);
  return EVENT_OVERHEAD_BYTES + (event.body?.byteLength ?? 0) + 2 * units;
}

/**
 * Splits consecutive events into packs of at most PACK_BYTES. The log stores a pack per value
 * under its first id: one KV row per commit instead of one per event halves the commit.
 */
export function toPacks(events: StoredEvent[]): StoredEvent[][] {
  const packs: StoredEvent[][] = [];
  let bytes = Infinity;
  for (const event of events) {
    const size = packedSize(event);
    if (bytes + size > PACK_BYTES) {
      packs.push([]);
      bytes = 0;
    }
    packs[packs.length - 1].push(event);
    bytes += size;
  }
  return packs;
}

/** The key of the pack holding `id` (the last pack starting at or before it), or null. */
async function packKeyAtOrBefore(
  kv: Deno.Kv,
  options: { userId: string; id: string },
): Promise<Deno.KvKey | null> {
  const prefix = eventsOfUserPrefix(options.userId);
  const end = eventKey(options.userId, options.id + "\0");
  for await (const entry of kv.list({ prefix, end }, { reverse: true, limit: 1 })) {
    return entry.key;
  }
  return null;
}

/** Who may see an event (a token's endpoint limit); absent: anyone of its account. */
export type EventMatch = (event: EventFacts) => boolean;

/** One retained event's stored record, or null (also when `match` refuses it, as if absent). */
async function findStored(
  kv: Deno.Kv,
  options: { userId: string; id: string; match?: EventMatch },
): Promise<StoredEvent | null> {
  const key = await packKeyAtOrBefore(kv, options);
  const value = key ? (await kv.get(key)).value : null;
  const pack = value === null ? null : await decodePack<StoredEvent>(value);
  const event = pack?.find((e) => e.id === options.id);
  if (!event || event.expiresAt <= Date.now()) return null;
  if (options.match && !options.match(eventFacts(event))) return null;
  return event;
}

/** Whether an event is retained (and, given `match`, one it lets through). */
export async function hasEvent(
  kv: Deno.Kv,
  options: { userId: string; id: string; match?: EventMatch },
): Promise<boolean> {
  return (await findStored(kv, options)) !== null;
}

/** Reads one retained event with its delivery envelope, or null. */
export async function getEvent(
  kv: Deno.Kv,
  options: { userId: string; id: string; match?: EventMatch },
): Promise<LiveEvent | null> {
  const event = await findStored(kv, options);
  return event ? await toDelivery(kv, event) : null;
}

/** A stored event as it is delivered: whole, or a large one by reference to its chunks. */
async function toDelivery(kv: Deno.Kv, event: StoredEvent): Promise<LiveEvent> {
  if (event.large) return toLargeEvent(event, event.large);
  return toLiveEvent(event, await loadBody(kv, event));
}

/**
 * One retained event's exact body, its size and content type, or null (for the download route):
 * in memory, or streamed from its chunks when it is large.
 */
export async function getEventBody(
  kv: Deno.Kv,
  options: { userId: string; id: string; match?: EventMatch },
): Promise<
  {
    body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>;
    size: number;
    contentType: string | null;
  } | null
> {
  const event = await findStored(kv, options);
  if (!event) return null;
  const { size, contentType } = event;
  if (event.large && event.blobId) {
    const chunks = readStagedBody(kv, {
      id: event.id,
      userId: event.userId,
      blobId: event.blobId,
      size,
    });
    return { body: ReadableStream.from(chunks), size, contentType };
  }
  // KV values and the joined chunks are both backed by a plain ArrayBuffer, never a shared one.
  const body = await loadBody(kv, event) as Uint8Array<ArrayBuffer>;
  return { body, size, contentType };
}

/**
 * Retained events oldest first, as envelopes: after the id `after` (exclusive) or from the id
 * `from` (inclusive), all retained ones when neither is given, up to `until` (inclusive).
 * `batchSize` packs are read at a time; a body is loaded only when its event is reached, and
 * only when `match` (a subscription's filter, asked anew for each event) takes it.
 */
export async function* eventsAfter(
  kv: Deno.Kv,
  options: {
    userId: string;
    after?: string | null;
    from?: string;
    until?: string;
    batchSize?: number;
    /** Also given the id, for readers that decide per event (consumer groups). */
    match?: (event: EventFacts, id: string) => boolean;
    /** Awaited before each pack is read further, with its stored size: a reader's budget. */
    pace?: (bytes: number) => Promise<void> | void;
  },
): AsyncGenerator<LiveEvent> {
  const prefix = eventsOfUserPrefix(options.userId);
  const boundary = options.after ?? options.from ?? null;
  const startKey = boundary
    ? await packKeyAtOrBefore(kv, { userId: options.userId, id: boundary })
    : null;
  const selector: Deno.KvListSelector = startKey ? { prefix, start: startKey } : { prefix };
  const now = Date.now();
  const batchSize = options.batchSize ?? 50;
  for await (const entry of kv.list(selector, { batchSize })) {
    if (options.pace) await options.pace(storedPackBytes(entry.value));
    for (const event of await decodePack<StoredEvent>(entry.value)) {
      if (options.after && event.id <= options.after) continue;
      if (options.from && event.id < options.from) continue;
      if (options.until && event.id > options.until) return;
      if (event.expiresAt <= now) continue;
      if (options.match && !options.match(eventFacts(event), event.id)) continue;
      if (options.pace && event.body === null && event.blobId) {
        // Its body is read outside the pack: here (kept in chunks), or by each send of a large
        // event, twice for JSON (payload and body). Uncharged, catch-ups of large events read
        // ten times their account's rate.
        const large = event.large;
        await options.pace(event.size * (large?.utf8 && event.kind === "json" ? 2 : 1));
      }
      yield await toDelivery(kv, event);
    }
  }
}

/** About what a pack takes in KV: its bytes, or for an array its bodies and some metadata. */
function storedPackBytes(value: unknown): number {
  if (value instanceof Uint8Array) return value.byteLength;
  if (!Array.isArray(value)) return 0;
  let bytes = 0;
  for (const event of value as StoredEvent[]) bytes += 512 + (event.body?.byteLength ?? 0);
  return bytes;
}

/**
 * A page of retained events, newest first, before the `cursor` id when given; only those
 * `match` lets through, when given.
 */
export async function listEventSummaries(
  kv: Deno.Kv,
  options: { userId: string; cursor: string | null; limit: number; match?: EventMatch },
): Promise<{ events: EventSummary[]; nextCursor: string | null }> {
  const prefix = eventsOfUserPrefix(options.userId);
  const selector: Deno.KvListSelector = options.cursor
    ? { prefix, end: eventKey(options.userId, options.cursor + "\0") }
    : { prefix };
  const now = Date.now();
  const events: EventSummary[] = [];
  packs: for await (
    const entry of kv.list(selector, { reverse: true, batchSize: 20 })
  ) {
    const pack = await decodePack<StoredEvent>(entry.value);
    for (let i = pack.length - 1; i >= 0; i--) {
      const e = pack[i];
      if (options.cursor && e.id >= options.cursor) continue;
      if (e.expiresAt <= now) break packs; // older ones expired too: ids sort by arrival
      if (options.match && !options.match(eventFacts(e))) continue;
      events.push({
        id: e.id,
        endpoint: e.endpoint,
        receivedAt: e.receivedAt,
        method: e.method,
        path: e.path,
        contentType: e.contentType,
        size: e.size,
        eventType: e.eventType ?? null,
        ...(e.verified ? { verified: e.verified } : {}),
        ...(e.handshake ? { handshake: true } : {}),
      });
      if (events.length === options.limit + 1) break packs;
    }
  }
  const more = events.length > options.limit;
  if (more) events.pop();
  return { events, nextCursor: more ? events[events.length - 1].id : null };
}
