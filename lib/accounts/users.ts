/** Accounts: sign-up creates the user, a first endpoint and a first token in one commit. */
import { DUMMY_HASH, hashPassword, verifyPassword } from "./passwords.ts";
import { type Endpoint, newEndpoint, writeEndpoint } from "../endpoints/endpoints.ts";
import { newToken, type Token, writeToken } from "./tokens.ts";
import { userByEmailKey, userKey } from "../store/kv_keys.ts";
import { HttpError } from "../http/http_error.ts";
import type { PLANS, PublicUser } from "../shared/wire.ts";

/** Plans a user can be on. */
export type Plan = typeof PLANS[number];

/** A stored user. `monthlyLimit` is the quota the ingest gate enforces (null: unlimited). */
export interface User {
  id: string;
  email: string;
  passwordHash: string;
  plan: Plan;
  monthlyLimit: number | null;
  /** The cap the user set (null or absent: none); billing.ts derives monthlyLimit from it. */
  monthlyCap?: number | null;
  /** Stripe's ids once the user went through Checkout (stripe.ts). */
  stripeCustomerId?: string | null;
  stripeSubscriptionId?: string | null;
  /** After a failed payment: when Pro falls back to Free limits unless a payment succeeds. */
  graceEndsAt?: string | null;
  /** When a mailed link proved the address (lib/mail/); absent or null: not verified. */
  emailVerifiedAt?: string | null;
  /**
   * Bumped by a password reset that revokes the tokens: a token of another generation is void
   * (auth.ts credentialCurrent). Absent: 0.
   */
  tokenGeneration?: number;
  /** Bumped by a password reset, which ends every session: the same for sessions. */
  sessionGeneration?: number;
  createdAt: string;
}

/** A user as the API shows it (its one definition is lib/shared/wire.ts). */
export type { PublicUser };

/**
 * Whether two versions of a user hold the same values (an absent optional field is null): a
 * change that changes nothing is not written, since every shared commit of the account's
 * webhooks checks the record and a write makes them conflict.
 */
export function sameUser(a: User, b: User): boolean {
  const fields = new Set([...Object.keys(a), ...Object.keys(b)] as (keyof User)[]);
  for (const field of fields) if ((a[field] ?? null) !== (b[field] ?? null)) return false;
  return true;
}

/** Lowercases and trims an email so lookups ignore case. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Creates an account; 409 when the email is taken. */
export async function signUp(
  kv: Deno.Kv,
  options: { email: string; password: string; monthlyLimit: number },
): Promise<{ user: User; endpoint: Endpoint; token: Token; tokenValue: string }> {
  const email = normalizeEmail(options.email);
  const user: User = {
    id: crypto.randomUUID(),
    email,
    passwordHash: await hashPassword(options.password),
    plan: "free",
    monthlyLimit: options.monthlyLimit,
    emailVerifiedAt: null,
    createdAt: new Date().toISOString(),
  };
  const endpoint = newEndpoint(user.id, "default");
  const { token, value } = await newToken(user.id, "default");
  let op = kv.atomic()
    .check({ key: userByEmailKey(email), versionstamp: null })
    .set(userKey(user.id), user)
    .set(userByEmailKey(email), user.id);
  op = writeToken(writeEndpoint(op, endpoint), token);
  const result = await op.commit();
  if (!result.ok) {
    throw new HttpError(409, "Cannot sign up: an account with this email already exists");
  }
  return { user, endpoint, token, tokenValue: value };
}

/** The user whose email and password match; one 401 message for every failure. */
export async function logIn(
  kv: Deno.Kv,
  options: { email: string; password: string },
): Promise<User> {
  const index = await kv.get<string>(userByEmailKey(normalizeEmail(options.email)));
  const user = index.value ? (await kv.get<User>(userKey(index.value))).value : null;
  // Hash even for unknown emails so response time does not reveal which emails exist.
  const ok = await verifyPassword(options.password, user?.passwordHash ?? DUMMY_HASH);
  if (!user || !ok) throw new HttpError(401, "Cannot log in: email or password is wrong");
  return user;
}

/** Reads a user by id. */
export async function getUser(kv: Deno.Kv, userId: string): Promise<User | null> {
  return (await kv.get<User>(userKey(userId))).value;
}

/** The API view of a user. */
export function publicUser(user: User): PublicUser {
  return {
    id: user.id,
    email: user.email,
    plan: user.plan,
    monthlyLimit: user.monthlyLimit,
    emailVerified: !!user.emailVerifiedAt,
    createdAt: user.createdAt,
  };
}

/**
 * Sets a new password (the caller checked the current one). The caller then ends the user's
 * other sessions (sessions.ts `endUserSessions`), so a stolen cookie stops with the old password.
 */
export async function changePassword(
  kv: Deno.Kv,
  options: {
    userId: string;
    password: string;
    /** The account as the current password was checked against: it must still be the same. */
    checked: Pick<User, "passwordHash" | "sessionGeneration">;
  },
): Promise<User> {
  const passwordHash = await hashPassword(options.password);
  for (;;) {
    const entry = await kv.get<User>(userKey(options.userId));
    if (!entry.value) {
      throw new HttpError(404, "Cannot change password: the account no longer exists");
    }
    // A reset (or another change) committed since the current password was checked: writing
    // over it would undo it, and whoever held the old password would keep the account.
    if (
      entry.value.passwordHash !== options.checked.passwordHash ||
      (entry.value.sessionGeneration ?? 0) !== (options.checked.sessionGeneration ?? 0)
    ) {
      throw new HttpError(
        409,
        "Cannot change password: it was changed or reset meanwhile; log in with the new one",
      );
    }
    // Every session is void in this commit, as at a reset: one started with the old password
    // while this ran would otherwise outlive the change (credentialCurrent).
    const updated = {
      ...entry.value,
      passwordHash,
      sessionGeneration: (entry.value.sessionGeneration ?? 0) + 1,
    };
    if ((await kv.atomic().check(entry).set(entry.key, updated).commit()).ok) return updated;
  }
}
