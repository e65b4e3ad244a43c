/**
 * A large event's envelope, streamed: the same JSON envelope_json.ts builds whole, produced in
 * pieces from the body's chunks in KV, so a 25 MiB body is never held in memory. Each send reads
 * the chunks again (twice for JSON: once for the payload, once for the body); KV reads are cheap
 * next to holding tens of MiB per client.
 */
import { readStagedBody } from "./events.ts";
import { foldLines, type LargeEvent, type LiveEvent } from "./envelope_json.ts";

/** The body as text pieces: a character split between chunks is decoded whole. */
async function* textPieces(kv: Deno.Kv, event: LargeEvent): AsyncGenerator<string> {
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  for await (const chunk of readStagedBody(kv, bodyOf(event))) {
    const piece = decoder.decode(chunk, { stream: true });
    if (piece) yield piece;
  }
  const rest = decoder.decode();
  if (rest) yield rest;
}

/** The body as base64 pieces: bytes are carried over so each piece encodes whole triples. */
async function* base64Pieces(kv: Deno.Kv, event: LargeEvent): AsyncGenerator<string> {
  let carry = new Uint8Array(0);
  for await (const chunk of readStagedBody(kv, bodyOf(event))) {
    const bytes = carry.byteLength === 0 ? chunk : concat(carry, chunk);
    const whole = bytes.byteLength - (bytes.byteLength % 3);
    if (whole > 0) yield bytes.subarray(0, whole).toBase64();
    carry = bytes.slice(whole);
  }
  if (carry.byteLength > 0) yield carry.toBase64();
}

/**
 * The envelope of a large event in pieces whose concatenation is exactly the JSON text
 * toLiveEvent would build for the same event: head, payload, body field, tail.
 */
export async function* envelopePieces(kv: Deno.Kv, event: LargeEvent): AsyncGenerator<string> {
  const { head, tail, kind, utf8 } = event.large;
  yield head;
  if (kind === "json" && utf8) {
    for await (const piece of textPieces(kv, event)) yield foldLines(piece);
  } else {
    // A form this large is not parsed into a payload: its fields are in `body`.
    yield "null";
  }
  if (utf8) {
    yield ',"body":"';
    // Each piece is whole characters, so its JSON string form is the piece's part of the whole.
    for await (const piece of textPieces(kv, event)) yield JSON.stringify(piece).slice(1, -1);
  } else {
    yield ',"bodyBase64":"';
    yield* base64Pieces(kv, event);
  }
  yield '"' + tail;
}

/** The whole envelope as one string, a large event's built from its chunks. */
export async function envelopeText(kv: Deno.Kv, event: LiveEvent): Promise<string> {
  if (!event.large) return event.json;
  const pieces: string[] = [];
  for await (const piece of envelopePieces(kv, event)) pieces.push(piece);
  return pieces.join("");
}

/** The envelope as a response body: the shared text, or a large one streamed as it is read. */
export function envelopeBody(kv: Deno.Kv, event: LiveEvent): string | ReadableStream<Uint8Array> {
  if (!event.large) return event.json;
  const pieces = envelopePieces(kv, event);
  return ReadableStream.from(pieces).pipeThrough(new TextEncoderStream());
}

/**
 * At most how many characters a large envelope takes, before it is built: exact but for the
 * payload's folded line breaks when ingest measured the text; else assumed at its worst (every
 * byte a six-character escape).
 */
export function envelopeChars(event: LargeEvent): number {
  const { head, tail, kind, utf8, size, text } = event.large;
  const payload = kind === "json" && utf8 ? (text?.chars ?? size) : 4;
  const body = utf8 ? (text?.escapedChars ?? 6 * size) : Math.ceil(size / 3) * 4;
  return head.length + tail.length + payload + body + 32;
}

/**
 * Bytes of memory one WebSocket send of a large event takes at its peak: its pieces and the
 * joined text (two bytes a character when any is beyond Latin-1, or when not measured), and the
 * UTF-8 copy the socket sends (up to three bytes a character).
 */
export function envelopeMemory(event: LargeEvent): number {
  const chars = envelopeChars(event);
  const { utf8, text } = event.large;
  const wide = utf8 && (text?.wide ?? true);
  return chars * (wide ? 2 : 1) * 2 + chars * (wide ? 3 : 1);
}

function bodyOf(event: LargeEvent) {
  return { id: event.id, userId: event.userId, blobId: event.large.blobId, size: event.large.size };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
