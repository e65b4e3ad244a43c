/**
 * How a pack of events sits in its KV value: deflated when that pays, else the array itself.
 *
 * Why not always the array, which KV serializes: Deno KV keeps its rows in a SQLite table
 * declared `WITHOUT ROWID`, where a new key is compared with whole neighbouring rows, read in
 * full from their overflow pages. Every 20–60 KB pack written made SQLite read two or three
 * neighbours whole, twice (bench/RESULTS.md, "Issue 15, fifth pass"). Webhook JSON in a pack
 * repeats its field names and headers, so deflate at its fastest level shrinks it several times,
 * and what KV stores, reads back and bills shrinks with it.
 *
 * A value is either:
 * - the `StoredEvent[]` itself, which KV serializes: packs under 8 KiB, packs deflate does not
 *   shrink by a tenth or cannot fit in PACK_BYTES (text that is 3 bytes a character in UTF-8 but
 *   counted at 2 by `packedSize`), packs that failed to encode, and every pack written before
 *   this file; or
 * - a `Uint8Array`: byte 0 = 1, then the raw deflate (RFC 1951) of: the byte length of the
 *   metadata (u32, big-endian), the metadata (UTF-8 JSON: the events with `body` replaced by
 *   `bodyBytes`, its length or null), then the bodies one after another.
 *
 * No V8 serializer: node:v8's holds native memory until V8 collects it (RSS rose 8 MiB/s under
 * ingest), and KV's own is not public. The array stays the fallback, so a pack never needs more
 * room than KV's serialization of it, which PACK_BYTES already bounds.
 *
 * node:zlib loads Deno's Node layer (~35 ms), so it loads at the first pack deflated or read
 * back: the commit of the first busy moment waits for it once; no page and no start does.
 */

import { log } from "../observe/log.ts";
import { onFirstUse } from "../runtime/first_use.ts";

/** What a pack holds: events and their inline bodies (events.ts's StoredEvent). */
interface PackedEvent {
  body: Uint8Array | null;
}

/** Bytes one pack of events may hold, under KV's 64 KiB value limit with room to spare. */
export const PACK_BYTES = 60_000;

/** The one binary layout so far. */
const DEFLATED_JSON = 1;
/**
 * Smaller packs stay arrays: at a few events a commit SQLite's neighbour reads are small and
 * the CPU is idle anyway, and a process that only ever writes them (a quiet account, a test)
 * never loads node:zlib, whose first import blocks the event loop for ~35 ms.
 */
const MIN_DEFLATE_BYTES = 8 * 1024;
/** Deflated values at most this share of the plain encoding; bigger ones are not worth it. */
const WORTH_DEFLATING = 0.9;
/** No pack inflates beyond this: packs are ≤ 60 KB, plus JSON's escaping of the metadata. */
const MAX_INFLATED_BYTES = 1024 * 1024;
/**
 * zlib's fastest level, an 8 KiB window and a small hash table (64 KiB of state, not 256):
 * events in a pack repeat each other's field names and headers a few KB apart, well inside the
 * window, and the output is 3–7 % larger than at zlib's default window and memory.
 */
