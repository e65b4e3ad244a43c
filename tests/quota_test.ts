import assert from "node:assert/strict";
import { openWs, postWebhook, signUp, startTestServer } from "./helpers.ts";

Deno.test("[quota] 50 concurrent senders against 7 remaining: exactly 7 accepted, the rest 402", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "10" });
  const user = await signUp(server);
  for (let i = 0; i < 3; i++) await (await postWebhook(user.webhookUrl, "{}")).body?.cancel();
  const responses = await Promise.all(
    Array.from({ length: 50 }, (_, i) => postWebhook(user.webhookUrl, JSON.stringify({ i }))),
  );
  const accepted = responses.filter((r) => r.status === 200);
  const refused = responses.filter((r) => r.status === 402);
  assert.equal(accepted.length, 7);
  assert.equal(refused.length, 43);
  const body = await refused[0].json();
  assert.match(refused[0].headers.get("content-type")!, /^application\/json/);
  assert.equal(body.used, 10);
  assert.equal(body.limit, 10);
  assert.match(body.error, /^Monthly quota exceeded: 10 of 10 webhooks used/);
  assert.ok(Date.parse(body.resetsAt) > Date.now());
  assert.equal(refused[0].headers.get("x-quota-remaining"), "0");
  await Promise.all([...accepted, ...refused.slice(1)].map((r) => r.body?.cancel()));

  const history = await fetch(`${server.url}/api/events?limit=200`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal((await history.json()).events.length, 10);
  const me = await (await fetch(`${server.url}/api/me`, {
    headers: { Authorization: `Bearer ${user.token}` },
  })).json();
  assert.equal(me.usage.used, 10);
});

Deno.test("[quota] one user's quota does not touch another's", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "2" });
  const alice = await signUp(server);
  const bob = await signUp(server);
  const statuses = [];
  for (const url of [alice.webhookUrl, alice.webhookUrl, alice.webhookUrl, bob.webhookUrl]) {
    const response = await postWebhook(url, "{}");
    statuses.push(response.status);
    await response.body?.cancel();
  }
  assert.deepEqual(statuses, [200, 200, 402, 200]);
});

Deno.test("[quota] exact across two servers sharing one KV file (commits conflict and retry)", async () => {
  const dir = await Deno.makeTempDir();
  const env = { KV_PATH: `${dir}/shared.kv`, FREE_MONTHLY_LIMIT: "40" };
  await using a = await startTestServer(env);
  await using b = await startTestServer(env);
  const user = await signUp(a);
  const urls = [user.webhookUrl, user.webhookUrl.replace(a.url, b.url)];
  // Warm both servers' view of the gate, then race them.
  for (const url of urls) await (await postWebhook(url, "{}")).body?.cancel();
  const responses = await Promise.all(
    Array.from({ length: 100 }, (_, i) => postWebhook(urls[i % 2], JSON.stringify({ i }))),
  );
  const statuses = await Promise.all(
    responses.map(async (r) => (await r.body?.cancel(), r.status)),
  );
  assert.equal(statuses.filter((s) => s === 200).length, 38);
  assert.equal(statuses.filter((s) => s === 402).length, 62);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
});

Deno.test("[quota] a changed limit takes effect on the very next request", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "100" });
  const user = await signUp(server);
  assert.equal((await postWebhook(user.webhookUrl, "{}")).status, 200);
  const { kv } = server.services;
  const entry = await kv.get<{ monthlyLimit: number }>(["users", user.id]);
  await kv.set(entry.key, { ...entry.value!, monthlyLimit: 1 });
  const refused = await postWebhook(user.webhookUrl, "{}");
  assert.equal(refused.status, 402);
  assert.equal((await refused.json()).limit, 1);
  await kv.set(entry.key, { ...entry.value!, monthlyLimit: 2 });
  const accepted = await postWebhook(user.webhookUrl, "{}");
  assert.equal(accepted.status, 200);
  assert.equal(accepted.headers.get("x-quota-remaining"), "0");
  await accepted.body?.cancel();
});

Deno.test("[quota] an account refused at its limit is let in as soon as the limit is raised", async () => {
  // The isolate remembers each account's limit and count from its last commit. A refusal
  // commits nothing, so a limit remembered at the brim stood after an upgrade or a raised cap:
  // every webhook got 402 until the process restarted.
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "3" });
  const user = await signUp(server);
  for (let i = 0; i < 3; i++) {
    const accepted = await postWebhook(user.webhookUrl, "{}");
    assert.equal(accepted.status, 200);
    await accepted.body?.cancel();
  }
  const refused = await postWebhook(user.webhookUrl, "{}");
  assert.equal(refused.status, 402);
  assert.equal((await refused.json()).limit, 3);
  const { kv } = server.services;
  const entry = await kv.get<{ monthlyLimit: number }>(["users", user.id]);
  await kv.set(entry.key, { ...entry.value!, monthlyLimit: 5 });
  // A body too large to stay inline is checked before it is written, on its own path.
  const large = await postWebhook(user.webhookUrl, JSON.stringify({ pad: "x".repeat(60_000) }));
  assert.equal(large.status, 200);
  assert.equal(large.headers.get("x-quota-remaining"), "1");
  await large.body?.cancel();
  const small = await postWebhook(user.webhookUrl, "{}");
  assert.equal(small.status, 200);
  assert.equal(small.headers.get("x-quota-remaining"), "0");
  await small.body?.cancel();
  // At the brim again, and raised again: the small body's path alone.
  const again = await postWebhook(user.webhookUrl, "{}");
  assert.equal(again.status, 402);
  await again.body?.cancel();
  await kv.set(entry.key, { ...entry.value!, monthlyLimit: 6 });
  const last = await postWebhook(user.webhookUrl, "{}");
  assert.equal(last.status, 200);
  await last.body?.cancel();
});

Deno.test("[quota] users whose webhooks commit together each get exactly their own cap and events", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const caps = [5, 12, 1000];
  const users = await Promise.all(caps.map(() => signUp(server)));
  await Promise.all(users.map(async (user, i) => {
    const response = await fetch(`${server.url}/api/billing/cap`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ monthlyCap: caps[i] }),
    });
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }));
  const streams = await Promise.all(
    users.map((user) => openWs(`${server.wsUrl}?token=${user.token}`)),
  );
  // 30 per user, interleaved, all at once: they share commits (up to 33 users each).
  const sends = Array.from({ length: 90 }, async (_, n) => {
    const owner = n % 3;
    const response = await postWebhook(users[owner].webhookUrl, JSON.stringify({ owner, n }));
    const body = await response.json();
    return { owner, status: response.status, id: body.id as string | undefined };
  });
  const outcomes = await Promise.all(sends);
  for (const [i, cap] of caps.entries()) {
    const mine = outcomes.filter((o) => o.owner === i);
    assert.equal(mine.filter((o) => o.status === 200).length, Math.min(cap, 30));
    assert.equal(mine.filter((o) => o.status === 402).length, 30 - Math.min(cap, 30));
    // Each user's client receives that user's accepted webhooks, in id order, and no one else's.
    const accepted = mine.filter((o) => o.status === 200).map((o) => o.id!).sort();
    const received = [];
    for (let k = 0; k < accepted.length; k++) {
      const message = await streams[i].next();
      assert.equal((message.payload as { owner: number }).owner, i);
      received.push(message.id);
    }
    assert.deepEqual(received, accepted);
    streams[i].send({ type: "ping" });
    assert.equal((await streams[i].next()).type, "pong");
  }
  await Promise.all(streams.map((stream) => stream.close()));
});
