/**
 * Issue 10, respond half: a client's answer cannot reach the dashboard's origin, only the event's
 * owner can answer, event ids are not guessable, and INGEST_URL puts ingest on its own host.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { broadcastTransport, createBroker } from "../lib/fanout/broker.ts";
import { loadConfig } from "../lib/runtime/config.ts";
import { nextId } from "../lib/store/ids.ts";
import { createResponses } from "../lib/fanout/respond_waiters.ts";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import {
  openWs,
  postWebhook,
  respondMode,
  signUp,
  startTestServer,
  type TestServer,
  type TestUser,
} from "./helpers.ts";

const SANDBOX = "sandbox; default-src 'none'";

async function tokenNames(server: TestServer, user: TestUser): Promise<string[]> {
  const response = await fetch(`${server.url}/api/tokens`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(response.status, 200);
  return (await response.json()).tokens.map((t: { name: string }) => t.name).sort();
}

/** The attacker's answer: synchronous requests, so they finish before the page's load event. */
const ATTACK_HTML = `<!doctype html><title>answer</title><script>
const seen = {};
try {
  const read = new XMLHttpRequest();
  read.open("GET", "/dashboard/tokens", false);
  read.send();
  seen.read = read.status + ":" + read.responseText.length;
} catch (error) { seen.read = "blocked:" + error.name; }
try {
  const create = new XMLHttpRequest();
  create.open("POST", "/api/tokens", false);
  create.setRequestHeader("Content-Type", "application/json");
  create.send('{"name":"stolen"}');
  seen.create = create.status + ":" + create.responseText;
} catch (error) { seen.create = "blocked:" + error.name; }
document.title = "ran " + JSON.stringify(seen);
</script><p>hello</p>`;

Deno.test("[respond] an HTML answer with script cannot read the dashboard or create a token (Chromium)", async () => {
  await using server = await startTestServer();
  const attacker = await signUp(server);
  const victim = await signUp(server);
  await respondMode(server, attacker);
  const client = await openWs(`${server.wsUrl}?token=${attacker.token}`);
  const before = await tokenNames(server, victim);
  let browser: Browser | null = null;
  let page: Page | null = null;
  try {
    browser = await launchChromium();
    const context = await browser.newContext();
    const [name, value] = victim.cookie.split("=");
    await context.addCookies([{ name, value, url: server.url, httpOnly: true, sameSite: "Lax" }]);
    page = await context.newPage();
    // The attacker's own site auto-posts the visitor to the attacker's webhook URL.
    await page.route("http://attacker.test/**", (route) =>
      route.fulfill({
        status: 200,
        contentType: "text/html",
        body: `<form method="POST" action="${attacker.webhookUrl}" enctype="text/plain">` +
          `<input name="a" value="b"></form><script>document.forms[0].submit()</script>`,
      }));
    const answered = page.waitForResponse((r) => r.url().startsWith(attacker.webhookUrl));
    // Navigation goes on until the answer comes, so it is not awaited before answering.
    const visiting = page.goto("http://attacker.test/").catch(() => null);
    const event = await client.next(10_000);
    client.send({
      type: "response",
      id: event.id,
      status: 200,
      headers: { "Content-Type": "text/html; charset=utf-8" },
      body: ATTACK_HTML,
    });
    const response = await answered;
    await visiting;
    await page.waitForURL(attacker.webhookUrl, { waitUntil: "load" });
    assert.equal(response.status(), 200);
    const headers = await response.allHeaders();
    // Chromium loads it as a document (Sec-Fetch-Dest): the page is shown as text.
    assert.equal(headers["content-type"], "text/plain; charset=utf-8");
    const title = await page.title().catch(() => "(unreadable)");
    assert.ok(!title.startsWith("ran"), `the answer's script ran: ${title}`);
    assert.deepEqual(await tokenNames(server, victim), before);
    assert.equal(headers["content-security-policy"], SANDBOX);
    assert.equal(headers["x-content-type-options"], "nosniff");
  } catch (error) {
    if (page) await saveScreenshot(page, "security_respond_chromium");
    throw error;
  } finally {
    await browser?.close();
    await client.close();
  }
});

