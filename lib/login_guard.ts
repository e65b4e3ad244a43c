/**
 * Slows password guessing and sign-up floods. Every attempt is reserved in KV, in one atomic
 * commit that checks the counts it read, before the password is hashed: concurrent attempts
 * cannot all slip past a limit, and a refused attempt costs no hash.
 *
 * - Per client address (first): failed log-ins within the window; past the limit the address
 *   is refused until its oldest counted failure leaves the window.
 * - Per account: past a few failures each further attempt must wait a delay that doubles with
 *   every failure, up to a cap. Never a hard lock, so a stranger cannot lock the owner out for
 *   longer than the current delay, and a successful log-in from anywhere clears it.
 * - Sign-ups per client address within their own window.
 *
 * Counts live in KV so every isolate and instance sees the same ones, and expire with their
 * window. A reservation is released when the password turns out right (the address keeps its
 * other failures; the account's are cleared).
 */
import { HttpError } from "./http_error.ts";
import { loginFailuresKey, signupsKey } from "./kv_keys.ts";
import { logIn, normalizeEmail, signUp, type User } from "./users.ts";

/** How many failures are allowed, in which window, and how an account's delay grows. */
export interface LoginLimits {
  perAccount: number;
  perAddress: number;
  windowMs: number;
  delayBaseMs: number;
  delayMaxMs: number;
}

/** How many sign-ups one address may make in which window. */
export interface SignupLimits {
  perAddress: number;
  windowMs: number;
}

/** An account's recent failures (reserved attempts count until they succeed). */
interface AccountFailures {
  failures: number;
  /** When the last failure happened, or the last attempt was reserved. */
  lastAt: number;
}

/** Commits lost to concurrent attempts before this one gives up with a 429. */
const MAX_COMMIT_ATTEMPTS = 50;

function recent(times: number[] | null, now: number, windowMs: number): number[] {
  return (Array.isArray(times) ? times : []).filter((t) => t > now - windowMs);
}

function accountFailures(
  value: AccountFailures | number[] | null,
  now: number,
  windowMs: number,
): AccountFailures {
  // Records written before the delay existed were lists of failure times.
  const record = Array.isArray(value)
    ? { failures: value.length, lastAt: Math.max(0, ...value) }
    : value;
  return record && record.lastAt > now - windowMs ? record : { failures: 0, lastAt: 0 };
}

/** How long the account must still wait before its next attempt (0: none). */
function accountWaitMs(account: AccountFailures, limits: LoginLimits, now: number): number {
  const over = account.failures - limits.perAccount;
  if (over < 0) return 0;
  const delay = Math.min(limits.delayMaxMs, limits.delayBaseMs * 2 ** Math.min(over, 30));
  return Math.max(0, account.lastAt + delay - now);
}

/** "3 seconds", "1 minute", "15 minutes": rounded up, so waiting that long is enough. */
function duration(ms: number): string {
  if (ms < 60_000) {
    const n = Math.max(1, Math.ceil(ms / 1000));
    return n === 1 ? "1 second" : `${n} seconds`;
  }
  const n = Math.ceil(ms / 60_000);
  return n === 1 ? "1 minute" : `${n} minutes`;
}

function tooMany(message: string, waitMs: number): HttpError {
  return new HttpError(429, `${message}; try again in ${duration(waitMs)}`, {
    "Retry-After": String(Math.max(1, Math.ceil(waitMs / 1000))),
  });
}

/** The reserved attempt, to settle once the password was checked. */
interface Reservation {
  emailKey: Deno.KvKey;
  addressKey: Deno.KvKey;
  at: number;
}

/**
 * Reserves one log-in attempt for the email and the address, or throws 429 when the address
 * is over its limit or the account must still wait. The attempt counts as a failure until
 * `settleLogin` says otherwise.
 */
export async function reserveLogin(
  kv: Deno.Kv,
  options: { email: string; address: string; limits: LoginLimits },
): Promise<Reservation> {
  const { limits } = options;
  const emailKey = loginFailuresKey("email", normalizeEmail(options.email));
  const addressKey = loginFailuresKey("address", options.address);
  for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS; attempt++) {
    const now = Date.now();
    const [emailEntry, addressEntry] = await kv.getMany<[AccountFailures | number[], number[]]>([
      emailKey,
      addressKey,
    ]);
    const times = recent(addressEntry.value, now, limits.windowMs);
    if (times.length >= limits.perAddress) {
      // The oldest failure that still counts decides when one more attempt is allowed.
      throw tooMany(
        "Cannot log in: too many failed attempts for your network address",
        times[times.length - limits.perAddress] + limits.windowMs - now,
      );
    }
    const account = accountFailures(emailEntry.value, now, limits.windowMs);
    const waitMs = accountWaitMs(account, limits, now);
    if (waitMs > 0) {
      throw tooMany("Cannot log in: too many failed attempts for this account", waitMs);
    }
    const reserved = await kv.atomic()
      .check(emailEntry, addressEntry)
      .set(addressKey, [...times, now], { expireIn: limits.windowMs })
      .set(emailKey, { failures: account.failures + 1, lastAt: now } satisfies AccountFailures, {
        expireIn: limits.windowMs,
      })
      .commit();
    if (reserved.ok) return { emailKey, addressKey, at: now };
  }
  throw tooMany("Cannot log in: too many attempts at once for this account", 1000);
}

