/**
 * Signature checks and provider handshakes, against signatures made the way each provider makes
 * them: with the provider's own library where npm has one (GitHub's @octokit/webhooks-methods,
 * stripe, standardwebhooks, svix, twilio), never with our own signer. Slack's signer lives only in
 * @slack/bolt (a whole app framework with an HTTP server, OAuth and a Web API client), so Slack's
 * v0 signature is computed here per Slack's docs and cross-checked with the verifier of Slack's
 * smaller @slack/events-api package. Shopify, Zoom and Meta publish no signer on npm: their HMACs
 * are computed here per their docs with node:crypto.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { sign as githubSign } from "@octokit/webhooks-methods";
import Stripe from "stripe";
import { Webhook as StandardWebhook } from "standardwebhooks";
import { Webhook as SvixWebhook } from "svix";
import {
  getExpectedBodyHash,
  getExpectedTwilioSignature,
  validateRequest,
  validateRequestWithBody,
} from "twilio/lib/webhooks/webhooks.js";
import { verifyRequestSignature as slackVerify } from "@slack/events-api";
import {
  type Provider,
  PROVIDERS,
  type StreamedBody,
  verifyWebhook,
} from "../lib/intake/signatures.ts";
import { answerHandshake } from "../lib/intake/handshakes.ts";

const encoder = new TextEncoder();
const URL_SIGNED = "https://relay.example/api/in/abc123";
const SECRET = "current-secret-0123456789";
const PREVIOUS = "previous-secret-9876543210";
/** Standard Webhooks and Svix keys: whsec_ then base64 of 24+ random bytes. */
const WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_PREVIOUS = "whsec_" + btoa("an older key, 32 bytes long!!!!!");

/** A body as ingest passes one it streamed into KV: read back in pieces of `piece` bytes. */
function streamed(bytes: Uint8Array, piece: number): StreamedBody {
  return {
    size: bytes.byteLength,
    async *read() {
      for (let at = 0; at < bytes.byteLength; at += piece) {
        yield bytes.slice(at, at + piece);
      }
    },
  };
}

/**
 * The verdict on a body held in memory; every call also checks the same body streamed in small
 * pieces (as a large body is read back from KV) and asserts the same verdict, except for a
 * Twilio form, whose fields a streamed body does not have.
 */
async function verify(
  provider: Provider,
  secrets: string[],
  headers: HeadersInit,
  body: Uint8Array | string,
  options: { url?: string; now?: number } = {},
) {
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const input = {
    provider,
    secrets,
    headers: new Headers(headers),
    url: options.url ?? URL_SIGNED,
    now: options.now ?? readAt ?? Date.now(),
  };
  const verdict = await verifyWebhook({ ...input, body: bytes });
  const inPieces = await verifyWebhook({ ...input, body: streamed(bytes, 7) });
  const twilioForm = provider === "twilio" && !input.url.includes("bodySHA256") &&
    input.headers.get("Content-Type") === "application/x-www-form-urlencoded" &&
    input.headers.has("X-Twilio-Signature");
  if (!twilioForm) assert.deepEqual(inPieces, verdict, "streamed in pieces");
  return verdict;
}

/** The body with one byte changed (its lowest bit flipped). */
function flipped(body: string, at = 2): Uint8Array {
  const bytes = encoder.encode(body);
  bytes[at] ^= 1;
  return bytes;
}

/**
 * The clock a test signs with is the clock `verify` checks against: reading it again could cross a
 * second and turn "412 s old" into "413 s old".
 */
let readAt: number | undefined;
const nowSeconds = () => Math.floor((readAt = Date.now()) / 1000);
const hmacHex = (secret: string, message: string) =>
  createHmac("sha256", secret).update(message).digest("hex");
const NO_MATCH = { ok: false, reason: "signature does not match" };

Deno.test("[signatures] the providers list is the interface's", () => {
  assert.deepEqual([...PROVIDERS], [
    "github",
    "stripe",
    "slack",
    "shopify",
    "standard",
    "svix",
    "zoom",
    "meta",
    "twilio",
  ]);
});

Deno.test("[signatures] no secret set is said so, for every provider", async () => {
  for (const provider of PROVIDERS) {
    assert.deepEqual(await verify(provider, [], {}, "{}"), { ok: false, reason: "no secret set" });
    assert.deepEqual(await verify(provider, [""], {}, "{}"), {
      ok: false,
      reason: "no secret set",
    });
  }
});

