/**
 * The envelope's JSON text, built once per event and shared by every client. It splices the
 * stored query and headers JSON and the body's own JSON text rather than re-serialising: fast,
 * and a big integer in a payload reaches clients digit for digit. The shape it builds is the
 * one lib/shared/envelope.ts defines (tests/envelope_test.ts holds it to that schema).
 */
import { type BodyKind, decodeText, parseForm } from "../intake/body_types.ts";
import type { Verified } from "../shared/envelope.ts";

/**
 * An event ready for delivery: its envelope whole (shared by every client), or, for a body too
 * large to hold, the parts to stream it from the body's chunks per send (envelope_stream.ts).
 */
export type LiveEvent = InlineEvent | LargeEvent;

/**
 * What subscription filters (lib/fanout/filters.ts) match an event by, carried on every live
 * event so that matching never parses an envelope.
 */
export interface EventFacts {
  endpoint: string;
  /** The endpoint's id, which outlives slug rotation: what token endpoint limits match. */
  endpointId?: string;
  method: string;
  path: string;
  /** The provider's name for the event (lib/intake/event_type.ts), or null. */
  eventType: string | null;
}

/** An event whose envelope is built once and shared by every client. */
export interface InlineEvent extends EventFacts {
  id: string;
  userId: string;
  /** The JSON envelope as sent over WebSocket and in SSE `data:`. */
  json: string;
  /** The SSE frame, encoded. */
  sse(): Uint8Array;
  large?: undefined;
}

/** An event whose body is never held whole: each send streams it from KV. */
export interface LargeEvent extends EventFacts {
  id: string;
  userId: string;
  large: LargeEnvelope;
}

/** A large event's envelope: the text around its payload and body, and where the body lives. */
export interface LargeEnvelope {
  /** The envelope up to its payload: `{"type":"webhook",…,"payload":`. */
  head: string;
  /** What follows the body field: `,"verified":…}`. */
  tail: string;
  kind: BodyKind;
  /** The body is UTF-8 text (sent as `body`), else bytes (sent as `bodyBase64`). */
  utf8: boolean;
  /**
   * For text measured at ingest: its characters, as a JSON string, and whether any is beyond
   * Latin-1. Absent: not measured (the envelope's size is then assumed at its worst).
   */
  text?: { chars: number; escapedChars: number; wide: boolean };
  /** The body's bytes and chunks in KV (see events.ts). */
  size: number;
  blobId: string;
  chunks: number;
}

/** What the envelope is built from; a stored event (StoredEvent in events.ts) extends it. */
export interface EnvelopeSource {
  id: string;
  userId: string;
  endpoint: string;
  /** Set on every stored event; optional for envelopes built without one (tests). */
  endpointId?: string;
  receivedAt: string;
  method: string;
  path: string;
  /** The query as JSON text, spliced in as is. */
  queryJson: string;
  /** The request headers as JSON text, spliced in as is. */
  headersJson: string;
  contentType: string | null;
  kind: BodyKind;
  /** The endpoint was in respond mode: the sender waits for a client's answer. */
  respond?: boolean;
  /** The provider's signature check, when the endpoint names a provider. */
  verified?: Verified;
  /** A provider's URL handshake, answered by the relay itself. */
  handshake?: boolean;
  /** The provider's name for the event; absent (null) in events stored before it existed. */
  eventType?: string | null;
}

/** The facts filters match by, from what an envelope is built from. */
export function eventFacts(event: EnvelopeSource): EventFacts {
  return {
    endpoint: event.endpoint,
    endpointId: event.endpointId,
    method: event.method,
    path: event.path,
    eventType: event.eventType ?? null,
  };
}

/** The `verified` field's JSON, with its leading comma, or "". */
function verifiedJson(verified: Verified | undefined): string {
  if (!verified) return "";
  const fields = verified.ok
    ? { provider: verified.provider, ok: true }
    : { provider: verified.provider, ok: false, reason: verified.reason };
  return `,"verified":${JSON.stringify(fields)}`;
}

const encoder = new TextEncoder();

/**
 * Folds line breaks of JSON text into spaces: in valid JSON they are whitespace between tokens
 * (inside strings they must be escaped), so the value is kept and SSE's `data:` stays one line.
 */
export function foldLines(json: string): string {
  return json.includes("\n") || json.includes("\r") ? json.replace(/[\r\n]+/g, " ") : json;
}

