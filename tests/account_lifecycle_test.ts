/**
 * The account's own lifecycle: changing the password (other sessions end, their streams close)
 * and deleting the account (no key of it left in KV, streams closed, URLs 404 at once, the
 * Stripe subscription cancelled), on the API and the plain forms, at size and across a restart.
 */
import assert from "node:assert/strict";
import {
  openSse,
  openWs,
  postWebhook,
  randomBytes,
  sessionCookieOf,
  signUp,
  startTestServer,
  type TestServer,
  type TestUser,
  waitFor,
} from "./helpers.ts";
import { clusterSides, instanceSides, postOn, type Sides, signUpOn } from "./sides.ts";
import { beginDeletion } from "../lib/accounts/deletion.ts";
import type { Invoice } from "../lib/billing/invoices.ts";
import type { User } from "../lib/accounts/users.ts";
import {
  accountDeletionKey,
  eventBodyChunkKey,
  invoiceKey,
  userByStripeCustomerKey,
  userKey,
} from "../lib/store/kv_keys.ts";

const PASSWORD = "correct horse battery";
const NEW_PASSWORD = "a brand new passphrase";

/** A stand-in for api.stripe.com that records the requests the server makes. */
function startStripeStandIn() {
  const requests: { method: string; path: string }[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    await req.body?.cancel();
    requests.push({ method: req.method, path });
    if (path.startsWith("/v1/subscriptions/") && req.method === "DELETE") {
      return Response.json({
        id: path.split("/").at(-1),
        object: "subscription",
        status: "canceled",
      });
    }
    if (path === "/v1/billing/meter_events") {
      return Response.json({ object: "billing.meter_event" });
    }
    return Response.json({ error: { type: "invalid_request_error", message: "unknown" } }, {
      status: 404,
    });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Logs in through the API and returns the session cookie. */
async function logIn(server: TestServer, email: string, password: string): Promise<Response> {
  return await fetch(`${server.url}/api/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
}

async function me(server: TestServer, headers: Record<string, string>): Promise<number> {
  const response = await fetch(`${server.url}/api/me`, { headers });
  await response.body?.cancel();
  return response.status;
}

async function postJson(
  server: TestServer,
  options: { method?: string; path: string; headers: Record<string, string>; body: unknown },
): Promise<Response> {
  return await fetch(`${server.url}${options.path}`, {
    method: options.method ?? "POST",
    headers: { "Content-Type": "application/json", ...options.headers },
    body: JSON.stringify(options.body),
  });
}

async function postForm(
  server: TestServer,
  options: { path: string; cookie: string; fields: Record<string, string> },
): Promise<Response> {
  return await fetch(`${server.url}${options.path}`, {
    method: "POST",
    redirect: "manual",
    headers: {
      Cookie: options.cookie,
      "Content-Type": "application/x-www-form-urlencoded",
      Origin: server.url,
    },
    body: new URLSearchParams(options.fields),
  });
}

/** `promise`, or a failure naming `what` after `ms`: a connection left open fails, not hangs. */
async function within<T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every KV entry whose key or value names one of `needles`, as text. */
async function entriesNaming(kv: Deno.Kv, needles: string[]): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of kv.list({ prefix: [] })) {
    const text = JSON.stringify(
      [entry.key, entry.value],
      (_name, value) =>
        typeof value === "bigint"
          ? String(value)
          : value instanceof Uint8Array
          ? new TextDecoder().decode(value)
          : value,
    );
    if (needles.some((needle) => text.includes(needle))) found.push(text.slice(0, 300));
  }
  return found;
}

async function countKeys(kv: Deno.Kv, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix })) n++;
  return n;
}

Deno.test("[password] a change needs the current password and ends the other sessions and their streams", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const other = sessionCookieOf(await logIn(server, user.email, PASSWORD));
  assert.ok(other && other !== user.cookie);
  const stream = await openSse(`${server.url}/api/events/stream`, { Cookie: other });
  assert.equal(stream.response.status, 200);

  const wrong = await postJson(server, {
    path: "/api/account/password",
    headers: { Cookie: user.cookie },
    body: { currentPassword: "not the password", newPassword: NEW_PASSWORD },
  });
  assert.equal(wrong.status, 403);
  assert.match(wrong.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await wrong.json(), {
    error: "Cannot change password: the current password is wrong",
  });
  const short = await postJson(server, {
    path: "/api/account/password",
    headers: { Cookie: user.cookie },
    body: { currentPassword: PASSWORD, newPassword: "short" },
  });
  assert.equal(short.status, 400);
  assert.match(
    (await short.json()).error,
    /^Cannot change password: newPassword: must be at least/,
  );
  assert.equal(await me(server, { Cookie: other }), 200, "refusals change nothing");

  const changed = await postJson(server, {
    path: "/api/account/password",
    headers: { Cookie: user.cookie },
    body: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD },
  });
  assert.equal(changed.status, 200);
  assert.match(changed.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await changed.json(), { ok: true, endedSessions: 1 });
  await assert.rejects(async () => {
    while (true) await stream.next(5000);
  }, /SSE stream ended/);
  assert.equal(await me(server, { Cookie: other }), 401, "the other session ended");
  // The caller stays logged in, on a new session: the change voided every old one.
  const renewed = sessionCookieOf(changed);
  assert.equal(await me(server, { Cookie: renewed }), 200, "the caller stays logged in");
  assert.equal(await me(server, { Cookie: user.cookie }), 401, "on a new session");
  assert.equal((await logIn(server, user.email, PASSWORD)).status, 401);
  const fresh = await logIn(server, user.email, NEW_PASSWORD);
  assert.equal(fresh.status, 200);
  await fresh.body?.cancel();

  // A token needs the manage scope, and the password still.
  const streamOnly = await postJson(server, {
    path: "/api/tokens",
    headers: { Cookie: renewed },
    body: { name: "reader", scopes: ["events:read"] },
  });
  assert.equal(streamOnly.status, 201);
  const reader = (await streamOnly.json()).token.value as string;
  const byReader = await postJson(server, {
    path: "/api/account/password",
    headers: { Authorization: `Bearer ${reader}` },
    body: { currentPassword: NEW_PASSWORD, newPassword: PASSWORD },
  });
  assert.equal(byReader.status, 403);
  assert.match((await byReader.json()).error, /lacks the "manage" scope/);
  stream.close();
});

Deno.test("[password] guessing the current password with a stolen session is limited like log-in", async () => {
  await using server = await startTestServer({ LOGIN_FAILURES_PER_ACCOUNT: "2" });
  const user = await signUp(server);
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) {
    const response = await postJson(server, {
      path: "/api/account/password",
      headers: { Cookie: user.cookie },
      body: { currentPassword: `guess ${i} of many`, newPassword: NEW_PASSWORD },
    });
    statuses.push(response.status);
    if (response.status === 429) {
      assert.ok(Number(response.headers.get("retry-after")) > 0);
      assert.match((await response.json()).error, /^Cannot change password: too many failed/);
    } else await response.body?.cancel();
  }
  assert.deepEqual(statuses.slice(0, 2), [403, 403]);
  assert.ok(statuses.slice(2).includes(429), `refused at last: ${statuses}`);
});

Deno.test("[password] the settings page changes it with a plain form", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const other = sessionCookieOf(await logIn(server, user.email, PASSWORD));
  const page = await fetch(`${server.url}/dashboard/account`, { headers: { Cookie: user.cookie } });
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  const html = await page.text();
  assert.match(html, /<form method="post" action="\/dashboard\/account\/password"/);
  assert.match(html, /href="\/dashboard\/account\/delete"/);
  assert.match(html, /<a href="\/dashboard\/account" aria-current="page">Account<\/a>/);

  const wrong = await postForm(server, {
    path: "/dashboard/account/password",
    cookie: user.cookie,
    fields: { currentPassword: "not it at all", newPassword: NEW_PASSWORD },
  });
  assert.equal(wrong.status, 403);
  assert.equal(wrong.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(
    await wrong.text(),
    /class="field-error">Cannot change password: the current password is wrong/,
  );

  const done = await postForm(server, {
    path: "/dashboard/account/password",
    cookie: user.cookie,
    fields: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD },
  });
  assert.equal(done.status, 303);
  assert.equal(done.headers.get("location"), "/dashboard/account");
  await done.body?.cancel();
  // Still logged in, on a new session (the change voided every old one).
  const renewed = sessionCookieOf(done);
  const after = await fetch(`${server.url}/dashboard/account`, { headers: { Cookie: renewed } });
  assert.equal(after.status, 200);
  assert.match(await after.text(), /Password changed\. 1 other session was logged out\./);
  assert.equal(await me(server, { Cookie: other }), 401);
});

/** Gives `user` everything an account can hold: Pro with Stripe, endpoints, tokens, events… */
async function furnish(server: TestServer, user: TestUser) {
  const { kv } = server.services;
  const entry = await kv.get<User>(userKey(user.id));
  await kv.atomic()
    .set(userKey(user.id), {
      ...entry.value!,
      plan: "pro",
      monthlyLimit: null,
      stripeCustomerId: `cus_${user.id}`,
      stripeSubscriptionId: `sub_${user.id}`,
    })
    .set(userByStripeCustomerKey(`cus_${user.id}`), user.id)
    .commit();
  const invoice = (period: string, stripeInvoiceId: string | null): Invoice => ({
    userId: user.id,
    period,
    plan: "pro",
    acceptedRequests: 10,
    freeAllowance: 0,
    unitPriceUsd: 0.001,
    amountUsd: 0.01,
    status: stripeInvoiceId ? "paid" : "due",
    createdAt: new Date().toISOString(),
    stripeInvoiceId,
  });
  await kv.set(invoiceKey(user.id, "2026-09"), invoice("2026-09", "in_billed"));
  await kv.set(invoiceKey(user.id, "2026-10"), invoice("2026-10", null));
  const created = await postJson(server, {
    path: "/api/endpoints",
    headers: { Authorization: `Bearer ${user.token}` },
    body: { name: "second" },
  });
  assert.equal(created.status, 201);
  const second = (await created.json()).endpoint;
  const token = await postJson(server, {
    path: "/api/tokens",
    headers: { Authorization: `Bearer ${user.token}` },
    body: { name: "extra" },
  });
  assert.equal(token.status, 201);
  await token.body?.cancel();
  // A failed log-in (the email's failure record) and a device (the email in login_devices).
  await (await logIn(server, user.email, "wrong password!")).body?.cancel();
  await (await logIn(server, user.email, PASSWORD)).body?.cancel();
  return { secondUrl: second?.url as string | undefined };
}

Deno.test("[delete] deleting an account leaves no key of it, closes its streams, 404s its URLs at once and cancels Stripe", async () => {
  await using stripe = startStripeStandIn();
  await using server = await startTestServer({
    STRIPE_SECRET_KEY: "sk_test_123",
    STRIPE_WEBHOOK_SECRET: "whsec_test",
    STRIPE_PRICE_ID: "price_metered",
    STRIPE_API_URL: stripe.url,
    DELETION_SETTLE_SECONDS: "0.2",
  });
  const { kv } = server.services;
  const victim = await signUp(server);
  const bystander = await signUp(server);
  const { secondUrl } = await furnish(server, victim);
  assert.ok(secondUrl);

  // Live clients: a WebSocket that acks (a delivery record), a group member, a cookie stream.
  const ws = await openWs(`${server.wsUrl}/?token=${victim.token}`);
  const member = await openWs(`${server.wsUrl}/?token=${victim.token}&group=workers`);
  const sse = await openSse(`${server.url}/api/events/stream`, { Cookie: victim.cookie });
  assert.equal(sse.response.status, 200);
  const small = await postWebhook(victim.webhookUrl, JSON.stringify({ hello: "world" }));
  assert.equal(small.status, 200);
  await small.body?.cancel();
  const large = await postWebhook(secondUrl, randomBytes(200_000), {
    "Content-Type": "application/octet-stream",
  });
  assert.equal(large.status, 200);
  await large.body?.cancel();
  for (let n = 0; n < 2;) {
    const message = await ws.next();
    if (message.type !== "webhook") continue;
    ws.send({ type: "ack", id: message.id, status: 200 });
    n++;
  }
  await waitFor(async () => (await countKeys(kv, ["deliveries", victim.id])) === 2, {
    what: "both acks recorded",
  });
  assert.ok((await countKeys(kv, ["event_bodies", victim.id])) > 0, "the large body is chunked");
  assert.ok((await countKeys(kv, ["group", victim.id])) > 0, "the group is recorded");

  const refused = await postJson(server, {
    method: "DELETE",
    path: "/api/account",
    headers: { Cookie: victim.cookie },
    body: { password: "not the password" },
  });
  assert.equal(refused.status, 403);
  assert.match(refused.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await refused.json(), {
    error: "Cannot delete account: the current password is wrong",
  });
  assert.equal(await me(server, { Authorization: `Bearer ${victim.token}` }), 200);
  assert.equal(stripe.requests.length, 0);

  const deleted = await postJson(server, {
    method: "DELETE",
    path: "/api/account",
    headers: { Cookie: victim.cookie },
    body: { password: PASSWORD },
  });
  assert.equal(deleted.status, 200);
  assert.match(deleted.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await deleted.json(), { deleted: true });
  assert.match(deleted.headers.get("set-cookie") ?? "", /websocks_session=;/);

  // At once: URLs 404, credentials 401, the subscription cancelled.
  for (const url of [victim.webhookUrl, secondUrl]) {
    const gone = await postWebhook(url, "{}");
    assert.equal(gone.status, 404);
    assert.match((await gone.json()).error, /^Cannot ingest: no endpoint/);
  }
  assert.equal(await me(server, { Authorization: `Bearer ${victim.token}` }), 401);
  assert.equal(await me(server, { Cookie: victim.cookie }), 401);
  // The month's usage reported first, then the subscription ended (stripe_test.ts checks the figures).
  assert.deepEqual(stripe.requests.at(-1), {
    method: "DELETE",
    path: `/v1/subscriptions/sub_${victim.id}`,
  });
  assert.ok(stripe.requests.slice(0, -1).every((r) => r.path === "/v1/billing/meter_events"));
  const wsClosed = await within(ws.closed, "the WebSocket closed");
  assert.equal(wsClosed.code, 4001);
  assert.equal(wsClosed.reason, "Account deleted");
  assert.equal((await within(member.closed, "the group member closed")).code, 4001);
  await assert.rejects(async () => {
    while (true) await sse.next(5000);
  }, /SSE stream ended/);

  // Then the sweep: nothing of the account is left but the invoice Stripe billed, anonymised.
  await waitFor(async () => (await kv.get(accountDeletionKey(victim.id))).versionstamp === null, {
    what: "the deletion finished",
  });
  const left = await entriesNaming(kv, [victim.id, victim.email]);
  assert.equal(left.length, 1, `left behind:\n${left.join("\n")}`);
  const kept = await kv.get<Record<string, unknown>>(invoiceKey(victim.id, "2026-09"));
  assert.equal(kept.value?.stripeInvoiceId, "in_billed");
  assert.equal(kept.value?.userId, undefined);
  assert.equal(typeof kept.value?.accountDeletedAt, "string");
  assert.equal((await kv.get(invoiceKey(victim.id, "2026-10"))).versionstamp, null);

  // Someone else's account is untouched.
  assert.ok((await entriesNaming(kv, [bystander.id])).length > 3);
  const theirs = await postWebhook(bystander.webhookUrl, "{}");
  assert.equal(theirs.status, 200);
  await theirs.body?.cancel();
  assert.equal(await me(server, { Cookie: bystander.cookie }), 200);
});

Deno.test("[delete] webhooks racing the deletion leave no orphan keys", async () => {
  await using server = await startTestServer({ DELETION_SETTLE_SECONDS: "0.5" });
  const { kv } = server.services;
  const victim = await signUp(server);
  const statuses = new Set<number>();
  let deleting = true;
  const senders = Array.from({ length: 8 }, async () => {
    // Keeps sending until the account is gone, and a little after: each answer is 200 or 404.
    let after = 0;
    while (deleting || after++ < 5) {
      const body = after % 2 ? randomBytes(70_000) : JSON.stringify({ n: after });
      const response = await postWebhook(victim.webhookUrl, body);
      statuses.add(response.status);
      await response.body?.cancel();
    }
  });
  await waitFor(async () => (await countKeys(kv, ["events", victim.id])) > 10, {
    what: "webhooks stored",
  });
  const deleted = await postJson(server, {
    method: "DELETE",
    path: "/api/account",
    headers: { Authorization: `Bearer ${victim.token}` },
    body: { password: PASSWORD },
  });
  assert.equal(deleted.status, 200);
  await deleted.body?.cancel();
  deleting = false;
  await Promise.all(senders);
  assert.deepEqual([...statuses].sort(), [200, 404]);
  await waitFor(async () => (await kv.get(accountDeletionKey(victim.id))).versionstamp === null, {
    what: "the deletion finished",
  });
  assert.deepEqual(await entriesNaming(kv, [victim.id, victim.email]), []);
});

Deno.test("[delete] a big account is deleted in batches, and a deletion cut short resumes at start-up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websocks-delete-" });
  const env = { KV_PATH: `${dir}/kv.sqlite3`, DELETION_SETTLE_SECONDS: "0" };
  try {
    let victim: TestUser;
    {
      await using server = await startTestServer(env);
      const { kv, broker } = server.services;
      victim = await signUp(server);
      // 25,000 body chunks (small ones: the count is what matters to the batches).
      const chunk = new Uint8Array(16);
      for (let first = 0; first < 25_000; first += 1000) {
        const op = kv.atomic();
        for (let n = first; n < first + 1000; n++) {
          op.set(eventBodyChunkKey(victim.id, `blob${Math.floor(n / 100)}`, n % 100), chunk);
        }
        await op.commit();
      }
      // The first commit only, as if the process died right after it.
      await beginDeletion(kv, {
        userId: victim.id,
        broker,
        stripe: null,
        meterEventName: "",
        freeAllowance: 1000,
        settleMs: 0,
      });
      const gone = await postWebhook(victim.webhookUrl, "{}");
      assert.equal(gone.status, 404);
      await gone.body?.cancel();
      assert.equal(await me(server, { Authorization: `Bearer ${victim.token}` }), 401);
      assert.equal(await countKeys(kv, ["event_bodies", victim.id]), 25_000);
    }
    await using restarted = await startTestServer(env);
    const { kv } = restarted.services;
    await waitFor(async () => (await kv.get(accountDeletionKey(victim.id))).versionstamp === null, {
      what: "the deletion resumed and finished",
      timeoutMs: 60_000,
    });
    assert.equal(await countKeys(kv, ["event_bodies", victim.id]), 0);
    assert.deepEqual(await entriesNaming(kv, [victim.id, victim.email]), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[delete] the page asks for the password, then signs the visitor out", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const confirm = await fetch(`${server.url}/dashboard/account/delete`, {
    headers: { Cookie: user.cookie },
  });
  assert.equal(confirm.status, 200);
  assert.equal(confirm.headers.get("content-type"), "text/html; charset=utf-8");
  const html = await confirm.text();
  assert.match(html, /<form method="post" action="\/dashboard\/account\/delete"/);
  assert.match(html, /name="password"/);

  const wrong = await postForm(server, {
    path: "/dashboard/account/delete",
    cookie: user.cookie,
    fields: { password: "not the password" },
  });
  assert.equal(wrong.status, 403);
  assert.equal(wrong.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(
    await wrong.text(),
    /class="field-error">Cannot delete account: the current password/,
  );
  assert.equal(await me(server, { Cookie: user.cookie }), 200);

  const foreign = await fetch(`${server.url}/dashboard/account/delete`, {
    method: "POST",
    headers: {
      Cookie: user.cookie,
      "Content-Type": "application/x-www-form-urlencoded",
      Origin: "https://evil.example",
    },
    body: new URLSearchParams({ password: PASSWORD }),
  });
  assert.equal(foreign.status, 403);
  await foreign.body?.cancel();
  assert.equal(await me(server, { Cookie: user.cookie }), 200, "a cross-site form deletes nothing");

  const done = await postForm(server, {
    path: "/dashboard/account/delete",
    cookie: user.cookie,
    fields: { password: PASSWORD },
  });
  assert.equal(done.status, 200);
  assert.equal(done.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(done.headers.get("set-cookie") ?? "", /websocks_session=;/);
  assert.match(await done.text(), /Your account was deleted/);
  const dashboard = await fetch(`${server.url}/dashboard`, {
    headers: { Cookie: user.cookie },
    redirect: "manual",
  });
  assert.equal(dashboard.status, 303);
  assert.match(dashboard.headers.get("location")!, /^\/login/);
  await dashboard.body?.cancel();
  assert.equal((await logIn(server, user.email, PASSWORD)).status, 401);
});

/** Deletes on side 1 while clients of the account are connected to both sides. */
async function deleteAcrossSides(sides: Sides): Promise<void> {
  const user = await signUpOn(sides);
  const clients = [
    await sides.openWs(0, `/?token=${user.token}`),
    await sides.openWs(1, `/?token=${user.token}`),
  ];
  // Both sides have the endpoint in their caches.
  for (const side of [0, 1] as const) {
    assert.equal((await postOn(sides, { side, slug: user.slug, body: "{}" })).status, 200);
  }
  const deleted = await sides.fetch(1, "/api/account", {
    method: "DELETE",
    headers: { ...user.auth, "Content-Type": "application/json" },
    body: JSON.stringify({ password: PASSWORD }),
  });
  assert.equal(deleted.status, 200);
  await deleted.body?.cancel();
  for (const side of [0, 1] as const) {
    const posted = await postOn(sides, { side, slug: user.slug, body: "{}" });
    assert.equal(posted.status, 404, `side ${side} still accepts`);
  }
  for (const client of clients) {
    const closed = await within(client.closed, "a client of the deleted account closed");
    assert.equal(closed.code, 4001);
    assert.equal(closed.reason, "Account deleted");
  }
}

Deno.test("[delete] with WORKERS=2 the URLs 404 and the clients close in every isolate", async () => {
  const sides = await clusterSides();
  try {
    await deleteAcrossSides(sides);
  } finally {
    await sides.close();
  }
});

Deno.test("[delete] with BROKER=kv the URLs 404 and the clients close on every instance", async () => {
  const sides = await instanceSides();
  try {
    await deleteAcrossSides(sides);
  } finally {
    await sides.close();
  }
});