Deno.test("[signatures] now may be given in seconds or in milliseconds", async () => {
  const body = "{}";
  const now = nowSeconds();
  const headers = {
    "x-zm-signature": "v0=" + hmacHex(SECRET, `v0:${now}:${body}`),
    "x-zm-request-timestamp": String(now),
  };
  assert.deepEqual(await verify("zoom", [SECRET], headers, body, { now: now * 1000 }), {
    ok: true,
  });
  assert.deepEqual(await verify("zoom", [SECRET], headers, body, { now }), { ok: true });
  assert.deepEqual(
    await verify("zoom", [SECRET], { ...headers, "x-zm-request-timestamp": "soon" }, body),
    { ok: false, reason: "malformed x-zm-request-timestamp header" },
  );
});

Deno.test("[signatures] GitHub: X-Hub-Signature-256 from @octokit/webhooks-methods", async () => {
  const body = JSON.stringify({ action: "opened", number: 1, note: "ünïcode" });
  const headers = { "X-Hub-Signature-256": await githubSign(SECRET, body) };
  assert.deepEqual(await verify("github", [SECRET], headers, body), { ok: true });
  assert.deepEqual(await verify("github", [SECRET], headers, flipped(body)), NO_MATCH);
  assert.deepEqual(await verify("github", ["other"], headers, body), NO_MATCH);
  assert.deepEqual(await verify("github", [SECRET], {}, body), {
    ok: false,
    reason: "missing X-Hub-Signature-256 header",
  });
  assert.deepEqual(await verify("github", [SECRET], { "X-Hub-Signature-256": "sha1=abc" }, body), {
    ok: false,
    reason: "malformed signature header",
  });
  // Rotation: a webhook signed with the previous secret still passes while it is kept second.
  const old = { "X-Hub-Signature-256": await githubSign(PREVIOUS, body) };
  assert.deepEqual(await verify("github", [SECRET, PREVIOUS], old, body), { ok: true });
  assert.deepEqual(await verify("github", [SECRET], old, body), NO_MATCH);
});

Deno.test("[signatures] Meta: the same header with the app secret (GitHub's scheme)", async () => {
  // Meta documents sha256=<hex HMAC-SHA256(app secret, payload)>, byte for byte GitHub's scheme,
  // and publishes no signer on npm: GitHub's library produces the identical header.
  const body = JSON.stringify({ object: "whatsapp_business_account", entry: [] });
  const signature = "sha256=" + hmacHex(SECRET, body);
  assert.equal(signature, await githubSign(SECRET, body));
  const headers = { "X-Hub-Signature-256": signature };
  assert.deepEqual(await verify("meta", [SECRET], headers, body), { ok: true });
  assert.deepEqual(await verify("meta", [SECRET], headers, flipped(body)), NO_MATCH);
  assert.deepEqual(await verify("meta", [SECRET], {}, body), {
    ok: false,
    reason: "missing X-Hub-Signature-256 header",
  });
  const old = { "X-Hub-Signature-256": "sha256=" + hmacHex(PREVIOUS, body) };
  assert.deepEqual(await verify("meta", [SECRET, PREVIOUS], old, body), { ok: true });
});