/** The payload as JSON text, from the body text and its kind. */
function payloadJson(kind: BodyKind, text: string | null): string {
  if (text === null || text.trim() === "") return "null";
  if (kind === "json") return foldLines(text);
  if (kind === "form") return JSON.stringify(parseForm(text));
  return "null";
}

/**
 * The envelope up to its payload. Every field before the payload is metadata: the body's two
 * forms, the payload and the body, come last but for the tail.
 */
function envelopeHead(event: EnvelopeSource): string {
  return `{"type":"webhook","id":"${event.id}","endpoint":${
    JSON.stringify(event.endpoint)
  },"receivedAt":"${event.receivedAt}","method":${JSON.stringify(event.method)},"path":${
    JSON.stringify(event.path)
  },"query":${event.queryJson},"headers":${event.headersJson},"contentType":${
    JSON.stringify(event.contentType)
  },"eventType":${JSON.stringify(event.eventType ?? null)},"payload":`;
}

/** The envelope after its body field. Respond mode's mark stays last: see `wantsAnswer`. */
function envelopeTail(event: EnvelopeSource): string {
  return `${verifiedJson(event.verified)}${event.handshake ? ',"handshake":true' : ""}${
    event.respond ? RESPOND_TAIL : "}"
  }`;
}

/** How respond-mode envelopes end. */
const RESPOND_TAIL = ',"respond":true}';

/** Whether the event's sender waits for a client's answer (respond mode). */
export function wantsAnswer(event: LiveEvent): boolean {
  return (event.large ? event.large.tail : event.json).endsWith(RESPOND_TAIL);
}

/** Characters of the envelope held in memory: all of it, or a large event's head and tail. */
export function heldChars(event: LiveEvent): number {
  return event.large ? event.large.head.length + event.large.tail.length : event.json.length;
}

/** Builds the delivery envelope for an event and its full body (and its text, if known). */
export function toLiveEvent(
  event: EnvelopeSource,
  body: Uint8Array,
  text: string | null = decodeText(body),
): InlineEvent {
  const bodyField = text !== null
    ? `,"body":${JSON.stringify(text)}`
    : `,"bodyBase64":${JSON.stringify(body.toBase64())}`;
  const json = envelopeHead(event) + payloadJson(event.kind, text) + bodyField +
    envelopeTail(event);
  return liveEvent({ id: event.id, userId: event.userId, json, ...eventFacts(event) });
}

/** A large event, from its stored record: only its metadata is held, never its body. */
export function toLargeEvent(
  event: EnvelopeSource & { size: number; blobId: string | null; chunks: number },
  facts: { utf8: boolean; chars?: number; escapedChars?: number; wide?: boolean },
): LargeEvent {
  return {
    id: event.id,
    userId: event.userId,
    ...eventFacts(event),
    large: {
      head: envelopeHead(event),
      tail: envelopeTail(event),
      kind: event.kind,
      utf8: facts.utf8,
      ...(facts.chars !== undefined && facts.escapedChars !== undefined
        ? { text: { chars: facts.chars, escapedChars: facts.escapedChars, wide: !!facts.wide } }
        : {}),
      size: event.size,
      blobId: event.blobId ?? "",
      chunks: event.chunks,
    },
  };
}

const ENVELOPE_START = '{"type":"webhook",';

/**
 * The event as a consumer group delivers it: `"attempt":n` right after the envelope's type,
 * so every other byte is the broadcast envelope's. Built per delivery; the shared one is kept.
 */
export function withAttempt(event: LiveEvent, attempt: number): LiveEvent {
  const mark = `${ENVELOPE_START}"attempt":${attempt},`;
  if (event.large) {
    const head = mark + event.large.head.slice(ENVELOPE_START.length);
    return { ...event, large: { ...event.large, head } };
  }
  const { id, userId, endpoint, method, path, eventType } = event;
  const json = mark + event.json.slice(ENVELOPE_START.length);
  return liveEvent({ id, userId, json, endpoint, method, path, eventType });
}

/** A LiveEvent from its envelope, e.g. after it crossed an isolate or instance boundary. */
export function liveEvent(
  fields: { id: string; userId: string; json: string } & EventFacts,
): InlineEvent {
  let sse: Uint8Array | null = null;
  const { id, userId, json, endpoint, endpointId, method, path, eventType } = fields;
  return {
    id,
    userId,
    json,
    endpoint,
    endpointId,
    method,
    path,
    eventType,
    sse: () => sse ??= encoder.encode(`id: ${id}\ndata: ${json}\n\n`),
  };
}
