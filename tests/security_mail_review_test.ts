/**
 * An attacker's review of issue 14's mail flows: what a hostile account or visitor can do with
 * reset and change-of-address links and the hourly mail limits, against a real SMTP server.
 */
import assert from "node:assert/strict";
import {
  markEmailVerified,
  sessionCookieOf,
  signUp,
  startTestServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";
import { mailOutboxPrefix } from "../lib/store/kv_keys.ts";
import { startSmtp } from "./smtp.ts";
import { notifyQuota, requestPasswordReset } from "../lib/mail/account_mail.ts";

const PASSWORD = "correct horse battery";

const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "Content-Type": "application/json", ...headers },
  body: JSON.stringify(body),
});

/** Waits until the server's outbox is empty (every queued mail sent or dropped). */
async function outboxEmpty(server: TestServer) {
  await waitFor(async () => {
    for await (const _ of server.services.kv.list({ prefix: mailOutboxPrefix() })) return false;
    return true;
  }, { what: "an empty outbox", timeoutMs: 15_000, intervalMs: 20 });
}

/** The `token` of a mailed link. */
const tokenOf = (link: string | null) => new URL(link!).searchParams.get("token")!;

/** Following a change-of-email link that must no longer work: 400, and the account stays. */
async function assertChangeLinkDead(server: { url: string }, link: string | null): Promise<void> {
  const confirm = await fetch(
    `${server.url}/api/account/email/confirm`,
    json({ token: tokenOf(link) }),
  );
  assert.equal(confirm.status, 400);
  assert.match(confirm.headers.get("content-type")!, /^application\/json/);
  assert.match(
    (await confirm.json()).error,
    /^Cannot change your email address: the link is not valid/,
  );
}

Deno.test("[review] reset requests held back by the mail limit leave the victim's live link working", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    MAILS_PER_ADDRESS_PER_HOUR: "2",
  });
  const victim = await signUp(server);
  await smtp.next(victim.email); // the verification mail: 1 of the address's 2
  const asked = await fetch(`${server.url}/api/auth/forgot`, json({ email: victim.email }));
  assert.equal(asked.status, 202);
  await asked.body?.cancel();
  const mail = await smtp.next(victim.email); // the reset mail: 2 of 2

  // Anyone may ask for the victim's address again; the address's limit holds each mail back.
  // (What POST /api/auth/forgot runs in the background, awaited here.)
  for (let i = 0; i < 3; i++) await requestPasswordReset(server.services, victim.email);

  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(mail.link), password: "a brand new password" }),
  );
  assert.equal(reset.status, 200);
  assert.match(reset.headers.get("content-type")!, /^application\/json/);
  assert.equal((await reset.json()).user.email, victim.email);
});

Deno.test("[review] a password reset voids a change-of-email link someone with the old password asked for", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const owner = await signUp(server);
  await smtp.next(owner.email);

  // A thief who learned the password logs in and asks to move the account to their address.
  const login = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: owner.email, password: PASSWORD }),
  );
  assert.equal(login.status, 200);
  await login.body?.cancel();
  const thiefCookie = login.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
  const change = await fetch(
    `${server.url}/api/account/email`,
    json({ email: "thief@example.net", password: PASSWORD }, { Cookie: thiefCookie }),
  );
  assert.equal(change.status, 202);
  await change.body?.cancel();
  const changeMail = await smtp.next("thief@example.net");

  // The owner recovers the account: every other session ends…
  const forgot = await fetch(`${server.url}/api/auth/forgot`, json({ email: owner.email }));
  assert.equal(forgot.status, 202);
  await forgot.body?.cancel();
  const resetMail = await smtp.next(owner.email);
  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(resetMail.link), password: "the owner's new password" }),
  );
  assert.equal(reset.status, 200);
  await reset.body?.cancel();

  // …and the thief's pending link must not move the account to the thief's address.
  await assertChangeLinkDead(server, changeMail.link);
  const relogin = await fetch(
    `${server.url}/api/auth/login`,
    json({ email: owner.email, password: "the owner's new password" }),
  );
  assert.equal(relogin.status, 200);
  assert.match(relogin.headers.get("content-type")!, /^application\/json/);
  assert.equal((await relogin.json()).user.email, owner.email);
});

