/**
 * What accounts do by mail: verify the address after sign-up, reset a forgotten password,
 * change the address (confirmed at the new one, the old one told), and the notices (quota,
 * failed payment, invoice). Each link's secret is a mail token (mail_tokens.ts), spent in the
 * same commit as the change it makes.
 */
import type { Broker } from "../fanout/broker.ts";
import { log } from "../observe/log.ts";
import { HttpError } from "../http/http_error.ts";
import { hashPassword, verifyPassword } from "../accounts/passwords.ts";
import { endUserSessions } from "../accounts/sessions.ts";
import { listTokens, revokeToken } from "../accounts/tokens.ts";
import { type LoginLimits, reserveLogin, settleLogin } from "../accounts/login_guard.ts";
import { normalizeEmail, type User } from "../accounts/users.ts";
import {
  mailNoticeKey,
  mailNoticesOfUserPrefix,
  mailRateKey,
  mailTokenKey,
  mailTokensOfUserPrefix,
  userByEmailKey,
  userKey,
} from "../store/kv_keys.ts";
import type { Mailer } from "./mailer.ts";
import type { MailMessage } from "./outbox.ts";
import { countMailRequest, dropMailsOf } from "./outbox.ts";
import {
  findMailToken,
  type FoundMailToken,
  type MailTokenKind,
  newMailToken,
  retireMailToken,
  spendMailToken,
} from "./mail_tokens.ts";
import {
  changeEmailMail,
  emailChangedMail,
  invoiceMail,
  paymentFailedMail,
  quotaMail,
  resetMail,
  tokenLink,
  verifyMail,
} from "./templates.ts";

/** What the flows need of the services. */
export interface MailDeps {
  kv: Deno.Kv;
  broker: Broker;
  mail: Mailer;
  config: { publicUrl: string };
}

/** Pages the links open (routes/mail_pages.tsx serves them). */
export const MAIL_PATHS = {
  verify: "/verify-email",
  reset: "/reset-password",
  change: "/confirm-email",
} as const;

/** What a reset request answers, whether or not the address has an account. */
export const FORGOT_ANSWER = "If an account uses that address, we sent it a link to choose a " +
  "new password. The link works once, for 1 hour. No mail? Check your spam folder, or ask " +
  "again in a few minutes.";

/**
 * Whether a notice to `user`'s address counts against the MAILS_PER_* limits: when nobody
 * proved the address, whoever signed up with it may not own it, and signing up with a stranger's
 * address (then moving the account off it, or crossing its quota) must not mail them more than
 * the limits allow. Notices to a verified address are never held back.
 */
const noticeLimited = (user: User) => !user.emailVerifiedAt;

/** How long a sent notice is remembered: past the month it is about. */
const NOTICE_MEMORY_MS = 62 * 86400_000;

const ACTIONS: Record<MailTokenKind, string> = {
  verify: "verify your email address",
  reset: "reset your password",
  change: "change your email address",
};

/** A link's token that does not work, as a 400 that says what to do. */
function linkProblem(kind: MailTokenKind, problem: "invalid" | "expired"): HttpError {
  const again = kind === "reset"
    ? "ask for a new one on the “Forgot password?” page"
    : kind === "verify"
    ? "send a new one from your dashboard"
    : "ask for the change again";
  return new HttpError(
    400,
    problem === "expired"
      ? `Cannot ${ACTIONS[kind]}: the link has expired; ${again}`
      : `Cannot ${ACTIONS[kind]}: the link is not valid (already used, replaced by a newer ` +
        `one, or mistyped); ${again}`,
  );
}

/** The live token for a link's secret and its user, or a 400 naming the problem. */
async function tokenAndUser(
  deps: MailDeps,
  secret: string,
  kind: MailTokenKind,
): Promise<{ found: FoundMailToken; user: Deno.KvEntry<User> }> {
  const found = await findMailToken(deps.kv, { secret, kind, now: deps.mail.now() });
  if ("problem" in found) throw linkProblem(kind, found.problem);
  const user = await deps.kv.get<User>(userKey(found.token.userId));
  // A verify or reset link is for the address it went to: moved since, it is void.
  if (!user.value || (kind !== "change" && user.value.email !== found.token.email)) {
    throw linkProblem(kind, "invalid");
  }
  return { found, user: user as Deno.KvEntry<User> };
}

/**
 * Mails a link (counted against the MAILS_PER_* limits). Its secret goes live in the commit that
 * queues the mail, retiring the user's previous link of its kind then: a mail the limits hold
 * back retires nothing, so nobody can void a user's live link by asking past the limit.
 * False when a limit held it back.
 */
