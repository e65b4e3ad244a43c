/**
 * Issue 12: any method is a webhook; providers, secrets and their verdicts per endpoint.
 * Real verdicts per provider are tested where the verification functions live.
 */
import assert from "node:assert/strict";
import { type WebhookEnvelope, webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import { openSse, openWs, signUp, startTestServer } from "./helpers.ts";

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
