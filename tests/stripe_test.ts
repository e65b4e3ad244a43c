/**
 * Stripe, offline: a local HTTP server stands in for Stripe's API and the real `stripe` client
 * talks to it; webhook events are signed with the client's own test helper.
 */
import assert from "node:assert/strict";
import Stripe from "stripe";
import { generateInvoices } from "../lib/billing/invoices.ts";
import { endExpiredGrace, reportUsage } from "../lib/billing/stripe.ts";
import {
  markEmailVerified,
  postWebhook,
  signUp,
  startTestServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";
import { startSmtp } from "./smtp.ts";

const WEBHOOK_SECRET = "whsec_test_secret";

interface Recorded {
  method: string;
  path: string;
  form: URLSearchParams;
  idempotencyKey: string | null;
}

/** A stand-in for api.stripe.com that records requests; `failMeter` fails meter calls. */
function startStripeStandIn() {
  const requests: Recorded[] = [];
  const state: {
    failMeter: number;
    /** Held until it resolves: a cancel in flight. */
    cancelGate: Promise<void> | null;
    cancelStarted: boolean;
    /** The cancel is applied, but its answer is a 500 (a lost answer). */
    cancelAnswerLost: boolean;
    /** Subscriptions cancelled, as a later GET reports them. */
    cancelled: Set<string>;
    /** Subscriptions whose cancel fails (500) and is not applied. */
    refuseCancel: Set<string>;
    /** The next meter call waits for this; `meterHeld` resolves once it is waiting. */
    meterGate: Promise<void> | null;
    meterHeld: () => void;
  } = {
    failMeter: 0,
    cancelGate: null,
    cancelStarted: false,
    cancelAnswerLost: false,
    cancelled: new Set(),
    refuseCancel: new Set(),
    meterGate: null,
    meterHeld: () => {},
  };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    const form = new URLSearchParams(await req.text());
    // stripe-node sends a DELETE's parameters in the query.
    for (const [name, value] of url.searchParams) form.append(name, value);
    requests.push({
      method: req.method,
      path: url.pathname,
      form,
      idempotencyKey: req.headers.get("idempotency-key"),
    });
    const json = (body: unknown, status = 200) => Response.json(body, { status });
    if (url.pathname === "/v1/checkout/sessions") {
      return json({
        id: "cs_test_1",
        object: "checkout.session",
        url: "https://checkout.test/cs_1",
      });
    }
    if (url.pathname === "/v1/billing_portal/sessions") {
      return json({ id: "bps_1", object: "billing_portal.session", url: "https://portal.test/1" });
    }
    if (url.pathname === "/v1/billing/meter_events") {
      const gate = state.meterGate;
      if (gate) {
        state.meterGate = null;
        state.meterHeld();
        await gate;
      }
      if (state.failMeter > 0) {
        state.failMeter--;
        return json({ error: { type: "api_error", message: "try later" } }, 500);
      }
      return json({ object: "billing.meter_event", identifier: form.get("identifier") });
    }
    if (url.pathname.startsWith("/v1/subscriptions/") && req.method === "DELETE") {
      state.cancelStarted = true;
      await state.cancelGate;
      if (state.refuseCancel.has(url.pathname.split("/").at(-1)!)) {
        return json({ error: { type: "api_error", message: "try later" } }, 500);
      }
      state.cancelled.add(url.pathname.split("/").at(-1)!);
      if (state.cancelAnswerLost) {
        return json({ error: { type: "api_error", message: "connection reset" } }, 500);
      }
      return json({
        id: url.pathname.split("/").at(-1),
        object: "subscription",
        status: "canceled",
      });
    }
    if (url.pathname.startsWith("/v1/subscriptions/") && req.method === "GET") {
      const id = url.pathname.split("/").at(-1)!;
      return json({
        id,
        object: "subscription",
        status: state.cancelled.has(id) ? "canceled" : "active",
      });
    }
    return json({ error: { type: "invalid_request_error", message: "unknown path" } }, 404);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    state,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

async function startWithStripe(standInUrl: string): Promise<TestServer> {
  return await startTestServer({
    STRIPE_SECRET_KEY: "sk_test_123",
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_PRICE_ID: "price_metered",
    STRIPE_API_URL: standInUrl,
    FREE_MONTHLY_LIMIT: "1000",
  });
}

async function sendEvent(
  server: TestServer,
  event: Record<string, unknown>,
  options: { tamper?: boolean } = {},
): Promise<Response> {
  const payload = JSON.stringify({ object: "event", api_version: "2025-01-01", ...event });
  const signature = await new Stripe("sk_test_123").webhooks.generateTestHeaderStringAsync({
    payload,
    secret: WEBHOOK_SECRET,
    cryptoProvider: Stripe.createSubtleCryptoProvider(),
  });
  return await fetch(`${server.url}/api/stripe/webhook`, {
    method: "POST",
    headers: { "Stripe-Signature": signature, "Content-Type": "application/json" },
    body: options.tamper ? payload.replace("sub_1", "sub_2") : payload,
  });
}

/** POST /api/billing/downgrade as the user. */
function downgradeOf(server: TestServer, user: { token: string }): Promise<Response> {
  return fetch(`${server.url}/api/billing/downgrade`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user.token}` },
  });
}

/** Posts `n` empty JSON webhooks to the user's URL, one after another. */
async function postEmpty(user: { webhookUrl: string }, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await (await postWebhook(user.webhookUrl, "{}")).body?.cancel();
}

async function billing(server: TestServer, token: string) {
  return await (await fetch(`${server.url}/api/billing`, {
    headers: { Authorization: `Bearer ${token}` },
  })).json();
}

Deno.test("[stripe] checkout and portal go to Stripe; without Stripe the app says so", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  const auth = { Authorization: `Bearer ${user.token}` };
  const unverified = await fetch(`${server.url}/api/billing/checkout`, {
    method: "POST",
    headers: auth,
  });
  assert.equal(unverified.status, 403);
  assert.match(
    (await unverified.json()).error,
    /^Cannot upgrade to Pro: verify your email address first/,
  );
  await markEmailVerified(server, user.id);
  const checkout = await fetch(`${server.url}/api/billing/checkout`, {
    method: "POST",
    headers: auth,
  });
  assert.equal(checkout.status, 200);
  assert.match(checkout.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await checkout.json(), { url: "https://checkout.test/cs_1" });
  const sent = standIn.requests.find((r) => r.path === "/v1/checkout/sessions")!;
  assert.equal(sent.form.get("mode"), "subscription");
  assert.equal(sent.form.get("line_items[0][price]"), "price_metered");
  assert.equal(sent.form.get("client_reference_id"), user.id);
  assert.equal(sent.form.get("customer_email"), user.email);
  const nextMonth = new Date();
  nextMonth.setUTCMonth(nextMonth.getUTCMonth() + 1, 1);
  nextMonth.setUTCHours(0, 0, 0, 0);
  assert.equal(
    sent.form.get("subscription_data[billing_cycle_anchor]"),
    String(nextMonth.getTime() / 1000),
  );
  assert.match(sent.idempotencyKey!, new RegExp(`^checkout-${user.id}-`));
  const portal = await fetch(`${server.url}/api/billing/portal`, { method: "POST", headers: auth });
  assert.equal(portal.status, 409);
  assert.match((await portal.json()).error, /upgrade to Pro first/);

  await using plain = await startTestServer();
  const other = await signUp(plain);
  const off = await fetch(`${plain.url}/api/billing/checkout`, {
    method: "POST",
    headers: { Authorization: `Bearer ${other.token}` },
  });
  assert.equal(off.status, 503);
  assert.match((await off.json()).error, /Stripe is not configured on this server/);
});

Deno.test("[stripe] signed events are applied once; a tampered one changes nothing", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  const completed = {
    id: "evt_checkout",
    type: "checkout.session.completed",
    data: {
      object: {
        id: "cs_test_1",
        object: "checkout.session",
        client_reference_id: user.id,
        customer: "cus_1",
        subscription: "sub_1",
      },
    },
  };
  const first = await sendEvent(server, completed);
  assert.equal(first.status, 200);
  assert.deepEqual(await first.json(), { received: true, outcome: "applied" });
  assert.equal((await billing(server, user.token)).plan, "pro");
  assert.equal((await billing(server, user.token)).monthlyLimit, null);

  // The user sets a cap; a redelivered checkout event must not undo anything.
  await fetch(`${server.url}/api/billing/cap`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: '{"monthlyCap": 50000}',
  }).then((r) => r.body?.cancel());
  const again = await sendEvent(server, completed);
  assert.equal(again.status, 200);
  assert.deepEqual(await again.json(), { received: true, outcome: "duplicate" });
  assert.equal((await billing(server, user.token)).monthlyLimit, 50_000);

  const deleted = {
    id: "evt_deleted",
    type: "customer.subscription.deleted",
    data: {
      object: { id: "sub_1", object: "subscription", customer: "cus_1", status: "canceled" },
    },
  };
  const tampered = await sendEvent(server, deleted, { tamper: true });
  assert.equal(tampered.status, 400);
  assert.match((await tampered.json()).error, /^Cannot accept Stripe event:/);
  assert.equal((await billing(server, user.token)).plan, "pro");
  const unsigned = await fetch(`${server.url}/api/stripe/webhook`, { method: "POST", body: "{}" });
  assert.equal(unsigned.status, 400);
  assert.match((await unsigned.json()).error, /Stripe-Signature header is missing/);

  const portal = await fetch(`${server.url}/api/billing/portal`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(portal.status, 200);
  assert.equal((await portal.json()).url, "https://portal.test/1");

  assert.equal((await (await sendEvent(server, deleted)).json()).outcome, "applied");
  const free = await billing(server, user.token);
  assert.equal(free.plan, "free");
  assert.equal(free.monthlyLimit, 1000);
});

Deno.test("[stripe] a failed payment falls back to Free limits when the grace period ends", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await sendEvent(server, {
    id: "evt_c",
    type: "checkout.session.completed",
    data: {
      object: { object: "checkout.session", client_reference_id: user.id, customer: "cus_9" },
    },
  }).then((r) => r.body?.cancel());
  const failed = await sendEvent(server, {
    id: "evt_f",
    type: "invoice.payment_failed",
    data: { object: { object: "invoice", customer: "cus_9" } },
  });
  assert.equal((await failed.json()).outcome, "applied");
  const { kv, config } = server.services;
  const sixDays = new Date(Date.now() + 6 * 86400_000);
  assert.equal(await endExpiredGrace(kv, { freeAllowance: 1000, now: sixDays }), 0);
  assert.equal((await billing(server, user.token)).plan, "pro");
  const eightDays = new Date(Date.now() + 8 * 86400_000);
  assert.equal(config.paymentGraceMs, 7 * 86400_000);
  assert.equal(await endExpiredGrace(kv, { freeAllowance: 1000, now: eightDays }), 1);
  assert.equal((await billing(server, user.token)).plan, "free");

  const downgraded = await downgradeOf(server, user);
  assert.equal(downgraded.status, 200);
  assert.deepEqual(await downgraded.json(), { plan: "free", monthlyLimit: 1000 });
});

Deno.test("[stripe] after the grace period the unpaid subscription is paid or ended, never doubled", async () => {
  // Free limits after a failed payment kept the subscription, and the usage page offered
  // Checkout again: the new subscription replaced the old one in the account, which stayed
  // open at Stripe, billing the same meter and leaving its debt behind.
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "unpaid");
  const failed = await sendEvent(server, {
    id: "evt_unpaid_failed",
    type: "invoice.payment_failed",
    data: { object: { object: "invoice", customer: "cus_unpaid" } },
  });
  assert.equal(failed.status, 200);
  await failed.body?.cancel();
  const { kv } = server.services;
  const eightDays = new Date(Date.now() + 8 * 86400_000);
  assert.equal(await endExpiredGrace(kv, { freeAllowance: 1000, now: eightDays }), 1);

  const checkout = await fetch(`${server.url}/api/billing/checkout`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(checkout.status, 409);
  assert.match(checkout.headers.get("content-type") ?? "", /application\/json/);
  assert.match((await checkout.json()).error, /still open at Stripe.*Manage payment/);
  const page = await fetch(`${server.url}/dashboard/usage`, { headers: { Cookie: user.cookie } });
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.doesNotMatch(html, /Upgrade to Pro/);
  assert.match(html, /Manage payment/);
  assert.match(html, /End the Pro subscription/);

  // A Checkout opened before the grace ended completes: that one is cancelled instead.
  const late = await checkoutCompleted(server, user, "fresh", "cus_unpaid");
  assert.equal(late.status, 200);
  await late.body?.cancel();
  const cancelled = standIn.requests.filter((r) => r.method === "DELETE").map((r) => r.path);
  assert.deepEqual(cancelled, ["/v1/subscriptions/sub_fresh"]);
  // The owner pays the failed invoice: Stripe makes the old subscription active, Pro again.
  const paid = await sendEvent(server, {
    id: "evt_unpaid_active",
    type: "customer.subscription.updated",
    data: {
      object: {
        id: "sub_unpaid",
        object: "subscription",
        customer: "cus_unpaid",
        status: "active",
      },
    },
  });
  assert.equal(paid.status, 200);
  await paid.body?.cancel();
  assert.equal((await billing(server, user.token)).plan, "pro");
});

Deno.test("[stripe] usage reaches the meter in idempotent batches that add up to our count", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await sendEvent(server, {
    id: "evt_m",
    type: "checkout.session.completed",
    data: {
      object: { object: "checkout.session", client_reference_id: user.id, customer: "cus_m" },
    },
  }).then((r) => r.body?.cancel());
  const post = (n: number) => postEmpty(user, n);
  const { kv, stripe } = server.services;
  const report = () => reportUsage(kv, { stripe: stripe!, meterEventName: "websocks_webhooks" });
  const meterCalls = () => standIn.requests.filter((r) => r.path === "/v1/billing/meter_events");
  const month = new Date().toISOString().slice(0, 7);

  await post(3);
  assert.deepEqual(await report(), { sent: 1, failed: 0 });
  assert.deepEqual(await report(), { sent: 0, failed: 0 });
  await post(2);
  standIn.state.failMeter = 3; // the first try and the client's two retries
  assert.deepEqual(await report(), { sent: 0, failed: 1 });
  await post(1);
  assert.deepEqual(await report(), { sent: 1, failed: 0 }); // the pending batch, unchanged
  assert.deepEqual(await report(), { sent: 1, failed: 0 }); // then the newest webhook

  const delivered = meterCalls().filter((_, i, all) =>
    all.findIndex((c) => c.form.get("identifier") === all[i].form.get("identifier")) === i
  );
  assert.deepEqual(
    delivered.map((c) => [c.form.get("identifier"), c.form.get("payload[value]")]),
    [
      [`${user.id}-${month}-0-3`, "3"],
      [`${user.id}-${month}-3-5`, "2"],
      [`${user.id}-${month}-5-6`, "1"],
    ],
  );
  assert.ok(meterCalls().every((c) => c.form.get("event_name") === "websocks_webhooks"));
  assert.ok(meterCalls().every((c) => c.form.get("payload[stripe_customer_id]") === "cus_m"));
  const total = delivered.reduce((sum, c) => sum + Number(c.form.get("payload[value]")), 0);
  assert.equal(total, 6);
});

Deno.test("[stripe] a slow report confirmed after a faster one does not send usage twice", async () => {
  // Two reporters (the 5-minute report of two instances, or one and a downgrade) may hold the
  // same pending batch. The slower one wrote its end back over the faster one's progress, so
  // the next batch started from there again under a new identifier: billed twice.
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "race");
  const post = (n: number) => postEmpty(user, n);
  const { kv, stripe } = server.services;
  const report = () => reportUsage(kv, { stripe: stripe!, meterEventName: "websocks_webhooks" });
  await post(10);
  let release = () => {};
  standIn.state.meterGate = new Promise((resolve) => release = resolve);
  const held = new Promise<void>((resolve) => standIn.state.meterHeld = resolve);
  const slow = report();
  await held;
  assert.deepEqual(await report(), { sent: 1, failed: 0 }); // resends the held batch
  await post(10);
  assert.deepEqual(await report(), { sent: 1, failed: 0 });
  release();
  assert.deepEqual(await slow, { sent: 1, failed: 0 });
  await post(5);
  assert.deepEqual(await report(), { sent: 1, failed: 0 });
  assert.deepEqual(await report(), { sent: 0, failed: 0 });
  // Stripe counts each identifier once.
  const billed = new Map<string, number>();
  for (const call of standIn.requests.filter((r) => r.path === "/v1/billing/meter_events")) {
    billed.set(call.form.get("identifier")!, Number(call.form.get("payload[value]")));
  }
  assert.equal([...billed.values()].reduce((sum, n) => sum + n, 0), 25);
});

/** A signed `checkout.session.completed` of subscription `sub_<n>` for customer `cus_<n>`. */
async function checkoutCompleted(
  server: TestServer,
  user: { id: string },
  n: string,
  customer = `cus_${n}`,
): Promise<Response> {
  return await sendEvent(server, {
    id: `evt_checkout_${n}`,
    type: "checkout.session.completed",
    data: {
      object: {
        object: "checkout.session",
        client_reference_id: user.id,
        customer,
        subscription: `sub_${n}`,
      },
    },
  });
}

/** Makes `user` Pro through a signed checkout event, as Stripe would. */
async function subscribe(server: TestServer, user: { id: string }, n: string): Promise<void> {
  await markEmailVerified(server, user.id);
  const done = await checkoutCompleted(server, user, n);
  assert.equal(done.status, 200);
  await done.body?.cancel();
}

/** What the stand-in's meter received for `customer`, summed. */
function metered(standIn: { requests: Recorded[] }, customer: string): number {
  return standIn.requests.filter((r) =>
    r.path === "/v1/billing/meter_events" &&
    r.form.get("payload[stripe_customer_id]") === customer
  ).reduce((sum, r) => sum + Number(r.form.get("payload[value]")), 0);
}

Deno.test("[stripe] a downgrade before the month closes bills the Pro webhooks of the month", async () => {
  // Pro is metered and billed after the month: a downgrade cancelled the subscription without
  // invoicing (Stripe then drops the usage not yet invoiced), the 5-minute report skips Free
  // users, and the month's invoice priced it all as Free. Pro for nothing, every month.
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "down");
  for (let i = 0; i < 3; i++) {
    const sent = await Promise.all(
      Array.from({ length: 500 }, () => postWebhook(user.webhookUrl, "{}")),
    );
    for (const response of sent) {
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
  }
  const down = await downgradeOf(server, user);
  assert.equal(down.status, 200);
  assert.match(down.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await down.json(), { plan: "free", monthlyLimit: 1000 });
  // Reported before the cancel, which asks Stripe to invoice it at once.
  assert.equal(metered(standIn, "cus_down"), 1500);
  const cancel = standIn.requests.findIndex((r) => r.method === "DELETE");
  assert.equal(standIn.requests[cancel].path, "/v1/subscriptions/sub_down");
  assert.equal(standIn.requests[cancel].form.get("invoice_now"), "true");
  assert.ok(
    standIn.requests.findLastIndex((r) => r.path === "/v1/billing/meter_events") < cancel,
    "the usage was reported before the cancel",
  );
  // The month's own invoice charges what Pro metered; the rest of the month is Free's.
  const { kv } = server.services;
  const period = new Date().toISOString().slice(0, 7);
  await generateInvoices(kv, { period, freeAllowance: 1000 });
  const invoice = (await kv.get<Record<string, unknown>>(["invoices", user.id, period])).value!;
  assert.equal(invoice.plan, "pro");
  assert.equal(invoice.acceptedRequests, 1500);
  assert.equal(invoice.freeAllowance, 0);
  assert.equal(invoice.amountUsd, 0.15);
  assert.equal(invoice.status, "due");
});

Deno.test("[stripe] while a downgrade tells Stripe, webhooks count as Free, not as unbilled Pro", async () => {
  // The user stayed Pro, with no limit, until Stripe's cancel returned: what came meanwhile
  // was neither reported (the report had run) nor invoiced (Free at the month's end).
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "window");
  const send = async (count: number) => {
    const statuses = new Map<number, number>();
    for (
      const response of await Promise.all(
        Array.from({ length: count }, () => postWebhook(user.webhookUrl, "{}")),
      )
    ) {
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      await response.body?.cancel();
    }
    return Object.fromEntries(statuses);
  };
  assert.deepEqual(await send(100), { 200: 100 });
  let release!: () => void;
  standIn.state.cancelGate = new Promise<void>((resolve) => release = resolve);
  const down = downgradeOf(server, user);
  try {
    await waitFor(() => standIn.state.cancelStarted, { what: "the cancel to reach Stripe" });
    // Free already: 900 more fit the month's 1,000; the rest are refused.
    assert.deepEqual(await send(1000), { 200: 900, 402: 100 });
  } finally {
    release();
  }
  const answer = await down;
  assert.equal(answer.status, 200);
  await answer.body?.cancel();
  assert.equal(metered(standIn, "cus_window"), 100);
  const { kv } = server.services;
  const period = new Date().toISOString().slice(0, 7);
  await generateInvoices(kv, { period, freeAllowance: 1000 });
  const invoice = (await kv.get<Record<string, unknown>>(["invoices", user.id, period])).value!;
  assert.equal(invoice.plan, "pro");
  assert.equal(invoice.acceptedRequests, 1000);
  assert.equal(invoice.freeAllowance, 900);
  assert.equal(invoice.amountUsd, 0.01);
});

Deno.test("[stripe] a cancel Stripe applied but whose answer was lost still downgrades", async () => {
  // Restoring Pro after a failed cancel put the user back on a subscription Stripe had ended,
  // which bills nothing; its deletion event, applied meanwhile, had found no current
  // subscription to end.
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "lost");
  standIn.state.cancelAnswerLost = true;
  const down = await downgradeOf(server, user);
  assert.equal(down.status, 200);
  assert.deepEqual(await down.json(), { plan: "free", monthlyLimit: 1000 });
  assert.equal((await billing(server, user.token)).plan, "free");
});

Deno.test("[stripe] a downgrade whose usage cannot reach Stripe changes nothing and says why", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "fail");
  await (await postWebhook(user.webhookUrl, "{}")).body?.cancel();
  standIn.state.failMeter = 10;
  const down = await downgradeOf(server, user);
  assert.equal(down.status, 502);
  assert.match(down.headers.get("content-type")!, /^application\/json/);
  assert.match(
    (await down.json()).error,
    /^Cannot downgrade: reporting this month's usage to Stripe failed .*; nothing was changed, try again$/,
  );
  assert.equal(standIn.requests.some((r) => r.method === "DELETE"), false);
  assert.equal((await billing(server, user.token)).plan, "pro");
});

Deno.test("[stripe] deleting a Pro account bills the month's webhooks before it goes", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "gone");
  for (let i = 0; i < 30; i++) await (await postWebhook(user.webhookUrl, "{}")).body?.cancel();
  const gone = await fetch(`${server.url}/api/account`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ password: "correct horse battery" }),
  });
  assert.equal(gone.status, 200);
  await gone.body?.cancel();
  assert.equal(metered(standIn, "cus_gone"), 30);
  const cancel = standIn.requests.find((r) => r.method === "DELETE")!;
  assert.equal(cancel.form.get("invoice_now"), "true");
});

Deno.test("[stripe] events of a subscription that is no longer the user's change nothing", async () => {
  // Stripe does not deliver events in order. A late "active" update of a subscription that a
  // downgrade cancelled gave Pro back, tied to a subscription that bills nothing; a late end
  // of an old subscription ended the new one's Pro.
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "old");
  const down = await downgradeOf(server, user);
  assert.equal(down.status, 200);
  await down.body?.cancel();
  const subscriptionEvent = (id: string, type: string, status: string) => ({
    id,
    type,
    data: { object: { id: "sub_old", object: "subscription", customer: "cus_old", status } },
  });
  const late = await sendEvent(
    server,
    subscriptionEvent("evt_late_active", "customer.subscription.updated", "active"),
  );
  assert.equal(late.status, 200);
  await late.body?.cancel();
  assert.equal((await billing(server, user.token)).plan, "free");
  // Pro again on a new subscription; the old one's end arrives after it.
  await subscribe(server, user, "new");
  const ended = await sendEvent(
    server,
    subscriptionEvent("evt_late_deleted", "customer.subscription.deleted", "canceled"),
  );
  assert.equal(ended.status, 200);
  await ended.body?.cancel();
  const now = await billing(server, user.token);
  assert.equal(now.plan, "pro");
  assert.equal(now.monthlyLimit, null);
});

Deno.test("[stripe] a second Checkout completed while Pro is cancelled, not billed twice", async () => {
  // Two Checkout sessions opened while Free (two tabs, or a minute apart) can both complete.
  // Each subscription bills the customer's metered usage: the second one would bill every
  // webhook again, and the app tracked only the last, leaving the first one active at Stripe.
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await subscribe(server, user, "first");
  const deletes = (id: string) =>
    standIn.requests.filter((r) => r.method === "DELETE" && r.path === `/v1/subscriptions/${id}`);

  // Stripe fails the cancel: the event is refused, so that Stripe delivers it again.
  standIn.state.refuseCancel.add("sub_second");
  const refused = await checkoutCompleted(server, user, "second", "cus_first");
  assert.equal(refused.status, 502);
  assert.match(refused.headers.get("content-type") ?? "", /application\/json/);
  assert.match((await refused.json()).error, /Cannot apply Stripe event: cancelling .*sub_second/);
  standIn.state.refuseCancel.clear();

  const redelivered = await checkoutCompleted(server, user, "second", "cus_first");
  assert.equal(redelivered.status, 200);
  assert.equal((await redelivered.json()).outcome, "applied");
  assert.equal(deletes("sub_second").length > 0, true);
  // Nothing of its own to bill: the usage it would invoice is the first subscription's.
  assert.equal(deletes("sub_second").at(-1)!.form.get("invoice_now"), null);
  assert.equal((await billing(server, user.token)).plan, "pro");

  // The account is still on the first subscription: a downgrade ends that one.
  const down = await downgradeOf(server, user);
  assert.equal(down.status, 200);
  await down.body?.cancel();
  assert.equal(deletes("sub_first").length, 1);
});

Deno.test("[stripe] the usage page's buttons upgrade through Checkout, manage payment, downgrade", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  const form = { Cookie: user.cookie, Origin: server.url };
  const page = await fetch(`${server.url}/dashboard/usage`, { headers: { Cookie: user.cookie } });
  assert.equal(page.status, 200);
  assert.match(await page.text(), /action="\/dashboard\/billing\/upgrade"/);
  const unverified = await fetch(`${server.url}/dashboard/billing/upgrade`, {
    method: "POST",
    headers: form,
    redirect: "manual",
  });
  assert.equal(unverified.status, 403);
  assert.match(unverified.headers.get("content-type")!, /^text\/html/);
  assert.match(await unverified.text(), /Cannot upgrade to Pro: verify your email address first/);
  assert.equal(standIn.requests.length, 0, "nothing reached Stripe");
  await markEmailVerified(server, user.id);
  const upgrade = await fetch(`${server.url}/dashboard/billing/upgrade`, {
    method: "POST",
    headers: form,
    redirect: "manual",
  });
  assert.equal(upgrade.status, 303);
  assert.equal(upgrade.headers.get("location"), "https://checkout.test/cs_1");
  const forged = await fetch(`${server.url}/dashboard/billing/upgrade`, {
    method: "POST",
    headers: { Cookie: user.cookie, Origin: "https://evil.example" },
    redirect: "manual",
  });
  assert.equal(forged.status, 403);
  await forged.body?.cancel();

  await sendEvent(server, {
    id: "evt_page",
    type: "checkout.session.completed",
    data: {
      object: { object: "checkout.session", client_reference_id: user.id, customer: "cus_p" },
    },
  }).then((r) => r.body?.cancel());
  const proPage = await (await fetch(`${server.url}/dashboard/usage`, {
    headers: { Cookie: user.cookie },
  })).text();
  assert.match(proPage, /Manage payment/);
  const portal = await fetch(`${server.url}/dashboard/billing/portal`, {
    method: "POST",
    headers: form,
    redirect: "manual",
  });
  assert.equal(portal.status, 303);
  assert.equal(portal.headers.get("location"), "https://portal.test/1");
  const down = await fetch(`${server.url}/dashboard/billing/downgrade`, {
    method: "POST",
    headers: form,
    redirect: "manual",
  });
  assert.equal(down.status, 303);
  assert.equal(down.headers.get("location"), "/dashboard/usage");
  assert.equal((await billing(server, user.token)).plan, "free");
});

Deno.test("[stripe] without Stripe the usage page points to the admin command", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const page = await fetch(`${server.url}/dashboard/usage`, { headers: { Cookie: user.cookie } });
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /deno task admin set-plan/);
  assert.doesNotMatch(html, /action="\/dashboard\/billing\/upgrade"/);
});

Deno.test("[stripe] a paid Stripe invoice marks our invoice of that month paid", async () => {
  await using standIn = startStripeStandIn();
  await using server = await startWithStripe(standIn.url);
  const user = await signUp(server);
  await sendEvent(server, {
    id: "evt_ci",
    type: "checkout.session.completed",
    data: {
      object: { object: "checkout.session", client_reference_id: user.id, customer: "cus_i" },
    },
  }).then((r) => r.body?.cancel());
  const { kv } = server.services;
  await kv.atomic().sum(["usage_month", user.id, "2026-10"], 1500n).commit();
  await generateInvoices(kv, { period: "2026-10", freeAllowance: 1000 });
  const invoices = async () =>
    (await (await fetch(`${server.url}/api/invoices`, {
      headers: { Authorization: `Bearer ${user.token}` },
    })).json()).invoices;
  assert.deepEqual(
    (await invoices()).map((i: { status: string; amountUsd: number }) => [i.status, i.amountUsd]),
    [["due", 0.15]],
  );
  const paid = await sendEvent(server, {
    id: "evt_paid",
    type: "invoice.paid",
    data: {
      object: {
        object: "invoice",
        customer: "cus_i",
        period_start: Date.parse("2026-10-01T00:00:00Z") / 1000,
        period_end: Date.parse("2026-11-01T00:00:00Z") / 1000,
      },
    },
  });
  assert.equal(paid.status, 200);
  assert.equal((await paid.json()).outcome, "applied");
  assert.equal((await invoices())[0].status, "paid");
  const checkout = standIn.requests.find((r) => r.path === "/v1/checkout/sessions");
  assert.equal(checkout, undefined, "no checkout was needed here");
});

Deno.test("[mail] a failed payment is mailed to the owner once", async () => {
  await using smtp = await startSmtp();
  await using standIn = startStripeStandIn();
  await using server = await startTestServer({
    STRIPE_SECRET_KEY: "sk_test_123",
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_PRICE_ID: "price_metered",
    STRIPE_API_URL: standIn.url,
    SMTP_URL: smtp.url,
  });
  const user = await signUp(server);
  await smtp.next(user.email); // the verification mail
  await sendEvent(server, {
    id: "evt_pc",
    type: "checkout.session.completed",
    data: {
      object: { object: "checkout.session", client_reference_id: user.id, customer: "cus_pf" },
    },
  }).then((r) => r.body?.cancel());
  for (let i = 0; i < 2; i++) {
    const failed = await sendEvent(server, {
      id: "evt_pf",
      type: "invoice.payment_failed",
      data: { object: { object: "invoice", customer: "cus_pf" } },
    });
    assert.equal(failed.status, 200);
    assert.equal((await failed.json()).outcome, i === 0 ? "applied" : "duplicate");
  }
  const mail = await smtp.next(user.email);
  assert.equal(mail.subject, "WebSocks: a payment failed");
  assert.match(mail.text, /Your Pro limits stay until \d{4}-\d{2}-\d{2}/);
  assert.ok(mail.link?.endsWith("/dashboard/usage"));
  // Another event's mail would have been queued by now: the duplicate sent nothing.
  await smtp.close();
  assert.equal(smtp.mails.filter((m) => /payment failed/.test(m.subject)).length, 1);
});
