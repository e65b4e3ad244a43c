/**
 * The envelope's two sides agree: what the server's JSON builder (lib/log/envelope_json.ts)
 * splices together parses with the one schema (lib/shared/envelope.ts) and equals the typed
 * value a client expects, for every kind of body; and the browser bundle stays free of zod.
 */
import assert from "node:assert/strict";
import type { Endpoint } from "../lib/endpoints/endpoints.ts";
import { readWebhook } from "../lib/intake/receive.ts";
import { type InlineEvent, toLiveEvent } from "../lib/log/envelope_json.ts";
import {
  type Verified,
  type WebhookEnvelope,
  webhookEnvelopeSchema,
} from "../lib/shared/envelope.ts";
import { nextId } from "../lib/store/ids.ts";
import { buildBundles } from "../lib/web/bundles.ts";
import { ISLAND_MODULES } from "../islands/_registry.ts";

const USER_ID = "user-1";

/** Builds the envelope for `request` the way ingest does: read, then the builder. */
async function envelopeFor(
  request: Request,
  options: { path: string; respond?: boolean; verified?: Verified; handshake?: boolean },
): Promise<{ live: InlineEvent; id: string; receivedAt: string }> {
  const endpoint: Endpoint = {
    id: "endpoint-1",
    userId: USER_ID,
    slug: "Slug_22characters_0001",
    name: "test",
    createdAt: new Date().toISOString(),
    ...(options.respond ? { respond: true } : {}),
  };
  const webhook = await readWebhook(request, {
    endpoint,
    path: options.path,
    maxBodyBytes: 1024 * 1024,
    maxMetadataBytes: 64 * 1024,
  });
  const id = nextId();
  const receivedAt = webhook.receivedAt.toISOString();
  const live = toLiveEvent(
    {
      id,
      userId: USER_ID,
      endpoint: endpoint.slug,
      receivedAt,
      method: webhook.method,
      path: webhook.path,
      queryJson: webhook.queryJson,
      headersJson: webhook.headersJson,
      contentType: webhook.contentType,
      kind: webhook.kind,
      eventType: webhook.eventType ?? null,
      ...(options.verified ? { verified: options.verified } : {}),
      ...(options.handshake ? { handshake: true } : {}),
      ...(options.respond ? { respond: true } : {}),
    },
    webhook.body,
    webhook.text,
  );
  return { live, id, receivedAt };
}

/** The envelope parses with the schema, equals `expected`, and carries nothing else. */
function assertEnvelope(live: InlineEvent, expected: WebhookEnvelope): void {
  const raw = JSON.parse(live.json);
  assert.deepEqual(webhookEnvelopeSchema.parse(raw), expected);
  assert.deepEqual(raw, expected, "no field beyond the schema's");
  // One line, so it fits an SSE `data:` field as is.
  assert.ok(!/[\r\n]/.test(live.json));
  assert.equal(new TextDecoder().decode(live.sse()), `id: ${live.id}\ndata: ${live.json}\n\n`);
}

Deno.test("[envelope] a JSON body: payload parsed, body verbatim, big integers exact", async () => {
  const text = '{\n  "order": {"id": 12345678901234567890},\n  "ok": true\n}';
  const { live, id, receivedAt } = await envelopeFor(
    new Request("http://relay.test/api/in/slug/github/push?x=1&x=2&y=z", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-GitHub-Event": "push" },
      body: text,
    }),
    { path: "/github/push" },
  );
  assertEnvelope(live, {
    type: "webhook",
    id,
    endpoint: "Slug_22characters_0001",
    receivedAt,
    method: "POST",
    path: "/github/push",
    query: { x: ["1", "2"], y: "z" },
    headers: { "content-type": "application/json", "x-github-event": "push" },
    contentType: "application/json",
    eventType: "push",
    payload: { order: { id: 12345678901234567890 }, ok: true },
    body: text,
  });
  // The payload is the sender's own text: a client with a big-number parser gets every digit.
  assert.match(live.json, /"payload":\{ +"order": \{"id": 12345678901234567890\}/);
});

Deno.test("[envelope] a form body: fields as payload, repeated names as arrays", async () => {
  const text = "a=1&b=x+y&a=2&c=%E2%9C%93";
  const { live, id, receivedAt } = await envelopeFor(
    new Request("http://relay.test/api/in/slug", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded; charset=utf-8" },
      body: text,
    }),
    { path: "/" },
  );
  assertEnvelope(live, {
    type: "webhook",
    id,
    endpoint: "Slug_22characters_0001",
    receivedAt,
    method: "POST",
    path: "/",
    query: {},
    headers: { "content-type": "application/x-www-form-urlencoded; charset=utf-8" },
    contentType: "application/x-www-form-urlencoded; charset=utf-8",
    eventType: null,
    payload: { a: ["1", "2"], b: "x y", c: "✓" },
    body: text,
  });
});