Deno.test("[respond] an answer carries a sandbox CSP and nosniff; Set-Cookie, Location and the like are dropped", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user);
  const client = await openWs(`${server.wsUrl}?token=${user.token}`);
  const sending = fetch(user.webhookUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
    redirect: "manual",
  });
  const event = await client.next();
  client.send({
    type: "response",
    id: event.id,
    status: 302,
    headers: {
      "Set-Cookie": "websocks_session=attacker; Path=/",
      "set-cookie": "__Host-websocks_session=attacker; Path=/; Secure",
      Location: "https://evil.example/",
      Refresh: "0; url=https://evil.example/",
      Link: "<https://evil.example/x.css>; rel=stylesheet",
      "Content-Security-Policy": "default-src *",
      "Access-Control-Allow-Origin": "https://evil.example",
      "Access-Control-Allow-Credentials": "true",
      "X-Accel-Redirect": "/internal",
      "X-Frame-Options": "ALLOWALL",
      "X-Content-Type-Options": "none",
      "Content-Type": "text/plain",
      "Cache-Control": "no-store",
      ETag: '"abc"',
      "X-Custom": "kept",
    },
    body: "moved",
  });
  const response = await sending;
  assert.equal(response.status, 302);
  assert.equal(response.headers.get("content-type"), "text/plain");
  assert.equal(await response.text(), "moved");
  assert.deepEqual(response.headers.getSetCookie(), []);
  assert.equal(response.headers.get("location"), null);
  assert.equal(response.headers.get("refresh"), null);
  assert.equal(response.headers.get("link"), null);
  assert.equal(response.headers.get("x-accel-redirect"), null);
  assert.equal(response.headers.get("x-frame-options"), null);
  assert.equal(response.headers.get("access-control-allow-credentials"), null);
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
  assert.equal(response.headers.get("content-security-policy"), SANDBOX);
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  assert.equal(response.headers.get("cache-control"), "no-store");
  assert.equal(response.headers.get("etag"), '"abc"');
  assert.equal(response.headers.get("x-custom"), "kept");
  await client.close();
});

Deno.test("[respond] an invalid header is refused to the client, never a 500 to the sender", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user, 2);
  const client = await openWs(`${server.wsUrl}?token=${user.token}`);
  const sending = postWebhook(user.webhookUrl, '{"n":1}');
  const event = await client.next();
  client.send({ type: "response", id: event.id, status: 200, headers: { "x y": "1" } });
  assert.deepEqual(await client.next(), {
    type: "error",
    message: `Cannot respond to ${event.id}: header "x y" is not a valid header name`,
  });
  client.send({ type: "response", id: event.id, status: 200, headers: { "X-A": "one\r\ntwo" } });
  const bad = await client.next();
  assert.equal(bad.type, "error");
  assert.match(bad.message as string, new RegExp(`^Cannot respond to ${event.id}: header "X-A"`));
  client.send({ type: "response", id: event.id, status: 200, body: "fine" });
  const response = await sending;
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "fine");

  // An answer that never comes right leaves the sender with 504, not 500.
  const waiting = postWebhook(user.webhookUrl, '{"n":2}');
  const second = await client.next();
  client.send({ type: "response", id: second.id, status: 200, headers: { "": "x" } });
  assert.equal((await client.next()).type, "error");
  const timedOut = await waiting;
  assert.equal(timedOut.status, 504);
  assert.equal(timedOut.headers.get("content-type"), "application/json");
  assert.match((await timedOut.json()).error, /no client answered within 2 s/);
  await client.close();
});

Deno.test("[respond] another user's answer with the right id is refused; the owner's goes through", async () => {
  await using server = await startTestServer();
  const owner = await signUp(server);
  const other = await signUp(server);
  await respondMode(server, owner);
  const mine = await openWs(`${server.wsUrl}?token=${owner.token}`);
  const theirs = await openWs(`${server.wsUrl}?token=${other.token}`);
  const sending = postWebhook(owner.webhookUrl, '{"secret":1}');
  const event = await mine.next();
  theirs.send({ type: "response", id: event.id, status: 200, body: "hijacked" });
  const refused = await theirs.next();
  assert.equal(refused.type, "error");
  assert.match(refused.message as string, new RegExp(`^Cannot respond to ${event.id}: `));
  mine.send({ type: "response", id: event.id, status: 201, body: "mine" });
  const response = await sending;
  assert.equal(response.status, 201);
  assert.equal(await response.text(), "mine");
  await mine.close();
  await theirs.close();
});

