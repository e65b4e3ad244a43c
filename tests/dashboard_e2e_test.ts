/**
 * The dashboard end to end in headless Chromium against a real server: a new user signs up
 * through the form, copies the webhook URL, watches a webhook posted from Deno arrive in the live
 * inspector, opens it, manages tokens and endpoints, and logs out. A second test does the
 * account and token flows with JavaScript turned off; a third checks the connected-clients list
 * and that a WebSocket client's ack shows in the detail pane. Waits are generous and no test
 * measures time; a failing test leaves a screenshot in tests/screenshots/.
 */
import assert from "node:assert/strict";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import { openWs, startTestServer, type TestServer, waitFor } from "./helpers.ts";

const WAIT_MS = 15_000;
const PASSWORD = "correct horse battery";

/** Runs `body` with a fresh server and browser page; screenshot and console on failure. */
async function withDashboard(
  name: string,
  options: { javaScript: boolean },
  body: (t: { server: TestServer; page: Page; context: BrowserContext }) => Promise<void>,
) {
  await using server = await startTestServer();
  let browser: Browser | null = null;
  let page: Page | null = null;
  const problems: string[] = [];
  try {
    browser = await launchChromium();
    const context = await browser.newContext({
      viewport: { width: 1280, height: 800 },
      javaScriptEnabled: options.javaScript,
    });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
    context.setDefaultTimeout(WAIT_MS);
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      // A failed form submission loads a 4xx page, which Chromium logs; anything else counts.
      if (message.type() === "error" && !/status of 4\d\d/.test(message.text())) {
        problems.push(`console error: ${message.text()}`);
      }
    });
    await body({ server, page, context });
    assert.deepEqual(problems, [], "the page reported errors");
  } catch (error) {
    if (page) await saveScreenshot(page, name);
    if (problems.length) console.error(problems.join("\n"));
    throw error;
  } finally {
    await browser?.close();
  }
}

