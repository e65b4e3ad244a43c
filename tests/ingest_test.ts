import assert from "node:assert/strict";
import { type WebhookEnvelope, webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import { githubSignature, openWs, postWebhook, signUp, startTestServer } from "./helpers.ts";

const SECRET = "It's a Secret to Everybody";

/** A WebSocket message read as an envelope: it must match the one schema. */
function envelope(message: Record<string, unknown>): WebhookEnvelope {
  return webhookEnvelopeSchema.parse(message);
}

async function historyCount(serverUrl: string, token: string): Promise<number> {
  const response = await fetch(`${serverUrl}/api/events?limit=200`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  return (await response.json()).events.length;
}

Deno.test("[ingest] 200 with id and quota headers; the envelope carries the request", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const body = '{"event": "user.signup", "email": "test@example.com"}';
  const response = await fetch(`${user.webhookUrl}/github/push?delivery=1&tag=a&tag=b`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-GitHub-Event": "push" },
    body,
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^application\/json/);
  const result = await response.json();
  assert.equal(result.ok, true);
  assert.match(result.id, /^[0-9A-Z]{26}$/);
  assert.equal(response.headers.get("x-quota-limit"), "1000");
  assert.equal(response.headers.get("x-quota-remaining"), "999");
  const reset = new Date(Number(response.headers.get("x-quota-reset")) * 1000);
  assert.equal(reset.getUTCDate(), 1);
  assert.ok(reset.getTime() > Date.now());

  const message = envelope(await ws.next());
  assert.equal(message.type, "webhook");
  assert.equal(message.id, result.id);
  assert.equal(message.endpoint, user.slug);
  assert.equal(message.method, "POST");
  assert.equal(message.path, "/github/push");
  assert.deepEqual(message.query, { delivery: "1", tag: ["a", "b"] });
  assert.equal(message.headers["x-github-event"], "push");
  assert.equal(message.contentType, "application/json");
  assert.deepEqual(message.payload, { event: "user.signup", email: "test@example.com" });
  assert.equal(message.body, body);
  assert.ok(Math.abs(Date.parse(message.receivedAt) - Date.now()) < 5000);
  await ws.close();
});

Deno.test("[ingest] invalid JSON gets 400 with the reason, is not stored and not counted", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  for (const headers of [{ "Content-Type": "application/json" }, {} as Record<string, string>]) {
    const response = await fetch(user.webhookUrl, {
      method: "POST",
      headers,
      body: new TextEncoder().encode('{"unterminated": '),
    });
    assert.equal(response.status, 400);
    assert.match(response.headers.get("content-type")!, /^application\/json/);
    assert.match((await response.json()).error, /^Cannot ingest: body is not valid JSON/);
    assert.equal(response.headers.get("x-quota-remaining"), "1000");
    assert.equal(response.headers.get("access-control-allow-origin"), "*");
  }
  assert.equal(await historyCount(server.url, user.token), 0);
  const ok = await postWebhook(user.webhookUrl, "[1,2,3]", {});
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("x-quota-remaining"), "999");
  await ok.body?.cancel();
});

Deno.test("[ingest] unknown slug 404, HEAD 405 with Allow", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const unknown = await postWebhook(`${server.url}/api/in/does-not-exist`, "{}");
  assert.equal(unknown.status, 404);
  assert.match(unknown.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await unknown.json(), {
    error: 'Cannot ingest: no endpoint with slug "does-not-exist"',
  });
  const head = await fetch(user.webhookUrl, { method: "HEAD" });
  assert.equal(head.status, 405);
  assert.equal(head.headers.get("allow"), "GET, POST, PUT, PATCH, DELETE, OPTIONS");
  await head.body?.cancel();
});

Deno.test("[ingest] raw bytes survive: a GitHub signature verifies on the delivered body", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  // Odd spacing, unicode escapes, key order and a trailing newline: re-serialising would change
  // any of them and break the signature.
  const raw = new TextEncoder().encode(
    '{ "zeta":1,  "alpha" : "caf\\u00e9 ☕",\n "n": 1.0e2, "emoji":"😀" }\n',
  );
  const signature = await githubSignature(SECRET, raw);
  const response = await postWebhook(user.webhookUrl, raw, {
    "Content-Type": "application/json",
    "X-Hub-Signature-256": signature,
  });
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const message = envelope(await ws.next());
  const received = new TextEncoder().encode(message.body!);
  assert.deepEqual(received, raw);
  const headers = message.headers;
  assert.equal(await githubSignature(SECRET, received), headers["x-hub-signature-256"]);
  assert.deepEqual(message.payload, { zeta: 1, alpha: "café ☕", n: 100, emoji: "😀" });
  await ws.close();
});

