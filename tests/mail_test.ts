/**
 * Mail end to end against a real SMTP server in this process: verification, password reset,
 * change of address, notices, the outbox's retries and its once-only sending, and the limits on
 * what a visitor can make us send.
 */
import assert from "node:assert/strict";
import {
  openSse,
  postWebhook,
  sessionCookieOf,
  signUp,
  startTestServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";
import { freePort, startSmtp } from "./smtp.ts";
import { openKv } from "../lib/store/kv.ts";
import { queueMail, startMailSender } from "../lib/mail/outbox.ts";
import { createTransport } from "../lib/mail/transport.ts";
import { mailOutboxPrefix, userKey } from "../lib/store/kv_keys.ts";
import { generateInvoices, previousMonth } from "../lib/billing/invoices.ts";
import { deleteMailDataOf, notifyInvoice } from "../lib/mail/account_mail.ts";
import type { User } from "../lib/accounts/users.ts";
import { usageMonthKey } from "../lib/store/kv_keys.ts";

const PASSWORD = "correct horse battery";

const json = (body: unknown) => ({
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body),
});

/** The `token` of a mailed link. */
const tokenOf = (link: string | null) => new URL(link!).searchParams.get("token")!;

/** Waits until the server's outbox is empty (every queued mail sent or dropped). */
async function outboxEmpty(server: TestServer) {
  await waitFor(async () => {
    for await (const _ of server.services.kv.list({ prefix: mailOutboxPrefix() })) return false;
    return true;
  }, { what: "an empty outbox", timeoutMs: 15_000, intervalMs: 20 });
}

Deno.test("[mail] without SMTP_URL each mail is printed with subject, recipient and link", async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => lines.push(args.map(String).join(" "));
  try {
    await createTransport({ smtpUrl: null }).send({
      messageId: "<1@test>",
      from: "WebSocks <no-reply@localhost>",
      to: "ann@example.com",
      subject: "WebSocks: reset your password",
      text: "Choose a new password:\nhttp://localhost:8000/reset-password?token=abc\n",
      html: "<p>x</p>",
    });
  } finally {
    console.log = log;
  }
  const printed = lines.join("\n");
  assert.match(printed, /ann@example\.com/);
  assert.match(printed, /WebSocks: reset your password/);
  assert.match(printed, /http:\/\/localhost:8000\/reset-password\?token=abc/);
});

Deno.test("[mail] sign-up mails a verification link; opening it changes nothing, its button verifies", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  const mail = await smtp.next(user.email);
  assert.match(mail.subject, /^WebSocks: verify your email address$/);
  assert.match(mail.messageId, /^<.+@127\.0\.0\.1>$/);
  assert.ok(mail.link?.startsWith(`${server.url}/verify-email?token=`), mail.text);
  assert.ok(mail.html.includes(mail.link!.replaceAll("&", "&amp;")), "the HTML has the link");
  assert.match(mail.html, /WebSocks/);

  const me = async () =>
    (await (await fetch(`${server.url}/api/me`, { headers: { Cookie: user.cookie } })).json())
      .user;
  assert.equal((await me()).emailVerified, false);
  // The dashboard asks to verify.
  const dashboard = await fetch(`${server.url}/dashboard`, { headers: { Cookie: user.cookie } });
  assert.equal(dashboard.status, 200);
  assert.match(await dashboard.text(), /Please verify your email address/);

  // A mail scanner opens the link, twice: nothing is spent.
  for (let i = 0; i < 2; i++) {
    const page = await fetch(mail.link!);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type")!, /^text\/html/);
    assert.equal(page.headers.get("referrer-policy"), "no-referrer");
    assert.match(await page.text(), /Verify my email address/);
  }
  assert.equal((await me()).emailVerified, false);

  const verified = await fetch(
    `${server.url}/api/auth/verify`,
    json({ token: tokenOf(mail.link) }),
  );
  assert.equal(verified.status, 200);
  assert.match(verified.headers.get("content-type")!, /^application\/json/);
  assert.equal((await verified.json()).user.emailVerified, true);
  assert.equal((await me()).emailVerified, true);
  const again = await fetch(`${server.url}/api/auth/verify`, json({ token: tokenOf(mail.link) }));
  assert.equal(again.status, 400);
  assert.match(
    (await again.json()).error,
    /^Cannot verify your email address: the link is not valid/,
  );
  const after = await fetch(`${server.url}/dashboard`, { headers: { Cookie: user.cookie } });
  assert.doesNotMatch(await after.text(), /Please verify your email address/);
});