Deno.test("[review] changing the password voids a pending change-of-email link", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const owner = await signUp(server);
  await smtp.next(owner.email);
  const auth = { Authorization: `Bearer ${owner.token}` };
  const change = await fetch(
    `${server.url}/api/account/email`,
    json({ email: "thief@example.net", password: PASSWORD }, auth),
  );
  assert.equal(change.status, 202);
  await change.body?.cancel();
  const changeMail = await smtp.next("thief@example.net");

  const changed = await fetch(
    `${server.url}/api/account/password`,
    json({ currentPassword: PASSWORD, newPassword: "the owner's new password" }, auth),
  );
  assert.equal(changed.status, 200);
  await changed.body?.cancel();

  await assertChangeLinkDead(server, changeMail.link);
});

Deno.test("[review] deleting an account does not reset the hourly mail limit of its address", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    MAILS_PER_ADDRESS_PER_HOUR: "2",
    DELETION_SETTLE_SECONDS: "0",
  });
  const victim = "victim-of-a-mail-bomb@example.org";
  const resend = (token: string) =>
    fetch(`${server.url}/api/account/verification`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
    });

  // An attacker signs up with the victim's address and has the verification mail sent again
  // until the address's limit holds it back.
  const first = await signUp(server, victim);
  await smtp.next(victim);
  const sent = await resend(first.token);
  assert.equal(sent.status, 202);
  await sent.body?.cancel();
  await smtp.next(victim);
  const held = await resend(first.token);
  assert.equal(held.status, 429);
  await held.body?.cancel();

  // Deleting the account and signing up again with the same address must not start afresh.
  const deleted = await fetch(`${server.url}/api/account`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${first.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ password: PASSWORD }),
  });
  assert.equal(deleted.status, 200);
  await deleted.body?.cancel();
  await server.services.deletions.idle();
  const second = await signUp(server, victim);
  const after = await resend(second.token);
  assert.equal(after.status, 429);
  assert.match(after.headers.get("content-type")!, /^application\/json/);
  assert.match((await after.json()).error, /too many mails went to this address/);
  assert.equal(smtp.mails.filter((mail) => mail.to === victim).length, 2);
});

Deno.test("[review] one client cannot spend the whole hourly mail budget on reset requests", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    TRUST_PROXY: "1",
    MAILS_PER_HOUR: "8",
    MAILS_PER_CLIENT_PER_HOUR: "2",
  });
  const others = [await signUp(server), await signUp(server), await signUp(server)];
  const victim = await signUp(server);
  for (const user of [...others, victim]) await smtp.next(user.email); // 4 of the 8
  const forgot = (email: string, client: string) =>
    fetch(`${server.url}/api/auth/forgot`, json({ email }, { "X-Forwarded-For": client }));

  // One network address asks for resets of every account it knows, and again.
  const answers = [];
  for (const email of [...others.map((user) => user.email), others[0].email]) {
    const response = await forgot(email, "203.0.113.9");
    answers.push({ status: response.status, type: response.headers.get("content-type") });
    await response.body?.cancel();
  }
  assert.deepEqual(answers.map((answer) => answer.status), [202, 202, 429, 429]);
  assert.match(answers[2].type!, /^application\/json/);
  const refused = await forgot("nobody-here@example.com", "203.0.113.9");
  assert.equal(refused.status, 429);
  assert.match(refused.headers.get("content-type")!, /^application\/json/);
  assert.match((await refused.json()).error, /^Cannot send reset link: too many requests/);

  // The budget left still serves everyone else.
  const asked = await forgot(victim.email, "198.51.100.7");
  assert.equal(asked.status, 202);
  await asked.body?.cancel();
  const mail = await smtp.next(victim.email);
  assert.match(mail.subject, /reset your password/);
});

Deno.test("[review] change of email is no unlimited oracle of which addresses have accounts", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    MAILS_PER_ACCOUNT_PER_HOUR: "3",
  });
  const prober = await signUp(server);
  const known = [];
  for (let i = 0; i < 5; i++) known.push((await signUp(server)).email);
  const statuses = [];
  let last: Response | null = null;
  for (const email of known) {
    last = await fetch(
      `${server.url}/api/account/email`,
      json({ email, password: PASSWORD }, { Authorization: `Bearer ${prober.token}` }),
    );
    statuses.push(last.status);
    if (statuses.length < known.length) await last.body?.cancel();
  }
  assert.deepEqual(statuses, [409, 409, 409, 429, 429]);
  assert.match(last!.headers.get("content-type")!, /^application\/json/);
  assert.match(
    (await last!.json()).error,
    /^Cannot change email: too many requests for this account/,
  );
});