Deno.test("[respond] across isolates, only the owner's answer reaches the waiting sender", async () => {
  const channel = `respond-${crypto.randomUUID()}`;
  const here = createBroker({ transports: [broadcastTransport({ channel, peers: 1 })] });
  const there = createBroker({ transports: [broadcastTransport({ channel, peers: 1 })] });
  const waiting = createResponses({ broker: here });
  const answering = createResponses({ broker: there });
  try {
    const id = nextId();
    const answer = waiting.wait(id, "owner", 5000);
    const forged = { status: 200, headers: {}, body: new TextEncoder().encode("forged") };
    answering.answer(id, "intruder", forged);
    const real = { status: 201, headers: {}, body: new TextEncoder().encode("real") };
    answering.answer(id, "owner", real);
    const got = await answer;
    assert.equal(got?.status, 201);
    assert.equal(new TextDecoder().decode(got?.body), "real");
  } finally {
    waiting.stop();
    answering.stop();
    here.close();
    there.close();
  }
});

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const randomPart = (id: string) =>
  [...id.slice(10)].reduce((n, c) => n * 32n + BigInt(CROCKFORD.indexOf(c)), 0n);

Deno.test("[respond] ids made in one millisecond are strictly increasing but not consecutive", () => {
  const ids = Array.from({ length: 5000 }, () => nextId());
  let sameMillisecond = 0;
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i] > ids[i - 1], `${ids[i]} should sort after ${ids[i - 1]}`);
    if (ids[i].slice(0, 10) !== ids[i - 1].slice(0, 10)) continue;
    sameMillisecond++;
    const step = randomPart(ids[i]) - randomPart(ids[i - 1]);
    assert.ok(step >= 1n << 32n, `ids ${ids[i - 1]} and ${ids[i]} are only ${step} apart`);
  }
  assert.ok(sameMillisecond > 100, `only ${sameMillisecond} pairs shared a millisecond`);
  // A floor from another isolate is passed with a random step too.
  const floor = nextId().replace(/^.{10}/, "0ZZZZZZZZZ");
  const after = nextId(floor);
  assert.ok(after > floor);
  assert.ok(randomPart(after) - randomPart(floor) >= 1n << 32n);
});

