/**
 * Webhook signatures, checked the way each provider signs them: on the raw bytes, with an HMAC
 * from crypto.subtle and a constant-time compare of the decoded MACs. Pure: no KV, no clock of
 * its own (the caller passes `now`), so ingest and tests share one rule per provider. A body too
 * large to hold (streamed into KV at ingest) is read back in pieces and hashed incrementally.
 */
import { decodeText, mediaType } from "./body_types.ts";
import { onFirstUse } from "../runtime/first_use.ts";

/** node:crypto, for hashing a streamed body piece by piece (crypto.subtle takes one buffer). */
const incremental = onFirstUse(() => import("node:crypto"));

/** The providers an endpoint may name. */
export const PROVIDERS = [
  "github",
  "stripe",
  "slack",
  "shopify",
  "standard",
  "svix",
  "zoom",
  "meta",
  "twilio",
] as const;

/** One provider's name. */
export type Provider = typeof PROVIDERS[number];

/** A body not held in memory: its size, and its bytes in order each time `read()` is called. */
export interface StreamedBody {
  size: number;
  read(): AsyncIterable<Uint8Array>;
}

/** A webhook's raw body: in memory, or read in pieces (see StreamedBody). */
export type WebhookBody = Uint8Array | StreamedBody;

/** The outcome of a check: ok, or why not in a short sentence fit to show a user. */
export type Verdict = { ok: true } | { ok: false; reason: string };

/** How far a signed timestamp may be from now, either way (every provider's own default). */
export const TIMESTAMP_TOLERANCE_SECONDS = 300;

const encoder = new TextEncoder();
const OK: Verdict = { ok: true };
const fail = (reason: string): Verdict => ({ ok: false, reason });
const NO_MATCH = fail("signature does not match");
const MALFORMED = fail("malformed signature header");

/** Checks one webhook's signature on its raw bytes, trying each secret (current, then previous). */
export async function verifyWebhook(input: {
  provider: Provider;
  secrets: string[];
  headers: Headers;
  body: WebhookBody;
  /** The full public URL the sender used (Twilio signs it), query included. */
  url: string;
  /** Milliseconds since the epoch (Date.now()); a value in seconds is accepted too. */
  now: number;
}): Promise<Verdict> {
  const secrets = input.secrets.filter((secret) => secret !== "");
  if (secrets.length === 0) return fail("no secret set");
  // Seconds and milliseconds are 1,000× apart: a value below 1e11 cannot be today in ms.
  const nowSeconds = Math.floor(input.now < 1e11 ? input.now : input.now / 1000);
  const check = CHECKS[input.provider];
  if (!check) return fail(`unknown provider ${String(input.provider).slice(0, 40)}`);
  return await check({ ...input, secrets, nowSeconds });
}

/** Thrown by checkHeaders' stand-in body: the headers passed, only the body can tell now. */
const BODY_NEEDED = Symbol("body needed");

/**
 * What a webhook's headers alone say of its check: a failing verdict (signature header missing
 * or malformed, timestamp stale), or null when only its body can tell. Reads no body.
 */
export async function checkHeaders(
  input: Omit<Parameters<typeof verifyWebhook>[0], "body">,
): Promise<Verdict | null> {
  const body: StreamedBody = {
    size: 0,
    read() {
      throw BODY_NEEDED;
    },
  };
  try {
    return await verifyWebhook({ ...input, body });
  } catch (error) {
    if (error === BODY_NEEDED) return null;
    throw error;
  }
}

interface CheckInput {
  secrets: string[];
  headers: Headers;
  body: WebhookBody;
  url: string;
  nowSeconds: number;
}

/** A parsed request: what each secret's MAC is computed over, and the MACs it must match. */
type Prepared = Verdict | {
  ok: true;
  hash: "SHA-256" | "SHA-1";
  /**
   * The signed bytes: a head, then the body when it is signed (Twilio signs several URL
   * spellings: one message per entry).
   */
  messages: Message[];
  /** The sender's MACs, decoded; any one matching is enough (Stripe, Standard Webhooks). */
  candidates: Uint8Array[];
  /** The key bytes of one secret (Standard Webhooks decode a base64 whsec_ key). */
  key?: (secret: string) => Uint8Array | null;
};

/** Signed bytes: `head` followed by `body` (null when the body is not part of the message). */
interface Message {
  head: Uint8Array;
  body: WebhookBody | null;
}

const isStreamed = (body: WebhookBody | null): body is StreamedBody =>
  body !== null && !(body instanceof Uint8Array);

