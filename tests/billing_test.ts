import assert from "node:assert/strict";
import { generateInvoices, previousMonth } from "../lib/billing/invoices.ts";
import { crossedLevels } from "../lib/billing/usage.ts";
import { userKey } from "../lib/store/kv_keys.ts";
import { openSse, openWs, postWebhook, signUp, startTestServer, waitFor } from "./helpers.ts";

async function putCap(url: string, token: string, body: string): Promise<Response> {
  return await fetch(`${url}/api/billing/cap`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body,
  });
}

Deno.test("[billing] a Free user sees the plan and may lower the cap, not raise it", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const user = await signUp(server);
  const auth = { Authorization: `Bearer ${user.token}` };
  const view = await fetch(`${server.url}/api/billing`, { headers: auth });
  assert.equal(view.status, 200);
  assert.match(view.headers.get("content-type")!, /^application\/json/);
  const billing = await view.json();
  assert.equal(billing.plan, "free");
  assert.equal(billing.monthlyLimit, 1000);
  assert.equal(billing.monthlyCap, null);
  assert.equal(billing.projectedCostUsd, 0);

  const lowered = await putCap(server.url, user.token, '{"monthlyCap": 2}');
  assert.equal(lowered.status, 200);
  assert.equal((await lowered.json()).monthlyLimit, 2);
  const statuses = [];
  for (let i = 0; i < 3; i++) {
    const response = await postWebhook(user.webhookUrl, "{}");
    statuses.push(response.status);
    await response.body?.cancel();
  }
  assert.deepEqual(statuses, [200, 200, 402]);

  for (
    const [body, message] of [
      ['{"monthlyCap": 5000}', /Free plan allows at most 1000 webhooks a month; upgrade to Pro/],
      ['{"monthlyCap": null}', /Free plan allows at most 1000/],
      ['{"monthlyCap": 1.5}', /monthlyCap: must be a whole number/],
      ['{"monthlyCap": -1}', /monthlyCap: must be 0 or more/],
      ["{}", /monthlyCap/],
      ["{", /Cannot set cap: body is not valid JSON/],
    ] as const
  ) {
    const refused = await putCap(server.url, user.token, body);
    assert.equal(refused.status, 400, body);
    assert.match((await refused.json()).error, message);
  }
});

Deno.test("[billing] Pro: the admin command switches plans, caps apply at once and cost is metered", async () => {
  const dir = await Deno.makeTempDir();
  const kvPath = `${dir}/websocks.kv`;
  await using server = await startTestServer({ KV_PATH: kvPath, FREE_MONTHLY_LIMIT: "1000" });
  const user = await signUp(server);
  const admin = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "admin.ts", "set-plan", user.email, "pro"],
    env: { KV_PATH: kvPath, FREE_MONTHLY_LIMIT: "1000" },
  }).output();
  assert.equal(admin.code, 0, new TextDecoder().decode(admin.stderr));
  assert.match(new TextDecoder().decode(admin.stdout), /is now on pro: unlimited/);

  const auth = { Authorization: `Bearer ${user.token}` };
  for (let i = 0; i < 3; i++) await (await postWebhook(user.webhookUrl, "{}")).body?.cancel();
  const pro = await (await fetch(`${server.url}/api/billing`, { headers: auth })).json();
  assert.equal(pro.plan, "pro");
  assert.equal(pro.monthlyLimit, null);
  assert.equal(pro.used, 3);
  assert.equal(pro.costSoFarUsd, 0.0003);

  const capped = await putCap(server.url, user.token, '{"monthlyCap": 4}');
  assert.equal(capped.status, 200);
  const body = await capped.json();
  assert.equal(body.monthlyLimit, 4);
  assert.equal(body.capUsd, 0.0004);
  const statuses = [];
  for (let i = 0; i < 2; i++) {
    const response = await postWebhook(user.webhookUrl, "{}");
    statuses.push(response.status);
    await response.body?.cancel();
  }
  assert.deepEqual(statuses, [200, 402]);
  const unlimited = await putCap(server.url, user.token, '{"monthlyCap": null}');
  assert.equal((await unlimited.json()).monthlyLimit, null);

  const unknown = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "admin.ts", "set-plan", "nobody@example.com", "pro"],
    env: { KV_PATH: kvPath },
  }).output();
  assert.equal(unknown.code, 1);
  assert.match(new TextDecoder().decode(unknown.stderr), /no account for nobody@example.com/);
  const misuse = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "admin.ts", "set-plan", user.email, "gold"],
  }).output();
  assert.equal(misuse.code, 2);
  assert.match(new TextDecoder().decode(misuse.stderr), /usage: deno task admin set-plan/);
  await server.shutdown();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("[usage] the month's accepted and refused webhooks, per day", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "3" });
  const user = await signUp(server);
  const responses = await Promise.all(
    Array.from({ length: 5 }, () => postWebhook(user.webhookUrl, "{}")),
  );
  await Promise.all(responses.map((r) => r.body?.cancel()));
  // Refusals are counted off the hot path: wait until the count lands.
  const readUsage = async () => {
    const response = await fetch(`${server.url}/api/usage`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assert.equal(response.status, 200);
    return await response.json();
  };
  await waitFor(async () => (await readUsage()).rejected === 2, { what: "both refusals counted" });
  const usage = await readUsage();
  const today = new Date().toISOString().slice(0, 10);
  assert.equal(usage.month, today.slice(0, 7));
  assert.equal(usage.used, 3);
  assert.equal(usage.rejected, 2);
  assert.equal(usage.monthlyLimit, 3);
  assert.equal(usage.daily.length, new Date().getUTCDate());
  assert.deepEqual(usage.daily.at(-1), { day: today, accepted: 3, rejected: 2 });
  assert.ok(usage.daily.slice(0, -1).every((d: { accepted: number }) => d.accepted === 0));
});

