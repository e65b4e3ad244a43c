/**
 * Issue 12: any method is a webhook; providers, secrets and their verdicts per endpoint.
 * Real verdicts per provider are tested where the verification functions live.
 */
import { envelopeText } from "../lib/log/envelope_stream.ts";
import assert from "node:assert/strict";
import { type WebhookEnvelope, webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import { type Endpoint, endpointCheck } from "../lib/endpoints/endpoints.ts";
import {
  loadSecretsKey,
  openSecret,
  sealSecret,
  SECRETS_KEY_FILE,
} from "../lib/accounts/secret_box.ts";
import { loadConfig } from "../lib/runtime/config.ts";
import { createBroker } from "../lib/fanout/broker.ts";
import { createIngest, type IncomingWebhook } from "../lib/intake/group_commit.ts";
import { signUp as signUpUser } from "../lib/accounts/users.ts";
import { getEvent } from "../lib/log/events.ts";
import { usageMonthKey } from "../lib/store/kv_keys.ts";
import { monthOf } from "../lib/billing/usage.ts";
import { openSse, openWs, signUp, startTestServer, waitFor } from "./helpers.ts";

/** A message read as an envelope: it must match the one schema. */
function envelope(message: unknown): WebhookEnvelope {
  return webhookEnvelopeSchema.parse(message);
}

const SENT: { method: string; path: string; body: string | null }[] = [
  { method: "GET", path: "/meta?hub.mode=subscribe&hub.challenge=42&tag=a&tag=b", body: null },
  { method: "PUT", path: "/put", body: '{"put":1}' },
  { method: "PATCH", path: "/patch", body: '{"patch":2}' },
  { method: "DELETE", path: "/delete", body: null },
];

Deno.test("[providers] GET, PUT, PATCH and DELETE are webhooks, delivered with their method", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  try {
    for (const { method, path, body } of SENT) {
      const response = await fetch(`${user.webhookUrl}${path}`, {
        method,
        headers: body === null ? {} : { "Content-Type": "application/json" },
        body,
      });
      assert.equal(response.status, 200, `${method} answered ${response.status}`);
      assert.match(response.headers.get("content-type")!, /^application\/json/);
      const { ok, id } = await response.json();
      assert.equal(ok, true);
      for (const message of [await ws.next(), JSON.parse((await sse.next()).data)]) {
        const event = envelope(message);
        assert.equal(event.id, id);
        assert.equal(event.method, method);
        assert.equal(event.path, path.split("?")[0]);
        assert.deepEqual(event.payload, body === null ? null : JSON.parse(body));
        assert.equal(event.body, body ?? "");
        if (method === "GET") {
          assert.deepEqual(event.query, {
            "hub.mode": "subscribe",
            "hub.challenge": "42",
            tag: ["a", "b"],
          });
        }
      }
    }
    const usage = await fetch(`${server.url}/api/me`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assert.equal(usage.status, 200);
    assert.equal((await usage.json()).usage.used, SENT.length);
  } finally {
    sse.close();
    await ws.close();
  }
});

Deno.test("[providers] HEAD is refused with Allow; OPTIONS allows every webhook method", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const head = await fetch(user.webhookUrl, { method: "HEAD" });
  assert.equal(head.status, 405);
  assert.equal(head.headers.get("allow"), "GET, POST, PUT, PATCH, DELETE, OPTIONS");
  await head.body?.cancel();
  const options = await fetch(user.webhookUrl, { method: "OPTIONS" });
  assert.equal(options.status, 204);
  assert.equal(
    options.headers.get("access-control-allow-methods"),
    "GET, POST, PUT, PATCH, DELETE",
  );
  await options.body?.cancel();
});

