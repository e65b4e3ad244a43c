/**
 * /api/in/:slug (and any path below it): where senders deliver webhooks, with any of
 * INGEST_METHODS; HEAD and OPTIONS are protocol answers, not webhooks.
 *
 * This is the hot path, so it is served before the router: it needs no middleware, and skipping
 * Hono's routing and context saves a few percent of the CPU each webhook costs.
 */
import { HttpError } from "../lib/http/http_error.ts";
import { receiveWebhook } from "../lib/intake/receive.ts";
import { ANSWER_SECURITY_HEADERS, senderHeaders } from "../lib/fanout/respond_waiters.ts";
import type { Services } from "../lib/runtime/services.ts";
import { quotaHeaders, type QuotaState } from "../lib/billing/usage.ts";
import { errorResponse } from "../lib/http/error_response.ts";
import { counters, countRefusedWebhook, ingestLatency } from "../lib/observe/metrics.ts";

/** The path prefix this handler owns. */
export const INGEST_PREFIX = "/api/in/";

/** The methods a webhook may arrive with: every one is stored, counted and delivered. */
export const INGEST_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"] as const;

const ALLOW = [...INGEST_METHODS, "OPTIONS"].join(", ");

/** Browsers may post too (the dashboard's test button, a page of the user's own). */
const CORS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Methods": INGEST_METHODS.join(", "),
  "Access-Control-Allow-Headers": "*",
  "Access-Control-Max-Age": "86400",
};

/**
 * The 200 of an accepted webhook: `{"ok":true,"id":…}` with the quota and security headers.
 * Headers are set on the built response rather than passed in its init: Deno 2.9 converts an
 * init's header record through WebIDL at ~0.7 µs a header, `headers.set` costs ~0.2 (issue 15).
 */
function acceptedAnswer(id: string, quota: QuotaState): Response {
  const response = new Response(`{"ok":true,"id":${JSON.stringify(id)}}`);
  const headers = response.headers;
  headers.set("Content-Type", "application/json");
  setAll(headers, quotaHeaders(quota));
  setAll(headers, ANSWER_SECURITY_HEADERS);
  return response;
}

function setAll(headers: Headers, values: Readonly<Record<string, string>>): void {
  for (const name in values) headers.set(name, values[name]);
}

/** The relay's own answer to a provider's URL handshake, with the answers' security headers. */
function handshakeAnswer(handshake: Response): Response {
  const headers = new Headers(handshake.headers);
  for (const [name, value] of Object.entries(ANSWER_SECURITY_HEADERS)) {
    if (!headers.has(name)) headers.set(name, value);
  }
  return new Response(handshake.body, { status: handshake.status, headers });
}

/** Handles a request whose path starts with INGEST_PREFIX. */
export async function handleIngest(
  services: Services,
  request: Request,
  path: string,
): Promise<Response> {
  if (request.method === "OPTIONS") return new Response(null, { status: 204, headers: CORS });
  const started = performance.now();
  try {
    if (!(INGEST_METHODS as readonly string[]).includes(request.method)) {
      throw new HttpError(
        405,
        `Cannot ingest: method ${request.method} is not allowed, use one of ${
          INGEST_METHODS.join(", ")
        }`,
        { Allow: ALLOW },
      );
    }
    const rest = path.slice(INGEST_PREFIX.length);
    const slash = rest.indexOf("/");
    const received = await receiveWebhook(services, {
      request,
      slug: slash === -1 ? rest : rest.slice(0, slash),
      path: slash === -1 ? "/" : rest.slice(slash),
    });
    ingestLatency.observe((performance.now() - started) / 1000);
    // A handshake over the limit has no id: answered, not stored.
    if (received.id === null) return handshakeAnswer(received.handshake);
    // Stored: counted whatever the answer (a handshake, a client's in respond mode, the id).
    counters.webhooksAccepted++;
    const { id, quota, response, handshake } = received;
    // A provider's URL handshake: the relay's own answer, whoever is connected.
    if (handshake) return handshakeAnswer(handshake);
    // Respond mode: the client's status and body, with only the headers it may set.
    if (response) {
      const empty = [204, 205, 304].includes(response.status);
      return new Response(empty ? null : response.body as BodyInit, {
        status: response.status,
        headers: senderHeaders(response, {
          fetchDest: request.headers.get("Sec-Fetch-Dest"),
          fetchMode: request.headers.get("Sec-Fetch-Mode"),
        }),
      });
    }
    return acceptedAnswer(id, quota);
  } catch (error) {
    const refused = errorResponse(
      error,
      { method: request.method, path, request },
      ANSWER_SECURITY_HEADERS,
    );
    countRefusedWebhook(refused.status);
    ingestLatency.observe((performance.now() - started) / 1000);
    return refused;
  }
}
