/**
 * Follow-ups of the attacker's review of issue 10: resends without a rate limit, IPv6 clients
 * escaping per-address limits with the rest of their /64, and respond-mode answers too large for
 * one KV value when they cross instances (BROKER=kv).
 */
import assert from "node:assert/strict";
import { addressKey } from "../lib/http/load_guard.ts";
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

Deno.test("[addresses] IPv6 addresses are keyed by their /64, IPv4-mapped ones as IPv4", () => {
  assert.equal(addressKey("2001:db8:1:2::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:DB8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:0db8:0001:0002:0:0:0:ffff"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(addressKey("::1"), "0:0:0:0::/64");
  assert.equal(addressKey("::"), "0:0:0:0::/64");
  assert.equal(addressKey("[2001:db8:1:2::9]"), "2001:db8:1:2::/64");
  assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(addressKey("64:ff9b::192.0.2.1"), "64:ff9b:0:0::/64");
  assert.equal(addressKey("::ffff:192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey("::FFFF:192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey("::ffff:c000:201"), "192.0.2.1");
  assert.equal(addressKey("0:0:0:0:0:ffff:192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey("192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey(" 192.0.2.1 "), "192.0.2.1");
  // What is not an address stays as it is: it still keys its own sender.
  assert.equal(addressKey("unknown"), "unknown");
  assert.equal(addressKey("2001:db8::1::2"), "2001:db8::1::2");
  assert.equal(addressKey("1:2:3:4:5:6:7:8:9"), "1:2:3:4:5:6:7:8:9");
});

Deno.test("[addresses] two IPv6 addresses of one /64 share the sign-up limit; another /64 does not", async () => {
  await using server = await startTestServer({ TRUST_PROXY: "1", SIGNUPS_PER_ADDRESS: "2" });
  const signUpFrom = (address: string) =>
    fetch(`${server.url}/api/auth/signup`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Forwarded-For": address },
      body: JSON.stringify({
        email: `${crypto.randomUUID().slice(0, 8)}@example.com`,
        password: "correct horse battery",
      }),
    });
  for (const address of ["2001:db8:7:7::1", "2001:db8:7:7:ffff::2"]) {
    const created = await signUpFrom(address);
    assert.equal(created.status, 201);
    await created.body?.cancel();
  }
  const third = await signUpFrom("2001:db8:7:7:1234:5678:9abc:def0");
  assert.equal(third.status, 429);
  assert.match(third.headers.get("content-type") ?? "", /^application\/json/);
  assert.match((await third.json()).error, /^Cannot sign up: too many accounts created/);
  // An IPv4-mapped address is its IPv4 address: the same sender, the same limit.
  for (const address of ["192.0.2.44", "::ffff:192.0.2.44"]) {
    const created = await signUpFrom(address);
    assert.equal(created.status, 201);
    await created.body?.cancel();
  }
  const mapped = await signUpFrom("::ffff:192.0.2.44");
  assert.equal(mapped.status, 429);
  await mapped.body?.cancel();
  const elsewhere = await signUpFrom("2001:db8:7:8::1");
  assert.equal(elsewhere.status, 201);
  await elsewhere.body?.cancel();
});
