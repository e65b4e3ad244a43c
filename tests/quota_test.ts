import assert from "node:assert/strict";
import { postWebhook, signUp, startTestServer } from "./helpers.ts";

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
