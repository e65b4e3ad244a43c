/**
 * Receiving a sender's request: endpoint lookup, body limit, JSON check, then the group commit
 * (which applies the endpoint's flood limit where webhooks are committed, once per process). Every refusal is an HttpError that carries the quota headers when the endpoint
 * is known, so senders always learn where they stand.
 */
import { type Endpoint, endpointCheck, RESPOND_TIMEOUT } from "../endpoints/endpoints.ts";
import { verifyWebhook } from "./signatures.ts";
import { answerHandshake } from "./handshakes.ts";
import { eventTypeOf } from "./event_type.ts";
import type { Verified } from "../shared/envelope.ts";
import type { ClientResponse } from "../fanout/respond_waiters.ts";
import { type BodyKind, decodeText, isJsonType, mediaType, parseForm } from "./body_types.ts";
import { metadataBytes, storedBytes } from "../log/events.ts";
import { HttpError } from "../http/http_error.ts";
import type { IncomingWebhook } from "./group_commit.ts";
import { isStorageUnavailable, storageUnavailableError } from "../store/kv.ts";
import { readBody } from "../http/load_guard.ts";
import type { Services } from "../runtime/services.ts";
import { currentQuota, quotaHeaders, type QuotaState } from "../billing/usage.ts";

/**
 * Reads at most `maxBytes` of a body; 413 as soon as it is known to be larger, 408 when it
 * stalls, 503 when the server's body budget is spent (see load_guard.ts).
 */
export function readBodyLimited(request: Request, maxBytes: number): Promise<Uint8Array> {
  return readBody(request, { maxBytes, action: "ingest" });
}

/** How the body is understood, and its JSON value when it was parsed (for its event type). */
function bodyKind(
  type: string | null,
  body: Uint8Array,
  text: string | null,
): { kind: BodyKind; json?: unknown } {
  if (type === "application/x-www-form-urlencoded") return { kind: "form" };
  if (type !== null && !isJsonType(type)) return { kind: "other" };
  // JSON declared, or no type at all: the docs promise 400 for a body that is not JSON.
  if (body.byteLength === 0) return { kind: "json" };
  if (text === null) {
    throw new HttpError(400, "Cannot ingest: body is not valid JSON (not UTF-8 text)");
  }
  try {
    return { kind: "json", json: JSON.parse(text) };
  } catch (error) {
    const detail = error instanceof SyntaxError ? ` (${error.message})` : "";
    throw new HttpError(400, `Cannot ingest: body is not valid JSON${detail}`);
  }
}

/** Builds the webhook for an endpoint from the request; `path` is what follows the slug. */
export async function readWebhook(
  request: Request,
  options: { endpoint: Endpoint; path: string; maxBodyBytes: number; maxMetadataBytes: number },
): Promise<IncomingWebhook> {
  const receivedAt = new Date();
  const body = await readBodyLimited(request, options.maxBodyBytes);
  const contentType = request.headers.get("Content-Type");
  const headersJson = JSON.stringify(Object.fromEntries(request.headers));
  const queryJson = request.url.includes("?")
    ? JSON.stringify(parseForm(new URL(request.url).searchParams))
    : "{}";
  // Path, headers and query are stored inside the event's KV value, which every user's events
  // of one commit share: measured as stored, so one sender's request can only fail itself.
  const bytes = metadataBytes({ path: options.path, headersJson, queryJson });
  if (bytes > options.maxMetadataBytes) {
    // 431 when the headers alone are too many, else it is the URL: 414.
    const status = storedBytes(headersJson) > options.maxMetadataBytes ? 431 : 414;
    throw new HttpError(
      status,
      `Cannot ingest: path, headers and query take ${bytes} bytes, over the limit of ${options.maxMetadataBytes}`,
    );
  }
  const text = decodeText(body);
  const { kind, json } = bodyKind(mediaType(contentType), body, text);
  return {
    endpoint: options.endpoint,
    receivedAt,
    method: request.method,
    path: options.path,
    queryJson,
    headersJson,
    contentType,
    kind,
    body,
    text,
    eventType: eventTypeOf(request.headers, json),
  };
}

/**
 * The URL the sender used, on the public base it was given (INGEST_URL, else PUBLIC_URL): what
 * a provider that signs the URL (Twilio) signed, whatever proxy stands in between.
 */
export function senderUrl(
  config: { ingestUrl: string | null; publicUrl: string },
  request: Request,
): string {
  const url = new URL(request.url);
  return `${config.ingestUrl ?? config.publicUrl}${url.pathname}${url.search}`;
}

/** The reason a handshake answer gives: its JSON `error`, or its text. */
async function reasonOf(answer: Response): Promise<string> {
  const text = (await answer.text()).slice(0, 200);
  try {
    const error = JSON.parse(text)?.error;
    return typeof error === "string" ? error : text;
  } catch {
    return text;
  }
}

/**
 * An endpoint's provider check of a webhook: its verdict for the envelope, and the relay's own
 * answer when the request is the provider's URL handshake. Null when it names no provider.
 */