Deno.test("[review] moving accounts off an address nobody verified mails it no more than its limit", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    MAILS_PER_ADDRESS_PER_HOUR: "2",
  });
  const victim = "victim-of-notices@example.org";
  // Sign up with the victim's address, move the account to one's own, and again: each move
  // told the "previous address", which never was the account's.
  for (let i = 0; i < 3; i++) {
    const account = await signUp(server, victim);
    const own = `own-${i}-${crypto.randomUUID().slice(0, 8)}@example.net`;
    const asked = await fetch(
      `${server.url}/api/account/email`,
      json({ email: own, password: PASSWORD }, { Authorization: `Bearer ${account.token}` }),
    );
    assert.equal(asked.status, 202);
    await asked.body?.cancel();
    const link = await smtp.next(own);
    const moved = await fetch(
      `${server.url}/api/account/email/confirm`,
      json({ token: tokenOf(link.link) }),
    );
    assert.equal(moved.status, 200);
    assert.match(moved.headers.get("content-type")!, /^application\/json/);
    assert.equal((await moved.json()).user.email, own);
  }
  await outboxEmpty(server);
  assert.equal(smtp.mails.filter((mail) => mail.to === victim).length, 2);
});

Deno.test("[review] quota notices to an address nobody verified count against its limit", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    MAILS_PER_ADDRESS_PER_HOUR: "2",
    FREE_MONTHLY_LIMIT: "5",
  });
  const victim = "victim-of-quota-mail@example.org";
  const account = await signUp(server, victim);
  await smtp.next(victim); // the verification mail: 1 of 2
  // What the group commit calls when a commit crosses 80 % and then 100 % (awaited here).
  const month = new Date().toISOString().slice(0, 7);
  for (const level of [80, 100]) {
    await notifyQuota(server.services, {
      userId: account.id,
      level,
      used: level / 20,
      limit: 5,
      resetsAt: new Date().toISOString(),
      month,
    });
  }
  await outboxEmpty(server);
  assert.equal(smtp.mails.filter((mail) => mail.to === victim).length, 2);
});

Deno.test("[review] a device cookie from an account that left an address does not skip the limits of its next owner", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({
    SMTP_URL: smtp.url,
    LOGIN_FAILURES_PER_ADDRESS: "2",
  });
  const address = `wanted-${crypto.randomUUID().slice(0, 8)}@example.org`;
  // An attacker signs up with the address first (the browser is remembered for it)…
  const signup = await fetch(
    `${server.url}/api/auth/signup`,
    json({ email: address, password: PASSWORD }),
  );
  assert.equal(signup.status, 201);
  const token = (await signup.json()).token.value;
  const device = signup.headers.getSetCookie().map((c) => c.split(";")[0])
    .find((c) => c.startsWith("websocks_device="))!;
  assert.ok(device, "sign-up sets the device cookie");
  // …moves that account to another address, and the address's real owner signs up with it.
  const own = `own-${crypto.randomUUID().slice(0, 8)}@example.net`;
  const asked = await fetch(
    `${server.url}/api/account/email`,
    json({ email: own, password: PASSWORD }, { Authorization: `Bearer ${token}` }),
  );
  assert.equal(asked.status, 202);
  await asked.body?.cancel();
  const moved = await fetch(
    `${server.url}/api/account/email/confirm`,
    json({ token: tokenOf((await smtp.next(own)).link) }),
  );
  assert.equal(moved.status, 200);
  await moved.body?.cancel();
  await signUp(server, address);

  // Guessing the owner's password with the old device cookie meets the address's limit.
  const statuses = [];
  let last: Response | null = null;
  for (let i = 0; i < 3; i++) {
    last = await fetch(
      `${server.url}/api/auth/login`,
      json({ email: address, password: `guess number ${i}` }, { Cookie: device }),
    );
    statuses.push(last.status);
    if (i < 2) await last.body?.cancel();
  }
  assert.deepEqual(statuses, [401, 401, 429]);
  assert.match(last!.headers.get("content-type")!, /^application\/json/);
  assert.match((await last!.json()).error, /too many failed attempts for your network address/);
});

