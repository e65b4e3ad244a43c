/**
 * The webhook envelope as clients receive it (SSE `data:`, WebSocket message, GET /api/events/:id),
 * typed for code that reads it: the dashboard's inspector, and the curl command built from it.
 * Pure, so it runs in the browser too.
 */

/** One delivered webhook. Exactly one of `body` (UTF-8 text) and `bodyBase64` is present. */
export interface WebhookEnvelope {
  type: "webhook";
  id: string;
  endpoint: string;
  receivedAt: string;
  method: string;
  path: string;
  query: Record<string, string | string[]>;
  headers: Record<string, string>;
  contentType: string | null;
  payload: unknown;
  body?: string;
  bodyBase64?: string;
}

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
