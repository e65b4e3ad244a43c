/**
 * Receiving a sender's request: endpoint lookup, body limit, JSON check, then the group commit
 * (which applies the endpoint's flood limit where webhooks are committed, once per process).
 * A body over STREAM_BODY_BYTES is admitted first (flood limit, full store, quota), then
 * streamed into KV chunks as it arrives and checked on the way (large_body.ts). Every refusal
 * is an HttpError that carries the quota headers when the endpoint is known, so senders always
 * learn where they stand.
 */
import { type Endpoint, endpointCheck, RESPOND_TIMEOUT } from "../endpoints/endpoints.ts";
import { checkHeaders, verifyWebhook } from "./signatures.ts";
import { answerHandshake } from "./handshakes.ts";
import { eventTypeOf } from "./event_type.ts";
import type { Verified } from "../shared/envelope.ts";
import type { ClientResponse } from "../fanout/respond_waiters.ts";
import { type BodyKind, decodeText, isJsonType, mediaType, parseForm } from "./body_types.ts";
import { metadataBytes, storedBytes } from "../log/events.ts";
import { HttpError } from "../http/http_error.ts";
import type { IncomingWebhook, Ingest, Refusal } from "./group_commit.ts";
import { isStorageUnavailable, storageUnavailableError } from "../store/kv.ts";
import { mayNameRecord } from "../store/kv_keys.ts";
import { receiveBody } from "../http/load_guard.ts";
import { discardStaged, largeBodySink, stagedBodyReader } from "./large_body.ts";
import type { Services } from "../runtime/services.ts";
import { currentQuota, quotaHeaders, type QuotaState } from "../billing/usage.ts";
import { counters } from "../observe/metrics.ts";
import { SESSION_COOKIE } from "../accounts/sessions.ts";
import { DEVICE_COOKIE } from "../accounts/login_guard.ts";

/** What a body's media type makes it; JSON declared, or no type at all, must be JSON. */
function declaredKind(type: string | null): BodyKind {
  if (type === "application/x-www-form-urlencoded") return "form";
  if (type !== null && !isJsonType(type)) return "other";
  return "json";
}

