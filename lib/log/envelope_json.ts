/**
 * The envelope's JSON text, built once per event and shared by every client. It splices the
 * stored query and headers JSON and the body's own JSON text rather than re-serialising: fast,
 * and a big integer in a payload reaches clients digit for digit. The shape it builds is the
 * one lib/shared/envelope.ts defines (tests/envelope_test.ts holds it to that schema).
 */
import { type BodyKind, decodeText, parseForm } from "../intake/body_types.ts";
import type { Verified } from "../shared/envelope.ts";

/** An event ready for delivery; its wire forms are built once and shared by every client. */
export interface LiveEvent {
  id: string;
  userId: string;
  /** The JSON envelope as sent over WebSocket and in SSE `data:`. */
  json: string;
  /** The SSE frame, encoded. */
  sse(): Uint8Array;
}

/** What the envelope is built from; a stored event (StoredEvent in events.ts) extends it. */
export interface EnvelopeSource {
  id: string;
  userId: string;
  endpoint: string;
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

/** Builds the delivery envelope for an event and its full body (and its text, if known). */
export function toLiveEvent(
  event: EnvelopeSource,
  body: Uint8Array,
  text: string | null = decodeText(body),
): LiveEvent {
  const bodyField = text !== null
    ? `"body":${JSON.stringify(text)}`
    : `"bodyBase64":${JSON.stringify(body.toBase64())}`;
  // Respond mode's tail must stay last: connections.ts recognises such envelopes by it.
  const json =
    `{"type":"webhook","id":"${event.id}","endpoint":${
      JSON.stringify(event.endpoint)
    },"receivedAt":"${event.receivedAt}","method":${JSON.stringify(event.method)},"path":${
      JSON.stringify(event.path)
    },"query":${event.queryJson},"headers":${event.headersJson},` +
    `"contentType":${JSON.stringify(event.contentType)},"payload":${
      payloadJson(event.kind, text)
    },${bodyField}${verifiedJson(event.verified)}${event.handshake ? ',"handshake":true' : ""}${
      event.respond ? ',"respond":true' : ""
    }}`;
  return liveEvent({ id: event.id, userId: event.userId, json });
}

/** A LiveEvent from its envelope, e.g. after it crossed an isolate or instance boundary. */
export function liveEvent(fields: { id: string; userId: string; json: string }): LiveEvent {
  let sse: Uint8Array | null = null;
  const { id, userId, json } = fields;
  return { id, userId, json, sse: () => sse ??= encoder.encode(`id: ${id}\ndata: ${json}\n\n`) };
}
