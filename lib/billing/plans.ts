/**
 * Plans and monthly caps. Free allows a fixed number of webhooks a month, which the user may
 * lower but not raise; Pro is metered per accepted webhook under a cap the user sets (none:
 * unlimited). The user record's `monthlyLimit` is what the ingest gate enforces; changing it
 * changes the record's versionstamp, so the very next commit re-reads it.
 */
import { HttpError } from "../http/http_error.ts";
import { userByEmailKey, userKey } from "../store/kv_keys.ts";
import { monthUsage, quotaResetAt } from "./usage.ts";
import { normalizeEmail, type Plan, sameUser, type User } from "../accounts/users.ts";
import type { BillingView } from "../shared/wire.ts";

/** Price of one accepted webhook on Pro, in US dollars. */
export const PRO_PRICE_PER_WEBHOOK_USD = 0.0001;

/** The largest monthly cap a user may set, from the API or the usage page. */
export const MAX_MONTHLY_CAP = 1_000_000_000_000;

/** What a user sees of their plan and month (its one definition is lib/shared/wire.ts). */
export type { BillingView };

/** The limit a plan and cap enforce. */
export function enforcedLimit(
  plan: Plan,
  options: { monthlyCap: number | null; freeAllowance: number },
): number | null {
  if (plan === "free") return Math.min(options.monthlyCap ?? Infinity, options.freeAllowance);
  return options.monthlyCap;
}

/** Whether a plan allows a cap (null: none): Free only up to its allowance, Pro any. */
export function capAllowed(
  plan: Plan,
  options: { monthlyCap: number | null; freeAllowance: number },
): boolean {
  return plan !== "free" || (options.monthlyCap ?? Infinity) <= options.freeAllowance;
}

/** Dollars for a number of accepted webhooks on a plan, rounded to the cent's hundredth. */
export function costUsd(plan: Plan, webhooks: number): number {
  return plan === "pro" ? Math.round(webhooks * PRO_PRICE_PER_WEBHOOK_USD * 10_000) / 10_000 : 0;
}

/** The plan, cap and this month's use and cost of a user. */
export async function billingView(
  kv: Deno.Kv,
  options: { user: User; freeAllowance: number; now?: Date },
): Promise<BillingView> {
  const now = options.now ?? new Date();
  const { user } = options;
  const used = await monthUsage(kv, { userId: user.id, date: now });
  const monthStart = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1);
  const reset = quotaResetAt(now);
  const elapsed = Math.max(1, now.getTime() - monthStart) / (reset.getTime() - monthStart);
  const limit = user.monthlyLimit;
  const projected = Math.min(Math.round(used / elapsed), limit ?? Infinity);
  const cap = user.monthlyCap ?? null;
  return {
    plan: user.plan,
    monthlyCap: cap,
    monthlyLimit: limit,
    planAllowance: user.plan === "free" ? options.freeAllowance : null,
    used,
    resetsAt: reset.toISOString(),
    pricePerWebhookUsd: PRO_PRICE_PER_WEBHOOK_USD,
    costSoFarUsd: costUsd(user.plan, used),
    projectedCostUsd: costUsd(user.plan, projected),
    capUsd: user.plan === "pro" && cap !== null ? costUsd("pro", cap) : null,
  };
}

/**
 * Sets a user's monthly cap (null: none); 400 when the plan does not allow it, 429 when the
 * account changed it `perMinute` times already. A change that changes nothing writes nothing.
 */
export async function setMonthlyCap(
  kv: Deno.Kv,
  options: {
    userId: string;
    monthlyCap: number | null;
    freeAllowance: number;
    /** Cap changes per account: a limiter (rate_limit.ts) allowing `perMinute`. */
    changes: { limiter: { take(key: string): number }; perMinute: number };
  },
): Promise<User> {
  let counted = false;
  for (;;) {
    const entry = await kv.get<User>(userKey(options.userId));
    if (!entry.value) throw new HttpError(404, "Cannot set cap: the account no longer exists");
    const user = entry.value;
    if (!capAllowed(user.plan, options)) {
      throw new HttpError(
        400,
        `Cannot set cap: the Free plan allows at most ${options.freeAllowance} webhooks a month; ` +
          "upgrade to Pro to raise it",
      );
    }
    const updated: User = {
      ...user,
      monthlyCap: options.monthlyCap,
      monthlyLimit: enforcedLimit(user.plan, options),
    };
    if (sameUser(user, updated)) return user;
    // Each change rewrites the record every shared commit of the account's webhooks checks:
    // in a loop, it would make other accounts' commits conflict and split.
    const wait = counted ? 0 : options.changes.limiter.take(options.userId);
    if (wait > 0) {
      throw new HttpError(
        429,
        `Cannot set cap: at most ${options.changes.perMinute} changes a minute; retry in ${wait} s`,
        { "Retry-After": String(wait) },
      );
    }
    counted = true;
    if ((await kv.atomic().check(entry).set(entry.key, updated).commit()).ok) return updated;
  }
}

/** A user moved to a plan, keeping their cap where the plan allows it. */
export function withPlan(user: User, options: { plan: Plan; freeAllowance: number }): User {
  const cap = user.monthlyCap ?? null;
  // A cap the new plan does not allow is dropped; no cap stays no cap.
  const monthlyCap =
    capAllowed(options.plan, { monthlyCap: cap, freeAllowance: options.freeAllowance })
      ? cap
      : null;
  return {
    ...user,
    plan: options.plan,
    monthlyCap,
    monthlyLimit: enforcedLimit(options.plan, { monthlyCap, freeAllowance: options.freeAllowance }),
  };
}

/** Moves a user, found by email, to a plan (the admin command). */
export async function setPlan(
  kv: Deno.Kv,
  options: { email: string; plan: Plan; freeAllowance: number },
): Promise<User> {
  const index = await kv.get<string>(userByEmailKey(normalizeEmail(options.email)));
  if (!index.value) throw new HttpError(404, `Cannot set plan: no account for ${options.email}`);
  for (;;) {
    const entry = await kv.get<User>(userKey(index.value));
    if (!entry.value) throw new HttpError(404, `Cannot set plan: no account for ${options.email}`);
    const updated = withPlan(entry.value, options);
    if ((await kv.atomic().check(entry).set(entry.key, updated).commit()).ok) return updated;
  }
}
