/**
 * Issue 10, findings 7, 10 (logs), 11 and 12, tried as an attacker would against a real server:
 * concurrent password guessing, sign-up floods, a stranger locking the owner out, input used as a
 * log format string, client disconnects logged as faults, a token's value in KV in plain text,
 * and Stripe events dated in the future.
 */
import assert from "node:assert/strict";
import { format } from "node:util";
import Stripe from "stripe";
import { signUp, startTestServer, type TestServer } from "./helpers.ts";

const PASSWORD = "correct horse battery";

/** Logs in through the JSON API from `address` (the server must trust X-Forwarded-For). */
async function apiLogIn(
  server: TestServer,
  options: { email: string; password: string; address: string },
): Promise<Response> {
  return await fetch(`${server.url}/api/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Forwarded-For": options.address },
    body: JSON.stringify({ email: options.email, password: options.password }),
  });
}

/** POSTs a form as our own pages would, not following redirects. */
async function postForm(
  server: TestServer,
  path: string,
  fields: Record<string, string>,
  options: { cookie?: string; address?: string } = {},
): Promise<Response> {
  const headers: Record<string, string> = {
    "Content-Type": "application/x-www-form-urlencoded",
    Origin: server.url,
  };
  if (options.cookie) headers.Cookie = options.cookie;
  if (options.address) headers["X-Forwarded-For"] = options.address;
  return await fetch(`${server.url}${path}`, {
    method: "POST",
    headers,
    body: new URLSearchParams(fields),
    redirect: "manual",
  });
}

/** Calls `attempt` until `done` says so, or fails after `timeoutMs`; returns the last result. */
async function until<T>(
  attempt: () => Promise<T>,
  done: (value: T) => boolean,
  options: { timeoutMs: number; what: string },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    const value = await attempt();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`${options.what} within ${options.timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What console.* would print, captured while `body` runs (console.* restored after). */
async function capturingConsole<T>(
  body: (lines: { level: string; text: string }[]) => Promise<T>,
): Promise<T> {
  const lines: { level: string; text: string }[] = [];
  const saved = { error: console.error, log: console.log, warn: console.warn };
  for (const level of ["error", "log", "warn"] as const) {
    // node's format applies the same specifiers (%s %d %f %o %c …) as Deno's console.
    console[level] = (...args: unknown[]) => lines.push({ level, text: format(...args) });
  }
  try {
    return await body(lines);
  } finally {
    Object.assign(console, saved);
  }
}

Deno.test("[accounts] 150 concurrent wrong passwords for one email: only the limit are tried; the owner gets in after a short delay", async () => {
  await using server = await startTestServer({
    TRUST_PROXY: "1",
    LOGIN_FAILURES_PER_ACCOUNT: "5",
    LOGIN_DELAY_BASE_SECONDS: "0.5",
    LOGIN_DELAY_MAX_SECONDS: "2",
  });
  const owner = await signUp(server);
  const answers = await Promise.all(
    Array.from({ length: 150 }, (_, i) =>
      apiLogIn(server, {
        email: owner.email,
        password: `wrong guess ${i}`,
        address: "203.0.113.7",
      })),
  );
  const statuses = answers.map((r) => r.status);
  const tried = statuses.filter((s) => s === 401).length;
  const refused = statuses.filter((s) => s === 429).length;
  assert.equal(tried + refused, 150, `only 401 and 429: ${[...new Set(statuses)]}`);
  assert.ok(tried >= 1 && tried <= 5, `${tried} passwords were tried, the limit is 5`);
  const sample = answers[statuses.indexOf(429)];
  assert.match(sample.headers.get("content-type") ?? "", /^application\/json/);
  assert.ok(Number(sample.headers.get("retry-after")) >= 1, "429 carries Retry-After");
  assert.match((await sample.json()).error, /^Cannot log in: too many failed attempts/);
  await Promise.all(answers.map((r) => r.bodyUsed ? null : r.body?.cancel()));

  // The owner, elsewhere, waits out the short delay and is in; that clears the account's delay.
  const ok = await until(
    () => apiLogIn(server, { email: owner.email, password: PASSWORD, address: "198.51.100.1" }),
    (r) => {
      if (r.status !== 429) return true;
      r.body?.cancel();
      return false;
    },
    { timeoutMs: 15_000, what: "the owner could not log in" },
  );
  assert.equal(ok.status, 200);
  assert.match(ok.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal((await ok.json()).user.email, owner.email);
});

Deno.test("[accounts] a stranger's failures from one address do not lock the owner out of another beyond the growing delay", async () => {
  await using server = await startTestServer({
    TRUST_PROXY: "1",
    LOGIN_FAILURES_PER_ACCOUNT: "3",
    LOGIN_FAILURES_PER_ADDRESS: "5",
    LOGIN_DELAY_BASE_SECONDS: "0.2",
    LOGIN_DELAY_MAX_SECONDS: "1",
  });
  const owner = await signUp(server);
  const stranger = "203.0.113.66";
  // The stranger guesses on until their own address is refused.
  let guessed = 0;
  const blocked = await until(
    async () => {
      const r = await postForm(server, "/login", {
        email: owner.email,
        password: `guess ${guessed}`,
      }, { address: stranger });
      if (r.status === 401) guessed++;
      return { status: r.status, type: r.headers.get("content-type"), page: await r.text() };
    },
    (r) => r.status === 429 && /your network address/.test(r.page),
    { timeoutMs: 20_000, what: "the stranger's address was never refused" },
  );
  assert.equal(blocked.type, "text/html; charset=utf-8");
  assert.match(
    blocked.page,
    /role="alert">Cannot log in: too many failed attempts for your network address; try again in/,
  );
  assert.equal(guessed, 5, "the address limit counts every guess it let through");
  // Even the right password is refused from the stranger's address…
  const there = await postForm(server, "/login", { email: owner.email, password: PASSWORD }, {
    address: stranger,
  });
  assert.equal(there.status, 429);
  await there.body?.cancel();
  // …but the owner, at home, is in once the (short, capped) delay has passed.
  const home = await until(
    () =>
      postForm(server, "/login", { email: owner.email, password: PASSWORD }, {
        address: "198.51.100.1",
      }),
    (r) => {
      if (r.status !== 429) return true;
      r.body?.cancel();
      return false;
    },
    { timeoutMs: 10_000, what: "the owner could not log in from home" },
  );
  assert.equal(home.status, 303);
  assert.equal(home.headers.get("location"), "/dashboard");
  await home.body?.cancel();
});

Deno.test("[accounts] the owner's browser that logged in before gets in at once while strangers guess; its own guesses are limited", async () => {
  await using server = await startTestServer({
    TRUST_PROXY: "1",
    LOGIN_FAILURES_PER_ACCOUNT: "3",
    LOGIN_DELAY_BASE_SECONDS: "600",
  });
  const owner = await signUp(server);
  const first = await postForm(server, "/login", { email: owner.email, password: PASSWORD }, {
    address: "198.51.100.1",
  });
  assert.equal(first.status, 303);
  await first.body?.cancel();
  const device = first.headers.getSetCookie().find((c) => c.startsWith("websocks_device="));
  assert.ok(device, "a successful log-in remembers the browser");
  assert.match(device, /; HttpOnly/);
  const deviceCookie = device.split(";")[0];

  // Strangers from many addresses: a few guesses are tried, then the account waits 10 minutes.
  const guesses = await Promise.all(Array.from({ length: 10 }, (_, i) =>
    apiLogIn(server, {
      email: owner.email,
      password: `guess ${i}`,
      address: `203.0.113.${i + 1}`,
    })));
  const statuses = guesses.map((r) => r.status).sort();
  await Promise.all(guesses.map((r) => r.body?.cancel()));
  assert.deepEqual(statuses, [401, 401, 401, ...Array(7).fill(429)]);
  const elsewhere = await postForm(server, "/login", { email: owner.email, password: PASSWORD }, {
    address: "192.0.2.77",
  });
  assert.equal(elsewhere.status, 429, "a browser the account does not know waits");
  await elsewhere.body?.cancel();

  // The owner's browser is in at once, wherever it is now.
  const home = await postForm(server, "/login", { email: owner.email, password: PASSWORD }, {
    cookie: deviceCookie,
    address: "192.0.2.78",
  });
  assert.equal(home.status, 303);
  assert.equal(home.headers.get("location"), "/dashboard");
  await home.body?.cancel();

  // A stolen device cookie buys only as many guesses as an account allows.
  const stolen: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await postForm(server, "/login", { email: owner.email, password: `theft ${i}` }, {
      cookie: deviceCookie,
      address: "203.0.113.200",
    });
    stolen.push(r.status);
    await r.body?.cancel();
  }
  assert.deepEqual(stolen.slice(0, 3), [401, 401, 401]);
  assert.deepEqual(stolen.slice(3), [429, 429]);
});

Deno.test("[accounts] sign-up is limited per address, also under concurrency, on the API and the form", async () => {
  await using server = await startTestServer({ TRUST_PROXY: "1", SIGNUPS_PER_ADDRESS: "3" });
  const signUpFrom = (address: string, i: number) =>
    fetch(`${server.url}/api/auth/signup`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Forwarded-For": address },
      body: JSON.stringify({ email: `flood${i}-${address}@example.com`, password: PASSWORD }),
    });
  for (let i = 0; i < 3; i++) {
    const created = await signUpFrom("203.0.113.9", i);
    assert.equal(created.status, 201);
    await created.body?.cancel();
  }
  const fourth = await signUpFrom("203.0.113.9", 3);
  assert.equal(fourth.status, 429);
  assert.match(fourth.headers.get("content-type") ?? "", /^application\/json/);
  assert.ok(Number(fourth.headers.get("retry-after")) > 0, "429 carries Retry-After");
  assert.match(
    (await fourth.json()).error,
    /^Cannot sign up: too many accounts created from your network address; try again in \d+ minutes?$/,
  );
  const form = await postForm(server, "/signup", {
    email: "formflood@example.com",
    password: PASSWORD,
  }, { address: "203.0.113.9" });
  assert.equal(form.status, 429);
  assert.equal(form.headers.get("content-type"), "text/html; charset=utf-8");
  assert.ok(Number(form.headers.get("retry-after")) > 0);
  assert.match(await form.text(), /role="alert">Cannot sign up: too many accounts created/);

  // Twenty at once from another address: the limit holds, the others are refused, not hashed.
  const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => signUpFrom("192.0.2.5", i)));
  const statuses = burst.map((r) => r.status).sort();
  await Promise.all(burst.map((r) => r.body?.cancel()));
  assert.deepEqual(statuses, [...Array(3).fill(201), ...Array(17).fill(429)]);

  // Someone else is not affected.
  const other = await signUpFrom("198.51.100.20", 0);
  assert.equal(other.status, 201);
  await other.body?.cancel();
});

