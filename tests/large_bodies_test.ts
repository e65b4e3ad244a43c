/**
 * Bodies up to 25 MiB end to end: a real server, a sender posting 25 MiB, and clients that get
 * it whole and byte-exact over SSE and WebSocket, by GET /api/events/:id and as a download.
 * (The forward command's case is in forward_test.ts; ingest's own limits in the ingest tests.)
 */
import assert from "node:assert/strict";
import { webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import { openSse, openWs, postWebhook, randomBytes, signUp, startTestServer } from "./helpers.ts";

const MIB = 2 ** 20;

/** The body an envelope carries, as bytes. */
function bodyOf(envelope: unknown): Uint8Array {
  const parsed = webhookEnvelopeSchema.parse(envelope);
  return parsed.bodyBase64 !== undefined
    ? Uint8Array.fromBase64(parsed.bodyBase64)
    : new TextEncoder().encode(parsed.body ?? "");
}

/** Compares large byte arrays without printing 25 MiB on failure. */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.byteLength, expected.byteLength, `${what}: length`);
  const at = actual.findIndex((byte, i) => byte !== expected[i]);
  assert.equal(at, -1, `${what}: first difference at byte ${at}`);
}

Deno.test("[large] a 25 MiB binary body arrives byte-exact over SSE and WebSocket, and downloads", async () => {
  await using server = await startTestServer({ MAX_BODY_BYTES: String(25 * MIB) });
  const user = await signUp(server);
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  try {
    const body = randomBytes(25 * MIB);
    const response = await postWebhook(user.webhookUrl, body, {
      "Content-Type": "application/octet-stream",
    });
    assert.equal(response.status, 200, await response.clone().text());
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    const { id } = await response.json();

    const frame = await sse.next(60_000);
    assert.equal(frame.id, id);
    const fromSse = JSON.parse(frame.data);
    assert.equal(fromSse.id, id);
    assert.equal(fromSse.payload, null);
    assertSameBytes(bodyOf(fromSse), body, "SSE");

    const fromWs = await ws.next(60_000);
    assert.equal(fromWs.id, id);
    assertSameBytes(bodyOf(fromWs), body, "WebSocket");

    const headers = { Authorization: `Bearer ${user.token}` };
    const one = await fetch(`${server.url}/api/events/${id}`, { headers });
    assert.equal(one.status, 200);
    assert.equal(one.headers.get("content-type"), "application/json");
    assertSameBytes(bodyOf(await one.json()), body, "GET /api/events/:id");

    const download = await fetch(`${server.url}/api/events/${id}/body`, { headers });
    assert.equal(download.status, 200);
    assert.equal(download.headers.get("content-type"), "application/octet-stream");
    assert.equal(download.headers.get("content-length"), String(25 * MIB));
    assertSameBytes(new Uint8Array(await download.arrayBuffer()), body, "download");
  } finally {
    sse.close();
    await ws.close();
  }
});

Deno.test("[large] a 5 MiB JSON body comes with its payload, and catch-up sends it again", async () => {
  await using server = await startTestServer({ MAX_BODY_BYTES: String(25 * MIB) });
  const user = await signUp(server);
  const items = Array.from({ length: 80_000 }, (_, n) => ({
    n,
    note: `line "${n}"\nwith ünïcödé 🎉`,
  }));
  const text = JSON.stringify({ items }, null, 1);
  const body = new TextEncoder().encode(text);
  assert.ok(body.byteLength > 5 * MIB, `${body.byteLength} bytes`);
  const response = await postWebhook(user.webhookUrl, body, {
    "Content-Type": "application/json",
  });
  assert.equal(response.status, 200, await response.clone().text());
  const { id } = await response.json();

  // Connecting afterwards: the catch-up reads it from the log.
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`, {
    "Last-Event-ID": "0".repeat(26),
  });
  try {
    ws.send({ type: "replay" });
    const fromWs = await ws.next(60_000);
    assert.equal(fromWs.id, id, JSON.stringify(fromWs).slice(0, 300));
    assert.deepEqual(fromWs.payload, { items });
    assert.equal(fromWs.body, text);
    const frame = await sse.next(60_000);
    assert.equal(frame.id, id);
    const fromSse = JSON.parse(frame.data);
    assert.deepEqual(fromSse.payload, { items });
    assert.equal(fromSse.body, text);
  } finally {
    sse.close();
    await ws.close();
  }
});