async function checkProvider(
  services: Services,
  options: { endpoint: Endpoint; request: Request; webhook: IncomingWebhook },
): Promise<{ verified: Verified; enforce: boolean; handshake: Response | null } | null> {
  const now = Date.now();
  const check = await endpointCheck(options.endpoint, { key: services.secretsKey, now });
  if (!check) return null;
  const { request, webhook } = options;
  const url = senderUrl(services.config, request);
  const verdict = await verifyWebhook({
    provider: check.provider,
    secrets: check.secrets,
    headers: request.headers,
    body: webhook.body,
    url,
    now,
  });
  const handshake = await answerHandshake({
    provider: check.provider,
    method: request.method,
    url: new URL(url),
    headers: request.headers,
    body: webhook.body,
    text: webhook.text,
    verifyToken: check.verifyToken,
    secrets: check.secrets,
    verdict,
  });
  return {
    verified: verdict.ok
      ? { provider: check.provider, ok: true }
      : { provider: check.provider, ok: false, reason: verdict.reason },
    enforce: check.enforce,
    handshake,
  };
}

/**
 * Accepts a webhook for `slug`; returns its id and quota, or throws an HttpError. `handshake`
 * is the relay's own answer to a provider's URL handshake, stored but not counted (a failed
 * handshake is refused with its status and counted as refused); with an enforced provider
 * check, a webhook that fails it is refused (401) and counted as refused.
 */
export async function receiveWebhook(
  services: Services,
  options: { request: Request; slug: string; path: string },
): Promise<
  { id: string; quota: QuotaState; response: ClientResponse | null; handshake: Response | null }
> {
  const endpoint = await services.endpoints.get(options.slug);
  if (!endpoint) throw new HttpError(404, `Cannot ingest: no endpoint with slug "${options.slug}"`);
  let result;
  let handshake: Response | null = null;
  try {
    const webhook = await readWebhook(options.request, {
      endpoint,
      path: options.path,
      maxBodyBytes: services.config.maxBodyBytes,
      maxMetadataBytes: services.config.maxMetadataBytes,
    });
    const checked = await checkProvider(services, { endpoint, request: options.request, webhook });
    if (checked) {
      webhook.verified = checked.verified;
      handshake = checked.handshake;
      if (handshake && !handshake.ok) {
        // A failed handshake is a refusal, not a free event: anyone can send one.
        services.rejections.count({ userId: endpoint.userId, count: 1, now: new Date() });
        throw new HttpError(
          handshake.status,
          `Cannot answer the handshake: ${await reasonOf(handshake)}`,
        );
      }
      if (handshake) {
        webhook.handshake = true;
        // Meta's GET challenge carries no signature by design: its verify token was the check.
        if (!checked.verified.ok) delete webhook.verified;
      } else if (checked.enforce && !checked.verified.ok) {
        services.rejections.count({ userId: endpoint.userId, count: 1, now: new Date() });
        throw new HttpError(401, `Cannot ingest: ${checked.verified.reason}`);
      }
    }
    result = await services.ingest.submit(webhook);
    if (!result.accepted && result.reason === "rate_limited") {
      throw new HttpError(429, "Cannot ingest: too many requests to this endpoint, slow down", {
        "Retry-After": String(result.retryAfterSeconds),
      });
    }
  } catch (error) {
    // Nothing was stored: the sender may retry once the store takes writes again.
    if (isStorageUnavailable(error)) throw storageUnavailableError(error, "ingest");
    if (!(error instanceof HttpError)) throw error;
    // Costs a KV read, but only on refusals, never on the accepted path.
    const quota = await currentQuota(services.kv, endpoint.userId);
    throw quota ? withHeaders(error, quotaHeaders(quota)) : error;
  }
  if (result.accepted) {
    if (handshake || !endpoint.respond) {
      return { id: result.id, quota: result.quota, response: null, handshake };
    }
    return {
      id: result.id,
      quota: result.quota,
      response: await awaitAnswer(services, result.id, endpoint),
      handshake: null,
    };
  }
  if (result.reason !== "quota") {
    throw new HttpError(404, `Cannot ingest: no endpoint with slug "${options.slug}"`);
  }
  const { limit, used, resetAt } = result.quota;
  throw new HttpError(
    402,
    `Monthly quota exceeded: ${used} of ${limit} webhooks used; resets ${resetAt.toISOString()}. ` +
      "Raise your monthly limit or upgrade to Pro in the dashboard.",
    quotaHeaders(result.quota),
    { used, limit, resetsAt: resetAt.toISOString() },
  );
}

/**
 * Respond mode: the stored webhook waits for the first connected client's answer. With nobody
 * connected the sender learns it at once (503); with nobody answering in time, 504.
 */
async function awaitAnswer(
  services: Services,
  id: string,
  endpoint: Endpoint,
): Promise<ClientResponse> {
  if (!(await services.presence.anyConnected(endpoint.userId))) {
    throw new HttpError(
      503,
      `Cannot answer: respond mode is on and no client is connected; the webhook was stored as ${id}`,
    );
  }
  const timeoutMs = endpoint.respondTimeoutMs ?? RESPOND_TIMEOUT.defaultMs;
  const answer = await services.responses.wait(id, endpoint.userId, timeoutMs);
  if (!answer) {
    throw new HttpError(
      504,
      `Cannot answer: no client answered within ${
        timeoutMs / 1000
      } s; the webhook was stored as ${id}`,
    );
  }
  return answer;
}

function withHeaders(error: HttpError, headers: Record<string, string>): HttpError {
  return new HttpError(
    error.status,
    error.message,
    { ...error.headers, ...headers },
    error.details,
  );
}