Deno.test("[reset] forgot password answers the same for known and unknown addresses", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  await smtp.next(user.email); // the verification mail
  const answers = [];
  for (const email of [user.email, "nobody-here@example.com", user.email.toUpperCase()]) {
    const response = await fetch(`${server.url}/api/auth/forgot`, json({ email }));
    answers.push({
      status: response.status,
      type: response.headers.get("content-type"),
      body: await response.text(),
    });
  }
  assert.equal(answers[0].status, 202);
  assert.match(answers[0].type!, /^application\/json/);
  assert.deepEqual(answers[1], answers[0]);
  assert.deepEqual(answers[2], answers[0]);

  const pages = [];
  for (const email of [user.email, "nobody-here@example.com"]) {
    const response = await fetch(`${server.url}/forgot-password`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ email }),
    });
    pages.push({
      status: response.status,
      type: response.headers.get("content-type"),
      body: await response.text(),
    });
  }
  assert.equal(pages[0].status, 200);
  assert.match(pages[0].type!, /^text\/html/);
  assert.match(pages[0].body, /Check your mail/);
  assert.deepEqual(pages[1], pages[0]);

  await outboxEmpty(server);
  assert.equal(smtp.mails.filter((m) => /reset your password/.test(m.subject)).length, 3);
  assert.ok(smtp.mails.every((m) => m.to === user.email), "no mail to an unknown address");

  // A malformed address is a 400, not a 500.
  const bad = await fetch(`${server.url}/api/auth/forgot`, json({ email: "not an address" }));
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /email/);
});

Deno.test("[reset] the link works once, ends every other session and closes its streams", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  await smtp.next(user.email);
  const stream = await openSse(`${server.url}/api/events/stream`, { Cookie: user.cookie });
  assert.equal(stream.response.status, 200);

  await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
  const first = await smtp.next(user.email);
  await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
  const mail = await smtp.next(user.email);
  assert.match(mail.subject, /^WebSocks: reset your password$/);
  assert.ok(mail.link?.startsWith(`${server.url}/reset-password?token=`));

  // Asking again retired the first link.
  const retired = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(first.link), password: "another good password" }),
  );
  assert.equal(retired.status, 400);
  assert.match((await retired.json()).error, /^Cannot reset your password: the link is not valid/);

  // Opening the link does not spend it.
  for (let i = 0; i < 2; i++) {
    const page = await fetch(mail.link!);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("referrer-policy"), "no-referrer");
    assert.match(await page.text(), /Choose a new password/);
  }
  const short = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(mail.link), password: "short" }),
  );
  assert.equal(short.status, 400);

  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(mail.link), password: "another good password" }),
  );
  assert.equal(reset.status, 200);
  assert.match(reset.headers.get("content-type")!, /^application\/json/);
  assert.equal((await reset.json()).user.email, user.email);
  const newCookie = sessionCookieOf(reset);
  assert.ok(newCookie);

  // The old session is over and its stream closed.
  const old = await fetch(`${server.url}/api/me`, { headers: { Cookie: user.cookie } });
  assert.equal(old.status, 401);
  await old.body?.cancel();
  await waitFor(async () => {
    try {
      await stream.next(200);
      return false;
    } catch (error) {
      return /ended/.test((error as Error).message);
    }
  }, { what: "the old session's stream to close" });
  const fresh = await fetch(`${server.url}/api/me`, { headers: { Cookie: newCookie } });
  assert.equal(fresh.status, 200);
  await fresh.body?.cancel();

  const twice = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(mail.link), password: "a third good password" }),
  );
  assert.equal(twice.status, 400);
  assert.match((await twice.json()).error, /not valid/);
  const page = await fetch(mail.link!);
  assert.equal(page.status, 400);
  assert.equal(page.headers.get("referrer-policy"), "no-referrer");
  await page.body?.cancel();

  const login = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: user.email, password: "another good password" }),
  );
  assert.equal(login.status, 200);
  await login.body?.cancel();
  const oldPassword = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: user.email, password: PASSWORD }),
  );
  assert.equal(oldPassword.status, 401);
  await oldPassword.body?.cancel();
});