const DEFLATE_OPTIONS = { level: 1, windowBits: 13, memLevel: 6 };
/** Any window up to zlib's largest, so packs deflated with other settings read too. */
const INFLATE_OPTIONS = { windowBits: 15, maxOutputLength: MAX_INFLATED_BYTES };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Node's Buffer as the plain Uint8Array it is (Node's typings and Deno's differ on it). */
function bytesOf(buffer: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** node:zlib, imported when a pack is first deflated or read back. */
const zlib = onFirstUse(() =>
  import("node:zlib").then((zlib) => ({
    deflate: (bytes: Uint8Array) => bytesOf(zlib.deflateRawSync(bytes, DEFLATE_OPTIONS)),
    inflate: (bytes: Uint8Array) => bytesOf(zlib.inflateRawSync(bytes, INFLATE_OPTIONS)),
  }))
);

/**
 * The KV value for a pack: deflated bytes when it holds 8 KiB or more and they save a tenth
 * and fit PACK_BYTES, else the events as they are. Never throws: the array is always a valid
 * value, and a commit shared by many senders must not fail on the encoding of one pack.
 */
export async function encodePack<T extends PackedEvent>(
  events: readonly T[],
): Promise<Uint8Array | readonly T[]> {
  try {
    const plain = plainPack(events);
    if (!plain) return events;
    const { deflate } = await zlib();
    const deflated = deflate(plain);
    const worth = deflated.byteLength <= plain.byteLength * WORTH_DEFLATING;
    if (!worth || 1 + deflated.byteLength > PACK_BYTES) return events;
    const value = new Uint8Array(1 + deflated.byteLength);
    value[0] = DEFLATED_JSON;
    value.set(deflated, 1);
    return value;
  } catch (error) {
    log.warn("an event pack could not be deflated; it is stored as the array", error);
    return events;
  }
}

/**
 * The bytes to deflate: metadata length (u32), metadata JSON, then the bodies in order; null
 * under MIN_DEFLATE_BYTES, known before any body is copied.
 */
function plainPack(events: readonly PackedEvent[]): Uint8Array | null {
  let bodyBytes = 0;
  const metadata = events.map(({ body, ...rest }) => {
    bodyBytes += body?.byteLength ?? 0;
    return { ...rest, bodyBytes: body ? body.byteLength : null };
  });
  const json = encoder.encode(JSON.stringify(metadata));
  if (4 + json.byteLength + bodyBytes < MIN_DEFLATE_BYTES) return null;
  const plain = new Uint8Array(4 + json.byteLength + bodyBytes);
  new DataView(plain.buffer).setUint32(0, json.byteLength);
  plain.set(json, 4);
  let offset = 4 + json.byteLength;
  for (const { body } of events) {
    if (!body) continue;
    plain.set(body, offset);
    offset += body.byteLength;
  }
  return plain;
}

/** The events of a pack's KV value, whichever form it has. */
export async function decodePack<T extends PackedEvent>(value: unknown): Promise<T[]> {
  if (Array.isArray(value)) return value as T[];
  if (!(value instanceof Uint8Array)) throw damaged("its value is neither an array nor bytes");
  if (value[0] !== DEFLATED_JSON) throw damaged(`unknown layout ${value[0] ?? "(empty)"}`);
  const { inflate } = await zlib();
  let plain: Uint8Array;
  let metadata: unknown;
  try {
    plain = inflate(value.subarray(1));
  } catch (error) {
    throw damaged(`it does not inflate (${error instanceof Error ? error.message : error})`);
  }
  const view = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
  const jsonBytes = plain.byteLength >= 4 ? view.getUint32(0) : Infinity;
  if (4 + jsonBytes > plain.byteLength) throw damaged("its metadata is cut short");
  try {
    metadata = JSON.parse(decoder.decode(plain.subarray(4, 4 + jsonBytes)));
  } catch {
    throw damaged("its metadata is not UTF-8 JSON");
  }
  if (!Array.isArray(metadata)) throw damaged("its metadata is not a list");
  let offset = 4 + jsonBytes;
  const events = metadata.map((entry: unknown) => {
    if (typeof entry !== "object" || entry === null) throw damaged("an event is not an object");
    const { bodyBytes, ...rest } = entry as { bodyBytes?: unknown };
    let body: Uint8Array | null = null;
    if (bodyBytes !== null) {
      if (!Number.isSafeInteger(bodyBytes) || (bodyBytes as number) < 0) {
        throw damaged("an event's body length is not a length");
      }
      const end = offset + (bodyBytes as number);
      if (end > plain.byteLength) throw damaged("a body is cut short");
      // Copied: one event kept (a slow client's backlog) must not keep the whole pack.
      body = plain.slice(offset, end);
      offset = end;
    }
    return { ...rest, body } as unknown as T;
  });
  if (offset !== plain.byteLength) throw damaged("bytes are left after the last body");
  return events;
}

/** A pack that cannot be read: only ever a fault of the store or of this file. */
function damaged(why: string): Error {
  return new Error(`Cannot read an event pack: ${why}`);
}