Deno.test("[invoices] a closed month is invoiced once from our own counts", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const free = await signUp(server);
  const pro = await signUp(server);
  const { kv } = server.services;
  const proEntry = await kv.get<Record<string, unknown>>(["users", pro.id]);
  await kv.set(proEntry.key, { ...proEntry.value, plan: "pro", monthlyLimit: null });
  // An injected clock: October's counters, closed on November 1st.
  await kv.atomic()
    .sum(["usage_month", free.id, "2026-10"], 640n)
    .sum(["usage_month", pro.id, "2026-10"], 123_456n)
    .commit();
  const now = new Date("2026-11-01T01:00:00Z");
  assert.equal(previousMonth(now), "2026-10");
  assert.equal(previousMonth(new Date("2026-01-15T00:00:00Z")), "2025-12");
  assert.equal(await generateInvoices(kv, { period: "2026-10", freeAllowance: 1000, now }), 2);
  assert.equal(await generateInvoices(kv, { period: "2026-10", freeAllowance: 1000, now }), 0);

  const proInvoices = await fetch(`${server.url}/api/invoices`, {
    headers: { Authorization: `Bearer ${pro.token}` },
  });
  assert.equal(proInvoices.status, 200);
  assert.match(proInvoices.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual((await proInvoices.json()).invoices, [{
    period: "2026-10",
    plan: "pro",
    acceptedRequests: 123_456,
    freeAllowance: 0,
    unitPriceUsd: 0.0001,
    amountUsd: 12.3456,
    status: "due",
    createdAt: now.toISOString(),
  }]);
  const freeInvoices = await (await fetch(`${server.url}/api/invoices`, {
    headers: { Authorization: `Bearer ${free.token}` },
  })).json();
  assert.equal(freeInvoices.invoices.length, 1);
  assert.equal(freeInvoices.invoices[0].amountUsd, 0);
  assert.equal(freeInvoices.invoices[0].acceptedRequests, 640);
  assert.equal(freeInvoices.invoices[0].status, "paid");
});

Deno.test("[quota] a per-user cap holds exactly under 50 concurrent senders", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const user = await signUp(server);
  assert.equal((await putCap(server.url, user.token, '{"monthlyCap": 17}')).status, 200);
  const responses = await Promise.all(
    Array.from({ length: 50 }, () => postWebhook(user.webhookUrl, "{}")),
  );
  const statuses = await Promise.all(
    responses.map(async (r) => (await r.body?.cancel(), r.status)),
  );
  assert.equal(statuses.filter((s) => s === 200).length, 17);
  assert.equal(statuses.filter((s) => s === 402).length, 33);
});

Deno.test("[alerts] 80% and 100% of the cap reach SSE as a named event and asking WebSockets", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "5" });
  const user = await signUp(server);
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  const asking = await openWs(`${server.wsUrl}?token=${user.token}&notices=1`);
  const plain = await openWs(`${server.wsUrl}?token=${user.token}`);
  const types = { sse: [] as string[], asking: [] as string[], plain: [] as string[] };
  for (let i = 0; i < 6; i++) {
    const response = await postWebhook(user.webhookUrl, JSON.stringify({ i }));
    await response.body?.cancel();
  }
  // 5 webhooks and 2 notices (at 4 of 5, and at 5 of 5); the 6th is refused.
  for (let i = 0; i < 7; i++) {
    const message = await sse.next();
    types.sse.push(message.event ?? JSON.parse(message.data).type);
    types.asking.push((await asking.next()).type as string);
  }
  for (let i = 0; i < 5; i++) types.plain.push((await plain.next()).type as string);
  plain.send({ type: "ping" });
  assert.equal((await plain.next()).type, "pong", "no notice for a client that did not ask");
  const expected = ["webhook", "webhook", "webhook", "webhook", "quota", "webhook", "quota"];
  assert.deepEqual(types.sse, expected);
  assert.deepEqual(types.asking, expected);
  assert.deepEqual(types.plain, Array(5).fill("webhook"));

  const page = await fetch(`${server.url}/dashboard`, { headers: { Cookie: user.cookie } });
  assert.equal(page.status, 200);
  assert.match(await page.text(), /You have used all 5 webhooks of this month/);
  sse.close();
  await asking.close();
  await plain.close();
});