Deno.test("[reset] a link expires after 1 hour", async () => {
  await using smtp = await startSmtp();
  let now = Date.now();
  await using server = await startTestServer({ SMTP_URL: smtp.url }, { now: () => new Date(now) });
  const user = await signUp(server);
  await smtp.next(user.email);
  await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
  const mail = await smtp.next(user.email);
  now += 59 * 60_000;
  assert.equal((await fetch(mail.link!)).status, 200);
  now += 2 * 60_000;
  const page = await fetch(mail.link!);
  assert.equal(page.status, 400);
  assert.match(page.headers.get("content-type")!, /^text\/html/);
  assert.match(await page.text(), /the link has expired; ask for a new one/);
  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(mail.link), password: "another good password" }),
  );
  assert.equal(reset.status, 400);
  assert.equal(
    (await reset.json()).error,
    "Cannot reset your password: the link has expired; ask for a new one on the " +
      "“Forgot password?” page",
  );
});

Deno.test("[mail] change of address: confirmed at the new one, the old one told, the index moved", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  const other = await signUp(server);
  await smtp.next(user.email);
  await smtp.next(other.email);
  const auth = { Authorization: `Bearer ${user.token}` };
  const change = (body: unknown) =>
    fetch(`${server.url}/api/account/email`, {
      method: "POST",
      headers: { ...auth, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });

  const wrong = await change({ email: "new@example.com", password: "not my password" });
  assert.equal(wrong.status, 401);
  assert.match((await wrong.json()).error, /^Cannot change email: the current password is wrong/);
  const taken = await change({ email: other.email, password: PASSWORD });
  assert.equal(taken.status, 409);
  await taken.body?.cancel();

  const newEmail = `moved-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const asked = await change({ email: newEmail, password: PASSWORD });
  assert.equal(asked.status, 202);
  assert.match(asked.headers.get("content-type")!, /^application\/json/);
  await asked.body?.cancel();
  const mail = await smtp.next(newEmail);
  assert.match(mail.subject, /^WebSocks: confirm your new email address$/);
  assert.ok(mail.link?.startsWith(`${server.url}/confirm-email?token=`));
  // Nothing changed yet.
  const before = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: user.email, password: PASSWORD }),
  );
  assert.equal(before.status, 200);
  await before.body?.cancel();

  const confirmed = await fetch(
    `${server.url}/api/account/email/confirm`,
    json({ token: tokenOf(mail.link) }),
  );
  assert.equal(confirmed.status, 200);
  const body = await confirmed.json();
  assert.equal(body.user.email, newEmail);
  assert.equal(body.user.emailVerified, true);
  const notice = await smtp.next(user.email);
  assert.match(notice.subject, /^WebSocks: your email address was changed$/);
  assert.match(notice.text, new RegExp(newEmail.replace(".", "\\.")));

  const oldLogin = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: user.email, password: PASSWORD }),
  );
  assert.equal(oldLogin.status, 401);
  await oldLogin.body?.cancel();
  const newLogin = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: newEmail, password: PASSWORD }),
  );
  assert.equal(newLogin.status, 200);
  await newLogin.body?.cancel();
  // The old address is free again.
  await signUp(server, user.email);
  const twice = await fetch(
    `${server.url}/api/account/email/confirm`,
    json({ token: tokenOf(mail.link) }),
  );
  assert.equal(twice.status, 400);
  await twice.body?.cancel();
});

Deno.test("[mail] a change of address fails when the new one was taken meanwhile", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  await smtp.next(user.email);
  const wanted = `wanted-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const asked = await fetch(`${server.url}/api/account/email`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ email: wanted, password: PASSWORD }),
  });
  assert.equal(asked.status, 202);
  await asked.body?.cancel();
  const mail = await smtp.next(wanted);
  await signUp(server, wanted);
  const confirmed = await fetch(
    `${server.url}/api/account/email/confirm`,
    json({ token: tokenOf(mail.link) }),
  );
  assert.equal(confirmed.status, 409);
  assert.match((await confirmed.json()).error, /another account uses/);
  const still = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: user.email, password: PASSWORD }),
  );
  assert.equal(still.status, 200);
  await still.body?.cancel();
});