/** Runs a prepared check: every secret, every message, every candidate MAC. */
async function run(prepared: Prepared, secrets: string[]): Promise<Verdict> {
  if (!("hash" in prepared)) return prepared;
  const keys = secrets.map((secret) => prepared.key ? prepared.key(secret) : encoder.encode(secret))
    // An empty key cannot be imported, and a key that is not base64 cannot be a whsec_ key.
    .filter((key): key is Uint8Array => key !== null && key.byteLength > 0);
  const macs = prepared.messages.some((message) => isStreamed(message.body))
    ? await streamedMacs(prepared.hash, keys, prepared.messages)
    : await inMemoryMacs(prepared.hash, keys, prepared.messages);
  for (const mac of macs) {
    // No early exit among candidates: the time taken does not say which one matched.
    let matched = false;
    for (const candidate of prepared.candidates) matched = equalBytes(mac, candidate) || matched;
    if (matched) return OK;
  }
  return NO_MATCH;
}

/** Each key's MAC of each message, in that order, over bodies held in memory. */
async function inMemoryMacs(
  hash: "SHA-256" | "SHA-1",
  keys: Uint8Array[],
  messages: Message[],
): Promise<Uint8Array[]> {
  const macs: Uint8Array[] = [];
  for (const key of keys) {
    for (const { head, body } of messages) {
      macs.push(await hmac(hash, key, body === null ? head : concat(head, body as Uint8Array)));
    }
  }
  return macs;
}

/**
 * The same over a streamed body, read once: every key's MAC of every message is fed each piece
 * as it comes (the messages of one check share their body).
 */
async function streamedMacs(
  hash: "SHA-256" | "SHA-1",
  keys: Uint8Array[],
  messages: Message[],
): Promise<Uint8Array[]> {
  const algorithm = hash === "SHA-256" ? "sha256" : "sha1";
  const { createHmac } = await incremental();
  const macs = keys.flatMap((key) =>
    messages.map(({ head }) => createHmac(algorithm, key).update(head))
  );
  const body = messages.find((message) => isStreamed(message.body))!.body as StreamedBody;
  if (macs.length > 0) {
    for await (const piece of body.read()) for (const mac of macs) mac.update(piece);
  }
  return macs.map((mac) => new Uint8Array(mac.digest()));
}

const CHECKS: Record<Provider, (input: CheckInput) => Promise<Verdict>> = {
  github: (input) => run(hubSignature(input), input.secrets),
  meta: (input) => run(hubSignature(input), input.secrets),
  stripe: (input) => run(stripe(input), input.secrets),
  slack: (input) =>
    run(versionZero(input, "X-Slack-Signature", "X-Slack-Request-Timestamp"), input.secrets),
  zoom: (input) =>
    run(versionZero(input, "x-zm-signature", "x-zm-request-timestamp"), input.secrets),
  shopify: (input) => run(shopify(input), input.secrets),
  standard: (input) => run(standardWebhooks(input, "webhook"), input.secrets),
  svix: (input) => run(standardWebhooks(input, "svix"), input.secrets),
  twilio: (input) => twilio(input),
};

/** GitHub and Meta: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`. */
function hubSignature({ headers, body }: CheckInput): Prepared {
  const header = headers.get("X-Hub-Signature-256");
  if (header === null) return fail("missing X-Hub-Signature-256 header");
  const match = /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim());
  if (!match) return MALFORMED;
  return {
    ok: true,
    hash: "SHA-256",
    messages: [{ head: new Uint8Array(), body }],
    candidates: [fromHex(match[1])],
  };
}

/** Stripe: `Stripe-Signature: t=<s>,v1=<hex>[,v1=…]` over `"{t}.{body}"`. */
function stripe({ headers, body, nowSeconds }: CheckInput): Prepared {
  const header = headers.get("Stripe-Signature");
  if (header === null) return fail("missing Stripe-Signature header");
  let timestamp: string | null = null;
  const candidates: Uint8Array[] = [];
  for (const part of header.split(",")) {
    const at = part.indexOf("=");
    if (at === -1) continue;
    const name = part.slice(0, at).trim();
    const value = part.slice(at + 1).trim();
    if (name === "t") timestamp = value;
    // Other schemes (v0 is Stripe's test-mode scheme) are not accepted, as Stripe's own libraries.
    else if (name === "v1" && /^[0-9a-fA-F]{64}$/.test(value)) candidates.push(fromHex(value));
  }
  if (timestamp === null || !/^\d{1,12}$/.test(timestamp) || candidates.length === 0) {
    return MALFORMED;
  }
  const stale = checkTimestamp(Number(timestamp), nowSeconds);
  if (stale) return stale;
  return {
    ok: true,
    hash: "SHA-256",
    messages: [{ head: encoder.encode(`${timestamp}.`), body }],
    candidates,
  };
}