Deno.test("[ingest] form bodies give fields; binary bodies arrive as exact base64", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const form = await postWebhook(user.webhookUrl, "payload=%7B%22a%22%3A1%7D&token=x&token=y", {
    "Content-Type": "application/x-www-form-urlencoded",
  });
  assert.equal(form.status, 200);
  await form.body?.cancel();
  const formMessage = envelope(await ws.next());
  assert.deepEqual(formMessage.payload, { payload: '{"a":1}', token: ["x", "y"] });
  assert.equal(formMessage.body, "payload=%7B%22a%22%3A1%7D&token=x&token=y");

  const binary = new Uint8Array(4096).map((_, i) => (i * 131 + 7) % 256);
  const bin = await postWebhook(user.webhookUrl, binary, {
    "Content-Type": "application/octet-stream",
  });
  assert.equal(bin.status, 200);
  await bin.body?.cancel();
  const binMessage = envelope(await ws.next());
  assert.equal(binMessage.payload, null);
  assert.equal(binMessage.body, undefined);
  assert.deepEqual(Uint8Array.fromBase64(binMessage.bodyBase64!), binary);

  const text = await postWebhook(user.webhookUrl, "plain text\r\nline two", {
    "Content-Type": "text/plain",
  });
  assert.equal(text.status, 200);
  await text.body?.cancel();
  const textMessage = envelope(await ws.next());
  assert.equal(textMessage.payload, null);
  assert.equal(textMessage.body, "plain text\r\nline two");
  await ws.close();
});

Deno.test("[ingest] a 1 MiB body is stored split and delivered byte-exact; one byte more is 413", async () => {
  await using server = await startTestServer({ MAX_BODY_BYTES: String(1024 * 1024) });
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const big = new Uint8Array(1024 * 1024).map((_, i) => (i * 7919) % 251);
  const signature = await githubSignature(SECRET, big);
  const response = await postWebhook(user.webhookUrl, big, {
    "Content-Type": "application/octet-stream",
  });
  assert.equal(response.status, 200);
  const { id } = await response.json();
  const live = envelope(await ws.next());
  const liveBytes = Uint8Array.fromBase64(live.bodyBase64!);
  assert.equal(await githubSignature(SECRET, liveBytes), signature);
  // The stored copy (read back from KV chunks) is exact too.
  const stored = await fetch(`${server.url}/api/events/${id}`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(stored.status, 200);
  assert.deepEqual(Uint8Array.fromBase64((await stored.json()).bodyBase64), big);

  const tooBig = await postWebhook(user.webhookUrl, new Uint8Array(1024 * 1024 + 1), {
    "Content-Type": "application/octet-stream",
  });
  assert.equal(tooBig.status, 413);
  assert.match((await tooBig.json()).error, /larger than the limit of 1048576 bytes/);
  // Without Content-Length (chunked) the limit holds while streaming.
  const stream = ReadableStream.from([new Uint8Array(700_000), new Uint8Array(700_000)]);
  const chunked = await fetch(user.webhookUrl, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: stream,
  });
  assert.equal(chunked.status, 413);
  await chunked.body?.cancel();
  assert.equal(await historyCount(server.url, user.token), 1);
  await ws.close();
});

Deno.test("[ingest] a per-endpoint flood gets 429 with Retry-After", async () => {
  await using server = await startTestServer({
    INGEST_RATE_PER_SECOND: "1",
    INGEST_RATE_BURST: "3",
  });
  const user = await signUp(server);
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    const response = await postWebhook(user.webhookUrl, "{}");
    statuses.push(response.status);
    if (response.status === 429) {
      assert.equal(response.headers.get("retry-after"), "1");
      assert.match((await response.json()).error, /too many requests/);
    } else await response.body?.cancel();
  }
  assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
});

Deno.test("[ingest] the default rate limit lets a burst of 3,000 through", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "5000" });
  const user = await signUp(server);
  const responses = await Promise.all(
    Array.from({ length: 3000 }, (_, i) => postWebhook(user.webhookUrl, JSON.stringify({ i }))),
  );
  const statuses = await Promise.all(
    responses.map(async (r) => (await r.body?.cancel(), r.status)),
  );
  assert.equal(statuses.filter((s) => s === 200).length, 3000);
});

Deno.test("[ingest] big headers push the body out of the pack; oversized headers get 431", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const body = new Uint8Array(40_000).map((_, i) => i % 256);
  const response = await postWebhook(user.webhookUrl, body, {
    "Content-Type": "application/octet-stream",
    "X-Padding": "p".repeat(12_000),
  });
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const message = envelope(await ws.next());
  assert.deepEqual(Uint8Array.fromBase64(message.bodyBase64!), body);
  assert.equal(message.headers["x-padding"].length, 12_000);
  await ws.close();

  const tooBig = await postWebhook(user.webhookUrl, "{}", {
    "Content-Type": "application/json",
    "X-Padding": "p".repeat(17_000),
  });
  assert.equal(tooBig.status, 431);
  assert.match(
    (await tooBig.json()).error,
    /path, headers and query take \d+ bytes, over the limit of 16384/,
  );
});