Deno.test("[mail] nobody can make us mail one address more than MAILS_PER_ADDRESS_PER_HOUR", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    MAILS_PER_ADDRESS_PER_HOUR: "3",
  });
  const user = await signUp(server); // the verification mail is the first of three
  for (let i = 0; i < 10; i++) {
    const response = await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
    assert.equal(response.status, 202);
    await response.body?.cancel();
  }
  // The resends of the verification mail hit the same limit, with a clear 429.
  await waitFor(async () => {
    for await (const _ of server.services.kv.list({ prefix: mailOutboxPrefix() })) return false;
    return smtp.mails.length >= 3;
  }, { what: "the mails within the limit", timeoutMs: 15_000 });
  const resend = await fetch(`${server.url}/api/account/verification`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(resend.status, 429);
  assert.match((await resend.json()).error, /^Cannot send a verification mail: too many mails/);
  assert.equal(smtp.mails.length, 3);
});

Deno.test("[mail] the outbox holds no readable link or address", async () => {
  const port = freePort();
  await using server = await startTestServer({
    SMTP_URL: `smtp://127.0.0.1:${port}`,
    MAIL_RETRY_BASE_SECONDS: "60",
  });
  const user = await signUp(server);
  await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
  const stored: string[] = [];
  await waitFor(async () => {
    stored.length = 0;
    for await (const entry of server.services.kv.list({ prefix: mailOutboxPrefix() })) {
      stored.push(JSON.stringify(entry.value));
    }
    return stored.length === 2;
  }, { what: "two queued mails" });
  for (const value of stored) {
    assert.doesNotMatch(value, /token=|reset-password|verify-email/);
    assert.ok(!value.includes(user.email), "the address is sealed too");
  }
});

Deno.test("[mail] SMTP down, then up: the mail arrives exactly once", async () => {
  const port = freePort();
  await using server = await startTestServer({
    SMTP_URL: `smtp://127.0.0.1:${port}`,
    MAIL_RETRY_BASE_SECONDS: "0.2",
  });
  const user = await signUp(server);
  // Wait for a failed attempt recorded on the queued mail.
  await waitFor(async () => {
    for await (
      const entry of server.services.kv.list<{ attempts: number }>({ prefix: mailOutboxPrefix() })
    ) {
      if (entry.value.attempts >= 1) return true;
    }
    return false;
  }, { what: "a failed attempt" });
  await using smtp = await startSmtp({ port });
  const mail = await smtp.next(user.email, 30_000);
  assert.match(mail.subject, /verify your email address/);
  await outboxEmpty(server);
  assert.equal(smtp.mails.length, 1);
});