Deno.test("[alerts] crossing levels is computed once per threshold", () => {
  assert.deepEqual(crossedLevels(1000, { before: 799, after: 800 }), [80]);
  assert.deepEqual(crossedLevels(1000, { before: 0, after: 1000 }), [80, 100]);
  assert.deepEqual(crossedLevels(1000, { before: 800, after: 999 }), []);
  assert.deepEqual(crossedLevels(null, { before: 0, after: 10 }), []);
  assert.deepEqual(crossedLevels(5, { before: 3, after: 4 }), [80]);
});

Deno.test("[quota] a new month starts with a fresh quota (injected clock)", async () => {
  let now = new Date("2026-10-31T23:59:58Z");
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "2" }, { now: () => now });
  const user = await signUp(server);
  const statuses = [];
  for (let i = 0; i < 3; i++) {
    const response = await postWebhook(user.webhookUrl, "{}");
    statuses.push(response.status);
    if (i === 2) {
      assert.equal((await response.json()).resetsAt, "2026-11-01T00:00:00.000Z");
    } else await response.body?.cancel();
  }
  assert.deepEqual(statuses, [200, 200, 402]);
  now = new Date("2026-11-01T00:00:01Z");
  const fresh = await postWebhook(user.webhookUrl, "{}");
  assert.equal(fresh.status, 200);
  assert.equal(fresh.headers.get("x-quota-remaining"), "1");
  assert.equal(
    fresh.headers.get("x-quota-reset"),
    String(Date.parse("2026-12-01T00:00:00Z") / 1000),
  );
  await fresh.body?.cancel();
  const { kv } = server.services;
  assert.equal((await kv.get<Deno.KvU64>(["usage_month", user.id, "2026-10"])).value?.value, 2n);
  assert.equal((await kv.get<Deno.KvU64>(["usage_month", user.id, "2026-11"])).value?.value, 1n);
});

Deno.test("[billing] cap changes beyond CAP_CHANGES_PER_MINUTE get 429 and write nothing", async () => {
  await using server = await startTestServer({ CAP_CHANGES_PER_MINUTE: "3" });
  const user = await signUp(server);
  const other = await signUp(server);
  // Each change rewrites the account's record, which every shared commit of its webhooks
  // checks: changes in a loop would make other accounts' commits conflict and split.
  for (const cap of [10, 20, 30]) {
    const changed = await putCap(server.url, user.token, JSON.stringify({ monthlyCap: cap }));
    assert.equal(changed.status, 200);
    assert.equal((await changed.json()).monthlyCap, cap);
  }
  // Setting the cap it already has writes nothing and is not counted.
  const same = await putCap(server.url, user.token, '{"monthlyCap": 30}');
  assert.equal(same.status, 200);
  assert.equal((await same.json()).monthlyCap, 30);
  const refused = await putCap(server.url, user.token, '{"monthlyCap": 40}');
  assert.equal(refused.status, 429);
  assert.match(refused.headers.get("content-type")!, /^application\/json/);
  assert.match(refused.headers.get("retry-after")!, /^\d+$/);
  assert.match(
    (await refused.json()).error,
    /^Cannot set cap: at most 3 changes a minute; retry in \d+ s$/,
  );
  const view = await fetch(`${server.url}/api/billing`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal((await view.json()).monthlyCap, 30);
  // Another account has its own allowance.
  const theirs = await putCap(server.url, other.token, '{"monthlyCap": 5}');
  assert.equal(theirs.status, 200);
  await theirs.body?.cancel();
});

Deno.test("[billing] a downgrade or a cap that changes nothing writes nothing", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const user = await signUp(server);
  const record = async () => (await server.services.kv.get(userKey(user.id))).versionstamp;
  const set = await putCap(server.url, user.token, '{"monthlyCap": 500}');
  assert.equal(set.status, 200);
  await set.body?.cancel();
  const before = await record();
  // Posted in a loop, each would rewrite the record every commit of the account checks.
  for (let i = 0; i < 3; i++) {
    const downgraded = await fetch(`${server.url}/api/billing/downgrade`, {
      method: "POST",
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assert.equal(downgraded.status, 200);
    assert.match(downgraded.headers.get("content-type")!, /^application\/json/);
    assert.deepEqual(await downgraded.json(), { plan: "free", monthlyLimit: 500 });
    const same = await putCap(server.url, user.token, '{"monthlyCap": 500}');
    assert.equal(same.status, 200);
    await same.body?.cancel();
  }
  assert.equal(await record(), before);
  const changed = await putCap(server.url, user.token, '{"monthlyCap": 10}');
  assert.equal(changed.status, 200);
  await changed.body?.cancel();
  assert.notEqual(await record(), before);
});
