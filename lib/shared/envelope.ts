/**
 * The webhook envelope as clients receive it (SSE `data:`, WebSocket message, GET /api/events/:id):
 * its one definition, a zod schema with the type inferred from it. The server builds the JSON
 * text itself (lib/log/envelope_json.ts, tested against this schema); the forwarder parses with
 * the schema; the inspector and the curl command read the type. Pure, so it runs in the browser
 * too.
 */
import { z } from "zod";

/**
 * One webhook as clients receive it. Exactly one of `body` (UTF-8 text) and `bodyBase64` is
 * present; `payload` is the parsed body (JSON, or a form's fields), else null; `respond` is
 * present (true) only when the sender waits for a client's answer (respond mode); `eventType` is
 * the provider's name for the event (see lib/intake/event_type.ts); `verified` is
 * the signature check's verdict when the endpoint names a provider; `handshake` is present
 * (true) when the relay answered a provider's URL handshake itself.
 */
export const webhookEnvelopeSchema = /* @__PURE__ */ envelopeSchema();

// Built in a function called as pure, so a browser bundle that needs only the type and the
// helpers below drops the schema, and zod with it (some 450 KB; tests/envelope_test.ts checks).
function envelopeSchema() {
  return z.object({
    type: z.literal("webhook").describe("Every envelope; other messages have another type"),
    /**
     * Consumer-group deliveries only: 1 for the first delivery of the event to the group, then
     * one more each time it went to another member (not acked in time, member gone).
     */
    attempt: z.number().int().min(1).optional().describe(
      "Consumer groups: 1 for the first delivery to the group, one more for each redelivery",
    ),
    id: z.string().min(1).describe("The event's id (sortable by time; SSE's `id:`)"),
    endpoint: z.string().describe("The slug it was posted to"),
    receivedAt: z.string().describe("ISO 8601 time"),
    method: z.string().min(1),
    path: z.string().describe("The path after the slug, `/` when none"),
    /** Repeated names become arrays, in order. */
    query: z.record(z.string(), z.union([z.string(), z.array(z.string())])).describe(
      "Repeated names become arrays, in order",
    ),
    headers: z.record(z.string(), z.string()).describe("Header names in lower case"),
    contentType: z.string().nullable(),
    /**
     * The event's type as its provider names it (`issues.opened`, `invoice.paid`), what
     * `event=` filters match; null when it names none. Absent from servers before it existed.
     */
    eventType: z.string().nullable().optional().describe(
      "The provider's name for the event (`issues.opened`, `invoice.paid`), or null",
    ),
    payload: z.unknown().describe("The parsed body (JSON, or a form's fields), else null"),
    body: z.string().optional().describe("The body as UTF-8 text (exactly one of the two)"),
    bodyBase64: z.string().optional().describe("The body's bytes when they are not UTF-8"),
    /** The endpoint's provider check of the raw body: absent when it names no provider. */
    verified: z.union([
      z.object({ provider: z.string().min(1), ok: z.literal(true) }).strict(),
      z.object({ provider: z.string().min(1), ok: z.literal(false), reason: z.string() }).strict(),
    ]).optional().describe("The provider's signature check, when the endpoint names one"),
    /** A provider's URL handshake the relay answered itself: not a webhook to act on. */
    handshake: z.literal(true).optional().describe(
      "A provider's URL handshake the relay answered itself: not a webhook to act on",
    ),
    respond: z.boolean().optional().describe(
      "The sender waits for a client's answer (respond mode)",
    ),
  }).refine(
    (envelope) => (envelope.body === undefined) !== (envelope.bodyBase64 === undefined),
    "an envelope carries exactly one of body and bodyBase64",
  ).describe(
    "One webhook as clients receive it: an SSE `data:`, a WebSocket message, GET /api/events/{id}",
  );
}

/** One webhook as clients receive it, as webhookEnvelopeSchema describes it. */
export type WebhookEnvelope = z.infer<typeof webhookEnvelopeSchema>;

/** The envelope's `verified` field: a provider's signature check and its verdict. */
export type Verified =
  | { provider: string; ok: true }
  | { provider: string; ok: false; reason: string };

/** The body's exact bytes. */
export function envelopeBytes(envelope: Pick<WebhookEnvelope, "body" | "bodyBase64">): Uint8Array {
  // atob rather than Uint8Array.fromBase64: browsers from before 2025 lack the latter.
  if (envelope.bodyBase64 !== undefined) {
    return Uint8Array.from(atob(envelope.bodyBase64), (c) => c.charCodeAt(0));
  }
  return new TextEncoder().encode(envelope.body ?? "");
}

/** The envelope's query (repeated names as arrays) as search parameters, in order. */
export function queryParams(query: Record<string, string | string[]>): URLSearchParams {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const one of Array.isArray(value) ? value : [value]) params.append(name, one);
  }
  return params;
}

/** The query as a string with its leading "?", or "" when there is none. */
export function queryString(query: Record<string, string | string[]>): string {
  const text = queryParams(query).toString();
  return text ? `?${text}` : "";
}

/** The URL the sender posted to, rebuilt on `publicUrl` with the event's slug, path and query. */
export function envelopeUrl(envelope: WebhookEnvelope, publicUrl: string): string {
  const path = envelope.path === "/" ? "" : envelope.path;
  return `${publicUrl}/api/in/${envelope.endpoint}${path}${queryString(envelope.query)}`;
}