Deno.test("[signatures] Stripe: Stripe-Signature from stripe's generateTestHeaderStringAsync", async () => {
  const stripe = new Stripe("sk_test_123");
  const secret = "whsec_stripe_test_secret";
  const body = JSON.stringify({ id: "evt_1", object: "event", type: "invoice.paid" });
  const header = (timestamp: number, signingSecret = secret) =>
    stripe.webhooks.generateTestHeaderStringAsync({
      payload: body,
      secret: signingSecret,
      timestamp,
      cryptoProvider: Stripe.createSubtleCryptoProvider(),
    });
  const now = nowSeconds();
  const valid = { "Stripe-Signature": await header(now) };
  assert.deepEqual(await verify("stripe", [secret], valid, body), { ok: true });
  assert.deepEqual(await verify("stripe", [secret], valid, flipped(body)), NO_MATCH);
  assert.deepEqual(
    await verify("stripe", [secret], { "Stripe-Signature": await header(now - 412) }, body),
    { ok: false, reason: "timestamp is 412 s old (tolerance 300 s)" },
  );
  assert.deepEqual(
    await verify("stripe", [secret], { "Stripe-Signature": await header(now + 600) }, body),
    { ok: false, reason: "timestamp is 600 s in the future (tolerance 300 s)" },
  );
  assert.deepEqual(await verify("stripe", [secret], {}, body), {
    ok: false,
    reason: "missing Stripe-Signature header",
  });
  assert.deepEqual(await verify("stripe", [secret], { "Stripe-Signature": "v1=zz" }, body), {
    ok: false,
    reason: "malformed signature header",
  });
  // Any v1 matching is enough: Stripe sends one per active secret during its own rotation.
  const both = `${await header(now, "whsec_other")},v1=${
    (await header(now)).split("v1=")[1].split(",")[0]
  }`;
  assert.deepEqual(await verify("stripe", [secret], { "Stripe-Signature": both }, body), {
    ok: true,
  });
  const old = { "Stripe-Signature": await header(now, "whsec_previous") };
  assert.deepEqual(await verify("stripe", [secret, "whsec_previous"], old, body), { ok: true });
  // Stripe's own verifier agrees with the valid header.
  const event = await stripe.webhooks.constructEventAsync(
    body,
    valid["Stripe-Signature"],
    secret,
    undefined,
    Stripe.createSubtleCryptoProvider(),
  );
  assert.equal(event.id, "evt_1");
});

Deno.test("[signatures] Slack: v0 signature per Slack's docs, accepted by @slack/events-api", async () => {
  const secret = "8f742231b10e8888abcd99yyyzzz85a5";
  const body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather&text=94070";
  const signed = (timestamp: number, signingSecret = secret) => ({
    "X-Slack-Signature": "v0=" + hmacHex(signingSecret, `v0:${timestamp}:${body}`),
    "X-Slack-Request-Timestamp": String(timestamp),
  });
  const now = nowSeconds();
  const valid = signed(now);
  // Slack's verifier throws when the signature is wrong: this proves the test signer is Slack's.
  assert.equal(
    slackVerify({
      signingSecret: secret,
      requestSignature: valid["X-Slack-Signature"],
      requestTimestamp: now,
      body,
    }),
    true,
  );
  assert.deepEqual(await verify("slack", [secret], valid, body), { ok: true });
  assert.deepEqual(await verify("slack", [secret], valid, flipped(body)), NO_MATCH);
  assert.deepEqual(await verify("slack", [secret], signed(now - 412), body), {
    ok: false,
    reason: "timestamp is 412 s old (tolerance 300 s)",
  });
  assert.deepEqual(await verify("slack", [secret], signed(now + 600), body), {
    ok: false,
    reason: "timestamp is 600 s in the future (tolerance 300 s)",
  });
  assert.deepEqual(await verify("slack", [secret], {}, body), {
    ok: false,
    reason: "missing X-Slack-Signature header",
  });
  assert.deepEqual(
    await verify("slack", [secret], { "X-Slack-Signature": valid["X-Slack-Signature"] }, body),
    { ok: false, reason: "missing X-Slack-Request-Timestamp header" },
  );
  assert.deepEqual(await verify("slack", [secret, PREVIOUS], signed(now, PREVIOUS), body), {
    ok: true,
  });
});

Deno.test("[signatures] Shopify: base64 X-Shopify-Hmac-Sha256 per Shopify's docs", async () => {
  // Shopify's docs: base64 of HMAC-SHA256(app secret, raw body); no standalone signer on npm.
  const body = JSON.stringify({ id: 820982911946154500, email: "jon@example.com" });
  const signed = (secret: string) => ({
    "X-Shopify-Hmac-Sha256": createHmac("sha256", secret).update(body).digest("base64"),
  });
  assert.deepEqual(await verify("shopify", [SECRET], signed(SECRET), body), { ok: true });
  assert.deepEqual(await verify("shopify", [SECRET], signed(SECRET), flipped(body)), NO_MATCH);
  assert.deepEqual(await verify("shopify", [SECRET], {}, body), {
    ok: false,
    reason: "missing X-Shopify-Hmac-Sha256 header",
  });
  assert.deepEqual(
    await verify("shopify", [SECRET], { "X-Shopify-Hmac-Sha256": "not base64!" }, body),
    { ok: false, reason: "malformed signature header" },
  );
  assert.deepEqual(await verify("shopify", [SECRET, PREVIOUS], signed(PREVIOUS), body), {
    ok: true,
  });
});