Deno.test("[mail] two sender loops on one KV store send each mail once", async () => {
  await using smtp = await startSmtp();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/mail.kv`;
  const kvA = await openKv(path);
  const kvB = await openKv(path);
  const key = await crypto.subtle.importKey(
    "raw",
    crypto.getRandomValues(new Uint8Array(32)),
    "AES-GCM",
    false,
    ["encrypt", "decrypt"],
  );
  const outcomes: string[] = [];
  const senders = [kvA, kvB].map((kv) =>
    startMailSender(kv, {
      secretsKey: key,
      transport: createTransport({ smtpUrl: smtp.url }),
      from: "WebSocks <no-reply@localhost>",
      retryBaseMs: 100,
      giveUpMs: 60_000,
      pollMs: 10,
      onResult: (outcome) => outcomes.push(outcome),
    })
  );
  try {
    for (let i = 0; i < 8; i++) {
      await queueMail(i % 2 ? kvA : kvB, {
        secretsKey: key,
        message: {
          to: `r${i}@example.com`,
          subject: `n${i}`,
          text: `mail ${i}`,
          html: `<p>${i}</p>`,
        },
        kind: "invoice",
        userId: null,
        domain: "localhost",
      });
    }
    await waitFor(async () => {
      for await (const _ of kvA.list({ prefix: mailOutboxPrefix() })) return false;
      return true;
    }, { what: "every mail sent", timeoutMs: 15_000 });
    assert.equal(smtp.mails.length, 8);
    assert.equal(new Set(smtp.mails.map((m) => m.to)).size, 8);
    assert.deepEqual(outcomes, Array(8).fill("sent"));
  } finally {
    await Promise.all(senders.map((s) => s.stop()));
    kvA.close();
    kvB.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[mail] quota mails at 80 % and 100 %, once a month", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url, FREE_MONTHLY_LIMIT: "5" });
  const user = await signUp(server);
  await smtp.next(user.email);
  for (let i = 0; i < 7; i++) {
    const response = await postWebhook(user.webhookUrl, JSON.stringify({ i }));
    assert.equal(response.status, i < 5 ? 200 : 402);
    await response.body?.cancel();
  }
  const eighty = await smtp.next(user.email);
  assert.match(eighty.subject, /^WebSocks: you have used 80% of your monthly webhooks$/);
  assert.match(eighty.text, /4 of its 5 webhooks/);
  const full = await smtp.next(user.email);
  assert.match(full.subject, /^WebSocks: your monthly webhook limit is reached$/);
  assert.ok(full.link?.endsWith("/dashboard/usage"));
  await outboxEmpty(server);
  assert.equal(smtp.mails.length, 3);
});

Deno.test("[mail] a new invoice with an amount is mailed once", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  await smtp.next(user.email);
  const { kv } = server.services;
  const entry = await kv.get<User>(userKey(user.id));
  await kv.set(userKey(user.id), { ...entry.value!, plan: "pro", monthlyLimit: null });
  const period = previousMonth(new Date());
  await kv.set(usageMonthKey(user.id, period), new Deno.KvU64(250_000n));
  const run = () =>
    generateInvoices(kv, {
      period,
      freeAllowance: 1000,
      onInvoice: (invoice, owner) =>
        notifyInvoice(server.services, {
          user: owner,
          period,
          amountUsd: invoice.amountUsd,
          accepted: invoice.acceptedRequests,
        }),
    });
  assert.ok((await run()) >= 1);
  assert.equal(await run(), 0);
  const mail = await smtp.next(user.email);
  assert.equal(mail.subject, `WebSocks: your invoice for ${period}`);
  assert.match(mail.text, /250,000 webhooks accepted, amount \$25\.00/);
  await outboxEmpty(server);
  assert.equal(smtp.mails.filter((m) => m.to === user.email).length, 2);
});

Deno.test("[reset] the link pages' forms refuse other sites, Origin: null included", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  await smtp.next(user.email);
  await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
  const mail = await smtp.next(user.email);
  const form = new URLSearchParams({ token: tokenOf(mail.link), password: "attacker's password" });
  for (
    const headers of <Record<string, string>[]> [
      { Origin: "https://evil.example" },
      { Origin: "null", "Sec-Fetch-Site": "cross-site" },
      { Origin: "null" },
    ]
  ) {
    const forged = await fetch(`${server.url}/reset-password`, {
      method: "POST",
      headers: { ...headers, "Content-Type": "application/x-www-form-urlencoded" },
      body: form,
      redirect: "manual",
    });
    assert.equal(forged.status, 403, JSON.stringify(headers));
    await forged.body?.cancel();
  }
  // The link still works for its owner.
  const page = await fetch(mail.link!);
  assert.equal(page.status, 200);
  await page.body?.cancel();
});

Deno.test("[mail] the email settings page: resend verification, change of address by form", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  await smtp.next(user.email);
  const page = await fetch(`${server.url}/dashboard/account/email`, {
    headers: { Cookie: user.cookie },
  });
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type")!, /^text\/html/);
  const html = await page.text();
  assert.match(html, /not verified yet/);
  assert.match(html, /action="\/dashboard\/account\/email"/);

  const post = (path: string, body: Record<string, string>) =>
    fetch(`${server.url}${path}`, {
      method: "POST",
      headers: {
        Cookie: user.cookie,
        Origin: server.url,
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams(body),
      redirect: "manual",
    });
  const resend = await post("/dashboard/account/verify", {});
  assert.equal(resend.status, 303);
  assert.equal(resend.headers.get("location"), "/dashboard/account/email");
  await resend.body?.cancel();
  assert.match((await smtp.next(user.email)).subject, /verify your email address/);

  const wrong = await post("/dashboard/account/email", {
    email: "elsewhere@example.com",
    password: "not my password",
  });
  assert.equal(wrong.status, 401);
  assert.match(await wrong.text(), /Cannot change email: the current password is wrong/);
  const bad = await post("/dashboard/account/email", { email: "nope", password: PASSWORD });
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /Email must be an email address/);
  const moved = `form-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const asked = await post("/dashboard/account/email", { email: moved, password: PASSWORD });
  assert.equal(asked.status, 303);
  await asked.body?.cancel();
  const mail = await smtp.next(moved);
  const confirmPage = await fetch(mail.link!, { headers: { Cookie: user.cookie } });
  assert.equal(confirmPage.status, 200);
  assert.match(await confirmPage.text(), /Use this address/);
  const confirmed = await post("/confirm-email", { token: tokenOf(mail.link) });
  assert.equal(confirmed.status, 303);
  assert.equal(confirmed.headers.get("location"), "/dashboard/account/email");
  await confirmed.body?.cancel();
  const after = await fetch(`${server.url}/dashboard/account/email`, {
    headers: { Cookie: user.cookie },
  });
  const text = await after.text();
  assert.match(text, new RegExp(`Your account now uses ${moved.replaceAll(".", "\\.")}`));
  assert.match(text, /\(verified\)/);
});