Deno.test("[envelope] a binary body: bodyBase64 and no payload", async () => {
  const bytes = new Uint8Array([0xff, 0x00, 0x80, 0xfe, 0x41, 0xc3]);
  const { live, id, receivedAt } = await envelopeFor(
    new Request("http://relay.test/api/in/slug/upload", {
      method: "PUT",
      headers: { "Content-Type": "application/octet-stream" },
      body: bytes,
    }),
    { path: "/upload" },
  );
  assertEnvelope(live, {
    type: "webhook",
    id,
    endpoint: "Slug_22characters_0001",
    receivedAt,
    method: "PUT",
    path: "/upload",
    query: {},
    headers: { "content-type": "application/octet-stream" },
    contentType: "application/octet-stream",
    eventType: null,
    payload: null,
    bodyBase64: bytes.toBase64(),
  });
});

Deno.test("[envelope] an empty body: body is empty text, payload and content type null", async () => {
  const { live, id, receivedAt } = await envelopeFor(
    new Request("http://relay.test/api/in/slug/ping?probe", { method: "GET" }),
    { path: "/ping" },
  );
  assertEnvelope(live, {
    type: "webhook",
    id,
    endpoint: "Slug_22characters_0001",
    receivedAt,
    method: "GET",
    path: "/ping",
    query: { probe: "" },
    headers: {},
    contentType: null,
    eventType: null,
    payload: null,
    body: "",
  });
});

Deno.test("[envelope] respond mode: respond is true and ends the envelope", async () => {
  const { live, id, receivedAt } = await envelopeFor(
    new Request("http://relay.test/api/in/slug", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: '{"question":"?"}',
    }),
    { path: "/", respond: true },
  );
  assertEnvelope(live, {
    type: "webhook",
    id,
    endpoint: "Slug_22characters_0001",
    receivedAt,
    method: "POST",
    path: "/",
    query: {},
    headers: { "content-type": "application/json" },
    contentType: "application/json",
    eventType: null,
    payload: { question: "?" },
    body: '{"question":"?"}',
    respond: true,
  });
  // Connections recognise respond-mode envelopes by this tail (lib/fanout/connections.ts).
  assert.ok(live.json.endsWith(',"respond":true}'));
});

Deno.test("[envelope] a provider's verdict and a handshake mark; respond still ends it", async () => {
  const verdicts: Verified[] = [
    { provider: "github", ok: true },
    { provider: "stripe", ok: false, reason: 'signature "v1" does not match' },
  ];
  for (const verified of verdicts) {
    for (const handshake of [false, true]) {
      const { live, id, receivedAt } = await envelopeFor(
        new Request("http://relay.test/api/in/slug?hub.challenge=7", { method: "GET" }),
        { path: "/", verified, handshake, respond: !handshake },
      );
      assertEnvelope(live, {
        type: "webhook",
        id,
        endpoint: "Slug_22characters_0001",
        receivedAt,
        method: "GET",
        path: "/",
        query: { "hub.challenge": "7" },
        headers: {},
        contentType: null,
        eventType: null,
        payload: null,
        body: "",
        verified,
        ...(handshake ? { handshake: true as const } : { respond: true }),
      });
      if (!handshake) assert.ok(live.json.endsWith(',"respond":true}'));
    }
  }
  const parsed = (verified: unknown) =>
    webhookEnvelopeSchema.safeParse({
      type: "webhook",
      id: "x",
      endpoint: "e",
      receivedAt: "t",
      method: "POST",
      path: "/",
      query: {},
      headers: {},
      contentType: null,
      payload: null,
      body: "",
      verified,
    }).success;
  assert.equal(parsed({ provider: "github", ok: true }), true);
  assert.equal(parsed({ provider: "github", ok: false }), false, "a failure needs its reason");
  assert.equal(parsed({ provider: "github", ok: true, reason: "x" }), false);
});

Deno.test("[envelope] the schema wants exactly one of body and bodyBase64", () => {
  const base = {
    type: "webhook",
    id: "01J0000000000000000000000A",
    endpoint: "slug",
    receivedAt: new Date().toISOString(),
    method: "POST",
    path: "/",
    query: {},
    headers: {},
    contentType: null,
    eventType: null,
    payload: null,
  };
  assert.ok(webhookEnvelopeSchema.safeParse({ ...base, body: "" }).success);
  assert.ok(webhookEnvelopeSchema.safeParse({ ...base, bodyBase64: "AA==" }).success);
  assert.ok(!webhookEnvelopeSchema.safeParse(base).success);
  assert.ok(!webhookEnvelopeSchema.safeParse({ ...base, body: "", bodyBase64: "" }).success);
  assert.ok(!webhookEnvelopeSchema.safeParse({ ...base, type: "pong", body: "" }).success);
});

Deno.test("[envelope] the inspector's browser bundle leaves the schema and zod out", () => {
  const bundles = buildBundles(ISLAND_MODULES);
  const scripts = bundles.scripts("EventInspector");
  const bytes = [scripts.src, ...scripts.preload]
    .map((url) => bundles.file(url.slice(url.lastIndexOf("/") + 1))?.byteLength ?? 0)
    .reduce((sum, size) => sum + size, 0);
  // About 41 KB with Preact and signals; zod alone would add some 450 KB.
  assert.ok(bytes > 0 && bytes < 150_000, `the inspector's scripts take ${bytes} bytes`);
});