for (
  const [provider, prefix, Webhook] of [
    ["standard", "webhook", StandardWebhook],
    ["svix", "svix", SvixWebhook],
  ] as const
) {
  const library = provider === "standard" ? "standardwebhooks" : "svix";
  Deno.test(`[signatures] ${provider}: ${prefix}-* headers from ${library}'s Webhook.sign`, async () => {
    const body = JSON.stringify({ type: "invoice.paid", data: { id: "in_1" } });
    const signed = (at: Date, secret = WHSEC, id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W") => ({
      [`${prefix}-id`]: id,
      [`${prefix}-timestamp`]: String(Math.floor(at.getTime() / 1000)),
      [`${prefix}-signature`]: new Webhook(secret).sign(id, at, body),
    });
    const now = Date.now();
    const valid = signed(new Date(now));
    assert.deepEqual(await verify(provider, [WHSEC], valid, body, { now }), { ok: true });
    assert.deepEqual(await verify(provider, [WHSEC], valid, flipped(body), { now }), NO_MATCH);
    // The id is signed too: replaying the body under another id fails.
    assert.deepEqual(
      await verify(provider, [WHSEC], { ...valid, [`${prefix}-id`]: "msg_other" }, body, { now }),
      NO_MATCH,
    );
    assert.deepEqual(
      await verify(provider, [WHSEC], signed(new Date(now - 412_000)), body, { now }),
      { ok: false, reason: "timestamp is 412 s old (tolerance 300 s)" },
    );
    assert.deepEqual(
      await verify(provider, [WHSEC], signed(new Date(now + 600_000)), body, { now }),
      { ok: false, reason: "timestamp is 600 s in the future (tolerance 300 s)" },
    );
    assert.deepEqual(await verify(provider, [WHSEC], {}, body, { now }), {
      ok: false,
      reason: `missing ${prefix}-signature header`,
    });
    // A space-separated list: any v1 entry matching is enough.
    const other = signed(new Date(now), WHSEC_PREVIOUS);
    const list = {
      ...valid,
      [`${prefix}-signature`]: `${other[`${prefix}-signature`]} ${valid[`${prefix}-signature`]}`,
    };
    assert.deepEqual(await verify(provider, [WHSEC], list, body, { now }), { ok: true });
    assert.deepEqual(await verify(provider, [WHSEC, WHSEC_PREVIOUS], other, body, { now }), {
      ok: true,
    });
    assert.deepEqual(await verify(provider, [WHSEC], other, body, { now }), NO_MATCH);
    // The library's own verifier agrees with the valid headers.
    assert.doesNotThrow(() => new Webhook(WHSEC).verify(body, valid));
    assert.throws(() => new Webhook(WHSEC).verify(body + " ", valid));
  });
}

Deno.test("[signatures] Zoom: x-zm-signature v0 per Zoom's docs", async () => {
  // Zoom's docs: v0=<hex HMAC-SHA256(secret token, "v0:{x-zm-request-timestamp}:{body}")>; Zoom
  // publishes no signer on npm.
  const body = JSON.stringify({ event: "meeting.started", payload: { object: { id: "1" } } });
  const signed = (timestamp: number, secret = SECRET) => ({
    "x-zm-signature": "v0=" + hmacHex(secret, `v0:${timestamp}:${body}`),
    "x-zm-request-timestamp": String(timestamp),
  });
  const now = nowSeconds();
  assert.deepEqual(await verify("zoom", [SECRET], signed(now), body), { ok: true });
  assert.deepEqual(await verify("zoom", [SECRET], signed(now), flipped(body)), NO_MATCH);
  assert.deepEqual(await verify("zoom", [SECRET], signed(now - 412), body), {
    ok: false,
    reason: "timestamp is 412 s old (tolerance 300 s)",
  });
  assert.deepEqual(await verify("zoom", [SECRET], {}, body), {
    ok: false,
    reason: "missing x-zm-signature header",
  });
  assert.deepEqual(await verify("zoom", [SECRET, PREVIOUS], signed(now, PREVIOUS), body), {
    ok: true,
  });
});

