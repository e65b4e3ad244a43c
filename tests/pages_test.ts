/**
 * Handler tests for the dashboard's pages against a real server: status, content type, what each
 * page shows logged in and out, the forms (inline errors, 303s, CSRF refusal), log-in rate
 * limiting, security headers, and the islands' bundles.
 */
import assert from "node:assert/strict";
import { writeBundles } from "../lib/web/bundles.ts";
import { ISLAND_MODULES } from "../islands/_registry.ts";
import { pageSecurityHeaders } from "../lib/web/security_headers.ts";
import { loadConfig } from "../lib/runtime/config.ts";
import { postWebhook, signUp, startTestServer, type TestServer, type TestUser } from "./helpers.ts";

const PASSWORD = "correct horse battery";

/** GETs a page without following redirects. */
async function get(server: TestServer, path: string, cookie?: string): Promise<Response> {
  return await fetch(`${server.url}${path}`, {
    headers: cookie ? { Cookie: cookie } : {},
    redirect: "manual",
  });
}

/** GETs a page and reads it as HTML, asserting status and content type first. */
async function html(
  server: TestServer,
  path: string,
  options: { cookie?: string; status?: number } = {},
): Promise<string> {
  const response = await get(server, path, options.cookie);
  assert.equal(response.status, options.status ?? 200, `GET ${path}`);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  return await response.text();
}

/** POSTs a form as a browser on our own pages would (with Origin), not following redirects. */
async function postForm(
  server: TestServer,
  path: string,
  fields: Record<string, string>,
  options: { cookie?: string; origin?: string | null; headers?: Record<string, string> } = {},
): Promise<Response> {
  const headers: Record<string, string> = {
    "Content-Type": "application/x-www-form-urlencoded",
    ...options.headers,
  };
  if (options.origin !== null) headers.Origin = options.origin ?? server.url;
  if (options.cookie) headers.Cookie = options.cookie;
  return await fetch(`${server.url}${path}`, {
    method: "POST",
    headers,
    body: new URLSearchParams(fields),
    redirect: "manual",
  });
}

function sessionCookie(response: Response): string {
  const cookie = response.headers.getSetCookie().find((c) => c.startsWith("websocks_session="));
  assert.ok(cookie, "no session cookie set");
  return cookie.split(";")[0];
}