/** The token is refused: 401, JSON, "Unauthorized…". */
async function assertTokenRefused(server: TestServer, token: string): Promise<void> {
  const me = await fetch(`${server.url}/api/me`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(me.status, 401);
  assert.match(me.headers.get("content-type")!, /^application\/json/);
  assert.match((await me.json()).error, /^Unauthorized/);
}

Deno.test("[review] a reset that first proves the address revokes the API tokens of whoever signed up with it", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const address = `owner-${crypto.randomUUID().slice(0, 8)}@example.org`;
  // A squatter signs up with the owner's address and keeps the sign-up's API token.
  const squatter = await signUp(server, address);
  await smtp.next(address);
  // The owner, told the address "has an account", recovers it by mail.
  const forgot = await fetch(`${server.url}/api/auth/forgot`, json({ email: address }));
  assert.equal(forgot.status, 202);
  await forgot.body?.cancel();
  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf((await smtp.next(address)).link), password: "the owner's password" }),
  );
  assert.equal(reset.status, 200);
  const owner = reset.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
  await reset.body?.cancel();

  await assertTokenRefused(server, squatter.token);
  // The owner's own session works, and a token the owner makes from now on survives a reset
  // of the (now verified) address when the owner asks to keep the tokens.
  const made = await fetch(
    `${server.url}/api/tokens`,
    json({ name: "ci" }, { Cookie: owner }),
  );
  assert.equal(made.status, 201);
  const ownToken = (await made.json()).token.value;
  const again = await fetch(`${server.url}/api/auth/forgot`, json({ email: address }));
  await again.body?.cancel();
  const second = await fetch(
    `${server.url}/api/auth/reset`,
    json({
      token: tokenOf((await smtp.next(address)).link),
      password: "another password",
      keepTokens: true,
    }),
  );
  assert.equal(second.status, 200);
  await second.body?.cancel();
  const still = await fetch(`${server.url}/api/me`, {
    headers: { Authorization: `Bearer ${ownToken}` },
  });
  assert.equal(still.status, 200);
  await still.body?.cancel();
});

Deno.test("[review] a squatter's token dies at the reset even when the owner verified the address first", async () => {
  // The owner gets the sign-up's "verify your address" mail and, as asked, verifies it: the
  // address is now proven, so the reset that follows kept every token, the squatter's too.
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const address = `owner-${crypto.randomUUID().slice(0, 8)}@example.org`;
  const squatter = await signUp(server, address);
  const verifyLink = (await smtp.next(address)).link!;
  // The verify page tells the owner what to do when the account is not theirs.
  const page = await fetch(verifyLink);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /If you did not sign up for WebSocks, someone else used it/);
  const verify = await fetch(`${server.url}/api/auth/verify`, json({ token: tokenOf(verifyLink) }));
  assert.equal(verify.status, 200);
  await verify.body?.cancel();
  const forgot = await fetch(`${server.url}/api/auth/forgot`, json({ email: address }));
  await forgot.body?.cancel();
  const link = (await smtp.next(address)).link!;
  const form = await fetch(link);
  assert.equal(form.status, 200);
  assert.match(await form.text(), /revokes the account's API tokens, unless you keep them/);
  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(link), password: "the owner's password" }),
  );
  assert.equal(reset.status, 200);
  await reset.body?.cancel();
  await assertTokenRefused(server, squatter.token);
});

Deno.test("[review] the reset form keeps the API tokens only when asked to", async () => {
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const user = await signUp(server);
  await smtp.next(user.email);
  // A first proof of the address revokes them whatever the form says: proven before.
  await markEmailVerified(server, user.id);
  const resetByForm = async (fields: Record<string, string>) => {
    const forgot = await fetch(`${server.url}/api/auth/forgot`, json({ email: user.email }));
    await forgot.body?.cancel();
    const token = tokenOf((await smtp.next(user.email)).link);
    const posted = await fetch(`${server.url}/reset-password`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: server.url },
      body: new URLSearchParams({ token, password: "a new good password", ...fields }),
      redirect: "manual",
    });
    assert.equal(posted.status, 303);
    await posted.body?.cancel();
  };
  const me = async () => {
    const response = await fetch(`${server.url}/api/me`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    await response.body?.cancel();
    return response.status;
  };
  await resetByForm({ keepTokens: "on" });
  assert.equal(await me(), 200);
  await resetByForm({});
  assert.equal(await me(), 401);
});