Deno.test("[mail] a session cannot guess the password through the change of address", async () => {
  await using server = await startTestServer({
    LOGIN_FAILURES_PER_ACCOUNT: "2",
    LOGIN_DELAY_BASE_SECONDS: "60",
  });
  const user = await signUp(server);
  const change = (password: string) =>
    fetch(`${server.url}/api/account/email`, {
      method: "POST",
      headers: { Cookie: user.cookie, Origin: server.url, "Content-Type": "application/json" },
      body: JSON.stringify({ email: "elsewhere@example.com", password }),
    });
  for (let i = 0; i < 2; i++) {
    const wrong = await change(`guess number ${i}`);
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
  }
  const limited = await change(PASSWORD);
  assert.equal(limited.status, 429);
  assert.match(limited.headers.get("content-type")!, /^application\/json/);
  assert.ok(Number(limited.headers.get("retry-after")) > 0);
  assert.match(
    (await limited.json()).error,
    /^Cannot change email: too many wrong passwords for this account or network address; try again in/,
  );
});

Deno.test("[mail] the sign-up form mails a verification link too", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const email = `form-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const response = await fetch(`${server.url}/signup`, {
    method: "POST",
    headers: { Origin: server.url, "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ email, password: PASSWORD }),
    redirect: "manual",
  });
  assert.equal(response.status, 303);
  await response.body?.cancel();
  const mail = await smtp.next(email);
  assert.match(mail.subject, /verify your email address/);
  assert.ok(mail.link?.startsWith(`${server.url}/verify-email?token=`));
});

Deno.test("[mail] deleteMailDataOf leaves no mail key naming the user or the address", async () => {
  const port = freePort();
  await using server = await startTestServer({
    SMTP_URL: `smtp://127.0.0.1:${port}`,
    MAIL_RETRY_BASE_SECONDS: "60",
    FREE_MONTHLY_LIMIT: "5",
  });
  const user = await signUp(server);
  const other = await signUp(server);
  await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
  for (let i = 0; i < 5; i++) {
    const response = await postWebhook(user.webhookUrl, "{}");
    await response.body?.cancel();
  }
  const { kv } = server.services;
  const mailKeys = async () => {
    const found: string[] = [];
    for (const prefix of ["mail_outbox", "mail_rate", "mail_tokens", "mail_tokens_of_user"]) {
      for await (const entry of kv.list({ prefix: [prefix] })) {
        found.push(JSON.stringify([entry.key, entry.value]));
      }
    }
    for await (const entry of kv.list({ prefix: ["mail_notices"] })) {
      found.push(JSON.stringify([entry.key, entry.value]));
    }
    return found;
  };
  // Verification, reset, quota 80 and 100 queued for the user; tokens, notices, counters kept.
  // The quota notices are queued after the webhooks' answers: wait for both, or one may be
  // written after the deletion below (an account's deletion sweeps again once such work settles).
  await waitFor(async () => {
    const keys = (await mailKeys()).filter((k) => k.includes(user.id));
    return keys.length >= 6 && keys.some((k) => k.includes('"quota-80-')) &&
      keys.some((k) => k.includes('"quota-100-'));
  }, { what: "the user's mail keys" });
  await deleteMailDataOf(kv, { userId: user.id, email: user.email });
  const left = await mailKeys();
  assert.deepEqual(left.filter((k) => k.includes(user.id) || k.includes(user.email)), []);
  // The outbox entries are sealed, so check by owner: the other user's mail is still queued.
  let others = 0;
  for await (const entry of kv.list<{ userId: string }>({ prefix: mailOutboxPrefix() })) {
    assert.notEqual(entry.value.userId, user.id);
    if (entry.value.userId === other.id) others++;
  }
  assert.equal(others, 1);
});
