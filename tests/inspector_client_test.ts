/**
 * Issue 13, the inspector's part: the dashboard's inspector streams through the client library
 * (client/websocks.js) and, across a server restart on the same KV file, shows every webhook
 * exactly once: those posted while it was away come by catch-up, later ones live; a session
 * ended elsewhere leaves it offline rather than retrying. Driven in headless Chromium against a
 * real server.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import { postWebhook, signUp, startTestServer, type TestServer } from "./helpers.ts";
import { buildBundles } from "../lib/web/bundles.ts";
import { ISLAND_MODULES } from "../islands/_registry.ts";

const WAIT_MS = 20_000;

async function post(url: string, n: number): Promise<string> {
  const response = await postWebhook(url, JSON.stringify({ n }));
  assert.equal(response.status, 200);
  return (await response.json()).id;
}

/** The ids of the listed rows, newest first, as the page shows them. */
function listedIds(page: Page): Promise<string[]> {
  return page.locator(".event-row[data-id]").evaluateAll((rows) =>
    rows.map((row) => (row as HTMLElement).dataset.id!)
  );
}

Deno.test("[inspector] a server restart: the page reconnects and shows every webhook once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websocks-inspector-" });
  // A fixed port: the page, its cookie and its stream's URL outlive the first server.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const env = {
    PORT: String(port),
    PUBLIC_URL: `http://127.0.0.1:${port}`,
    KV_PATH: `${dir}/relay.kv`,
  };
  let server: TestServer | null = await startTestServer(env);
  const user = await signUp(server);
  const browser = await launchChromium();
  let page: Page | null = null;
  const problems: string[] = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(WAIT_MS);
    await context.addCookies(
      user.cookie.split("; ").map((pair) => {
        const at = pair.indexOf("=");
        return { name: pair.slice(0, at), value: pair.slice(at + 1), url: server!.url };
      }),
    );
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    await page.goto(`${server.url}/dashboard`);
    const status = page.locator(".status");
    await page.locator(".status[data-status=live]").waitFor();

    const before = [await post(user.webhookUrl, 1), await post(user.webhookUrl, 2)];
    await page.locator(`.event-row[data-id="${before[1]}"]`).waitFor();

    // While the server is away and just back, the page's stream cannot connect: what is posted
    // then can only reach it by the catch-up of its next connection.
    await page.route("**/api/events/stream*", (route) => route.abort());
    await server.shutdown();
    server = null;
    await page.locator(".status[data-status=reconnecting]").waitFor();
    server = await startTestServer(env);
    const away = [];
    for (let n = 3; n <= 5; n++) away.push(await post(user.webhookUrl, n));
    await page.unroute("**/api/events/stream*");
    await page.locator(".status[data-status=live]").waitFor();
    for (const id of away) await page.locator(`.event-row[data-id="${id}"]`).waitFor();

    const after = [await post(user.webhookUrl, 6), await post(user.webhookUrl, 7)];
    await page.locator(`.event-row[data-id="${after[1]}"]`).waitFor();
    // The newest arrival is open, as before the restart.
    await page.locator(`.event-row[data-id="${after[1]}"][aria-pressed="true"]`).waitFor();

    const all = [...before, ...away, ...after];
    assert.deepEqual(await listedIds(page), [...all].reverse());
    assert.equal(await page.locator(".event-row.resent").count(), 0);
    // Each arrival counted once in the month's number, the catch-up included.
    await page.getByTestId("month-usage").getByText(new RegExp(`^${all.length}$`)).waitFor();
    assert.equal(await status.getAttribute("data-status"), "live");
    assert.deepEqual(problems, [], "the page reported errors");
  } catch (error) {
    if (page) await saveScreenshot(page, "inspector restart");
    if (problems.length) console.error(problems.join("\n"));
    throw error;
  } finally {
    await browser.close();
    await server?.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[inspector] its bundle takes only the library's browser part, within a size budget", () => {
  const bundles = buildBundles(ISLAND_MODULES);
  const { src, preload } = bundles.scripts("EventInspector");
  const own = bundles.file(src.slice("/islands/".length))!;
  const text = new TextDecoder().decode(own);
  // The library itself is in (its error text), its file storage is not: it would need Node's fs.
  assert.match(text, /Not a WebSocks server/);
  assert.doesNotMatch(text, /node:fs/);
  // Measured 31 KiB minified with the library (19 KiB before it); the budget leaves room to grow
  // but catches a bundling mistake that drags in a second copy of something large.
  assert.ok(own.byteLength < 40 * 1024, `EventInspector bundle is ${own.byteLength} bytes`);
  const shared = preload.reduce(
    (sum, chunk) => sum + bundles.file(chunk.slice("/islands/".length))!.byteLength,
    0,
  );
  assert.ok(shared < 40 * 1024, `its shared chunks are ${shared} bytes`);
});

Deno.test("[inspector] logging out elsewhere ends the page's stream for good: offline, no retry loop", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const browser = await launchChromium();
  let page: Page | null = null;
  try {
    const context = await browser.newContext();
    context.setDefaultTimeout(WAIT_MS);
    await context.addCookies(
      user.cookie.split("; ").map((pair) => {
        const at = pair.indexOf("=");
        return { name: pair.slice(0, at), value: pair.slice(at + 1), url: server.url };
      }),
    );
    page = await context.newPage();
    await page.goto(`${server.url}/dashboard`);
    await page.locator(".status[data-status=live]").waitFor();
    let streams = 0;
    page.on("request", (request) => {
      if (request.url().includes("/api/events/stream")) streams++;
    });
    // The session's streams are closed; the next connect is refused (401), which is final.
    const out = await fetch(`${server.url}/api/auth/logout`, {
      method: "POST",
      headers: { Cookie: user.cookie },
    });
    assert.equal(out.status, 200);
    await out.body?.cancel();
    await page.locator(".status[data-status=offline]").waitFor();
    assert.match(await page.locator(".status").innerText(), /your session has ended/);
    await page.getByRole("link", { name: "Log in" }).waitFor();
    assert.ok(streams <= 1, `${streams} stream requests after the logout`);
  } catch (error) {
    if (page) await saveScreenshot(page, "inspector logout");
    throw error;
  } finally {
    await browser.close();
  }
});