Deno.test("[signatures] Twilio: form webhooks signed by twilio's getExpectedTwilioSignature", async () => {
  const token = "12345abcdef67890abcdef1234567890";
  const url = "https://relay.example/api/in/abc123/sms?channel=main";
  const params = {
    To: "+15551230000",
    From: "+15559870000",
    Body: "Hello world",
    MessageSid: "SM1",
  };
  const body = new URLSearchParams(params).toString();
  const form = { "Content-Type": "application/x-www-form-urlencoded" };
  const signed = (authToken: string, signedUrl = url) => ({
    ...form,
    "X-Twilio-Signature": getExpectedTwilioSignature(authToken, signedUrl, params),
  });
  assert.equal(
    validateRequest(token, signed(token)["X-Twilio-Signature"], url, params),
    true,
    "twilio's own validator accepts the test signature",
  );
  assert.deepEqual(await verify("twilio", [token], signed(token), body, { url }), { ok: true });
  assert.deepEqual(
    await verify("twilio", [token], signed(token), flipped(body, body.indexOf("Hello")), { url }),
    NO_MATCH,
  );
  // The URL is signed: the same request at another URL fails.
  assert.deepEqual(
    await verify("twilio", [token], signed(token), body, { url: url.replace("main", "x") }),
    NO_MATCH,
  );
  // Twilio's validator accepts the URL with or without the scheme's default port; so do we.
  const withPort = "https://relay.example:443/api/in/abc123/sms?channel=main";
  assert.deepEqual(await verify("twilio", [token], signed(token, withPort), body, { url }), {
    ok: true,
  });
  assert.deepEqual(await verify("twilio", [token], form, body, { url }), {
    ok: false,
    reason: "missing X-Twilio-Signature header",
  });
  assert.deepEqual(
    await verify("twilio", [token, "old-token"], signed("old-token"), body, { url }),
    {
      ok: true,
    },
  );
});

Deno.test("[signatures] Twilio: JSON webhooks carry bodySHA256 in the signed URL", async () => {
  const token = "12345abcdef67890abcdef1234567890";
  const body = JSON.stringify({ event: "call.completed", sid: "CA1" });
  const url = `https://relay.example/api/in/abc123?bodySHA256=${getExpectedBodyHash(body)}`;
  const headers = {
    "Content-Type": "application/json",
    "X-Twilio-Signature": getExpectedTwilioSignature(token, url, {}),
  };
  assert.equal(validateRequestWithBody(token, headers["X-Twilio-Signature"], url, body), true);
  assert.deepEqual(await verify("twilio", [token], headers, body, { url }), { ok: true });
  assert.deepEqual(await verify("twilio", [token], headers, flipped(body), { url }), {
    ok: false,
    reason: "body does not match bodySHA256",
  });
  assert.deepEqual(await verify("twilio", ["wrong"], headers, body, { url }), NO_MATCH);
});

Deno.test("[signatures] a large streamed body is hashed in pieces; a Twilio form one cannot be", async () => {
  const text = JSON.stringify({ note: "ünïcode ☃ ".repeat(300_000) });
  const body = encoder.encode(text);
  const headers = { "X-Hub-Signature-256": await githubSign(SECRET, text) };
  let reads = 0;
  const large: StreamedBody = {
    size: body.byteLength,
    async *read() {
      reads++;
      for (let at = 0; at < body.byteLength; at += 60_000) yield body.subarray(at, at + 60_000);
    },
  };
  const check = (secrets: string[]) =>
    verifyWebhook({
      provider: "github",
      secrets,
      headers: new Headers(headers),
      body: large,
      url: URL_SIGNED,
      now: Date.now(),
    });
  assert.deepEqual(await check([PREVIOUS, SECRET]), { ok: true });
  // Both secrets of a rotation are checked in one pass over the body.
  assert.equal(reads, 1);
  assert.deepEqual(await check([PREVIOUS]), NO_MATCH);
  const form = await verifyWebhook({
    provider: "twilio",
    secrets: ["12345abcdef67890abcdef1234567890"],
    headers: new Headers({
      "Content-Type": "application/x-www-form-urlencoded",
      "X-Twilio-Signature": getExpectedTwilioSignature(
        "12345abcdef67890abcdef1234567890",
        URL_SIGNED,
        {},
      ),
    }),
    body: large,
    url: URL_SIGNED,
    now: Date.now(),
  });
  assert.deepEqual(form, {
    ok: false,
    reason: `form body of ${body.byteLength} bytes is too large to check: Twilio signs its ` +
      "fields, which the relay does not hold for bodies streamed to storage",
  });
});