/** How the body is understood, and its JSON value when it was parsed (for its event type). */
function bodyKind(
  type: string | null,
  body: Uint8Array,
  text: string | null,
): { kind: BodyKind; json?: unknown } {
  const kind = declaredKind(type);
  if (kind !== "json") return { kind };
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

/**
 * The request's headers as one record: lowercase names, each value as `Headers.get` gives it
 * (a repeated Set-Cookie keeps its last). `forEach` into pairs, then `Object.fromEntries`: the
 * same record, key for key, as `Object.fromEntries(headers)`, which went through Headers' WebIDL
 * iterator (with the three lookups below: 4.8 µs median a request before, 3.7 after; issue 15).
 */
function headerRecord(headers: Headers): Record<string, string> {
  const pairs: [string, string][] = [];
  headers.forEach((value, name) => {
    if (name !== "cookie") pairs.push([name, value]);
    else {
      const kept = withoutRelayCookies(value);
      if (kept !== "") pairs.push([name, kept]);
    }
  });
  return Object.fromEntries(pairs);
}

/** The relay's own cookies, as named over http and (`__Host-` prefixed) over https. */
const RELAY_COOKIE = new RegExp(`^(__Host-)?(${SESSION_COOKIE}|${DEVICE_COOKIE})=`);

/**
 * A Cookie header without the relay's own cookies. Ingest may share the dashboard's host, and a
 * logged-in user who follows a link to another account's webhook URL sends them along (a GET is
 * a webhook, and SameSite=Lax cookies ride on a top-level navigation): stored, the account that
 * owns the URL would read that user's session from its event.
 */
function withoutRelayCookies(cookie: string): string {
  if (!cookie.includes(SESSION_COOKIE) && !cookie.includes(DEVICE_COOKIE)) return cookie;
  return cookie.split(";").map((pair) => pair.trim()).filter((pair) =>
    pair !== "" && !RELAY_COOKIE.test(pair)
  ).join("; ");
}

/** How bodies over `overBytes` are streamed into KV instead of read into memory. */
export interface StreamOptions {
  overBytes: number;
  kv: Deno.Kv;
  ingest: Pick<Ingest, "admit">;
  retentionMs: number;
  /**
   * Refuses (throws) before admission what the request's headers alone condemn: an enforced
   * provider check whose signature header is missing, malformed or stale.
   */
  precheck?: () => Promise<void>;
}

/**
 * Builds the webhook for an endpoint from the request; `path` is what follows the slug. With
 * `stream`, a large body is admitted and staged as it arrives (the webhook's `staged`).
 */
export async function readWebhook(
  request: Request,
  options: {
    endpoint: Endpoint;
    path: string;
    maxBodyBytes: number;
    maxMetadataBytes: number;
    stream?: StreamOptions;
  },
): Promise<IncomingWebhook> {
  const receivedAt = new Date();
  const headers = headerRecord(request.headers);
  // Looked up in the record: each Headers.get is another WebIDL call and scan.
  const header = { get: (name: string) => headers[name] ?? null };
  const contentType = header.get("content-type");
  const headersJson = JSON.stringify(headers);
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
  const type = mediaType(contentType);
  const stream = options.stream;
  const { endpoint } = options;
  const read = await receiveBody(request, {
    maxBytes: options.maxBodyBytes,
    action: "ingest",
    streamOver: stream?.overBytes ?? Infinity,
    open: stream &&
      largeBodySink(stream.kv, {
        userId: endpoint.userId,
        expireIn: stream.retentionMs,
        json: declaredKind(type) === "json",
        admit: async () => {
          await stream.precheck?.();
          const refusal = await stream.ingest.admit(endpoint);
          // Refused before the body is read: the connection cannot be reused.
          if (refusal) throw refusalError(refusal, endpoint.slug, { Connection: "close" });
        },
      }),
  });
  const metadata = {
    endpoint,
    receivedAt,
    method: request.method,
    path: options.path,
    queryJson,
    headersJson,
    contentType,
  };
  if (read.streamed) {
    return {
      ...metadata,
      kind: declaredKind(type),
      body: new Uint8Array(),
      text: null,
      staged: read.streamed,
      // Never parsed again: the sender's headers alone name its type (GitHub, Shopify).
      eventType: eventTypeOf(header, undefined),
    };
  }
  const body = read.body;
  const text = decodeText(body);
  const { kind, json } = bodyKind(type, body, text);
  return { ...metadata, kind, body, text, eventType: eventTypeOf(header, json) };
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
/**
 * For a large body on an endpoint that enforces its provider's check: 401 before a byte is staged
 * when the headers alone fail it (no signature, a malformed one, a stale timestamp), so a forger
 * cannot make the relay store 25 MiB to refuse it.
 */
async function refuseByHeaders(
  services: Services,
  options: { endpoint: Endpoint; request: Request },
): Promise<void> {
  const now = Date.now();
  const check = await endpointCheck(options.endpoint, { key: services.secretsKey, now });
  if (!check?.enforce) return;
  const verdict = await checkHeaders({
    provider: check.provider,
    secrets: check.secrets,
    headers: options.request.headers,
    url: senderUrl(services.config, options.request),
    now,
  });
  if (verdict && !verdict.ok) {
    services.rejections.count({ userId: options.endpoint.userId, count: 1, now: new Date() });
    throw new HttpError(401, `Cannot ingest: ${verdict.reason}`, { Connection: "close" });
  }
}

async function checkProvider(
  services: Services,
  options: { endpoint: Endpoint; request: Request; webhook: IncomingWebhook },
): Promise<{ verified: Verified; enforce: boolean; handshake: Response | null } | null> {
  const now = Date.now();
  const check = await endpointCheck(options.endpoint, { key: services.secretsKey, now });
  if (!check) return null;
  const { request, webhook } = options;
  const url = senderUrl(services.config, request);
  const staged = webhook.staged;
  const verdict = await verifyWebhook({
    provider: check.provider,
    secrets: check.secrets,
    headers: request.headers,
    body: staged
      ? stagedBodyReader(services.kv, { userId: options.endpoint.userId, staged })
      : webhook.body,
    url,
    now,
  });
  // A large body is never a handshake (providers send a few hundred bytes).
  const handshake = staged ? null : await answerHandshake({
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
 * What `receiveWebhook` gives the route: a stored webhook's id and quota, and the answer when it
 * is not the plain 200 (a client's in respond mode, the relay's own to a handshake); or, for a
 * handshake over the limit, only the handshake's answer: nothing was stored.
 */
export type Received =
  | {
    id: string;
    quota: QuotaState;
    response: ClientResponse | null;
    handshake: Response | null;
  }
  | { id: null; quota: QuotaState; response: null; handshake: Response };

/**
 * Accepts a webhook for `slug`; returns its id and quota, or throws an HttpError. `handshake`
 * is the relay's own answer to a provider's URL handshake, stored and counted like any webhook;
 * over the limit it is still answered, with no id, and nothing is stored (a failed handshake is
 * refused with its status and counted as refused); with an enforced provider
 * check, a webhook that fails it is refused (401) and counted as refused.
 */
export async function receiveWebhook(
  services: Services,
  options: { request: Request; slug: string; path: string },
): Promise<Received> {
  const endpoint = await services.endpoints.get(options.slug);
  if (!endpoint) throw unknownSlug(options.slug);
  // The account's shares of this isolate that receiveFor takes, given back once it answers.
  const held: (() => void)[] = [];
  try {
    return await receiveFor(services, endpoint, options, held);
  } finally {
    for (const release of held) release();
  }
}

/** `receiveWebhook` once the endpoint is known; the account's shares it takes go in `held`. */
async function receiveFor(
  services: Services,
  endpoint: Endpoint,
  options: { request: Request; slug: string; path: string },
  held: (() => void)[],
): Promise<Received> {
  let result;
  let handshake: Response | null = null;
  let staged: IncomingWebhook["staged"] = undefined;
  try {
    const webhook = await readWebhook(options.request, {
      endpoint,
      path: options.path,
      maxBodyBytes: services.config.maxBodyBytes,
      maxMetadataBytes: services.config.maxMetadataBytes,
      stream: {
        overBytes: services.config.streamBodyBytes,
        kv: services.kv,
        ingest: services.ingest,
        retentionMs: services.config.retentionMs,
        precheck: () => refuseByHeaders(services, { endpoint, request: options.request }),
      },
    });
    // Until submit takes it over, a refusal here must delete the staged chunks.
    staged = webhook.staged;
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
    // The account's shares, taken once the whole body is here: a body still arriving is the
    // load guard's to bound, per client address, so strangers stalling bodies to an account's
    // URL take none of its shares. Respond mode's is held until the answer or the timeout.
    const { requests, respondWaits } = services.accountShares;
    held.push(requests.take(endpoint.userId));
    if (endpoint.respond && !handshake) held.push(respondWaits.take(endpoint.userId));
    const submitted = services.ingest.submit(webhook);
    staged = undefined; // submit discards the chunks of a webhook it refuses
    result = await submitted;
    if (!result.accepted && result.reason === "rate_limited") {
      throw refusalError(result, options.slug);
    }
  } catch (error) {
    if (staged) discardStaged(services.kv, { userId: endpoint.userId, staged });
    // Nothing was stored: the sender may retry once the store takes writes again.
    if (isStorageUnavailable(error)) throw storageUnavailableError(error, "ingest");
    throw await withQuota(services, endpoint, error);
  }
  if (!result.accepted && result.reason === "quota" && handshake) {
    // Over the limit: the provider still gets its answer, so registering a URL never fails on
    // the quota, but nothing is stored or delivered.
    return { id: null, quota: result.quota, response: null, handshake };
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
  throw refusalError(result, options.slug);
}

/** 404 for a slug that names no endpoint; a stranger's long slug is echoed in part. */
function unknownSlug(slug: string, headers: Record<string, string> = {}): HttpError {
  const shown = mayNameRecord(slug) ? slug : `${slug.slice(0, 64)}…`;
  return new HttpError(404, `Cannot ingest: no endpoint with slug "${shown}"`, headers);
}

/** The answer to a refused webhook (the flood limit, the quota, or an account that is gone). */
function refusalError(
  result: Refusal,
  slug: string,
  headers: Record<string, string> = {},
): HttpError {
  if (result.reason === "rate_limited") {
    return new HttpError(429, "Cannot ingest: too many requests to this endpoint, slow down", {
      "Retry-After": String(result.retryAfterSeconds),
      ...headers,
    });
  }
  if (result.reason !== "quota") {
    return unknownSlug(slug, headers);
  }
  const { limit, used, resetAt } = result.quota;
  return new HttpError(
    402,
    `Monthly quota exceeded: ${used} of ${limit} webhooks used; resets ${resetAt.toISOString()}. ` +
      "Raise your monthly limit or upgrade to Pro in the dashboard.",
    { ...quotaHeaders(result.quota), ...headers },
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
  const timeoutMs = endpoint.respondTimeoutMs ?? RESPOND_TIMEOUT.defaultMs;
  // The wait starts before asking who is connected, which over shared KV may take up to 2 s:
  // the sender waits at most its timeout, and an answer that comes first settles the question.
  const giveUp = new AbortController();
  const answering = services.responses.wait(id, endpoint.userId, timeoutMs, giveUp.signal);
  const asking = services.presence.anyConnected(endpoint.userId);
  asking.catch(() => {}); // when the answer came first, a failed question changes nothing
  if (!(await Promise.race([asking, answering.then(() => true)]))) {
    giveUp.abort();
    throw new HttpError(
      503,
      `Cannot answer: respond mode is on and no client is connected; the webhook was stored as ${id}`,
    );
  }
  const answer = await answering;
  if (answer) counters.respondAnswers++;
  else counters.respondTimeouts++;
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

/** A refusal with the account's quota headers, so senders learn where they stand. */
async function withQuota(
  services: Services,
  endpoint: Endpoint,
  error: unknown,
): Promise<unknown> {
  if (!(error instanceof HttpError)) return error;
  // Costs a KV read, but only on refusals, never on the accepted path.
  const quota = await currentQuota(services.kv, endpoint.userId);
  return quota ? withHeaders(error, quotaHeaders(quota)) : error;
}

function withHeaders(error: HttpError, headers: Record<string, string>): HttpError {
  return new HttpError(
    error.status,
    error.message,
    { ...error.headers, ...headers },
    error.details,
  );
}