async function update<T>(
  kv: Deno.Kv,
  key: Deno.KvKey,
  change: (value: T | null) => { value: T; expireIn: number } | null,
): Promise<void> {
  for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS; attempt++) {
    const entry = await kv.get<T>(key);
    const next = change(entry.value);
    const op = kv.atomic().check(entry);
    if (next) op.set(key, next.value, { expireIn: next.expireIn });
    else op.delete(key);
    if ((await op.commit()).ok) return;
  }
}

/** Drops one reserved attempt from an address's list. */
function withoutAttempt(times: number[] | null, at: number, windowMs: number) {
  const list = recent(times, Date.now(), windowMs);
  const i = list.lastIndexOf(at);
  if (i !== -1) list.splice(i, 1);
  return list.length ? { value: list, expireIn: windowMs } : null;
}

/**
 * Settles a reserved attempt: "failed" keeps it as a failure (the account's delay counts from
 * now), "succeeded" clears the account's failures and releases the address's reservation,
 * "void" (the check never happened) releases both.
 */
export async function settleLogin(
  kv: Deno.Kv,
  reservation: Reservation,
  outcome: "failed" | "succeeded" | "void",
  limits: LoginLimits,
): Promise<void> {
  const { emailKey, addressKey, at } = reservation;
  if (outcome === "failed") {
    await update<AccountFailures | number[]>(kv, emailKey, (value) => {
      const now = Date.now();
      const account = accountFailures(value, now, limits.windowMs);
      // Another attempt may have cleared the account meanwhile; this failure still counts.
      const failures = Math.max(1, account.failures);
      return { value: { failures, lastAt: now }, expireIn: limits.windowMs };
    });
    return;
  }
  if (outcome === "succeeded") {
    await kv.delete(emailKey);
  } else {
    await update<AccountFailures | number[]>(kv, emailKey, (value) => {
      const account = accountFailures(value, Date.now(), limits.windowMs);
      if (account.failures <= 1) return null;
      return { value: { ...account, failures: account.failures - 1 }, expireIn: limits.windowMs };
    });
  }
  await update<number[]>(kv, addressKey, (times) => withoutAttempt(times, at, limits.windowMs));
}

/** Logs in through the guard: 429 past the limits, 401 (counted) on a mismatch. */
export async function guardedLogIn(
  kv: Deno.Kv,
  options: { email: string; password: string; address: string; limits: LoginLimits },
): Promise<User> {
  const reservation = await reserveLogin(kv, options);
  let user: User;
  try {
    user = await logIn(kv, options);
  } catch (error) {
    const failed = error instanceof HttpError && error.status === 401;
    await settleLogin(kv, reservation, failed ? "failed" : "void", options.limits);
    throw error;
  }
  await settleLogin(kv, reservation, "succeeded", options.limits);
  return user;
}

/**
 * Signs up through the guard: the attempt is reserved against the address's sign-ups before
 * the password is hashed, and 429 past the limit. An email already taken still counts (it cost
 * a hash); a failure of ours does not.
 */
export async function guardedSignUp(
  kv: Deno.Kv,
  options: {
    email: string;
    password: string;
    monthlyLimit: number;
    address: string;
    limits: SignupLimits;
  },
): Promise<Awaited<ReturnType<typeof signUp>>> {
  const { limits } = options;
  const key = signupsKey(options.address);
  let at = 0;
  for (let attempt = 0; !at; attempt++) {
    const now = Date.now();
    const entry = await kv.get<number[]>(key);
    const times = recent(entry.value, now, limits.windowMs);
    if (times.length >= limits.perAddress || attempt >= MAX_COMMIT_ATTEMPTS) {
      throw tooMany(
        "Cannot sign up: too many accounts created from your network address",
        times.length >= limits.perAddress
          ? times[times.length - limits.perAddress] + limits.windowMs - now
          : 1000,
      );
    }
    const reserved = await kv.atomic().check(entry)
      .set(key, [...times, now], { expireIn: limits.windowMs }).commit();
    if (reserved.ok) at = now;
  }
  try {
    return await signUp(kv, options);
  } catch (error) {
    if (!(error instanceof HttpError) || error.status >= 500) {
      await update<number[]>(kv, key, (times) => withoutAttempt(times, at, limits.windowMs));
    }
    throw error;
  }
}
