/**
 * Issue 10, attacker's review of the merged fixes: what a hostile account could still do after
 * them. Each test failed on the merged code first.
 */
import assert from "node:assert/strict";
import { openWs, postWebhook, signUp, startTestServer, type TestServer } from "./helpers.ts";
import type { TestUser } from "./helpers.ts";
import { idTime, nextId } from "../lib/store/ids.ts";
import { createResponses } from "../lib/fanout/respond_waiters.ts";

async function respondMode(server: TestServer, user: TestUser, timeoutSeconds: number) {
  const response = await fetch(`${server.url}/api/endpoints/${user.slug}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ respond: true, respondTimeoutSeconds: timeoutSeconds }),
  });
  assert.equal(response.status, 200);
  await response.body?.cancel();
}

Deno.test("[review] answers to events nobody waits for any more are refused, not held in memory", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user, 1);
  // Stored while no client is connected: the sender got 503 at once, nobody will ever wait.
  const ids: string[] = [];
  for (let i = 0; i < 40; i++) {
    const response = await postWebhook(user.webhookUrl, JSON.stringify({ i }));
    assert.equal(response.status, 503);
    assert.equal(response.headers.get("Content-Type"), "application/json");
    const message = (await response.json()).error as string;
    ids.push(/stored as (\w+)/.exec(message)![1]);
  }
  // Events a few seconds old: nobody can be about to wait for them (the sender has its 503).
  const last = idTime(ids.at(-1)!);
  while (Date.now() - last <= 6_000) await new Promise((resolve) => setTimeout(resolve, 100));
  const ws = await openWs(`${server.wsUrl}/ws?token=${user.token}`);
  try {
    // A replay sends them again, each asking for an answer; answers to them are "free".
    ws.send({ type: "replay", after: "0".repeat(26) });
    for (let i = 0; i < ids.length; i++) assert.equal((await ws.next()).id, ids[i]);
    assert.deepEqual(await ws.next(), { type: "replayed", after: "0".repeat(26), count: 40 });
    const big = "x".repeat(1024 * 1024);
    for (const id of ids) ws.send({ type: "response", id, status: 200, body: big });
    for (const id of ids) {
      const reply = await ws.next();
      assert.equal(reply.type, "error");
      assert.equal(
        reply.message,
        `Cannot respond to ${id}: no sender is waiting (answered or timed out)`,
      );
    }
  } finally {
    await ws.close();
  }
});

Deno.test("[review] early answers hold a bounded number of bytes, dropping the oldest", async () => {
  const responses = createResponses();
  const body = new Uint8Array(1024 * 1024);
  const ids = Array.from({ length: 40 }, () => nextId());
  // Fresh events nobody waits for (yet): each answer is kept as early, up to a byte budget.
  for (const id of ids) {
    assert.equal(responses.answer(id, "u1", { status: 200, headers: {}, body }), "taken");
  }
  // Compared by identity: a failing assert.equal would print a 1 MiB array.
  const oldest = await responses.wait(ids[0], "u1", 0);
  assert.ok(oldest === null, "the oldest early answer was kept past the byte budget");
  assert.equal((await responses.wait(ids.at(-1)!, "u1", 0))?.body.byteLength, body.byteLength);
  responses.stop();
});

/** Opens a raw POST that announces `length` bytes and sends one; the connection stays open. */
async function heldBody(server: TestServer, path: string, forwardedFor: string, length: number) {
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: Number(new URL(server.url).port),
  });
  await conn.write(
    new TextEncoder().encode(
      `POST ${path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ${forwardedFor}\r\n` +
        `Content-Type: application/octet-stream\r\nContent-Length: ${length}\r\n\r\nx`,
    ),
  );
  return conn;
}

Deno.test("[review] one address cannot hold the whole body budget and so refuse every tenant's webhooks", async () => {
  await using server = await startTestServer({
    TRUST_PROXY: "1",
    MAX_BUFFERED_BODY_MB: "4",
    MAX_BUFFERED_BODY_MB_PER_ADDRESS: "1",
  });
  const attacker = await signUp(server);
  const victim = await signUp(server);
  const path = new URL(attacker.webhookUrl).pathname;
  const held: Deno.Conn[] = [];
  try {
    // Bodies held open one byte in: each reserves the 1 MiB it announced.
    for (let i = 0; i < 5; i++) held.push(await heldBody(server, path, "192.0.2.1", 1024 * 1024));
    // The attacker's share is spent: its next body is refused at once.
    const refused = await fetch(attacker.webhookUrl, {
      method: "POST",
      headers: { "X-Forwarded-For": "192.0.2.1", "Content-Type": "application/json" },
      body: "{}",
    });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("Content-Type"), "application/json");
    assert.match((await refused.json()).error, /^Cannot ingest: .*192\.0\.2\.1/);
    // Another address's webhooks still fit in the budget.
    for (let i = 0; i < 5; i++) {
      const response = await fetch(victim.webhookUrl, {
        method: "POST",
        headers: { "X-Forwarded-For": "198.51.100.7", "Content-Type": "application/json" },
        body: JSON.stringify({ i }),
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("Content-Type"), "application/json");
      assert.equal((await response.json()).ok, true);
    }
  } finally {
    for (const conn of held) conn.close();
  }
});

Deno.test("[review] refused answers to an event sent are not free: a flood of them is closed", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user, 1);
  const ws = await openWs(`${server.wsUrl}/ws?token=${user.token}`);
  try {
    const response = postWebhook(user.webhookUrl, JSON.stringify({ hello: 1 }));
    const event = await ws.next();
    assert.equal(event.respond, true);
    // An answer with an invalid header is refused and may be corrected; it must still count.
    for (let i = 0; i < 200 && ws.socket.readyState === WebSocket.OPEN; i++) {
      ws.send({ type: "response", id: event.id, status: 200, headers: { "x y": "1" } });
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await Promise.race([
      ws.closed,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error("200 refused answers did not close")), 10_000)
      ),
    ]).finally(() => clearTimeout(timer));
    // A blind flood's close code may be lost to the reset (see security_ws_test's lockstepFlood).
    assert.ok([1008, 1006, 0].includes(closed.code), `closed with ${closed.code}`);
    assert.equal((await response).status, 504);
  } finally {
    await ws.close();
  }
});