Deno.test("[logs] request paths with % are logged literally, never used as a format string", async () => {
  await using server = await startTestServer({ LOG_REQUESTS: "1" });
  const user = await signUp(server);
  await capturingConsole(async (lines) => {
    const kv = server.services.kv;
    // A storage fault, so that the request is logged as one, with its path.
    server.services.kv = new Proxy(kv, {
      get: (target, property) =>
        property === "get"
          ? () => Promise.reject(new Error("injected fault"))
          : Reflect.get(target, property),
    });
    try {
      const api = await fetch(`${server.url}/api/events/%ff%d%s%o`, {
        headers: { Authorization: `Bearer ${user.token}` },
      });
      assert.equal(api.status, 500);
      await api.body?.cancel();
      const page = await fetch(`${server.url}/dashboard/tokens/%ff%d%s/revoke`, {
        headers: { Cookie: user.cookie },
      });
      assert.equal(page.status, 500);
      await page.body?.cancel();
    } finally {
      server.services.kv = kv;
    }
    const missing = await fetch(`${server.url}/%ff%c%s`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const text = lines.map((l) => l.text).join("\n");
    assert.match(text, /GET \/api\/events\/%ff%d%s%o failed:.*injected fault/s);
    assert.match(text, /GET \/dashboard\/tokens\/%ff%d%s\/revoke failed:.*injected fault/s);
    assert.match(text, /GET \/%ff%c%s 404 /);
    assert.doesNotMatch(text, /NaN/);
  });
});

Deno.test("[logs] a client that disconnects mid-body is not logged as a fault", async () => {
  await using server = await startTestServer({
    LOG_REQUESTS: "1",
    STRIPE_SECRET_KEY: "sk_test_123",
    STRIPE_WEBHOOK_SECRET: "whsec_test_secret",
    STRIPE_PRICE_ID: "price_metered",
  });
  await capturingConsole(async (lines) => {
    const { port } = new URL(server.url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
    const encoder = new TextEncoder();
    // Expect: 100-continue makes the server say when its handler starts reading the body.
    await conn.write(encoder.encode(
      "POST /api/stripe/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
        "Stripe-Signature: t=1,v1=00\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
    ));
    const buffer = new Uint8Array(1024);
    const read = await conn.read(buffer);
    assert.match(new TextDecoder().decode(buffer.subarray(0, read ?? 0)), /^HTTP\/1.1 100 /);
    await conn.write(encoder.encode('{"id":"evt_half",'));
    conn.close();
    await until(
      () => Promise.resolve(lines.some((l) => l.text.startsWith("POST /api/stripe/webhook "))),
      (logged) => logged,
      { timeoutMs: 5000, what: "the request was not logged" },
    );
    const faults = lines.filter((l) => l.level === "error");
    assert.deepEqual(faults, [], "a client's disconnect is not a fault");
  });
});

Deno.test("[flash] a new token's value is never in KV in plain text, and the next page shows it once", async () => {
  await using server = await startTestServer();
  const everything = async () => {
    const values: string[] = [];
    for await (const entry of server.services.kv.list({ prefix: [] })) {
      const value = entry.value;
      values.push(
        value instanceof Uint8Array ? new TextDecoder().decode(value) : JSON.stringify(
          value,
          (_, v) => typeof v === "bigint" ? String(v) : v,
        ),
      );
    }
    return values.join("\n");
  };
  const secretOf = (page: string) =>
    page.match(/id="flash-secret" class="mono" readonly value="(wsk_[\w-]{43})"/)?.[1];

  // Sign-up by the form leaves the first token for the dashboard.
  const created = await postForm(server, "/signup", {
    email: "flash@example.com",
    password: PASSWORD,
  });
  assert.equal(created.status, 303);
  await created.body?.cancel();
  const cookie = created.headers.getSetCookie()[0].split(";")[0];
  const storedAfterSignUp = await everything();
  const dashboard = await fetch(`${server.url}/dashboard`, { headers: { Cookie: cookie } });
  assert.equal(dashboard.status, 200);
  const first = secretOf(await dashboard.text());
  assert.ok(first, "the first token is shown after sign-up");
  assert.ok(!storedAfterSignUp.includes(first), "the first token's value is not in KV");

  // A token created in the dashboard.
  const made = await postForm(server, "/dashboard/tokens", { name: "ci" }, { cookie });
  assert.equal(made.status, 303);
  await made.body?.cancel();
  const stored = await everything();
  assert.match(stored, /ci/, "the snapshot holds the new token's record");
  const page = await fetch(`${server.url}/dashboard/tokens`, { headers: { Cookie: cookie } });
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  const value = secretOf(await page.text());
  assert.ok(value, "the new token's value is on the next page");
  assert.ok(!stored.includes(value), "the token's value is not in KV in plain text");
  assert.ok(!stored.includes(value.slice(4)), "not even without its prefix");
  const again = await fetch(`${server.url}/dashboard/tokens`, { headers: { Cookie: cookie } });
  assert.equal(again.status, 200);
  assert.equal(secretOf(await again.text()), undefined, "shown once only");
  // The token works.
  const me = await fetch(`${server.url}/api/me`, { headers: { Authorization: `Bearer ${value}` } });
  assert.equal(me.status, 200);
  await me.body?.cancel();
});

Deno.test("[stripe] an event signed 10 minutes in the future is refused; one signed now is accepted", async () => {
  const secret = "whsec_test_secret";
  await using server = await startTestServer({
    STRIPE_SECRET_KEY: "sk_test_123",
    STRIPE_WEBHOOK_SECRET: secret,
    STRIPE_PRICE_ID: "price_metered",
  });
  const send = async (offsetSeconds: number) => {
    const payload = JSON.stringify({
      id: `evt_${crypto.randomUUID()}`,
      object: "event",
      api_version: "2025-01-01",
      type: "customer.created",
      data: { object: { id: "cus_1", object: "customer" } },
    });
    const signature = await new Stripe("sk_test_123").webhooks.generateTestHeaderStringAsync({
      payload,
      secret,
      timestamp: Math.floor(Date.now() / 1000) + offsetSeconds,
      cryptoProvider: Stripe.createSubtleCryptoProvider(),
    });
    return await fetch(`${server.url}/api/stripe/webhook`, {
      method: "POST",
      headers: { "Stripe-Signature": signature, "Content-Type": "application/json" },
      body: payload,
    });
  };
  const future = await send(600);
  assert.equal(future.status, 400);
  assert.match(future.headers.get("content-type") ?? "", /^application\/json/);
  assert.match(
    (await future.json()).error,
    /^Cannot accept Stripe event: its timestamp is \d+ s in the future/,
  );
  const past = await send(-600);
  assert.equal(past.status, 400);
  assert.match((await past.json()).error, /^Cannot accept Stripe event: /);
  const now = await send(0);
  assert.equal(now.status, 200);
  assert.match(now.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual(await now.json(), { received: true, outcome: "ignored" });
});