/** Slack and Zoom: `v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>`. */
function versionZero(
  { headers, body, nowSeconds }: CheckInput,
  signatureHeader: string,
  timestampHeader: string,
): Prepared {
  const header = headers.get(signatureHeader);
  if (header === null) return fail(`missing ${signatureHeader} header`);
  const timestamp = headers.get(timestampHeader)?.trim() ?? null;
  if (timestamp === null) return fail(`missing ${timestampHeader} header`);
  if (!/^\d{1,12}$/.test(timestamp)) return fail(`malformed ${timestampHeader} header`);
  const match = /^v0=([0-9a-fA-F]{64})$/.exec(header.trim());
  if (!match) return MALFORMED;
  const stale = checkTimestamp(Number(timestamp), nowSeconds);
  if (stale) return stale;
  return {
    ok: true,
    hash: "SHA-256",
    messages: [{ head: encoder.encode(`v0:${timestamp}:`), body }],
    candidates: [fromHex(match[1])],
  };
}

/** Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`. */
function shopify({ headers, body }: CheckInput): Prepared {
  const header = headers.get("X-Shopify-Hmac-Sha256");
  if (header === null) return fail("missing X-Shopify-Hmac-Sha256 header");
  const mac = fromBase64(header.trim());
  if (mac === null || mac.byteLength !== 32) return MALFORMED;
  return {
    ok: true,
    hash: "SHA-256",
    messages: [{ head: new Uint8Array(), body }],
    candidates: [mac],
  };
}

/**
 * Standard Webhooks (and Svix, the same scheme under `svix-*` headers): `v1,<base64 HMAC-SHA256(
 * key, "{id}.{timestamp}.{body}")>`, several space-separated; the key is the base64 after whsec_.
 */
function standardWebhooks({ headers, body, nowSeconds }: CheckInput, prefix: string): Prepared {
  const id = headers.get(`${prefix}-id`);
  const timestamp = headers.get(`${prefix}-timestamp`)?.trim() ?? null;
  const header = headers.get(`${prefix}-signature`);
  if (header === null) return fail(`missing ${prefix}-signature header`);
  if (id === null) return fail(`missing ${prefix}-id header`);
  if (timestamp === null) return fail(`missing ${prefix}-timestamp header`);
  if (!/^\d{1,12}$/.test(timestamp)) return fail(`malformed ${prefix}-timestamp header`);
  const candidates: Uint8Array[] = [];
  for (const entry of header.trim().split(/\s+/)) {
    const [version, signature] = entry.split(",", 2);
    // v1a is the asymmetric (ed25519) variant: it needs a public key, not this secret.
    if (version !== "v1" || signature === undefined) continue;
    const mac = fromBase64(signature);
    if (mac !== null) candidates.push(mac);
  }
  if (candidates.length === 0) return MALFORMED;
  const stale = checkTimestamp(Number(timestamp), nowSeconds);
  if (stale) return stale;
  return {
    ok: true,
    hash: "SHA-256",
    messages: [{ head: encoder.encode(`${id}.${timestamp}.`), body }],
    candidates,
    key: (secret) => fromBase64(secret.startsWith("whsec_") ? secret.slice(6) : secret),
  };
}

/**
 * Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, url + sorted form fields)>`; a JSON
 * body is instead covered by `bodySHA256` (hex SHA-256 of the body) in the signed URL. The URL is
 * tried with and without its default port, as Twilio's own validator does.
 */
