/**
 * The event log: stored webhooks, the envelope clients receive, and reads for replay and history.
 *
 * The raw body is kept byte for byte. Bodies too large for one KV value (64 KiB) are split into
 * chunks written before the event itself, so the event becomes visible, complete, in one commit.
 */
import { eventBodyChunkKey, eventBodyPrefix, eventKey, eventsOfUserPrefix } from "./kv_keys.ts";

/** How a body was understood at ingest. */
export type BodyKind = "json" | "form" | "other";

/** An event as stored in KV. `body` is null when it was split into `chunks` pieces. */
export interface StoredEvent {
  id: string;
  userId: string;
  endpointId: string;
  endpoint: string;
  receivedAt: string;
  expiresAt: number;
  method: string;
  path: string;
  /** The query as JSON text: stored and delivered as is, never re-serialised per event. */
  queryJson: string;
  /** The request headers as JSON text (lowercase names), for the same reason. */
  headersJson: string;
  contentType: string | null;
  kind: BodyKind;
  size: number;
  body: Uint8Array | null;
  blobId: string | null;
  chunks: number;
}

/** A summary for history lists. */
export interface EventSummary {
  id: string;
  endpoint: string;
  receivedAt: string;
  method: string;
  path: string;
  contentType: string | null;
  size: number;
}

/** An event ready for delivery; its wire forms are built once and shared by every client. */
export interface LiveEvent {
  id: string;
  userId: string;
  /** The JSON envelope as sent over WebSocket and in SSE `data:`. */
  json: string;
  /** The SSE frame, encoded. */
  sse(): Uint8Array;
}

/** Bytes of one body chunk: below KV's 64 KiB value limit with room for the key. */
export const CHUNK_BYTES = 60_000;
/** Bodies up to this size are stored inside the event record. */
export const INLINE_BODY_BYTES = 48 * 1024;
/** Chunk writes per commit, under KV's 800 KiB per-commit limit. */
const CHUNKS_PER_COMMIT = 12;

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/** Decodes UTF-8 exactly (a BOM is kept), or returns null for bytes that are not UTF-8. */
export function decodeText(bytes: Uint8Array): string | null {
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

/** The media type of a Content-Type header, lowercased, without parameters. */
export function mediaType(contentType: string | null): string | null {
  if (!contentType) return null;
  return contentType.split(";", 1)[0].trim().toLowerCase() || null;
}

/** True for application/json and any +json type. */
export function isJsonType(type: string | null): boolean {
  return type === "application/json" || (type?.endsWith("+json") ?? false);
}

/** Parses a form body into fields; repeated names become arrays. */
export function parseForm(text: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of new URLSearchParams(text)) {
    const prior = out[name];
    out[name] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [
      prior,
      value,
    ];
  }
  return out;
}

/** The payload as JSON text, from the body text and its kind. */
function payloadJson(kind: BodyKind, text: string | null): string {
  if (text === null || text.trim() === "") return "null";
  if (kind === "json") {
    // Line breaks in valid JSON are whitespace between tokens (inside strings they must be
    // escaped), so folding them keeps the value and keeps the SSE `data:` field on one line.
    return text.includes("\n") || text.includes("\r") ? text.replace(/[\r\n]+/g, " ") : text;
  }
  if (kind === "form") return JSON.stringify(parseForm(text));
  return "null";
}

/** Builds the delivery envelope for a stored event and its full body (and its text, if known). */
export function toLiveEvent(
  event: StoredEvent,
  body: Uint8Array,
  text: string | null = decodeText(body),
): LiveEvent {
  const bodyField = text !== null
    ? `"body":${JSON.stringify(text)}`
    : `"bodyBase64":${JSON.stringify(body.toBase64())}`;
  const json =
    `{"type":"webhook","id":"${event.id}","endpoint":${
      JSON.stringify(event.endpoint)
    },"receivedAt":"${event.receivedAt}","method":${JSON.stringify(event.method)},"path":${
      JSON.stringify(event.path)
    },"query":${event.queryJson},"headers":${event.headersJson},` +
    `"contentType":${JSON.stringify(event.contentType)},"payload":${
      payloadJson(event.kind, text)
    },${bodyField}}`;
  let sse: Uint8Array | null = null;
  return {
    id: event.id,
    userId: event.userId,
    json,
    sse: () => sse ??= encoder.encode(`id: ${event.id}\ndata: ${json}\n\n`),
  };
}

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

/** The full body of a stored event, joining its chunks when it was split. */
export async function loadBody(kv: Deno.Kv, event: StoredEvent): Promise<Uint8Array> {
  if (event.body) return event.body;
  if (!event.blobId) return new Uint8Array();
  const out = new Uint8Array(event.size);
  let offset = 0;
  for await (
    const entry of kv.list<Uint8Array>({ prefix: eventBodyPrefix(event.userId, event.blobId) })
  ) {
    out.set(entry.value, offset);
    offset += entry.value.byteLength;
  }
  if (offset !== event.size) {
    throw new Error(`Cannot load event ${event.id}: body has ${offset} of ${event.size} bytes`);
  }
  return out;
}

/** Reads one retained event with its delivery envelope, or null. */
export async function getEvent(
  kv: Deno.Kv,
  options: { userId: string; id: string },
): Promise<LiveEvent | null> {
  const event = (await kv.get<StoredEvent>(eventKey(options.userId, options.id))).value;
  if (!event || event.expiresAt <= Date.now()) return null;
  return toLiveEvent(event, await loadBody(kv, event));
}

/**
 * Retained events oldest first, as envelopes: after the id `after` (exclusive) or from the id
 * `from` (inclusive), all retained ones when neither is given, up to `until` (inclusive).
 */
export async function* eventsAfter(
  kv: Deno.Kv,
  options: { userId: string; after?: string | null; from?: string; until?: string },
): AsyncGenerator<LiveEvent> {
  const prefix = eventsOfUserPrefix(options.userId);
  const start = options.after ? options.after + "\0" : options.from;
  const selector: Deno.KvListSelector = start
    ? { prefix, start: eventKey(options.userId, start) }
    : { prefix };
  const now = Date.now();
  for await (const entry of kv.list<StoredEvent>(selector, { batchSize: 200 })) {
    const event = entry.value;
    if (options.until && event.id > options.until) return;
    if (event.expiresAt <= now) continue;
    yield toLiveEvent(event, await loadBody(kv, event));
  }
}

/** A page of retained events, newest first, before the `cursor` id when given. */
export async function listEventSummaries(
  kv: Deno.Kv,
  options: { userId: string; cursor: string | null; limit: number },
): Promise<{ events: EventSummary[]; nextCursor: string | null }> {
  const prefix = eventsOfUserPrefix(options.userId);
  const selector: Deno.KvListSelector = options.cursor
    ? { prefix, end: eventKey(options.userId, options.cursor) }
    : { prefix };
  const now = Date.now();
  const events: EventSummary[] = [];
  for await (const entry of kv.list<StoredEvent>(selector, { reverse: true, batchSize: 100 })) {
    const e = entry.value;
    if (e.expiresAt <= now) break; // older ones expired too: ids sort by arrival
    events.push({
      id: e.id,
      endpoint: e.endpoint,
      receivedAt: e.receivedAt,
      method: e.method,
      path: e.path,
      contentType: e.contentType,
      size: e.size,
    });
    if (events.length === options.limit + 1) break;
  }
  const more = events.length > options.limit;
  if (more) events.pop();
  return { events, nextCursor: more ? events[events.length - 1].id : null };
}