async function mailLink(
  deps: MailDeps,
  options: {
    kind: MailTokenKind;
    userId: string;
    email: string;
    message: (url: string) => MailMessage;
  },
): Promise<boolean> {
  const link = await newMailToken(deps.kv, {
    kind: options.kind,
    userId: options.userId,
    email: options.email,
    now: deps.mail.now(),
  });
  const url = tokenLink(deps.config.publicUrl, MAIL_PATHS[options.kind], link.secret);
  return await deps.mail.queue(options.message(url), {
    kind: options.kind,
    userId: options.userId,
    limited: true,
    alongside: link.write,
  });
}

/** Mails a verification link; false when a mail limit held it back. 409 when verified already. */
export async function sendVerification(deps: MailDeps, user: User): Promise<boolean> {
  if (user.emailVerifiedAt) {
    throw new HttpError(409, "Cannot send a verification mail: your address is verified already");
  }
  return await mailLink(deps, {
    kind: "verify",
    userId: user.id,
    email: user.email,
    message: (url) => verifyMail({ to: user.email, url }),
  });
}

/** The verification mail right after sign-up: a failure to queue it never fails the sign-up. */
export async function verifyAfterSignUp(deps: MailDeps, user: User): Promise<void> {
  try {
    await sendVerification(deps, user);
  } catch (error) {
    log.error("queueing the verification mail failed", error, { userId: user.id });
  }
}

/** Checks a link without spending it (GET: mail scanners open links); 400 when it does not work. */
export async function checkMailLink(
  deps: MailDeps,
  options: { secret: string; kind: MailTokenKind },
): Promise<{ email: string }> {
  const { found } = await tokenAndUser(deps, options.secret, options.kind);
  return { email: found.token.email };
}

/** Spends a verification link: the address is verified. */
export async function verifyEmail(deps: MailDeps, secret: string): Promise<User> {
  for (;;) {
    const { found, user } = await tokenAndUser(deps, secret, "verify");
    const verified: User = { ...user.value, emailVerifiedAt: deps.mail.now().toISOString() };
    const op = spendMailToken(deps.kv.atomic(), found).check(user).set(user.key, verified);
    if ((await op.commit()).ok) return verified;
  }
}

/**
 * Mails a reset link when the address has an account. Says nothing either way: the caller
 * answers the same for every address.
 */
export async function requestPasswordReset(deps: MailDeps, email: string): Promise<void> {
  const address = normalizeEmail(email);
  const userId = (await deps.kv.get<string>(userByEmailKey(address))).value;
  const user = userId ? (await deps.kv.get<User>(userKey(userId))).value : null;
  if (!user) return;
  await mailLink(deps, {
    kind: "reset",
    userId: user.id,
    email: user.email,
    message: (url) => resetMail({ to: user.email, url }),
  });
}

/**
 * A visitor's "Forgot password?": counted against their network address first (429 past
 * MAILS_PER_CLIENT_PER_HOUR, whatever address they ask about), then the reset is started
 * without waiting for it, so the answer takes as long for every address.
 */
export async function startPasswordReset(
  deps: MailDeps,
  options: { email: string; client: string; perClientPerHour: number },
): Promise<void> {
  await countMailRequest(deps.kv, {
    by: "client",
    id: options.client,
    perHour: options.perClientPerHour,
    action: "send reset link",
  });
  // Started once the answer is on its way: run at once, a known address's reads, writes and
  // log line delayed its answer (p50 2.69 ms against 2.05 for an unknown one, 100 of each).
  setTimeout(() => {
    requestPasswordReset(deps, options.email).catch((error) =>
      log.error("queueing a password reset mail failed", error)
    );
  }, 0);
}

/**
 * Spends a reset link: sets the password, marks the address verified (the link proved it),
 * voids a pending change of address (whoever asked for it knew the old password: a thief must
 * not move the account after its owner recovered it) and ends every session of the user,
 * closing the live streams they opened. The account's API tokens are revoked too unless
 * `keepTokens`, and always when the link is the first proof of the address: anyone may sign up
 * with a stranger's address, keep the token, and wait for its owner to recover the account;
 * and once the owner has verified the address (the mail asked them to), nothing tells the
 * tokens the owner made from the ones a squatter made, so only the owner can say to keep them.
 * The caller starts a fresh session for whoever reset it.
 */
