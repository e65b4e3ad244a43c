/**
 * The docs' browser examples, pasted verbatim into a real page in Debian's Chromium (driven by
 * playwright-core), against a real server. The page is the server's own landing page, so the
 * examples run same-origin, as they would on a site using WebSocks. `page.evaluate` runs the code
 * (CSP does not block it, but still governs the connections it opens). Playwright evaluates a
 * string with an indirect eval, so the example's `const` stays local to it; one harness line after
 * the untouched example exposes its EventSource or WebSocket to later `page.evaluate` calls.
 */
import assert from "node:assert/strict";
import type { Browser, ConsoleMessage, Page } from "playwright-core";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import { forServer, SSE_BROWSER_EXAMPLE, WS_BROWSER_EXAMPLE } from "./docs_examples.ts";
import { postWebhook, signUp, startTestServer, type TestServer, type TestUser } from "./helpers.ts";

const WAIT_MS = 10_000;

/** One console call of the page, with its arguments as JSON values. */
interface Logged {
  type: string;
  text: string;
  args: unknown[];
}

/** A page on the landing page of a fresh server, with a signed-up user and a console log. */
interface BrowserCase {
  server: TestServer;
  user: TestUser;
  page: Page;
  logged: Logged[];
  /** Resolves with the first console call (already seen or future) that `match` accepts. */
  waitForConsole(match: (entry: Logged) => boolean, what: string): Promise<Logged>;
}

/**
 * Runs `body` against a new server and a new Chromium (Playwright gives each launch its own
 * temporary profile). On failure it saves a screenshot under tests/screenshots/ and prints the
 * page's console; the browser and the server are closed either way.
 */
async function withBrowserPage(name: string, body: (t: BrowserCase) => Promise<void>) {
  await using server = await startTestServer();
  const user = await signUp(server);
  let browser: Browser | null = null;
  let page: Page | null = null;
  const logged: Logged[] = [];
  const waiters = new Set<() => void>();
  try {
    browser = await launchChromium();
    page = await browser.newPage();
    // Arguments are read in order of arrival so `logged` keeps the page's own order.
    let reading = Promise.resolve();
    page.on("console", (message: ConsoleMessage) => {
      reading = reading.then(async () => {
        const args = await Promise.all(
          message.args().map((arg) => arg.jsonValue().catch(() => "<unserializable>")),
        );
        logged.push({ type: message.type(), text: message.text(), args });
        for (const wake of waiters) wake();
      });
    });
    const waitForConsole = (match: (entry: Logged) => boolean, what: string) =>
      new Promise<Logged>((resolve, reject) => {
        const check = () => {
          const found = logged.find(match);
          if (!found) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no console message ${what} within ${WAIT_MS} ms`));
        }, WAIT_MS);
        waiters.add(check);
        check();
      });

    const landing = await page.goto(`${server.url}/`);
    assert.ok(landing, "no response for the landing page");
    assert.equal(landing.status(), 200);
    assert.match(landing.headers()["content-type"] ?? "", /^text\/html\b/);
    assert.match(await landing.text(), /Webhooks, delivered live\./);
    assert.equal(new URL(page.url()).origin, server.url);

    await body({ server, user, page, logged, waitForConsole });

    const failures = logged.filter((entry) => /SSE error|WebSocket error/.test(entry.text));
    assert.deepEqual(failures, [], "the example reported an error");
  } catch (error) {
    if (page) await saveScreenshot(page, name);
    console.error("page console:\n" + logged.map((e) => `  [${e.type}] ${e.text}`).join("\n"));
    throw error;
  } finally {
    await browser?.close();
  }
}

/** POSTs the docs' Quick Start payload and checks the 200 JSON acknowledgement; returns its id. */
async function sendQuickStartWebhook(user: TestUser, payload: unknown): Promise<string> {
  const response = await postWebhook(user.webhookUrl, JSON.stringify(payload));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json\b/);
  const body = await response.json();
  assert.equal(body.ok, true);
  assert.equal(typeof body.id, "string");
  return body.id;
}

const PAYLOAD = { event: "user.signup", email: "test@example.com" };

Deno.test("[browser] docs EventSource example receives a webhook", async () => {
  await withBrowserPage("docs EventSource example", async ({ server, user, page, ...t }) => {
    const code = forServer(SSE_BROWSER_EXAMPLE, {
      url: server.url,
      wsUrl: server.wsUrl,
      token: user.token,
    });
    await page.evaluate(`${code}\nglobalThis.docsExample = eventSource;`);
    const connected = await t.waitForConsole(
      (e) => e.text === "Connected to WebSocks SSE",
      `"Connected to WebSocks SSE"`,
    );
    assert.equal(connected.type, "log");
    assert.equal(await page.evaluate("docsExample.readyState"), 1); // OPEN

    await sendQuickStartWebhook(user, PAYLOAD);
    const received = await t.waitForConsole(
      (e) => e.args[0] === "Webhook received:",
      `"Webhook received:"`,
    );
    assert.equal(received.type, "log");
    // The SSE example logs `data.payload`: the webhook's JSON body, parsed.
    assert.deepEqual(received.args, ["Webhook received:", PAYLOAD]);

    await page.evaluate("docsExample.close()");
  });
});

Deno.test("[browser] docs WebSocket example receives a webhook", async () => {
  await withBrowserPage("docs WebSocket example", async ({ server, user, page, ...t }) => {
    const code = forServer(WS_BROWSER_EXAMPLE, {
      url: server.url,
      wsUrl: server.wsUrl,
      token: user.token,
    });
    await page.evaluate(`${code}\nglobalThis.docsExample = ws;`);
    const connected = await t.waitForConsole(
      (e) => e.text === "Connected to WebSocks WebSocket",
      `"Connected to WebSocks WebSocket"`,
    );
    assert.equal(connected.type, "log");
    assert.equal(await page.evaluate("docsExample.readyState"), 1); // OPEN

    const id = await sendQuickStartWebhook(user, PAYLOAD);
    const received = await t.waitForConsole(
      (e) => e.args[0] === "Webhook received:",
      `"Webhook received:"`,
    );
    assert.equal(received.type, "log");
    // The WebSocket example logs the whole envelope.
    assert.equal(received.args.length, 2);
    const envelope = received.args[1] as Record<string, unknown>;
    assert.equal(envelope.type, "webhook");
    assert.equal(envelope.id, id);
    assert.equal(envelope.method, "POST");
    assert.equal(envelope.contentType, "application/json");
    assert.deepEqual(envelope.payload, PAYLOAD);
    assert.equal(envelope.body, JSON.stringify(PAYLOAD));

    await page.evaluate("docsExample.close()");
    await t.waitForConsole(
      (e) => e.text === "Disconnected from WebSocks",
      `"Disconnected from WebSocks"`,
    );
  });
});