/** Signs up through the landing page and the form; returns the email. */
async function signUpThroughForm(server: TestServer, page: Page): Promise<string> {
  const email = `e2e-${crypto.randomUUID().slice(0, 8)}@example.com`;
  await page.goto(`${server.url}/`);
  await page.getByRole("link", { name: "Sign up free" }).click();
  await page.waitForURL(`${server.url}/signup`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("too short");
  await page.getByRole("button", { name: "Sign up" }).click();
  // The server refuses it next to the field and keeps the email.
  await page.getByText("Password must be at least 10 characters.").waitFor();
  assert.equal(await page.getByLabel("Email").inputValue(), email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL(`${server.url}/dashboard`);
  return email;
}

async function clipboard(page: Page): Promise<string> {
  return await page.evaluate(() => navigator.clipboard.readText());
}

Deno.test("[dashboard] sign up, watch a webhook arrive live, manage tokens and endpoints, log out", async () => {
  await withDashboard("dashboard e2e", { javaScript: true }, async ({ server, page }) => {
    await signUpThroughForm(server, page);

    // The first API token is shown once, after sign-up.
    assert.match(await page.getByLabel("API token").inputValue(), /^wsk_[\w-]{43}$/);

    // The webhook URL: shown, and copied by its button.
    const url = await page.getByLabel("Webhook URL", { exact: true }).inputValue();
    assert.match(url, new RegExp(`^${server.url}/api/in/[\\w-]{22}$`));
    await page.getByRole("button", { name: "Copy Webhook URL" }).click();
    await page.getByRole("button", { name: "Copied Webhook URL" }).waitFor();
    assert.equal(await clipboard(page), url);

    // The inspector is live, and counts itself among the connected clients.
    await page.locator(".status[data-status=live]").waitFor();
    await page.locator("[data-testid=client-count]", { hasText: /^1$/ }).waitFor();

    // A webhook posted from Deno appears in the list.
    const payload = { event: "order.paid", order: { id: 42, items: ["sock", "sock"] } };
    const body = JSON.stringify(payload);
    const response = await fetch(`${url}/orders?source=e2e`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Test": "e2e" },
      body,
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
    const { id } = await response.json();
    const row = page.locator(`.event-row[data-id="${id}"]`);
    await row.waitFor();
    const rowText = await row.innerText();
    assert.match(rowText, /POST/);
    assert.match(rowText, /\/orders/);
    assert.match(rowText, /default/);
    assert.match(rowText, new RegExp(`${new TextEncoder().encode(body).byteLength} B`));

    // Its details: headers, the payload as pretty JSON, the exact raw body.
    await row.click();
    const shownPayload = await page.getByTestId("payload").innerText();
    assert.deepEqual(JSON.parse(shownPayload), payload);
    assert.match(shownPayload, /\n {2}"event": "order.paid"/);
    assert.equal(await page.getByTestId("raw-body").innerText(), body);
    assert.equal(
      await page.locator("table.headers tr", { hasText: "x-test" }).locator("td").innerText(),
      "e2e",
    );

    // Copy as curl: the command carries the URL, the headers and the body.
    await page.getByRole("button", { name: "Copy as curl" }).click();
    await page.getByText("Copied a curl command").waitFor();
    const curl = await clipboard(page);
    assert.match(curl, /^curl -X POST '.*\/orders\?source=e2e'/);
    assert.ok(curl.includes(`-H 'x-test: e2e'`), curl);
    assert.ok(curl.includes(`--data-binary '${body}'`), curl);

    // Resend: to the one connected client, this page, which marks the row.
    await page.getByRole("button", { name: "Resend" }).click();
    await page.getByText("Resent to 1 connected client").waitFor();
    await page.locator(`.event-row.resent[data-id="${id}"]`).waitFor();

    // The filter.
    const filter = page.getByLabel("Filter");
    await filter.fill("order.paid");
    await row.waitFor();
    await filter.fill("no-such-thing-anywhere");
    await page.getByText("No event matches").waitFor();
    await filter.fill("");

    // Tokens: create (value shown once), then revoke after confirming.
    await page.getByRole("link", { name: "Tokens" }).click();
    await page.waitForURL(`${server.url}/dashboard/tokens`);
    await page.getByLabel("Name").fill("e2e-laptop");
    await page.getByRole("button", { name: "Create token" }).click();
    const token = await page.getByRole("textbox", { name: "Token e2e-laptop" }).inputValue();
    assert.match(token, /^wsk_/);
    const me = await fetch(`${server.url}/api/me`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(me.status, 200);
    await me.body?.cancel();
    await page.getByRole("link", { name: "Revoke token e2e-laptop" }).click();
    await page.getByRole("heading", { name: "Revoke token “e2e-laptop”?" }).waitFor();
    await page.getByRole("button", { name: "Revoke token" }).click();
    await page.getByText("Revoked token “e2e-laptop”").waitFor();
    assert.equal(await page.getByRole("row", { name: /e2e-laptop/ }).count(), 0);
    const refused = await fetch(`${server.url}/api/me`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(refused.status, 401);
    await refused.body?.cancel();

    // Endpoints: rotate after the warning; the old URL answers 404, the new one 200.
    await page.getByRole("link", { name: "Endpoints" }).click();
    await page.waitForURL(`${server.url}/dashboard/endpoints`);
    assert.equal(await page.getByLabel("default webhook URL").inputValue(), url);
    await page.getByRole("link", { name: "Rotate the URL of default" }).click();
    await page.getByText("The current URL stops working immediately.").waitFor();
    await page.getByRole("button", { name: "Rotate URL" }).click();
    await page.getByText("Rotated “default”").waitFor();
    const rotated = await page.getByLabel("default webhook URL").inputValue();
    assert.notEqual(rotated, url);
    const old = await fetch(url, { method: "POST", body: "{}" });
    assert.equal(old.status, 404);
    assert.match((await old.json()).error, /no endpoint/);
    const fresh = await fetch(rotated, { method: "POST", body: "{}" });
    assert.equal(fresh.status, 200);
    await fresh.body?.cancel();

    // Log out: the dashboard now sends the visitor to log in.
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${server.url}/`);
    await page.goto(`${server.url}/dashboard`);
    assert.equal(page.url(), `${server.url}/login?next=%2Fdashboard`);
    await page.getByRole("heading", { name: "Log in" }).waitFor();
  });
});

Deno.test("[dashboard] the inspector lists connected clients and shows a WebSocket client's ack", async () => {
  await withDashboard("dashboard deliveries", { javaScript: true }, async ({ server, page }) => {
    await signUpThroughForm(server, page);
    const token = await page.getByLabel("API token").inputValue();
    const url = await page.getByLabel("Webhook URL", { exact: true }).inputValue();
    await page.locator(".status[data-status=live]").waitFor();
    const ws = await openWs(`${server.wsUrl}?token=${token}`);
    try {
      // The 5-second refresh picks the WebSocket up; the list names both transports.
      await page.locator("[data-testid=client-count]", { hasText: /^2$/ }).waitFor();
      await page.getByTestId("clients").locator("summary").click();
      const list = page.getByRole("table", { name: "Connected clients" });
      await list.getByRole("cell", { name: "WebSocket" }).waitFor();
      await list.getByRole("cell", { name: "SSE" }).waitFor();

      const response = await fetch(`${url}/acked`, { method: "POST", body: '{"n":1}' });
      assert.equal(response.status, 200);
      const { id } = await response.json();
      const event = await ws.next();
      assert.equal(event.id, id);
      const row = page.locator(`.event-row[data-id="${id}"]`);
      await row.click();
      const deliveries = page.getByTestId("deliveries");
      await deliveries.getByText("No client acknowledged this event.").waitFor();

      ws.send({ type: "ack", id, status: 200 });
      // The ack is recorded without an answer: wait until the API lists it.
      await waitFor(async () => {
        const answer = await fetch(`${server.url}/api/events/${id}/deliveries`, {
          headers: { Authorization: `Bearer ${token}` },
        });
        return (await answer.json()).deliveries.length > 0;
      }, { what: "the ack listed by the API" });
      // Selecting the event again reloads its deliveries.
      await row.click();
      const ack = deliveries.locator("tbody tr");
      await ack.waitFor();
      const text = await ack.innerText();
      assert.match(text, /WebSocket/);
      assert.match(text, /\b200\b/);
      assert.match(text, /[0-9a-f]{8}/);
    } finally {
      await ws.close();
    }
  });
});

Deno.test("[dashboard] without JavaScript: sign up, log in again, create and revoke a token", async () => {
  await withDashboard("dashboard without javascript", { javaScript: false }, async (t) => {
    const { server, page } = t;
    const email = await signUpThroughForm(server, page);
    // The URL is there to select; the live inspector says it needs JavaScript.
    assert.match(await page.getByLabel("Webhook URL", { exact: true }).inputValue(), /\/api\/in\//);
    // Playwright's text search skips <noscript>, so read the markup; the inspector is hidden.
    assert.ok((await page.content()).includes("The live event inspector needs JavaScript"));
    assert.equal(await page.locator(".inspector").isVisible(), false);
    assert.equal(await page.getByRole("button", { name: /^Copy/ }).first().isVisible(), false);

    // The test button still works, through the server.
    await page.getByRole("button", { name: "Send a test webhook" }).click();
    await page.getByText(/Sent a test webhook: event [0-9A-Z]{26}/).waitFor();

    await page.getByRole("button", { name: "Log out" }).click();
    await page.goto(`${server.url}/dashboard/tokens`);
    assert.equal(page.url(), `${server.url}/login?next=%2Fdashboard%2Ftokens`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill("not the password");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText("Cannot log in: email or password is wrong").waitFor();
    assert.equal(await page.getByLabel("Email").inputValue(), email);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(`${server.url}/dashboard/tokens`);

    await page.getByLabel("Name").fill("no-js");
    await page.getByRole("button", { name: "Create token" }).click();
    assert.match(await page.getByRole("textbox", { name: "Token no-js" }).inputValue(), /^wsk_/);
    await page.getByRole("link", { name: "Revoke token no-js" }).click();
    await page.getByRole("button", { name: "Revoke token" }).click();
    await page.getByText("Revoked token “no-js”").waitFor();
    assert.equal(await page.getByRole("row", { name: /no-js/ }).count(), 0);
  });
});