export async function resetPassword(
  deps: MailDeps,
  options: { secret: string; password: string; keepTokens?: boolean },
): Promise<User> {
  // The link is checked before hashing: without one, nobody makes us hash.
  await tokenAndUser(deps, options.secret, "reset");
  const passwordHash = await hashPassword(options.password);
  for (;;) {
    const { found, user } = await tokenAndUser(deps, options.secret, "reset");
    // Every session, and unless kept every token, is void in this very commit; deleting them
    // after takes many commits, and one could mint another meanwhile (credentialCurrent).
    const revokeTokens = !options.keepTokens || !user.value.emailVerifiedAt;
    const updated: User = {
      ...user.value,
      passwordHash,
      emailVerifiedAt: user.value.emailVerifiedAt ?? deps.mail.now().toISOString(),
      sessionGeneration: (user.value.sessionGeneration ?? 0) + 1,
      tokenGeneration: (user.value.tokenGeneration ?? 0) + (revokeTokens ? 1 : 0),
    };
    const retireChange = await retireMailToken(deps.kv, { userId: updated.id, kind: "change" });
    const op = spendMailToken(deps.kv.atomic(), found).check(user).set(user.key, updated);
    retireChange(op);
    if ((await op.commit()).ok) {
      await endUserSessions(deps.kv, deps.broker, { userId: updated.id });
      if (revokeTokens) await revokeAllTokens(deps, updated.id);
      return updated;
    }
  }
}

/** Revokes every API token of a user, closing the streams they opened. */
async function revokeAllTokens(deps: MailDeps, userId: string): Promise<void> {
  for (const token of await listTokens(deps.kv, userId)) {
    try {
      await revokeToken(deps.kv, { userId, tokenId: token.id, broker: deps.broker });
    } catch (error) {
      // Revoked meanwhile (404): what was wanted.
      if (!(error instanceof HttpError) || error.status !== 404) throw error;
    }
  }
}

/**
 * Checks the current password through the log-in guard, so a stolen session cannot guess it
 * faster than the log-in form allows: 401 (counted as a failed log-in), 429 past the limits.
 */
async function checkPassword(
  kv: Deno.Kv,
  options: { user: User; password: string; address: string; limits: LoginLimits; action: string },
): Promise<void> {
  let reservation;
  try {
    reservation = await reserveLogin(kv, {
      email: options.user.email,
      address: options.address,
      limits: options.limits,
    });
  } catch (error) {
    if (!(error instanceof HttpError) || error.status !== 429) throw error;
    const wait = error.message.replace(/^.*; try again/, "try again");
    throw new HttpError(
      429,
      `Cannot ${options.action}: too many wrong passwords for this account or network address; ${wait}`,
      error.headers,
    );
  }
  let ok = false;
  try {
    ok = await verifyPassword(options.password, options.user.passwordHash);
  } finally {
    // A success releases the attempt without remembering a device: nobody logged in.
    await settleLogin(kv, reservation, ok ? "void" : "failed", options.limits);
  }
  if (!ok) throw new HttpError(401, `Cannot ${options.action}: the current password is wrong`);
}

/**
 * Asks to move the account to `newEmail` (the current password required): mails a link to the
 * new address; nothing changes until it is followed. 429 when a mail limit holds it back. Each
 * request counts against MAILS_PER_ACCOUNT_PER_HOUR before the answer says whether the address
 * is taken (409), so an account is no unlimited oracle of who has an account.
 */
export async function requestEmailChange(
  deps: MailDeps,
  options: {
    user: User;
    newEmail: string;
    password: string;
    /** The caller's address and the log-in limits: wrong passwords count as failed log-ins. */
    address: string;
    limits: LoginLimits;
    /** Change requests per account per hour (MAILS_PER_ACCOUNT_PER_HOUR). */
    perAccountPerHour: number;
  },
): Promise<void> {
  const { user } = options;
  const newEmail = normalizeEmail(options.newEmail);
  await checkPassword(deps.kv, { ...options, action: "change email" });
  if (newEmail === user.email) {
    throw new HttpError(400, "Cannot change email: that is the address the account uses now");
  }
  await countMailRequest(deps.kv, {
    by: "change",
    id: user.id,
    perHour: options.perAccountPerHour,
    action: "change email",
  });
  if ((await deps.kv.get(userByEmailKey(newEmail))).versionstamp) {
    throw new HttpError(409, "Cannot change email: another account uses that address");
  }
  const queued = await mailLink(deps, {
    kind: "change",
    userId: user.id,
    email: newEmail,
    message: (url) => changeEmailMail({ to: newEmail, from: user.email, url }),
  });
  if (!queued) {
    throw new HttpError(
      429,
      "Cannot change email: too many mails were sent to that address or for this account in " +
        "the last hour; try again later",
      { "Retry-After": "3600" },
    );
  }
}

/**
 * Spends a change link: the account, its verified address and the email index move in one
 * commit that checks the new address is still free; the old address is told.
 */
