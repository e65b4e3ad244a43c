/** Launching Debian's Chromium with playwright-core, and saving a screenshot when a test fails. */
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page, type Route } from "playwright-core";

/** The browser binary: Debian's package, or $CHROMIUM_PATH. */
export const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

/** Flags for a quiet headless run in a container. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

const SCREENSHOTS = new URL("./screenshots/", import.meta.url);

/** Starts a headless Chromium (each launch gets its own temporary profile). */
export async function launchChromium(): Promise<Browser> {
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    timeout: 30_000,
  });
}

/** Saves a full-page screenshot under tests/screenshots/ (git-ignored) and says where. */
export async function saveScreenshot(page: Page, name: string): Promise<void> {
  try {
    await Deno.mkdir(SCREENSHOTS, { recursive: true });
    const file = fileURLToPath(new URL(`${name.replace(/[^\w-]+/g, "_")}.png`, SCREENSHOTS));
    await page.screenshot({ path: file, fullPage: true });
    console.error(`screenshot saved: ${file}`);
  } catch (error) {
    console.error("could not save a screenshot:", error);
  }
}

/**
 * What `route.fetch()` returns, fetched with Deno's fetch and the page's cookies: Playwright's own
 * request client needs a node:http option (lookup) Deno 2.5, which CI also runs the suite on, lacks.
 */
export async function fetchRouted(route: Route): Promise<Response> {
  const request = route.request();
  const cookie = (await request.allHeaders())["cookie"];
  return await fetch(request.url(), {
    method: request.method(),
    headers: cookie ? { cookie } : {},
  });
}