// --- handshakes ---------------------------------------------------------------------------------

function handshake(input: {
  provider: Provider;
  method?: string;
  url?: string;
  headers?: HeadersInit;
  body?: string;
  verifyToken?: string | null;
  secrets?: string[];
  verdict?: { ok: true } | { ok: false; reason: string } | null;
}) {
  const body = encoder.encode(input.body ?? "");
  return answerHandshake({
    provider: input.provider,
    method: input.method ?? "POST",
    url: new URL(input.url ?? URL_SIGNED),
    headers: new Headers(input.headers ?? {}),
    body,
    text: input.body ?? null,
    verifyToken: input.verifyToken ?? null,
    secrets: input.secrets ?? [SECRET],
    verdict: input.verdict ?? null,
  });
}

Deno.test("[handshakes] Meta: the GET challenge is echoed as text when the verify token matches", async () => {
  const url = (token: string, challenge = "1158201444") =>
    `${URL_SIGNED}?hub.mode=subscribe&hub.verify_token=${token}&hub.challenge=${challenge}`;
  const ok = await handshake({
    provider: "meta",
    method: "GET",
    url: url("my-token"),
    verifyToken: "my-token",
  });
  assert.ok(ok);
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(ok.headers.get("x-content-type-options"), "nosniff");
  assert.equal(await ok.text(), "1158201444");

  // Markup in the challenge stays text: the answer is text/plain with nosniff, never HTML.
  const markup = await handshake({
    provider: "meta",
    method: "GET",
    url: url("my-token", encodeURIComponent("<script>x</script>")),
    verifyToken: "my-token",
  });
  assert.equal(markup?.status, 200);
  assert.equal(markup?.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(await markup?.text(), "<script>x</script>");

  for (const verifyToken of ["other-token", null]) {
    const refused = await handshake({
      provider: "meta",
      method: "GET",
      url: url("my-token"),
      verifyToken,
    });
    assert.equal(refused?.status, 403);
    assert.equal(refused?.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(await refused?.text(), "verify token does not match");
  }
  // Not a handshake: a plain GET, a POST, another provider, an oversized challenge.
  const plain = { provider: "meta" as const, verifyToken: "my-token" };
  assert.equal(await handshake({ ...plain, method: "GET" }), null);
  assert.equal(await handshake({ ...plain, url: url("my-token") }), null);
  assert.equal(
    await handshake({ ...plain, provider: "github", method: "GET", url: url("my-token") }),
    null,
  );
  assert.equal(
    await handshake({ ...plain, method: "GET", url: url("my-token", "9".repeat(1001)) }),
    null,
  );
});

Deno.test("[handshakes] Slack: url_verification is answered only when its signature verifies", async () => {
  const secret = "8f742231b10e8888abcd99yyyzzz85a5";
  const body = JSON.stringify({
    token: "Jhj5dZrVaK7ZwHHjRyZWjbDl",
    challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
    type: "url_verification",
  });
  const now = nowSeconds();
  const headers = {
    "Content-Type": "application/json",
    "X-Slack-Signature": "v0=" + hmacHex(secret, `v0:${now}:${body}`),
    "X-Slack-Request-Timestamp": String(now),
  };
  const verdict = await verify("slack", [secret], headers, body);
  assert.deepEqual(verdict, { ok: true });
  const ok = await handshake({ provider: "slack", headers, body, secrets: [secret], verdict });
  assert.equal(ok?.status, 200);
  assert.equal(ok?.headers.get("content-type"), "application/json");
  assert.equal(ok?.headers.get("x-content-type-options"), "nosniff");
  assert.deepEqual(await ok?.json(), {
    challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
  });
  // With no verdict from the caller, the handshake checks the signature itself.
  const self = await handshake({ provider: "slack", headers, body, secrets: [secret] });
  assert.equal(self?.status, 200);

  const forged = await handshake({
    provider: "slack",
    headers: { ...headers, "X-Slack-Signature": "v0=" + "0".repeat(64) },
    body,
    secrets: [secret],
  });
  assert.equal(forged?.status, 401);
  assert.equal(forged?.headers.get("content-type"), "application/json");
  assert.deepEqual(await forged?.json(), { error: "signature does not match" });
  const refused = await handshake({
    provider: "slack",
    headers,
    body,
    secrets: [secret],
    verdict: { ok: false, reason: "timestamp is 412 s old (tolerance 300 s)" },
  });
  assert.equal(refused?.status, 401);
  assert.deepEqual(await refused?.json(), { error: "timestamp is 412 s old (tolerance 300 s)" });
  // Any other Slack event is a regular webhook.
  const event = JSON.stringify({ type: "event_callback", event: { type: "message" } });
  assert.equal(await handshake({ provider: "slack", body: event, verdict }), null);
  assert.equal(await handshake({ provider: "slack", method: "GET", body, verdict }), null);
});

Deno.test("[handshakes] Zoom: endpoint.url_validation gets its encryptedToken when signed", async () => {
  const body = JSON.stringify({
    payload: { plainToken: "qgg8vlvZRS6UYooatFL8Aw" },
    event_ts: 1654503849680,
    event: "endpoint.url_validation",
  });
  const now = nowSeconds();
  const signed = (secret: string) => ({
    "Content-Type": "application/json",
    "x-zm-signature": "v0=" + hmacHex(secret, `v0:${now}:${body}`),
    "x-zm-request-timestamp": String(now),
  });
  const headers = signed(SECRET);
  const verdict = await verify("zoom", [SECRET], headers, body);
  const ok = await handshake({ provider: "zoom", headers, body, verdict });
  assert.equal(ok?.status, 200);
  assert.equal(ok?.headers.get("content-type"), "application/json");
  assert.equal(ok?.headers.get("x-content-type-options"), "nosniff");
  // Zoom's docs: encryptedToken = hex HMAC-SHA256(secret token, plainToken).
  assert.deepEqual(await ok?.json(), {
    plainToken: "qgg8vlvZRS6UYooatFL8Aw",
    encryptedToken: hmacHex(SECRET, "qgg8vlvZRS6UYooatFL8Aw"),
  });
  // Signed with the previous secret during a rotation: answered with that secret's token.
  const rotated = await handshake({
    provider: "zoom",
    headers: signed(PREVIOUS),
    body,
    secrets: [SECRET, PREVIOUS],
  });
  assert.equal(rotated?.status, 200);
  assert.equal((await rotated?.json()).encryptedToken, hmacHex(PREVIOUS, "qgg8vlvZRS6UYooatFL8Aw"));

  const unsigned = await handshake({ provider: "zoom", body });
  assert.equal(unsigned?.status, 401);
  assert.equal(unsigned?.headers.get("content-type"), "application/json");
  assert.deepEqual(await unsigned?.json(), { error: "missing x-zm-signature header" });
  const forged = await handshake({ provider: "zoom", headers: signed("wrong"), body });
  assert.equal(forged?.status, 401);
  assert.deepEqual(await forged?.json(), { error: "signature does not match" });
  // Other Zoom events and oversized tokens are not handshakes.
  const started = JSON.stringify({ event: "meeting.started", payload: {} });
  assert.equal(await handshake({ provider: "zoom", body: started, verdict }), null);
  const long = JSON.stringify({
    event: "endpoint.url_validation",
    payload: { plainToken: "x".repeat(1001) },
  });
  assert.equal(await handshake({ provider: "zoom", body: long, verdict }), null);
});

Deno.test("[handshakes] providers without a handshake answer null", async () => {
  const body = JSON.stringify({ type: "url_verification", challenge: "c" });
  for (const provider of ["github", "stripe", "shopify", "standard", "svix", "twilio"] as const) {
    assert.equal(await handshake({ provider, body, verdict: { ok: true } }), null);
    assert.equal(
      await handshake({
        provider,
        method: "GET",
        url: `${URL_SIGNED}?hub.mode=subscribe&hub.verify_token=t&hub.challenge=c`,
        verifyToken: "t",
      }),
      null,
    );
  }
});