Deno.test("[respond] INGEST_URL: signup shows it, the app host 404s ingest, the ingest host 404s the rest", async () => {
  await using server = await startTestServer({ INGEST_URL: "https://in.example.com" });
  // Two names for one loopback server: localhost is the app, 127.0.0.1 the ingest host.
  const port = new URL(server.url).port;
  const app = `http://localhost:${port}`;
  const ingest = `http://127.0.0.1:${port}`;
  server.config.publicUrl = app;
  server.config.ingestUrl = ingest;
  const user = await signUp({ ...server, url: app });
  assert.equal(user.webhookUrl, `${ingest}/api/in/${user.slug}`);

  const accepted = await postWebhook(user.webhookUrl, '{"ok":1}');
  assert.equal(accepted.status, 200);
  assert.equal(accepted.headers.get("content-type"), "application/json");
  assert.equal((await accepted.json()).ok, true);

  const onApp = await postWebhook(`${app}/api/in/${user.slug}`, '{"ok":1}');
  assert.equal(onApp.status, 404);
  assert.equal(onApp.headers.get("content-type"), "application/json");
  assert.match(
    (await onApp.json()).error,
    new RegExp(`webhooks are received at ${ingest}/api/in/`),
  );

  for (const path of ["/", "/dashboard", "/api/me", "/docs", "/static/favicon.svg"]) {
    const response = await fetch(`${ingest}${path}`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assert.equal(response.status, 404, path);
    assert.equal(response.headers.get("content-type"), "application/json", path);
    assert.match((await response.json()).error, /this host only receives webhooks/, path);
  }
  const home = await fetch(`${app}/`);
  assert.equal(home.status, 200);
  await home.body?.cancel();

  const listed = await fetch(`${app}/api/endpoints`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal((await listed.json()).endpoints[0].url, user.webhookUrl);
  for (const page of ["/docs", "/dashboard"]) {
    const response = await fetch(`${app}${page}`, { headers: { Cookie: user.cookie } });
    assert.equal(response.status, 200, page);
    // The dashboard's test button posts to the ingest host.
    assert.match(
      response.headers.get("content-security-policy")!,
      new RegExp(`connect-src [^;]*${ingest}`),
    );
    const text = await response.text();
    assert.ok(text.includes(`${ingest}/api/in/${user.slug}`), page);
    assert.ok(!text.includes(`${app}/api/in/`), page);
  }
});

Deno.test("[respond] INGEST_URL must name another host than PUBLIC_URL", () => {
  assert.throws(
    () =>
      loadConfig({
        PUBLIC_URL: "https://hooks.example.com",
        INGEST_URL: "https://hooks.example.com/",
      }),
    /INGEST_URL: must be on another host than PUBLIC_URL/,
  );
  const config = loadConfig({
    PUBLIC_URL: "https://hooks.example.com",
    INGEST_URL: "https://in.example-hooks.com/",
  });
  assert.equal(config.ingestUrl, "https://in.example-hooks.com");
  assert.equal(loadConfig({}).ingestUrl, null);
});

Deno.test("[respond] the session cookie is __Host- prefixed and Secure when served over https", async () => {
  await using server = await startTestServer();
  server.config.publicUrl = "https://hooks.example.com";
  const response = await fetch(`${server.url}/api/auth/signup`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: "host@example.com", password: "correct horse battery" }),
  });
  assert.equal(response.status, 201);
  const [cookie] = response.headers.getSetCookie();
  assert.match(cookie, /^__Host-websocks_session=[^;]+;/);
  assert.match(cookie, /; Secure/);
  assert.match(cookie, /; Path=\//);
  assert.doesNotMatch(cookie, /Domain=/i);
  // The device cookie (it skips the log-in delay) gets the same protection.
  const device = response.headers.getSetCookie().find((c) => c.includes("websocks_device="));
  assert.match(device ?? "", /^__Host-websocks_device=[^;]+;.*Secure/);
  await response.body?.cancel();
  const value = cookie.split(";")[0].split("=")[1];
  const me = await fetch(`${server.url}/api/me`, {
    headers: { Cookie: `__Host-websocks_session=${value}` },
  });
  assert.equal(me.status, 200);
  assert.equal((await me.json()).user.email, "host@example.com");
  const plain = await fetch(`${server.url}/api/me`, {
    headers: { Cookie: `websocks_session=${value}` },
  });
  assert.equal(plain.status, 401);
  await plain.body?.cancel();
  const dashboard = await fetch(`${server.url}/dashboard`, {
    headers: { Cookie: `__Host-websocks_session=${value}` },
    redirect: "manual",
  });
  assert.equal(dashboard.status, 200);
  await dashboard.body?.cancel();
  const out = await fetch(`${server.url}/api/auth/logout`, {
    method: "POST",
    headers: { Cookie: `__Host-websocks_session=${value}`, Origin: "https://hooks.example.com" },
  });
  assert.equal(out.status, 200);
  assert.match(out.headers.get("set-cookie") ?? "", /^__Host-websocks_session=;.*Secure/);
  await out.body?.cancel();
});

Deno.test("[respond] a browser loading the URL as a page or script gets the answer as text, never cached", async () => {
  // The ingest URL shares the dashboard's origin unless INGEST_URL is set: a tenant answering
  // with JavaScript served a script that `script-src 'self'` lets run on the dashboard, and
  // octet-stream a download wearing its address. A cache in front kept serving either.
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user, 3);
  const client = await openWs(`${server.wsUrl}?token=${user.token}`);
  try {
    const load = async (fetchDest: string | null) => {
      const sending = fetch(`${user.webhookUrl}/app.js`, {
        headers: fetchDest ? { "Sec-Fetch-Dest": fetchDest } : {},
      });
      const event = await client.next();
      client.send({
        type: "response",
        id: event.id,
        status: 200,
        headers: {
          "Content-Type": "text/javascript",
          "Cache-Control": "public, max-age=86400",
          Expires: "Thu, 01 Dec 2099 00:00:00 GMT",
        },
        body: "document.title = 'owned'",
      });
      return await sending;
    };
    for (const dest of ["script", "document", "style"]) {
      const loaded = await load(dest);
      assert.equal(loaded.status, 200);
      assert.equal(loaded.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(loaded.headers.get("cache-control"), "no-store");
      assert.equal(loaded.headers.get("expires"), null);
      assert.equal(await loaded.text(), "document.title = 'owned'");
    }
    // A sender, or a page's fetch(): the answer's own type.
    const fetched = await load("empty");
    assert.equal(fetched.headers.get("content-type"), "text/javascript");
    assert.equal(fetched.headers.get("cache-control"), "no-store");
    await fetched.body?.cancel();
  } finally {
    await client.close();
  }
});
