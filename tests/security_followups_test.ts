/**
 * Follow-ups of the attacker's review of issue 10: resends without a rate limit, IPv6 clients
 * escaping per-address limits with the rest of their /64, and respond-mode answers too large for
 * one KV value when they cross instances (BROKER=kv).
 */
import assert from "node:assert/strict";
import { postWebhook, signUp, startTestServer } from "./helpers.ts";

Deno.test("[resend] resends are limited per account: 429 with Retry-After past the burst", async () => {
  await using server = await startTestServer({ RESENDS_PER_SECOND: "1", RESENDS_BURST: "3" });
  const user = await signUp(server);
  const posted = await postWebhook(user.webhookUrl, "{}");
  assert.equal(posted.status, 200);
  const { id } = await posted.json();
  const resend = (path = "resend", token = user.token) =>
    fetch(`${server.url}/api/events/${id}/${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
    });
  for (let n = 0; n < 3; n++) {
    const accepted = await resend(n % 2 ? "redeliver" : "resend");
    assert.equal(accepted.status, 200);
    await accepted.body?.cancel();
  }
  // The alias shares the account's budget: it is one limit, not one per path.
  for (const path of ["resend", "redeliver"]) {
    const refused = await resend(path);
    assert.equal(refused.status, 429);
    assert.match(refused.headers.get("content-type") ?? "", /^application\/json/);
    assert.ok(Number(refused.headers.get("retry-after")) >= 1, "429 carries Retry-After");
    assert.match(
      (await refused.json()).error,
      /^Cannot resend: more than 1 resends a second for this account; retry in \d+ s$/,
    );
  }
  // Another account keeps its own budget.
  const other = await signUp(server);
  const theirs = await postWebhook(other.webhookUrl, "{}");
  const theirId = (await theirs.json()).id;
  const allowed = await fetch(`${server.url}/api/events/${theirId}/resend`, {
    method: "POST",
    headers: { Authorization: `Bearer ${other.token}` },
  });
  assert.equal(allowed.status, 200);
  await allowed.body?.cancel();
});

Deno.test("[resend] a burst of 200 resends fans out at most the burst", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const posted = await postWebhook(user.webhookUrl, "{}");
  const { id } = await posted.json();
  const statuses = await Promise.all(Array.from({ length: 200 }, async () => {
    const response = await fetch(`${server.url}/api/events/${id}/resend`, {
      method: "POST",
      headers: { Authorization: `Bearer ${user.token}` },
    });
    await response.body?.cancel();
    return response.status;
  }));
  const accepted = statuses.filter((status) => status === 200).length;
  assert.ok(accepted >= 20, `the default burst of 20 goes through (${accepted})`);
  assert.ok(accepted <= 25, `no more than the burst and a little refill (${accepted})`);
  assert.equal(statuses.filter((status) => status === 429).length, 200 - accepted);
});