async function twilio({ headers, body, url, secrets }: CheckInput): Promise<Verdict> {
  const header = headers.get("X-Twilio-Signature");
  if (header === null) return fail("missing X-Twilio-Signature header");
  const mac = fromBase64(header.trim());
  // Twilio's SharedKey webhooks may name HMAC_SHA256 in a settings header; the default is SHA-1.
  const algorithm = /(?:^|,)\s*algorithm\s*=\s*([A-Z0-9_]+)/i.exec(
    headers.get("X-Twilio-Webhooks-Signature-Settings") ?? "",
  )?.[1]?.toUpperCase() ?? "HMAC_SHA1";
  if (algorithm !== "HMAC_SHA1" && algorithm !== "HMAC_SHA256") return MALFORMED;
  const hash = algorithm === "HMAC_SHA256" ? "SHA-256" : "SHA-1";
  if (mac === null || mac.byteLength !== (hash === "SHA-1" ? 20 : 32)) return MALFORMED;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return fail("the webhook URL could not be read");
  }
  let signedFields = "";
  const bodyHash = parsed.searchParams.get("bodySHA256");
  if (bodyHash !== null) {
    const digest = await sha256(body);
    const claimed = /^[0-9a-fA-F]{64}$/.test(bodyHash) ? fromHex(bodyHash) : null;
    if (claimed === null || !equalBytes(digest, claimed)) {
      return fail("body does not match bodySHA256");
    }
  } else if (mediaType(headers.get("Content-Type")) === "application/x-www-form-urlencoded") {
    if (isStreamed(body)) {
      return fail(
        `form body of ${body.size} bytes is too large to check: Twilio signs its fields, ` +
          "which the relay does not hold for bodies streamed to storage",
      );
    }
    const text = decodeText(body) ?? new TextDecoder().decode(body);
    signedFields = twilioFields(new URLSearchParams(text));
  }
  const messages = twilioUrls(url).map((candidate) => ({
    head: encoder.encode(candidate + signedFields),
    body: null,
  }));
  return await run({ ok: true, hash, messages, candidates: [mac] }, secrets);
}

/** Form fields as Twilio signs them: names sorted, each name+value; a repeated name's values sorted. */
function twilioFields(params: URLSearchParams): string {
  const fields = new Map<string, Set<string>>();
  for (const [name, value] of params) {
    const values = fields.get(name) ?? new Set<string>();
    values.add(value);
    fields.set(name, values);
  }
  let out = "";
  for (const name of [...fields.keys()].sort()) {
    for (const value of [...fields.get(name)!].sort()) out += name + value;
  }
  return out;
}

/** The URL as given, without its port and with the scheme's default port (deduplicated). */
function twilioUrls(url: string): string[] {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/is.exec(url);
  if (!match) return [url];
  const [, scheme, authority, rest] = match;
  const hostStart = authority.lastIndexOf("@") + 1;
  const hostAndPort = authority.slice(hostStart);
  const portStart = hostAndPort.indexOf(":", hostAndPort.lastIndexOf("]") + 1);
  const host = authority.slice(0, hostStart) +
    (portStart === -1 ? hostAndPort : hostAndPort.slice(0, portStart));
  const port = portStart === -1
    ? (scheme.toLowerCase() === "https://" ? ":443" : ":80")
    : hostAndPort.slice(portStart);
  return [...new Set([url, scheme + host + rest, scheme + host + port + rest])];
}

/** Null when `timestamp` (seconds) is within the tolerance of now, else why not. */
function checkTimestamp(timestamp: number, nowSeconds: number): Verdict | null {
  const age = nowSeconds - timestamp;
  const tolerance = `(tolerance ${TIMESTAMP_TOLERANCE_SECONDS} s)`;
  if (age > TIMESTAMP_TOLERANCE_SECONDS) return fail(`timestamp is ${age} s old ${tolerance}`);
  if (-age > TIMESTAMP_TOLERANCE_SECONDS) {
    return fail(`timestamp is ${-age} s in the future ${tolerance}`);
  }
  return null;
}

/** SHA-256 of a body, read in pieces when it is streamed. */
async function sha256(body: WebhookBody): Promise<Uint8Array> {
  if (!isStreamed(body)) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", body as Uint8Array<ArrayBuffer>));
  }
  const hash = (await incremental()).createHash("sha256");
  for await (const piece of body.read()) hash.update(piece);
  return new Uint8Array(hash.digest());
}

/** HMAC of `message` under `key`. */
export async function hmac(
  hash: "SHA-256" | "SHA-1",
  key: Uint8Array | string,
  message: Uint8Array | string,
): Promise<Uint8Array> {
  const raw = typeof key === "string" ? encoder.encode(key) : key;
  const data = typeof message === "string" ? encoder.encode(message) : message;
  const cryptoKey = await crypto.subtle.importKey(
    "raw",
    raw as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash },
    false,
    ["sign"],
  );
  return new Uint8Array(
    await crypto.subtle.sign("HMAC", cryptoKey, data as Uint8Array<ArrayBuffer>),
  );
}

/** Compares two byte strings in time that depends only on their lengths. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Standard or URL-safe base64 (padding optional), or null when it is not base64. */
function fromBase64(text: string): Uint8Array | null {
  const standard = text.replaceAll("-", "+").replaceAll("_", "/");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(standard) || standard.length > 4096) return null;
  try {
    const binary = atob(standard.padEnd(Math.ceil(standard.length / 4) * 4, "="));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

function concat(head: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(head.byteLength + body.byteLength);
  out.set(head);
  out.set(body, head.byteLength);
  return out;
}
