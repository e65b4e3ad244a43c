/**
 * Verification and password reset as a person does them, in Debian's Chromium: plain forms, and
 * the link taken from the mail a real SMTP server received.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import { signUp, startTestServer, type TestServer, type TestUser } from "./helpers.ts";
import { startSmtp, type TestSmtp } from "./smtp.ts";

const PASSWORD = "correct horse battery";

/** Runs `body` with a fresh server, SMTP server, signed-up user and Chromium page. */
async function withBrowser(
  name: string,
  body: (t: { server: TestServer; smtp: TestSmtp; user: TestUser; page: Page }) => Promise<void>,
) {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  let browser: Browser | null = null;
  let page: Page | null = null;
  try {
    browser = await launchChromium();
    page = await browser.newPage();
    await body({ server, smtp, user, page });
  } catch (error) {
    if (page) await saveScreenshot(page, name);
    throw error;
  } finally {
    await browser?.close();
  }
}

Deno.test("[reset] Forgot password? on /login, the mailed link, a new password, in Chromium", async () => {
  await withBrowser("reset", async ({ server, smtp, user, page }) => {
    await smtp.next(user.email); // the verification mail
    const login = await page.goto(`${server.url}/login`);
    assert.equal(login?.status(), 200);
    await page.click("text=Forgot password?");
    await page.waitForURL(`${server.url}/forgot-password`);
    await page.fill('input[name="email"]', user.email);
    await Promise.all([page.waitForLoadState("load"), page.click('button[type="submit"]')]);
    assert.match(await page.textContent("h1") ?? "", /Check your mail/);

    const mail = await smtp.next(user.email);
    assert.match(mail.subject, /reset your password/);
    const opened = await page.goto(mail.link!);
    assert.equal(opened?.status(), 200);
    assert.equal(opened?.headers()["referrer-policy"], "no-referrer");
    assert.match(await page.textContent("h1") ?? "", /Choose a new password/);
    await page.fill('input[name="password"]', "a brand new password");
    await Promise.all([
      page.waitForURL(`${server.url}/dashboard`),
      page.click('button[type="submit"]'),
    ]);
    assert.match(await page.textContent("main") ?? "", /Your password is changed/);

    // The session opened at sign-up is over; the old password no longer works.
    const old = await fetch(`${server.url}/api/me`, { headers: { Cookie: user.cookie } });
    assert.equal(old.status, 401);
    await old.body?.cancel();
    const oldPassword = await fetch(`${server.url}/api/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: user.email, password: PASSWORD }),
    });
    assert.equal(oldPassword.status, 401);
    await oldPassword.body?.cancel();

    // The link worked once.
    const again = await page.goto(mail.link!);
    assert.equal(again?.status(), 400);
    assert.match(await page.textContent("main") ?? "", /the link is not valid/);
  });
});

Deno.test("[mail] the banner asks to verify; the mailed link's button verifies, in Chromium", async () => {
  await withBrowser("verify", async ({ server, smtp, user, page }) => {
    const mail = await smtp.next(user.email);
    await page.goto(`${server.url}/login`);
    await page.fill('input[name="email"]', user.email);
    await page.fill('input[name="password"]', PASSWORD);
    await Promise.all([
      page.waitForURL(`${server.url}/dashboard`),
      page.click('button[type="submit"]'),
    ]);
    assert.match(await page.textContent("main") ?? "", /Please verify your email address/);

    const opened = await page.goto(mail.link!);
    assert.equal(opened?.status(), 200);
    await Promise.all([
      page.waitForURL(`${server.url}/dashboard`),
      page.click("text=Verify my email address"),
    ]);
    const main = await page.textContent("main") ?? "";
    assert.match(main, new RegExp(`Thank you: ${user.email.replaceAll(".", "\\.")} is verified`));
    assert.doesNotMatch(main, /Please verify your email address/);
  });
});