/** PATCHes an endpoint's settings with the user's token. */
function patchEndpoint(
  server: { url: string },
  user: { token: string; slug: string },
  body: unknown,
): Promise<Response> {
  return fetch(`${server.url}/api/endpoints/${user.slug}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

const FIRST_SECRET = "whsec_first-secret-value-1234";
const SECOND_SECRET = "second-secret-value-WXYZ";

Deno.test("[providers] settings round-trip: secrets sealed in KV, shown only by their last 4", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websocks-providers-" });
  const kvPath = `${dir}/websocks.kv`;
  try {
    let keyText: string;
    {
      await using server = await startTestServer({ KV_PATH: kvPath, STORAGE_RESERVE_BYTES: "0" });
      const user = await signUp(server);
      const first = await patchEndpoint(server, user, {
        provider: "github",
        secret: FIRST_SECRET,
        verifyToken: "verify-me-token",
        enforce: false,
      });
      assert.equal(first.status, 200);
      assert.match(first.headers.get("content-type")!, /^application\/json/);
      const firstBody = await first.json();
      assert.equal(firstBody.endpoint.provider, "github");
      assert.equal(firstBody.endpoint.secretLast4, "1234");
      assert.equal(firstBody.endpoint.verifyTokenSet, true);
      assert.equal(firstBody.endpoint.enforce, false);
      assert.ok(!JSON.stringify(firstBody).includes(FIRST_SECRET));

      const second = await patchEndpoint(server, user, { secret: SECOND_SECRET });
      assert.equal(second.status, 200);
      const { endpoint } = await second.json();
      assert.equal(endpoint.secretLast4, "WXYZ");
      assert.equal(endpoint.provider, "github");

      const listed = await fetch(`${server.url}/api/endpoints`, {
        headers: { Authorization: `Bearer ${user.token}` },
      });
      assert.equal(listed.status, 200);
      const listText = await listed.text();
      for (const secret of [FIRST_SECRET, SECOND_SECRET, "verify-me-token"]) {
        assert.ok(!listText.includes(secret), `${secret} returned`);
      }

      const bad = await patchEndpoint(server, user, { provider: "paypal" });
      assert.equal(bad.status, 400);
      assert.match((await bad.json()).error, /provider/);
      const unknown = await patchEndpoint(server, user, { signingSecret: "x" });
      assert.equal(unknown.status, 400);
      await unknown.body?.cancel();

      // Stored: sealed, never in plain text anywhere in KV; the previous secret kept 24 h.
      const { kv, secretsKey } = server.services;
      let stored: Endpoint | null = null;
      for await (const entry of kv.list({ prefix: [] })) {
        const text = JSON.stringify(entry.value, (_, v) => typeof v === "bigint" ? String(v) : v);
        for (const secret of [FIRST_SECRET, SECOND_SECRET, "verify-me-token"]) {
          assert.ok(!text.includes(secret), `${secret} in KV at ${String(entry.key)}`);
        }
        const value = entry.value as Endpoint;
        if (value && typeof value === "object" && (value as Endpoint).slug === user.slug) {
          stored ??= value;
        }
      }
      assert.ok(stored?.secret && stored.previousSecret && stored.previousUntil);
      const day = stored.previousUntil - Date.now();
      assert.ok(day > 23 * 3600_000 && day <= 24 * 3600_000, `previousUntil in ${day} ms`);
      const check = await endpointCheck(stored, { key: secretsKey, now: Date.now() });
      assert.deepEqual(check, {
        provider: "github",
        secrets: [SECOND_SECRET, FIRST_SECRET],
        verifyToken: "verify-me-token",
        enforce: false,
      });
      const later = await endpointCheck(stored, {
        key: secretsKey,
        now: Date.now() + 24 * 3600_000 + 1000,
      });
      assert.deepEqual(later?.secrets, [SECOND_SECRET]);

      keyText = await Deno.readTextFile(`${dir}/${SECRETS_KEY_FILE}`);
      assert.equal((await Deno.stat(`${dir}/${SECRETS_KEY_FILE}`)).mode! & 0o777, 0o600);

      const cleared = await patchEndpoint(server, user, { provider: null });
      assert.equal(cleared.status, 200);
      const clearedBody = await cleared.json();
      assert.equal(clearedBody.endpoint.provider, null);
      assert.equal(clearedBody.endpoint.secretLast4, null);
      assert.equal(clearedBody.endpoint.verifyTokenSet, false);
      // Set again, so the restart below has a sealed secret to open.
      assert.equal(
        (await patchEndpoint(server, user, { provider: "stripe", secret: FIRST_SECRET }))
          .status,
        200,
      );
    }
    // Restarted on the same data folder: the same key, and the stored secret still opens.
    await using again = await startTestServer({ KV_PATH: kvPath, STORAGE_RESERVE_BYTES: "0" });
    assert.equal(await Deno.readTextFile(`${dir}/${SECRETS_KEY_FILE}`), keyText);
    let reopened = false;
    for await (const entry of again.services.kv.list<Endpoint>({ prefix: [] })) {
      const value = entry.value;
      if (value && typeof value === "object" && value.provider === "stripe" && value.secret) {
        const check = await endpointCheck(value, { key: again.services.secretsKey, now: 0 });
        assert.deepEqual(check?.secrets, [FIRST_SECRET]);
        reopened = true;
      }
    }
    assert.ok(reopened);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[providers] SECRETS_KEY: required for an https PUBLIC_URL, validated when set", async () => {
  await assert.rejects(
    () =>
      loadSecretsKey({
        secretsKey: null,
        kvPath: "./data/websocks.kv",
        publicUrl: "https://hooks.example.com",
      }),
    /SECRETS_KEY is required when PUBLIC_URL is https/,
  );
  assert.throws(() => loadConfig({ SECRETS_KEY: "c2hvcnQ=" }), /SECRETS_KEY: must be base64/);
  const raw = crypto.getRandomValues(new Uint8Array(32));
  const text = btoa(String.fromCharCode(...raw));
  const key = await loadSecretsKey({
    secretsKey: loadConfig({ SECRETS_KEY: text }).secretsKey,
    kvPath: "./data/websocks.kv",
    publicUrl: "https://hooks.example.com",
  });
  const sealed = await sealSecret(key, "s3cret");
  assert.ok(!sealed.includes("s3cret"));
  assert.equal(await openSecret(key, sealed), "s3cret");
});

/** The caller's month: accepted (`used`) and refused (`rejected`) webhooks. */
async function usage(server: { url: string }, token: string) {
  const response = await fetch(`${server.url}/api/usage`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(response.status, 200);
  return await response.json() as { used: number; rejected: number };
}

/** Retained events, newest first. */
async function history(server: { url: string }, token: string): Promise<{ id: string }[]> {
  const response = await fetch(`${server.url}/api/events?limit=50`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(response.status, 200);
  return (await response.json()).events;
}

Deno.test("[providers] a provider's verdict rides in the envelope; none without a provider", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  try {
    const plain = await fetch(user.webhookUrl, { method: "POST", body: "{}" });
    assert.equal(plain.status, 200);
    await plain.body?.cancel();
    assert.equal(envelope(await ws.next()).verified, undefined);

    const set = await patchEndpoint(server, user, { provider: "github", secret: FIRST_SECRET });
    assert.equal(set.status, 200);
    await set.body?.cancel();
    const signed = await fetch(user.webhookUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Hub-Signature-256": "sha256=00" },
      body: '{"zen":"Design for failure."}',
    });
    assert.equal(signed.status, 200);
    const { id } = await signed.json();
    const event = envelope(await ws.next());
    assert.equal(event.id, id);
    // The shape only: whether it verifies is the signature checks' own tests.
    assert.equal(event.verified?.provider, "github");
    assert.equal(typeof event.verified?.ok, "boolean");
    if (event.verified && !event.verified.ok) assert.equal(typeof event.verified.reason, "string");
    assert.equal(event.handshake, undefined);
    assert.equal(event.body, '{"zen":"Design for failure."}');

    // The stored event carries it too.
    const stored = await fetch(`${server.url}/api/events/${id}`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assert.equal(stored.status, 200);
    assert.deepEqual(envelope(await stored.json()).verified, event.verified);
  } finally {
    await ws.close();
  }
});

Deno.test("[providers] enforce: a failed check is 401 with the reason, not stored, counted refused", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const set = await patchEndpoint(server, user, {
    provider: "stripe",
    secret: FIRST_SECRET,
    enforce: true,
  });
  assert.equal(set.status, 200);
  assert.equal((await set.json()).endpoint.enforce, true);
  // No signature header: fails with any implementation of the check.
  const response = await fetch(user.webhookUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: '{"type":"charge.succeeded"}',
  });
  assert.equal(response.status, 401);
  assert.match(response.headers.get("content-type")!, /^application\/json/);
  assert.match((await response.json()).error, /^Cannot ingest: ./);
  assert.deepEqual(await history(server, user.token), []);
  await waitFor(async () => (await usage(server, user.token)).rejected === 1, {
    what: "the refusal counted",
  });
  assert.equal((await usage(server, user.token)).used, 0);

  // Enforcement off again: the same request is stored, marked as failing.
  const off = await patchEndpoint(server, user, { enforce: false });
  assert.equal(off.status, 200);
  await off.body?.cancel();
  const again = await fetch(user.webhookUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: '{"type":"charge.succeeded"}',
  });
  assert.equal(again.status, 200);
  await again.body?.cancel();
  assert.equal((await history(server, user.token)).length, 1);
  assert.equal((await usage(server, user.token)).used, 1);
});

Deno.test("[providers] a handshake is stored, marked and counted, and refused over the limit", async () => {
  // answerHandshake cannot be injected into a server, so the quota side is tested where
  // webhooks are committed: handshakes count as any webhook, so none is stored past the limit.
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  try {
    const { endpoint } = await signUpUser(kv, {
      email: "handshake@example.com",
      password: "correct horse battery",
      monthlyLimit: 2,
    });
    const ingest = createIngest(kv, { broker, retentionMs: 60_000 });
    const webhook = (handshake: boolean): IncomingWebhook => ({
      endpoint,
      receivedAt: new Date(),
      method: "GET",
      path: "/",
      queryJson: '{"hub.challenge":"1"}',
      headersJson: "{}",
      contentType: null,
      kind: "json",
      body: new Uint8Array(),
      text: "",
      verified: { provider: "meta", ok: true },
      ...(handshake ? { handshake: true } : {}),
    });
    const first = await ingest.submit(webhook(false));
    assert.equal(first.accepted, true);
    const results = await Promise.all([ingest.submit(webhook(true)), ingest.submit(webhook(true))]);
    assert.deepEqual(results.map((r) => r.accepted), [true, false]);
    assert.equal(!results[1].accepted && results[1].reason, "quota");
    const used = await kv.get<Deno.KvU64>(usageMonthKey(endpoint.userId, monthOf(new Date())));
    assert.equal(used.value?.value, 2n);
    const id = results[0].accepted ? results[0].id : "";
    const stored = await getEvent(kv, { userId: endpoint.userId, id });
    const event = envelope(JSON.parse(await envelopeText(kv, stored!)));
    assert.equal(event.handshake, true);
    assert.deepEqual(event.verified, { provider: "meta", ok: true });
  } finally {
    broker.close();
    kv.close();
  }
});

/** POSTs the provider form as a browser on our pages would, not following redirects. */
function postProviderForm(
  server: { url: string },
  user: { slug: string; cookie: string },
  fields: Record<string, string>,
): Promise<Response> {
  return fetch(`${server.url}/dashboard/endpoints/${user.slug}/provider`, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Cookie: user.cookie,
      Origin: server.url,
    },
    body: new URLSearchParams(fields),
    redirect: "manual",
  });
}

Deno.test("[providers] the endpoints page sets a provider without JS and shows only the last 4", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const page = async () => {
    const response = await fetch(`${server.url}/dashboard/endpoints`, {
      headers: { Cookie: user.cookie },
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    return await response.text();
  };
  const before = await page();
  assert.ok(before.includes(`action="/dashboard/endpoints/${user.slug}/provider"`));
  assert.match(before, /data-provider="none"/);

  // Errors next to their fields, with a 400 and nothing typed echoed back.
  const unknown = await postProviderForm(server, user, { provider: "paypal", secret: "abcd1234" });
  assert.equal(unknown.status, 400);
  assert.equal(unknown.headers.get("content-type"), "text/html; charset=utf-8");
  const unknownPage = await unknown.text();
  assert.match(unknownPage, /id="provider-0-provider-error" class="field-error">Pick a provider/);
  assert.ok(!unknownPage.includes("abcd1234"));
  const noSecret = await postProviderForm(server, user, { provider: "github", enforce: "on" });
  assert.equal(noSecret.status, 400);
  assert.match(await noSecret.text(), /id="provider-0-secret-error" class="field-error">Enter/);

  const saved = await postProviderForm(server, user, {
    provider: "github",
    secret: FIRST_SECRET,
    verifyToken: "",
    enforce: "on",
  });
  assert.equal(saved.status, 303);
  assert.equal(saved.headers.get("location"), "/dashboard/endpoints");
  await saved.body?.cancel();
  const after = await page();
  assert.match(after, /checks github signatures and refuses those that fail/);
  assert.match(after, /data-provider="github"/);
  assert.match(after, /secret ending in 1234/);
  assert.match(after, /type="checkbox" name="enforce" value="on" checked/);
  assert.ok(!after.includes(FIRST_SECRET));
  const listed = await fetch(`${server.url}/api/endpoints`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  const [endpoint] = (await listed.json()).endpoints;
  assert.equal(endpoint.provider, "github");
  assert.equal(endpoint.secretLast4, "1234");
  assert.equal(endpoint.enforce, true);
  assert.equal(endpoint.verifyTokenSet, false);

  // A blank secret keeps the stored one; "None" removes provider and secret.
  const kept = await postProviderForm(server, user, { provider: "github", secret: "" });
  assert.equal(kept.status, 303);
  await kept.body?.cancel();
  assert.match(await page(), /secret ending in 1234, failures marked/);
  const none = await postProviderForm(server, user, { provider: "" });
  assert.equal(none.status, 303);
  await none.body?.cancel();
  const cleared = await page();
  assert.match(cleared, /checks no signatures/);
  assert.match(cleared, /Signatures:\s*<strong>not checked/);
});