async function tokenNames(server: TestServer, user: TestUser): Promise<string[]> {
  const response = await fetch(`${server.url}/api/tokens`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  return (await response.json()).tokens.map((t: { name: string }) => t.name);
}

/** Every `<script>` tag of a page. */
function scriptTags(page: string): string[] {
  return page.match(/<script\b[^>]*>/g) ?? [];
}

Deno.test("[dashboard] the landing page offers sign-up and log-in, or the dashboard when logged in", async () => {
  await using server = await startTestServer();
  const anonymous = await html(server, "/");
  assert.match(anonymous, /Webhooks, delivered live\./);
  assert.match(anonymous, /<a class="button primary large" href="\/signup">Sign up free<\/a>/);
  assert.match(anonymous, /href="\/login"/);
  assert.ok(anonymous.includes(`curl -X POST ${server.url}/api/in/YOUR_SLUG`));
  assert.doesNotMatch(anonymous, /Open your dashboard/);

  const user = await signUp(server);
  const known = await html(server, "/", { cookie: user.cookie });
  assert.match(
    known,
    /<a class="button primary large" href="\/dashboard">Open your dashboard<\/a>/,
  );
  assert.match(known, /action="\/logout"/);
  assert.doesNotMatch(known, /Sign up free/);
});

Deno.test("[dashboard] every page sends security headers and has no inline script or style", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const { tokenId, cookie } = user;
  const pages: [string, string | undefined][] = [
    ["/", undefined],
    ["/signup", undefined],
    ["/login", undefined],
    ["/docs", undefined],
    ["/dashboard", cookie],
    ["/dashboard/tokens", cookie],
    [`/dashboard/tokens/${tokenId}/revoke`, cookie],
    ["/dashboard/endpoints", cookie],
    [`/dashboard/endpoints/${user.slug}/rotate`, cookie],
    [`/dashboard/endpoints/${user.slug}/delete`, cookie],
    ["/docs", cookie],
    ["/dashboard/tokens/00000000-0000-4000-8000-000000000000/revoke", cookie], // a 404 page
  ];
  for (const [path, as] of pages) {
    const response = await get(server, path, as);
    assert.ok([200, 404].includes(response.status), `GET ${path}: ${response.status}`);
    assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    const csp = response.headers.get("content-security-policy") ?? "";
    assert.match(csp, /(^|; )script-src 'self'(;|$)/, `${path}: ${csp}`);
    assert.match(csp, /(^|; )style-src 'self'(;|$)/);
    assert.match(csp, /(^|; )frame-ancestors 'none'(;|$)/);
    assert.match(csp, /(^|; )default-src 'none'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    assert.equal(response.headers.get("referrer-policy"), "same-origin");
    assert.equal(response.headers.get("x-frame-options"), "DENY");
    // Never stored: signed-in pages hold the account, link pages their token.
    assert.equal(response.headers.get("cache-control"), "no-store");
    const page = await response.text();
    assert.match(page, /^<!doctype html><html lang="en">/);
    for (const tag of scriptTags(page)) {
      assert.match(
        tag,
        /^<script (type="module" src="\/islands\/[\w.-]+\.js"|type="application\/json" id="island-props-\d+")>$/,
        `${path}: ${tag}`,
      );
    }
    assert.doesNotMatch(page, /\son[a-z]+=/i, `${path} has an inline event handler`);
    assert.doesNotMatch(page, /\sstyle=/i, `${path} has an inline style`);
  }
});

Deno.test("[dashboard] sign-up form: errors next to the field keep the email; success opens the dashboard", async () => {
  await using server = await startTestServer();
  const form = await html(server, "/signup");
  assert.match(form, /<form method="post" action="\/signup"/);
  assert.match(form, /<label for="field-email">Email<\/label>/);
  assert.match(form, /<label for="field-password">Password<\/label>/);

  const invalid = await postForm(server, "/signup", {
    email: "ada@example.com",
    password: "short",
  });
  assert.equal(invalid.status, 400);
  assert.equal(invalid.headers.get("content-type"), "text/html; charset=utf-8");
  const invalidPage = await invalid.text();
  assert.match(invalidPage, /value="ada@example.com"/);
  assert.match(
    invalidPage,
    /aria-describedby="field-password-hint field-password-error"\/><p id="field-password-hint" class="hint">At least 10 characters.<\/p><p id="field-password-error" class="field-error">Password must be at least 10 characters.<\/p>/,
  );
  const badEmail = await postForm(server, "/signup", { email: "nope", password: PASSWORD });
  assert.equal(badEmail.status, 400);
  assert.equal(badEmail.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await badEmail.text(), /class="field-error">Email must be an email address.</);

  const created = await postForm(server, "/signup", {
    email: "Ada@Example.com",
    password: PASSWORD,
  });
  assert.equal(created.status, 303);
  assert.equal(created.headers.get("location"), "/dashboard");
  assert.match(created.headers.get("set-cookie") ?? "", /HttpOnly; SameSite=Lax/);
  await created.body?.cancel();
  const cookie = sessionCookie(created);
  const dashboard = await html(server, "/dashboard", { cookie });
  assert.match(dashboard, /Welcome to WebSocks/);
  const token = dashboard.match(
    /id="flash-secret" class="mono" readonly value="(wsk_[\w-]{43})"/,
  )?.[1];
  assert.ok(token, "the first token is shown after sign-up");
  const me = await fetch(`${server.url}/api/me`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(me.status, 200);
  assert.match(me.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal((await me.json()).user.email, "ada@example.com");
  assert.doesNotMatch(await html(server, "/dashboard", { cookie }), /wsk_/, "shown once only");

  const taken = await postForm(server, "/signup", { email: "ada@example.com", password: PASSWORD });
  assert.equal(taken.status, 409);
  assert.equal(taken.headers.get("content-type"), "text/html; charset=utf-8");
  const takenPage = await taken.text();
  assert.match(takenPage, /class="field-error">An account with this email already exists/);
  assert.match(takenPage, /value="ada@example.com"/);
});

Deno.test("[dashboard] log-in form: a wrong password keeps the email; success rotates the session", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const form = await html(server, "/login?next=/dashboard/tokens");
  assert.match(form, /<input type="hidden" name="next" value="\/dashboard\/tokens"\/>/);
  assert.match(form, /<label for="field-email">Email<\/label>/);
  assert.match(
    await html(server, "/login?next=//evil.example/x"),
    /name="next" value="\/dashboard"/,
  );

  const wrong = await postForm(server, "/login", { email: user.email, password: "wrong password" });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.headers.get("content-type"), "text/html; charset=utf-8");
  const wrongPage = await wrong.text();
  assert.match(wrongPage, new RegExp(`value="${user.email}"`));
  assert.match(
    wrongPage,
    /id="field-password-error" class="field-error">Cannot log in: email or password is wrong</,
  );
  const empty = await postForm(server, "/login", { email: user.email, password: "" });
  assert.equal(empty.status, 400);
  assert.match(await empty.text(), /class="field-error">Password is required.</);

  const ok = await postForm(server, "/login", {
    email: user.email,
    password: PASSWORD,
    next: "/dashboard/tokens",
  }, { cookie: user.cookie });
  assert.equal(ok.status, 303);
  assert.equal(ok.headers.get("location"), "/dashboard/tokens");
  await ok.body?.cancel();
  const fresh = sessionCookie(ok);
  assert.notEqual(fresh, user.cookie);
  const old = await fetch(`${server.url}/api/me`, { headers: { Cookie: user.cookie } });
  assert.equal(old.status, 401, "the session from before the log-in is gone");
  await old.body?.cancel();
  assert.match(await html(server, "/dashboard/tokens", { cookie: fresh }), /API tokens/);

  const evil = await postForm(server, "/login", {
    email: user.email,
    password: PASSWORD,
    next: "https://evil.example/",
  });
  assert.equal(evil.status, 303);
  assert.equal(evil.headers.get("location"), "/dashboard");
  await evil.body?.cancel();
  const already = await get(server, "/login", fresh);
  assert.equal(already.status, 303);
  assert.equal(already.headers.get("location"), "/dashboard");
});

Deno.test("[dashboard] log-in is rate limited per account, with a clear message, on the form and the API", async () => {
  // Past the failures an account allows, the next attempt waits; a long first delay here.
  await using server = await startTestServer({
    LOGIN_DELAY_BASE_SECONDS: "900",
    LOGIN_DELAY_MAX_SECONDS: "900",
  });
  const user = await signUp(server);
  const other = await signUp(server);
  for (let i = 0; i < 5; i++) {
    const wrong = await postForm(server, "/login", { email: user.email, password: `wrong ${i}` });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
  }
  // Even the right password is refused during the delay, before it is checked.
  const blocked = await postForm(server, "/login", { email: user.email, password: PASSWORD });
  assert.equal(blocked.status, 429);
  assert.equal(blocked.headers.get("content-type"), "text/html; charset=utf-8");
  assert.ok(Number(blocked.headers.get("retry-after")) > 0);
  const page = await blocked.text();
  assert.match(
    page,
    /role="alert">Cannot log in: too many failed attempts for this account; try again in 15 minutes</,
  );
  assert.match(page, new RegExp(`value="${user.email}"`));
  const api = await fetch(`${server.url}/api/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: user.email.toUpperCase(), password: PASSWORD }),
  });
  assert.equal(api.status, 429);
  assert.match(api.headers.get("content-type") ?? "", /^application\/json/);
  assert.match((await api.json()).error, /too many failed attempts for this account/);
  // Another account from the same address is not affected.
  const fine = await postForm(server, "/login", { email: other.email, password: PASSWORD });
  assert.equal(fine.status, 303);
  await fine.body?.cancel();
});

Deno.test("[dashboard] log-in is rate limited per address across accounts; a proxy's header only counts when trusted", async () => {
  const failThrice = async (server: TestServer, forwardedFor: string) => {
    for (const email of ["a@example.com", "b@example.com", "c@example.com"]) {
      const wrong = await postForm(server, "/login", { email, password: "guess guess" }, {
        headers: { "X-Forwarded-For": forwardedFor },
      });
      assert.equal(wrong.status, 401);
      await wrong.body?.cancel();
    }
  };
  {
    await using server = await startTestServer({ LOGIN_FAILURES_PER_ADDRESS: "3" });
    const user = await signUp(server);
    await failThrice(server, "203.0.113.7");
    // Not behind a trusted proxy: a made-up X-Forwarded-For does not escape the block.
    const blocked = await postForm(server, "/login", { email: user.email, password: PASSWORD }, {
      headers: { "X-Forwarded-For": "198.51.100.1" },
    });
    assert.equal(blocked.status, 429);
    assert.equal(blocked.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(
      await blocked.text(),
      /Cannot log in: too many failed attempts for your network address; try again in 15 minutes/,
    );
  }
  {
    await using server = await startTestServer({
      LOGIN_FAILURES_PER_ADDRESS: "3",
      TRUST_PROXY: "1",
    });
    const user = await signUp(server);
    await failThrice(server, "10.0.0.1, 203.0.113.7");
    const other = await postForm(server, "/login", { email: user.email, password: PASSWORD }, {
      headers: { "X-Forwarded-For": "198.51.100.1" },
    });
    assert.equal(other.status, 303, "another client behind the proxy can log in");
    await other.body?.cancel();
    const same = await postForm(server, "/login", { email: user.email, password: PASSWORD }, {
      headers: { "X-Forwarded-For": "203.0.113.7" },
    });
    assert.equal(same.status, 429);
    await same.body?.cancel();
  }
});

Deno.test("[dashboard] log-out ends the session on the server; dashboard pages then ask to log in", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  assert.match(await html(server, "/dashboard", { cookie: user.cookie }), /Dashboard/);
  const out = await postForm(server, "/logout", {}, { cookie: user.cookie });
  assert.equal(out.status, 303);
  assert.equal(out.headers.get("location"), "/");
  assert.match(out.headers.get("set-cookie") ?? "", /websocks_session=;/);
  await out.body?.cancel();
  const me = await fetch(`${server.url}/api/me`, { headers: { Cookie: user.cookie } });
  assert.equal(me.status, 401);
  await me.body?.cancel();
  for (
    const path of [
      "/dashboard",
      "/dashboard/tokens",
      "/dashboard/endpoints",
      `/dashboard/tokens/${user.tokenId}/revoke`,
      `/dashboard/endpoints/${user.slug}/rotate`,
    ]
  ) {
    const response = await get(server, path, user.cookie);
    assert.equal(response.status, 303, path);
    assert.equal(response.headers.get("location"), `/login?next=${encodeURIComponent(path)}`);
    await response.body?.cancel();
  }
  const post = await postForm(server, "/dashboard/tokens", { name: "x" }, { cookie: user.cookie });
  assert.equal(post.status, 303);
  assert.equal(post.headers.get("location"), "/login");
  await post.body?.cancel();
});

Deno.test("[dashboard] the dashboard shows the webhook URL, the test button and the live inspector", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const page = await html(server, "/dashboard", { cookie: user.cookie });
  assert.ok(
    page.includes(`id="url-0" class="mono" readonly value="${user.webhookUrl}"`),
  );
  assert.match(page, /<label for="url-0">Webhook URL<\/label>/);
  assert.match(page, /<form method="post" action="\/dashboard\/test-webhook"/);
  assert.ok(page.includes(`<input type="hidden" name="slug" value="${user.slug}"/>`));
  assert.match(page, /<noscript>.*The live event inspector needs JavaScript/s);
  assert.match(page, /0<\/strong> of 1,000 webhooks this month/);
  const root = page.match(
    /<div data-island="EventInspector" data-island-props="(island-props-\d+)">/,
  );
  assert.ok(root, "the inspector island is marked");
  const json = page.match(
    new RegExp(`<script type="application/json" id="${root[1]}">(.*?)</script>`),
  );
  assert.ok(json, "the inspector's props are beside it");
  assert.deepEqual(JSON.parse(json[1]), {
    publicUrl: server.url,
    endpoints: [{ slug: user.slug, name: "default" }],
    pollMs: 5000,
  });
  // Rendered on the server: the shell is there before any script runs.
  assert.match(page, /<h2 id="inspector-title">Live events<\/h2>/);
  assert.match(page, /data-status="connecting"/);
});

Deno.test("[dashboard] the test-webhook form sends a sample through the ingest path", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const other = await signUp(server);
  const sent = await postForm(server, "/dashboard/test-webhook", { slug: user.slug }, {
    cookie: user.cookie,
  });
  assert.equal(sent.status, 303);
  assert.equal(sent.headers.get("location"), "/dashboard");
  await sent.body?.cancel();
  const events = await fetch(`${server.url}/api/events`, { headers: { Cookie: user.cookie } });
  assert.equal(events.status, 200);
  assert.match(events.headers.get("content-type") ?? "", /^application\/json/);
  const [event] = (await events.json()).events;
  assert.equal(event.endpoint, user.slug);
  assert.equal(event.contentType, "application/json");
  const page = await html(server, "/dashboard", { cookie: user.cookie });
  assert.ok(page.includes(`Sent a test webhook: event ${event.id}.`));
  const stored = await fetch(`${server.url}/api/events/${event.id}`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(stored.status, 200);
  assert.match(stored.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual((await stored.json()).payload, {
    event: "websocks.test",
    message: "Hello from the WebSocks dashboard",
  });
  const foreign = await postForm(server, "/dashboard/test-webhook", { slug: other.slug }, {
    cookie: user.cookie,
  });
  assert.equal(foreign.status, 404);
  assert.equal(foreign.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await foreign.text(), /Cannot send test webhook: no endpoint/);
});

Deno.test("[dashboard] tokens: create shows the value once, the list has dates, revoke asks first", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const list = await html(server, "/dashboard/tokens", { cookie: user.cookie });
  assert.match(list, /<th scope="row">default<\/th>/);
  assert.match(list, /data-label="Created">\d{4}-\d\d-\d\d \d\d:\d\d UTC</);
  assert.match(list, /data-label="Last used">(never|\d{4}-\d\d-\d\d \d\d:\d\d UTC)</);

  const blank = await postForm(server, "/dashboard/tokens", { name: "  " }, {
    cookie: user.cookie,
  });
  assert.equal(blank.status, 400);
  assert.equal(blank.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await blank.text(), /class="field-error">Cannot create token: Name is required.</);

  const created = await postForm(server, "/dashboard/tokens", { name: "ci" }, {
    cookie: user.cookie,
  });
  assert.equal(created.status, 303);
  assert.equal(created.headers.get("location"), "/dashboard/tokens");
  await created.body?.cancel();
  const shown = await html(server, "/dashboard/tokens", { cookie: user.cookie });
  const value = shown.match(/value="(wsk_[\w-]{43})"/)?.[1];
  assert.ok(value, "the new token's value is on the page");
  assert.match(shown, /Copy its value now: it is not shown again/);
  assert.doesNotMatch(
    await html(server, "/dashboard/tokens", { cookie: user.cookie }),
    /wsk_[\w-]{43}/,
  );
  assert.deepEqual(await tokenNames(server, user), ["default", "ci"]);
  const id = shown.match(
    /href="\/dashboard\/tokens\/([\w-]+)\/revoke" aria-label="Revoke token ci"/,
  )?.[1];
  assert.ok(id);

  const confirm = await html(server, `/dashboard/tokens/${id}/revoke`, { cookie: user.cookie });
  assert.match(confirm, /Revoke token “ci”\?/);
  assert.match(confirm, /disconnected within a second/);
  assert.ok(confirm.includes(`<form method="post" action="/dashboard/tokens/${id}/revoke"`));
  assert.deepEqual(await tokenNames(server, user), ["default", "ci"], "asking revokes nothing");

  const revoked = await postForm(server, `/dashboard/tokens/${id}/revoke`, {}, {
    cookie: user.cookie,
  });
  assert.equal(revoked.status, 303);
  assert.equal(revoked.headers.get("location"), "/dashboard/tokens");
  await revoked.body?.cancel();
  assert.deepEqual(await tokenNames(server, user), ["default"]);
  const refused = await fetch(`${server.url}/api/me`, {
    headers: { Authorization: `Bearer ${value}` },
  });
  assert.equal(refused.status, 401);
  await refused.body?.cancel();
  assert.match(
    await html(server, "/dashboard/tokens", { cookie: user.cookie }),
    /Revoked token “ci”/,
  );

  const again = await postForm(server, `/dashboard/tokens/${id}/revoke`, {}, {
    cookie: user.cookie,
  });
  assert.equal(again.status, 404);
  assert.equal(again.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await again.text(), /Cannot revoke token: no token/);
  const bogus = await get(server, "/dashboard/tokens/not-an-id/revoke", user.cookie);
  assert.equal(bogus.status, 404);
  await bogus.body?.cancel();
});

Deno.test("[dashboard] endpoints: create, rotate after a warning (the old URL then 404s), delete", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const other = await signUp(server);
  const created = await postForm(server, "/dashboard/endpoints", { name: "github" }, {
    cookie: user.cookie,
  });
  assert.equal(created.status, 303);
  assert.equal(created.headers.get("location"), "/dashboard/endpoints");
  await created.body?.cancel();
  const list = await html(server, "/dashboard/endpoints", { cookie: user.cookie });
  assert.match(list, /Created endpoint “github”/);
  const slug = list.match(
    /<li class="card" data-slug="([\w-]+)"><div class="endpoint-head"><h3>github</,
  )?.[1];
  assert.ok(slug);
  const url = `${server.url}/api/in/${slug}`;
  assert.ok(list.includes(`value="${url}"`));
  assert.equal((await postWebhook(url, "{}")).status, 200);

  const warning = await html(server, `/dashboard/endpoints/${slug}/rotate`, {
    cookie: user.cookie,
  });
  assert.match(warning, /The current URL stops working immediately/);
  assert.ok(warning.includes(url));
  const rotated = await postForm(server, `/dashboard/endpoints/${slug}/rotate`, {}, {
    cookie: user.cookie,
  });
  assert.equal(rotated.status, 303);
  await rotated.body?.cancel();
  const old = await postWebhook(url, "{}");
  assert.equal(old.status, 404);
  await old.body?.cancel();
  const after = await html(server, "/dashboard/endpoints", { cookie: user.cookie });
  assert.match(after, /Rotated “github”: the old URL now answers 404/);
  const newSlug = after.match(/data-slug="([\w-]+)"><div class="endpoint-head"><h3>github</)?.[1];
  assert.ok(newSlug && newSlug !== slug);

  const foreign = await get(server, `/dashboard/endpoints/${other.slug}/rotate`, user.cookie);
  assert.equal(foreign.status, 404);
  assert.equal(foreign.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await foreign.text(), /Cannot rotate endpoint: no endpoint/);

  assert.match(
    await html(server, `/dashboard/endpoints/${newSlug}/delete`, { cookie: user.cookie }),
    /Delete endpoint “github”\?/,
  );
  const deleted = await postForm(server, `/dashboard/endpoints/${newSlug}/delete`, {}, {
    cookie: user.cookie,
  });
  assert.equal(deleted.status, 303);
  await deleted.body?.cancel();
  const gone = await postWebhook(`${server.url}/api/in/${newSlug}`, "{}");
  assert.equal(gone.status, 404);
  await gone.body?.cancel();
  assert.doesNotMatch(
    await html(server, "/dashboard/endpoints", { cookie: user.cookie }),
    /<h3>github</,
  );
  const blank = await postForm(server, "/dashboard/endpoints", { name: "" }, {
    cookie: user.cookie,
  });
  assert.equal(blank.status, 400);
  assert.match(await blank.text(), /Cannot create endpoint: Name is required./);
});

Deno.test("[dashboard] the docs page has every client example, with the reader's URL when logged in", async () => {
  await using server = await startTestServer();
  const anonymous = await html(server, "/docs");
  for (
    const title of [
      "Send a webhook with curl",
      "Listen with curl (Server-Sent Events)",
      "JavaScript (browser EventSource)",
      "JavaScript with ws, resuming after a drop",
      "Python with sseclient-py",
      "Python with websocket-client",
      "Go with gorilla/websocket",
    ]
  ) assert.ok(anonymous.includes(`<span>${title}</span>`), title);
  assert.ok(anonymous.includes(`${server.url}/api/in/YOUR_SLUG`));
  assert.ok(anonymous.includes(`${server.wsUrl}/?token=YOUR_TOKEN`));
  assert.doesNotMatch(anonymous, /localhost:8000/);

  const user = await signUp(server);
  const mine = await html(server, "/docs", { cookie: user.cookie });
  assert.ok(mine.includes(`curl -X POST ${user.webhookUrl} \\`));
  assert.ok(mine.includes(`The examples below use your webhook URL`));
  assert.doesNotMatch(mine, /YOUR_SLUG/);
  assert.match(mine, /YOUR_TOKEN/);
});

Deno.test("[dashboard] form posts from another site are refused (CSRF)", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const forged = await postForm(server, "/dashboard/tokens", { name: "stolen" }, {
    cookie: user.cookie,
    origin: "https://evil.example",
  });
  assert.equal(forged.status, 403);
  assert.equal(forged.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await forged.text(), /Forbidden: cross-site request refused/);
  const fetchSite = await postForm(server, `/dashboard/tokens/${user.tokenId}/revoke`, {}, {
    cookie: user.cookie,
    origin: null,
    headers: { "Sec-Fetch-Site": "cross-site" },
  });
  assert.equal(fetchSite.status, 403);
  await fetchSite.body?.cancel();
  for (const path of ["/logout", "/login", "/signup", `/dashboard/endpoints/${user.slug}/rotate`]) {
    const response = await postForm(server, path, { email: user.email, password: PASSWORD }, {
      cookie: user.cookie,
      origin: "https://evil.example",
    });
    assert.equal(response.status, 403, path);
    await response.body?.cancel();
  }
  const apiLogin = await fetch(`${server.url}/api/auth/login`, {
    method: "POST",
    headers: { Origin: "https://evil.example", "Content-Type": "text/plain" },
    body: JSON.stringify({ email: user.email, password: PASSWORD }),
  });
  assert.equal(apiLogin.status, 403);
  await apiLogin.body?.cancel();
  // Nothing changed: same tokens, same endpoint, still logged in.
  assert.deepEqual(await tokenNames(server, user), ["default"]);
  assert.equal((await postWebhook(user.webhookUrl, "{}")).status, 200);
  const me = await fetch(`${server.url}/api/me`, { headers: { Cookie: user.cookie } });
  assert.equal(me.status, 200);
  await me.body?.cancel();
});

Deno.test("[dashboard] island bundles are served under a content hash with immutable caching", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const page = await html(server, "/dashboard", { cookie: user.cookie });
  const sources = [...page.matchAll(/<script type="module" src="([^"]+)">/g)].map((m) => m[1]);
  const preloads = [...page.matchAll(/<link rel="modulepreload" href="([^"]+)">/g)].map((m) =>
    m[1]
  );
  assert.deepEqual(
    sources.map((src) => src.replace(/\.[0-9a-f]{16}\.js$/, "")).sort(),
    [
      "/islands/CopyButton",
      "/islands/EventInspector",
      "/islands/MonthUsage",
      "/islands/SendTestWebhook",
    ],
  );
  assert.ok(preloads.length > 0, "shared chunks are preloaded");
  for (const url of [...sources, ...preloads]) {
    const response = await fetch(`${server.url}${url}`);
    assert.equal(response.status, 200, url);
    assert.equal(response.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.equal(response.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.ok((await response.text()).length > 0);
  }
  const inspector =
    await (await fetch(`${server.url}${sources.find((s) => s.includes("EventInspector"))}`))
      .text(); // status and headers of every bundle were checked just above
  assert.match(inspector, /\/api\/events\/stream/, "the inspector's own code is in its bundle");

  // Each page loads only the islands it uses.
  const tokens = await html(server, "/dashboard/tokens", { cookie: user.cookie });
  assert.deepEqual(scriptTags(tokens), []);
  const landing = await html(server, "/");
  assert.deepEqual(
    [...landing.matchAll(/<script type="module" src="\/islands\/(\w+)\./g)].map((m) => m[1]),
    ["CopyButton"],
  );
  const missing = await fetch(`${server.url}/islands/EventInspector.0000000000000000.js`);
  assert.equal(missing.status, 404);
  assert.match(missing.headers.get("content-type") ?? "", /^application\/json/);
  assert.match((await missing.json()).error, /no island bundle/);
});

Deno.test("[dashboard] prebuilt bundles from deno task build serve the same files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const written = writeBundles(dir, ISLAND_MODULES);
    await using built = await startTestServer();
    await using prebuilt = await startTestServer({ ISLANDS_DIR: dir });
    const user = await signUp(prebuilt);
    const reference = await signUp(built);
    const sources = (page: string) =>
      [...page.matchAll(/src="(\/islands\/[^"]+)"/g)].map((m) => m[1]);
    const served = sources(await html(prebuilt, "/dashboard", { cookie: user.cookie }));
    assert.deepEqual(
      served,
      sources(await html(built, "/dashboard", { cookie: reference.cookie })),
    );
    for (const src of served) {
      assert.ok(written.includes(src.slice("/islands/".length)), src);
      const response = await fetch(`${prebuilt.url}${src}`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "text/javascript; charset=utf-8");
      assert.deepEqual(
        new Uint8Array(await response.arrayBuffer()),
        await Deno.readFile(`${dir}/${src.slice("/islands/".length)}`),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[pages] API answers are never stored or sniffed, and https pages ask for https", async () => {
  // JSON read with the session cookie (events with their payloads, tokens) carried no
  // Cache-Control: a shared cache or the browser's disk could keep it.
  await using server = await startTestServer();
  const user = await signUp(server);
  for (const path of ["/api/me", "/api/events", "/api/tokens", "/api/nothing-here"]) {
    const response = await fetch(`${server.url}${path}`, { headers: { Cookie: user.cookie } });
    assert.ok([200, 404].includes(response.status), `${path}: ${response.status}`);
    assert.equal(response.headers.get("content-type"), "application/json");
    assert.equal(response.headers.get("cache-control"), "no-store", path);
    assert.equal(response.headers.get("x-content-type-options"), "nosniff", path);
    await response.body?.cancel();
  }
  assert.equal(
    pageSecurityHeaders(loadConfig({ PUBLIC_URL: "https://relay.example" }))[
      "Strict-Transport-Security"
    ],
    "max-age=31536000",
  );
  assert.equal(
    pageSecurityHeaders(loadConfig({ PUBLIC_URL: "http://localhost:8000" }))[
      "Strict-Transport-Security"
    ],
    undefined,
  );
});

Deno.test("[dashboard] a token form past the account's cap answers 409 with why", async () => {
  await using server = await startTestServer({ MAX_TOKENS_PER_ACCOUNT: "1" });
  const user = await signUp(server);
  const refused = await postForm(server, "/dashboard/tokens", { name: "two" }, {
    cookie: user.cookie,
  });
  assert.equal(refused.status, 409);
  assert.equal(refused.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(
    await refused.text(),
    /Cannot create token: the account has 1 tokens, the most it may have; revoke one first/,
  );
});