export async function confirmEmailChange(deps: MailDeps, secret: string): Promise<User> {
  for (;;) {
    const { found, user } = await tokenAndUser(deps, secret, "change");
    const oldEmail = user.value.email;
    const newEmail = found.token.email;
    const updated: User = {
      ...user.value,
      email: newEmail,
      emailVerifiedAt: deps.mail.now().toISOString(),
    };
    const taken = await deps.kv.get<string>(userByEmailKey(newEmail));
    if (taken.value && taken.value !== updated.id) {
      throw new HttpError(409, `Cannot change email: another account uses ${newEmail} now`);
    }
    const op = spendMailToken(deps.kv.atomic(), found)
      .check(user)
      .check(taken)
      .set(user.key, updated)
      .delete(userByEmailKey(oldEmail))
      .set(userByEmailKey(newEmail), updated.id);
    if (!(await op.commit()).ok) continue;
    await deps.mail.queue(
      emailChangedMail({ to: oldEmail, newEmail, url: `${deps.config.publicUrl}/login` }),
      { kind: "email_changed", userId: updated.id, limited: noticeLimited(user.value) },
    );
    return updated;
  }
}

/**
 * Mails a quota notice once per user, level and month. Called by the group commit when a
 * commit crosses 80 % or 100 %: no KV access per webhook, a few when a level is crossed.
 */
export async function notifyQuota(
  deps: MailDeps,
  options: {
    userId: string;
    level: number;
    used: number;
    limit: number;
    resetsAt: string;
    month: string;
  },
): Promise<void> {
  const user = (await deps.kv.get<User>(userKey(options.userId))).value;
  if (!user) return;
  await deps.mail.queue(
    quotaMail({ ...options, to: user.email, url: `${deps.config.publicUrl}/dashboard/usage` }),
    {
      kind: "quota",
      userId: user.id,
      limited: noticeLimited(user),
      once: {
        key: mailNoticeKey(user.id, `quota-${options.level}-${options.month}`),
        expireIn: NOTICE_MEMORY_MS,
      },
    },
  );
}

/** Mails the owner of a failed payment (once per Stripe event). */
export async function notifyPaymentFailed(
  deps: MailDeps,
  options: { user: User; eventId: string },
): Promise<void> {
  await deps.mail.queue(
    paymentFailedMail({
      to: options.user.email,
      graceEndsAt: options.user.graceEndsAt ?? null,
      url: `${deps.config.publicUrl}/dashboard/usage`,
    }),
    {
      kind: "payment_failed",
      userId: options.user.id,
      limited: noticeLimited(options.user),
      once: {
        key: mailNoticeKey(options.user.id, `payment-failed-${options.eventId}`),
        expireIn: NOTICE_MEMORY_MS,
      },
    },
  );
}

/**
 * Mails a new monthly invoice (once per user and month) when it asks for money: a Free
 * account's invoice of $0 every month would only teach people to ignore our mail.
 */
export async function notifyInvoice(
  deps: MailDeps,
  options: { user: User; period: string; amountUsd: number; accepted: number },
): Promise<void> {
  if (options.amountUsd <= 0) return;
  await deps.mail.queue(
    invoiceMail({
      to: options.user.email,
      period: options.period,
      amountUsd: options.amountUsd,
      accepted: options.accepted,
      url: `${deps.config.publicUrl}/dashboard/usage`,
    }),
    {
      kind: "invoice",
      userId: options.user.id,
      limited: noticeLimited(options.user),
      once: {
        key: mailNoticeKey(options.user.id, `invoice-${options.period}`),
        expireIn: NOTICE_MEMORY_MS,
      },
    },
  );
}

/**
 * Removes every mail key of a user (for account deletion): live links and their index, sent
 * notices, queued mails, and the account's hourly counters. The address's counter stays until
 * its hour ends (keyed by a hash, it names nobody): deleting the account must not let its
 * owner mail the address again at once.
 */
export async function deleteMailDataOf(
  kv: Deno.Kv,
  options: { userId: string; email: string },
): Promise<void> {
  for await (const entry of kv.list<string>({ prefix: mailTokensOfUserPrefix(options.userId) })) {
    await kv.atomic().delete(mailTokenKey(entry.value)).delete(entry.key).commit();
  }
  for await (const entry of kv.list({ prefix: mailNoticesOfUserPrefix(options.userId) })) {
    await kv.delete(entry.key);
  }
  await dropMailsOf(kv, options.userId);
  await kv.atomic()
    .delete(mailRateKey("account", options.userId))
    .delete(mailRateKey("change", options.userId))
    .commit();
}
