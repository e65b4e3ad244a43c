/**
 * Providers' URL handshakes, answered by the relay itself so a URL can be registered whether or
 * not a client is connected: Meta's GET challenge, Slack's url_verification and Zoom's
 * endpoint.url_validation. Answers are text/plain or JSON with nosniff: the sender's input is
 * echoed, so it must never be read as HTML.
 */
import { decodeText } from "./body_types.ts";
import { equalBytes, hmac, type Provider, type Verdict, verifyWebhook } from "./signatures.ts";

/** A challenge or token longer than this is not a handshake (providers send a few dozen chars). */
export const MAX_CHALLENGE_CHARS = 1000;

/** Bodies larger than this are not parsed for a handshake (real ones are a few hundred bytes). */
const MAX_HANDSHAKE_BODY_BYTES = 16 * 1024;

const SAFE_HEADERS = { "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store" };

/** The relay's own answer to a provider's URL handshake, or null when this request is not one. */
export async function answerHandshake(input: {
  provider: Provider;
  method: string;
  url: URL;
  headers: Headers;
  body: Uint8Array;
  text: string | null;
  verifyToken: string | null;
  secrets: string[];
  verdict: Verdict | null;
}): Promise<Response | null> {
  const method = input.method.toUpperCase();
  if (input.provider === "meta" && method === "GET") return await metaChallenge(input);
  if (method !== "POST") return null;
  if (input.provider === "slack") return await slackUrlVerification(input);
  if (input.provider === "zoom") return await zoomUrlValidation(input);
  return null;
}

/** Meta: GET `?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` → the challenge, as text. */
async function metaChallenge(input: { url: URL; verifyToken: string | null }) {
  const query = input.url.searchParams;
  const challenge = query.get("hub.challenge");
  if (query.get("hub.mode") !== "subscribe" || challenge === null) return null;
  if (challenge.length > MAX_CHALLENGE_CHARS) return null;
  const given = query.get("hub.verify_token") ?? "";
  if (!input.verifyToken || !(await sameSecret(given, input.verifyToken))) {
    return text("verify token does not match", 403);
  }
  return text(challenge, 200);
}

/** Slack: `{"type":"url_verification","challenge":…}` → `{"challenge":…}`, once it is signed. */
async function slackUrlVerification(input: Parameters<typeof answerHandshake>[0]) {
  const message = jsonObject(input);
  if (message?.type !== "url_verification") return null;
  const challenge = message.challenge;
  if (typeof challenge !== "string" || challenge.length > MAX_CHALLENGE_CHARS) return null;
  const verdict = await verdictOf(input);
  if (!verdict.ok) return json({ error: verdict.reason }, 401);
  return json({ challenge }, 200);
}

/**
 * Zoom: `{"event":"endpoint.url_validation","payload":{"plainToken":…}}` → `{plainToken,
 * encryptedToken: hex HMAC-SHA256(secret, plainToken)}`. Zoom signs these too, so the signature
 * must verify; the answer uses the secret that verified it (the current one when both would).
 */
async function zoomUrlValidation(input: Parameters<typeof answerHandshake>[0]) {
  const message = jsonObject(input);
  if (message?.event !== "endpoint.url_validation") return null;
  const payload = message.payload;
  const plainToken = payload && typeof payload === "object" && !Array.isArray(payload)
    ? (payload as Record<string, unknown>).plainToken
    : undefined;
  if (typeof plainToken !== "string" || plainToken.length > MAX_CHALLENGE_CHARS) return null;
  const verdict = await verdictOf(input);
  if (!verdict.ok) return json({ error: verdict.reason }, 401);
  const secret = await signingSecret(input);
  if (secret === null) return json({ error: "signature does not match" }, 401);
  const encryptedToken = toHex(await hmac("SHA-256", secret, plainToken));
  return json({ plainToken, encryptedToken }, 200);
}

/** The caller's verdict, or one computed here when the caller did not check (verdict null). */
async function verdictOf(input: Parameters<typeof answerHandshake>[0]): Promise<Verdict> {
  if (input.verdict !== null) return input.verdict;
  return await verifyWebhook({
    provider: input.provider,
    secrets: input.secrets,
    headers: input.headers,
    body: input.body,
    url: input.url.href,
    now: Date.now(),
  });
}

/** The first secret that verifies this request's signature (Zoom's token is keyed by it). */
async function signingSecret(input: Parameters<typeof answerHandshake>[0]) {
  for (const secret of input.secrets) {
    if (secret === "") continue;
    const verdict = await verifyWebhook({
      provider: input.provider,
      secrets: [secret],
      headers: input.headers,
      body: input.body,
      url: input.url.href,
      // The caller's verdict already covered the timestamp; only the key is in question here.
      now: Number(input.headers.get("x-zm-request-timestamp") ?? "0") * 1000,
    });
    if (verdict.ok) return secret;
  }
  // A verdict from the caller but no secret verifying here: trust the caller with the current one.
  return input.verdict?.ok ? (input.secrets.find((secret) => secret !== "") ?? null) : null;
}

/** The body as a JSON object when it is small, UTF-8 and an object; else null. */
function jsonObject(
  input: { body: Uint8Array; text: string | null },
): Record<string, unknown> | null {
  if (input.body.byteLength > MAX_HANDSHAKE_BODY_BYTES) return null;
  const text = input.text ?? decodeText(input.body);
  if (text === null) return null;
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value)
      ? value as Record<string, unknown>
      : null;
  } catch {
    return null;
  }
}

/** Compares two secrets in constant time: their SHA-256 digests, so lengths do not leak either. */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const encoder = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(given)),
    crypto.subtle.digest("SHA-256", encoder.encode(expected)),
  ]);
  return equalBytes(new Uint8Array(a), new Uint8Array(b));
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function text(body: string, status: number): Response {
  return new Response(body, {
    status,
    headers: { "Content-Type": "text/plain; charset=utf-8", ...SAFE_HEADERS },
  });
}

function json(body: unknown, status: number): Response {
  return Response.json(body, { status, headers: SAFE_HEADERS });
}
