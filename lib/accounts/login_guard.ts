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
 * - A browser that logged in to the account before carries a device cookie (OWASP's "device
 *   cookies"): it skips both checks above, so strangers guessing the account from anywhere
 *   cannot keep its owner out at all. The device has its own failure budget (the per-account
 *   number); spent, it is just another browser.
 * - Sign-ups per client address within their own window.
 *
 * Counts live in KV so every isolate and instance sees the same ones, and expire with their
 * window. A reservation is released when the password turns out right (the address keeps its
 * other failures; the account's are cleared).
 */
import { HttpError } from "../http/http_error.ts";
import { loginDeviceKey, loginFailuresKey, signupsKey, userByEmailKey } from "../store/kv_keys.ts";
import { randomSecret, sha256Hex } from "./secrets.ts";
import { logIn, normalizeEmail, signUp, type User } from "./users.ts";
import { verifyPassword } from "./passwords.ts";

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

/**
 * A browser that logged in to `email`, the account that used it then, and its failed attempts
 * since its last success. An address can change hands (a change of address or a deletion frees
 * it): a device is trusted only for the account it logged in to, so whoever held the address
 * before cannot keep a cookie that skips the limits of its next owner. (A record without
 * `userId`, written before, is trusted no more.)
 */
interface Device {
  email: string;
  userId?: string;
  failures: number;
}

/** The cookie that carries a browser's device value. */
export const DEVICE_COOKIE = "websocks_device";

/** How long a browser is remembered after its last successful log-in. */
export const DEVICE_TTL_MS = 180 * 86400_000;

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
  email: string;
  /** The account that used the email when the attempt was reserved (null: none). */
  userId: string | null;
  emailKey: Deno.KvKey;
  addressKey: Deno.KvKey;
  /** The device cookie's key when it was trusted for this attempt. */
  deviceKey: Deno.KvKey | null;
  at: number;
}

/**
 * Reserves one log-in attempt for the email and the address (and the device, when the caller
 * presents one that logged in to this email before), or throws 429 when the address is over
 * its limit or the account must still wait. The attempt counts as a failure until
 * `settleLogin` says otherwise.
 */
export async function reserveLogin(
  kv: Deno.Kv,
  options: { email: string; address: string; device?: string | null; limits: LoginLimits },
): Promise<Reservation> {
  const { limits } = options;
  const email = normalizeEmail(options.email);
  const emailKey = loginFailuresKey("email", email);
  const addressKey = loginFailuresKey("address", options.address);
  const knownKey = options.device ? loginDeviceKey(await sha256Hex(options.device)) : null;
  for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS; attempt++) {
    const now = Date.now();
    const keys = [emailKey, addressKey, userByEmailKey(email), ...(knownKey ? [knownKey] : [])];
    const [emailEntry, addressEntry, ownerEntry, deviceEntry] = await kv.getMany(keys) as [
      Deno.KvEntryMaybe<AccountFailures | number[]>,
      Deno.KvEntryMaybe<number[]>,
      Deno.KvEntryMaybe<string>,
      Deno.KvEntryMaybe<Device> | undefined,
    ];
    const userId = ownerEntry.value;
    const known = deviceEntry?.value ?? null;
    const trusted = known !== null && known.email === email && userId !== null &&
      known.userId === userId && known.failures < limits.perAccount;
    const times = recent(addressEntry.value, now, limits.windowMs);
    const account = accountFailures(emailEntry.value, now, limits.windowMs);
    if (!trusted) {
      if (times.length >= limits.perAddress) {
        // The oldest failure that still counts decides when one more attempt is allowed.
        throw tooMany(
          "Cannot log in: too many failed attempts for your network address",
          times[times.length - limits.perAddress] + limits.windowMs - now,
        );
      }
      const waitMs = accountWaitMs(account, limits, now);
      if (waitMs > 0) {
        throw tooMany("Cannot log in: too many failed attempts for this account", waitMs);
      }
    }
    const op = kv.atomic()
      .check(emailEntry, addressEntry)
      .set(addressKey, [...times, now], { expireIn: limits.windowMs })
      .set(emailKey, { failures: account.failures + 1, lastAt: now } satisfies AccountFailures, {
        expireIn: limits.windowMs,
      });
    if (trusted) {
      op.check(deviceEntry!).set(
        deviceEntry!.key,
        {
          email,
          userId,
          failures: known.failures + 1,
        } satisfies Device,
        { expireIn: DEVICE_TTL_MS },
      );
    }
    if ((await op.commit()).ok) {
      return {
        email,
        userId,
        emailKey,
        addressKey,
        deviceKey: trusted ? knownKey : null,
        at: now,
      };
    }
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
 * Remembers a browser that proved it knows the password of `email` (the account `userId`);
 * returns its cookie value.
 */
async function rememberDevice(
  kv: Deno.Kv,
  account: { email: string; userId: string },
  replaces: Deno.KvKey | null = null,
): Promise<string> {
  const device = randomSecret(32);
  const op = kv.atomic().set(
    loginDeviceKey(await sha256Hex(device)),
    {
      email: normalizeEmail(account.email),
      userId: account.userId,
      failures: 0,
    } satisfies Device,
    { expireIn: DEVICE_TTL_MS },
  );
  if (replaces) op.delete(replaces);
  await op.commit();
  return device;
}

/**
 * Settles a reserved attempt: "failed" keeps it as a failure (the account's delay counts from
 * now), "succeeded" clears the account's failures, releases the address's reservation and
 * remembers the browser (returning its device cookie value), "void" (the check never
 * happened) releases everything.
 */
export async function settleLogin(
  kv: Deno.Kv,
  reservation: Reservation,
  outcome: "failed" | "succeeded" | "void",
  limits: LoginLimits,
): Promise<string | null> {
  const { emailKey, addressKey, deviceKey, at } = reservation;
  if (outcome === "failed") {
    await update<AccountFailures | number[]>(kv, emailKey, (value) => {
      const now = Date.now();
      const account = accountFailures(value, now, limits.windowMs);
      // Another attempt may have cleared the account meanwhile; this failure still counts.
      const failures = Math.max(1, account.failures);
      return { value: { failures, lastAt: now }, expireIn: limits.windowMs };
    });
    return null;
  }
  let device: string | null = null;
  if (outcome === "succeeded") {
    await kv.delete(emailKey);
    // A fresh value at every success: a cookie copied earlier stops being trusted.
    device = reservation.userId === null ? null : await rememberDevice(
      kv,
      { email: reservation.email, userId: reservation.userId },
      deviceKey,
    );
  } else {
    await update<AccountFailures | number[]>(kv, emailKey, (value) => {
      const account = accountFailures(value, Date.now(), limits.windowMs);
      if (account.failures <= 1) return null;
      return { value: { ...account, failures: account.failures - 1 }, expireIn: limits.windowMs };
    });
    if (deviceKey) {
      await update<Device>(kv, deviceKey, (known) =>
        known
          ? {
            value: { ...known, failures: Math.max(0, known.failures - 1) },
            expireIn: DEVICE_TTL_MS,
          }
          : null);
    }
  }
  await update<number[]>(kv, addressKey, (times) => withoutAttempt(times, at, limits.windowMs));
  return device;
}

/**
 * Logs in through the guard: 429 past the limits, 401 (counted) on a mismatch. `device` is the
 * caller's device cookie, if any; the answer carries the value to set it to.
 */
export async function guardedLogIn(
  kv: Deno.Kv,
  options: {
    email: string;
    password: string;
    address: string;
    device?: string | null;
    limits: LoginLimits;
  },
): Promise<{ user: User; device: string }> {
  const reservation = await reserveLogin(kv, options);
  let user: User;
  try {
    user = await logIn(kv, options);
  } catch (error) {
    const failed = error instanceof HttpError && error.status === 401;
    await settleLogin(kv, reservation, failed ? "failed" : "void", options.limits);
    throw error;
  }
  const device = await settleLogin(kv, reservation, "succeeded", options.limits);
  return { user, device: device! };
}

/**
 * Signs up through the guard: the attempt is reserved against the address's sign-ups before
 * the password is hashed, and 429 past the limit. An email already taken still counts (it cost
 * a hash); a failure of ours does not. The answer carries the new browser's device cookie.
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
): Promise<Awaited<ReturnType<typeof signUp>> & { device: string }> {
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
    const created = await signUp(kv, options);
    return {
      ...created,
      device: await rememberDevice(kv, { email: created.user.email, userId: created.user.id }),
    };
  } catch (error) {
    if (!(error instanceof HttpError) || error.status >= 500) {
      await update<number[]>(kv, key, (times) => withoutAttempt(times, at, limits.windowMs));
    }
    throw error;
  }
}

/**
 * Checks a signed-in user's password before a change that needs it (a new password, deleting the
 * account), through the same guard as log-in: a stolen session cannot guess the password faster
 * than a stranger at the log-in form. 403 (counted) when it is wrong, 429 past the limits, with
 * `action` in the message. With `remember` a right password refreshes the browser's device
 * cookie (the value to set is returned); without it the attempt is simply released.
 */
export async function confirmPassword(
  kv: Deno.Kv,
  options: {
    user: User;
    password: string;
    address: string;
    device?: string | null;
    limits: LoginLimits;
    action: string;
    remember: boolean;
  },
): Promise<string | null> {
  let reservation: Reservation;
  try {
    reservation = await reserveLogin(kv, { ...options, email: options.user.email });
  } catch (error) {
    if (error instanceof HttpError && error.status === 429) {
      throw new HttpError(
        429,
        error.message.replace(/^Cannot log in/, `Cannot ${options.action}`),
        error.headers,
      );
    }
    throw error;
  }
  if (!(await verifyPassword(options.password, options.user.passwordHash))) {
    await settleLogin(kv, reservation, "failed", options.limits);
    throw new HttpError(403, `Cannot ${options.action}: the current password is wrong`);
  }
  return await settleLogin(
    kv,
    reservation,
    options.remember ? "succeeded" : "void",
    options.limits,
  );
}