Deno.test("[review] a squatter minting tokens while the owner resets keeps none of them", async () => {
  // The reset revoked tokens one at a time after its commit: meanwhile a squatter's token not
  // yet revoked minted new ones, and those made after the list was read survived the reset.
  await using smtp = await startSmtp();
  // No cap on tokens: the squatter mints as many as it can while the reset runs.
  await using server = await startTestServer({ SMTP_URL: smtp.url, MAX_TOKENS_PER_ACCOUNT: "0" });
  const address = `owner-${crypto.randomUUID().slice(0, 8)}@example.org`;
  const squatter = await signUp(server, address);
  await smtp.next(address);
  const mint = async (with_: string) =>
    await fetch(
      `${server.url}/api/tokens`,
      json({ name: "again" }, { Authorization: `Bearer ${with_}` }),
    );
  // Many tokens: the reset's revocations take long, the window the squatter mints in.
  let newest = squatter.token;
  for (let i = 0; i < 100; i++) {
    const made = await mint(squatter.token);
    assert.equal(made.status, 201);
    newest = (await made.json()).token.value;
  }
  const forgot = await fetch(`${server.url}/api/auth/forgot`, json({ email: address }));
  await forgot.body?.cancel();
  const link = (await smtp.next(address)).link!;
  let minting = true;
  const minted: string[] = [];
  const minter = (async () => {
    while (minting) {
      const made = await mint(newest);
      if (made.status !== 201) {
        await made.body?.cancel();
        break;
      }
      minted.push((await made.json()).token.value);
    }
  })();
  await waitFor(() => minted.length > 0, { what: "the squatter minting" });
  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(link), password: "the owner's password" }),
  );
  assert.equal(reset.status, 200);
  await reset.body?.cancel();
  minting = false;
  await minter;
  for (const value of [newest, ...minted]) await assertTokenRefused(server, value);
});

/** Asks for a reset of `email`'s password and returns the link mailed for it. */
async function resetLink(
  server: TestServer,
  smtp: { next(to: string): Promise<{ link: string | null }> },
  email: string,
): Promise<string | null> {
  const asked = await fetch(`${server.url}/api/auth/forgot`, json({ email }));
  await asked.body?.cancel();
  return (await smtp.next(email)).link;
}

Deno.test("[review] log-ins with the old password racing a reset keep no session", async () => {
  // A log-in checks the password against the account as it read it (100 ms of hashing), then
  // started a session of whatever generation was current by then: one that finished after the
  // reset committed, and after it listed the sessions to end, outlived it.
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const victim = await signUp(server);
  await smtp.next(victim.email);
  const link = await resetLink(server, smtp, victim.email);
  let resetDone = false;
  const cookies: string[] = [];
  const attacker = async () => {
    while (!resetDone) {
      const response = await fetch(
        `${server.url}/api/auth/login`,
        json({ email: victim.email, password: "correct horse battery" }),
      );
      if (response.status === 200) {
        cookies.push(sessionCookieOf(response));
      }
      await response.body?.cancel();
    }
  };
  const loops = Array.from({ length: 4 }, attacker);
  await waitFor(() => cookies.length > 0, { what: "the old password logging in" });
  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(link), password: "the owner's new password" }),
  );
  assert.equal(reset.status, 200);
  await reset.body?.cancel();
  resetDone = true;
  await Promise.all(loops);
  let surviving = 0;
  for (const cookie of cookies) {
    const me = await fetch(`${server.url}/api/me`, { headers: { Cookie: cookie } });
    if (me.status === 200) surviving++;
    await me.body?.cancel();
  }
  assert.equal(surviving, 0, `${surviving} of ${cookies.length} sessions outlived the reset`);
});

Deno.test("[review] a password change with the old password racing a reset does not override it", async () => {
  // The change checked the current password against the account as its request read it, then
  // wrote its own over whatever was there 200 ms later: a reset committed meanwhile was undone,
  // the thief's password replaced the owner's, and the thief's new session outlived the reset.
  await using smtp = await startSmtp();
  await using server = await startTestServer({ SMTP_URL: smtp.url });
  const victim = await signUp(server);
  await smtp.next(victim.email);
  const link = await resetLink(server, smtp, victim.email);
  const change = fetch(
    `${server.url}/api/account/password`,
    json(
      { currentPassword: "correct horse battery", newPassword: "the thief's password!" },
      { Cookie: victim.cookie, Origin: server.url },
    ),
  );
  const reset = await fetch(
    `${server.url}/api/auth/reset`,
    json({ token: tokenOf(link), password: "the owner's new password" }),
  );
  assert.equal(reset.status, 200);
  await reset.body?.cancel();
  const changed = await change;
  await changed.body?.cancel();
  const thiefCookie = sessionCookieOf(changed);
  const logIn = async (password: string) => {
    const response = await fetch(
      `${server.url}/api/auth/login`,
      json({ email: victim.email, password }),
    );
    await response.body?.cancel();
    return response.status;
  };
  assert.equal(await logIn("the owner's new password"), 200, "the owner's reset stands");
  assert.equal(await logIn("the thief's password!"), 401, "the thief's password was not set");
  if (thiefCookie) {
    const me = await fetch(`${server.url}/api/me`, { headers: { Cookie: thiefCookie } });
    await me.body?.cancel();
    assert.equal(me.status, 401, "the thief's session ended with the reset");
  }
});
