/**
 * Slows password guessing: recent failed log-ins are counted per email and per client address,
 * and past a limit further attempts are refused before the password is even checked. Counts
 * live in KV so every instance sees the same ones, and expire with their window.
 */
import { HttpError } from "./http_error.ts";
import { loginFailuresKey } from "./kv_keys.ts";
import { logIn, normalizeEmail, type User } from "./users.ts";

/** How many failures are allowed in which window. */
export interface LoginLimits {
  perAccount: number;
  perAddress: number;
  windowMs: number;
}

type Kind = "email" | "address";

const MAX_COMMIT_ATTEMPTS = 10;

function keysOf(options: { email: string; address: string }): [Kind, string][] {
  return [["email", normalizeEmail(options.email)], ["address", options.address]];
}

function recent(times: number[] | null, now: number, windowMs: number): number[] {
  return (times ?? []).filter((t) => t > now - windowMs);
}

function minutes(ms: number): string {
  const n = Math.max(1, Math.ceil(ms / 60_000));
  return n === 1 ? "1 minute" : `${n} minutes`;
}

/** Throws 429 when the email or the address has used up its failed attempts. */
export async function checkLoginAllowed(
  kv: Deno.Kv,
  options: { email: string; address: string; limits: LoginLimits },
): Promise<void> {
  const { limits } = options;
  const now = Date.now();
  const keys = keysOf(options);
  const entries = await kv.getMany<number[][]>(
    keys.map(([kind, value]) => loginFailuresKey(kind, value)),
  );
  for (const [i, [kind]] of keys.entries()) {
    const times = recent(entries[i].value, now, limits.windowMs);
    const limit = kind === "email" ? limits.perAccount : limits.perAddress;
    if (times.length < limit) continue;
    // The oldest failure that still counts decides when one more attempt is allowed.
    const waitMs = times[times.length - limit] + limits.windowMs - now;
    const whose = kind === "email" ? "this account" : "your network address";
    throw new HttpError(
      429,
      `Cannot log in: too many failed attempts for ${whose}; try again in ${minutes(waitMs)}`,
      { "Retry-After": String(Math.ceil(waitMs / 1000)) },
    );
  }
}

/** Counts one failed attempt against the email and the address. */
export async function recordLoginFailure(
  kv: Deno.Kv,
  options: { email: string; address: string; limits: LoginLimits },
): Promise<void> {
  const { limits } = options;
  const keep = Math.max(limits.perAccount, limits.perAddress);
  for (const [kind, value] of keysOf(options)) {
    const key = loginFailuresKey(kind, value);
    for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS; attempt++) {
      const now = Date.now();
      const entry = await kv.get<number[]>(key);
      const times = [...recent(entry.value, now, limits.windowMs), now].slice(-keep);
      const result = await kv.atomic().check(entry).set(key, times, { expireIn: limits.windowMs })
        .commit();
      if (result.ok) break;
    }
  }
}

/** Forgets an account's failures after a successful log-in (the address keeps its count). */
export async function clearLoginFailures(kv: Deno.Kv, email: string): Promise<void> {
  await kv.delete(loginFailuresKey("email", normalizeEmail(email)));
}

/** Logs in through the guard: 429 past the limits, 401 (counted) on a mismatch. */
export async function guardedLogIn(
  kv: Deno.Kv,
  options: { email: string; password: string; address: string; limits: LoginLimits },
): Promise<User> {
  await checkLoginAllowed(kv, options);
  try {
    const user = await logIn(kv, options);
    await clearLoginFailures(kv, options.email);
    return user;
  } catch (error) {
    if (error instanceof HttpError && error.status === 401) await recordLoginFailure(kv, options);
    throw error;
  }
}
