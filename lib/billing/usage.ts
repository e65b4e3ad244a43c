/** Usage counters and the calendar-month (UTC) quota window. */
import {
  eventHeadKey,
  usageDaysOfUserPrefix,
  usageMonthKey,
  usageRejectedDayKey,
  usageRejectedDaysOfUserPrefix,
  usageRejectedMonthKey,
  userKey,
} from "../store/kv_keys.ts";
import { log } from "../observe/log.ts";
import type { DailyUsage, UsageReport } from "../shared/wire.ts";

/** "YYYY-MM" of a date in UTC: the key of its quota window. */
export function monthOf(date: Date): string {
  return date.toISOString().slice(0, 7);
}

/** "YYYY-MM-DD" of a date in UTC. */
export function dayOf(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** The first instant of the month after `date`, when the quota resets. */
export function quotaResetAt(date: Date): Date {
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1));
}

/** A user's quota as of one moment. `limit` null means unlimited. */
export interface QuotaState {
  limit: number | null;
  used: number;
  resetAt: Date;
}

/** The quota of a limit with `used` accepted this month, as of `now`. */
export function quotaState(limit: number | null, used: number, now: Date): QuotaState {
  return { limit, used, resetAt: quotaResetAt(now) };
}

/** Webhooks accepted for a user in the month containing `date`. */
export async function monthUsage(
  kv: Deno.Kv,
  options: { userId: string; date?: Date },
): Promise<number> {
  const entry = await kv.get<Deno.KvU64>(
    usageMonthKey(options.userId, monthOf(options.date ?? new Date())),
  );
  return Number(entry.value?.value ?? 0n);
}

/**
 * This month's count with the id of the newest event, read in one snapshot: ingest moves both in
 * one commit, so a page counting later arrivals (ids after `head`) on top of `used` counts each
 * webhook exactly once.
 */
export async function monthUsageSnapshot(
  kv: Deno.Kv,
  options: { userId: string; date?: Date },
): Promise<{ used: number; month: string; head: string | null }> {
  const month = monthOf(options.date ?? new Date());
  const [used, head] = await kv.getMany<[Deno.KvU64, string]>([
    usageMonthKey(options.userId, month),
    eventHeadKey(options.userId),
  ]);
  return { used: Number(used.value?.value ?? 0n), month, head: head.value };
}

/** Webhooks still accepted this month: the one rule for the ingest gate and the headers. */
export function remainingQuota(limit: number | null, used: number): number {
  return limit === null ? Infinity : Math.max(0, limit - used);
}

/** The quota headers every ingest response carries. */
export function quotaHeaders(quota: QuotaState): Record<string, string> {
  return {
    "X-Quota-Limit": quota.limit === null ? "unlimited" : String(quota.limit),
    "X-Quota-Remaining": quota.limit === null
      ? "unlimited"
      : String(remainingQuota(quota.limit, quota.used)),
    "X-Quota-Reset": String(Math.floor(quota.resetAt.getTime() / 1000)),
  };
}

/** A user's quota right now, read from KV (used off the hot path, e.g. for error responses). */
export async function currentQuota(kv: Deno.Kv, userId: string): Promise<QuotaState | null> {
  const now = new Date();
  const [user, used] = await kv.getMany<[{ monthlyLimit: number | null }, Deno.KvU64]>([
    userKey(userId),
    usageMonthKey(userId, monthOf(now)),
  ]);
  if (!user.value) return null;
  return quotaState(user.value.monthlyLimit, Number(used.value?.value ?? 0n), now);
}

/** A day's and a month's usage as the API shows them (one definition: lib/shared/wire.ts). */
export type { DailyUsage, UsageReport };

/** A user's month: accepted and refused webhooks, in total and per day (every day so far). */
export async function usageReport(
  kv: Deno.Kv,
  options: { userId: string; now?: Date },
): Promise<UsageReport> {
  const now = options.now ?? new Date();
  const month = monthOf(now);
  const [used, rejected] = await kv.getMany<[Deno.KvU64, Deno.KvU64]>([
    usageMonthKey(options.userId, month),
    usageRejectedMonthKey(options.userId, month),
  ]);
  const daily: DailyUsage[] = [];
  for (let d = 1; d <= now.getUTCDate(); d++) {
    daily.push({ day: `${month}-${String(d).padStart(2, "0")}`, accepted: 0, rejected: 0 });
  }
  const range = (prefix: Deno.KvKey) => ({
    start: [...prefix, `${month}-01`],
    end: [...prefix, `${month}-32`],
  });
  for (
    const [prefix, field] of [
      [usageDaysOfUserPrefix(options.userId), "accepted"],
      [usageRejectedDaysOfUserPrefix(options.userId), "rejected"],
    ] as const
  ) {
    for await (const entry of kv.list<Deno.KvU64>(range(prefix))) {
      const day = daily[Number(String(entry.key[2]).slice(8, 10)) - 1];
      if (day) day[field] = Number(entry.value.value);
    }
  }
  return {
    month,
    used: Number(used.value?.value ?? 0n),
    rejected: Number(rejected.value?.value ?? 0n),
    daily,
  };
}

/** Alert levels, in percent of the monthly limit. */
export const QUOTA_ALERT_LEVELS = [80, 100] as const;

/**
 * The count of accepted webhooks at which a limit reaches an alert level (percent): the same
 * point for the `quota` events pushed to clients, the pages' alerts and the usage meter.
 */
export function alertThreshold(limit: number, level: number): number {
  return Math.ceil((limit * level) / 100);
}

/** The alert levels that going from `before` to `after` accepted webhooks crosses. */
export function crossedLevels(
  limit: number | null,
  options: { before: number; after: number },
): number[] {
  if (limit === null || limit === 0) return [];
  return QUOTA_ALERT_LEVELS.filter((level) => {
    const threshold = alertThreshold(limit, level);
    return options.before < threshold && options.after >= threshold;
  });
}

/**
 * Counts refused webhooks (over quota, a failed enforced signature, a refused handshake) for the
 * usage page; off the accepted path, and a lost count is no fault.
 */
export function countRejected(
  kv: Deno.Kv,
  options: { userId: string; count: number; now: Date },
): void {
  writeRejected(kv, [options]).catch((error) =>
    log.error("counting refused webhooks failed", error)
  );
}

/** Refused webhooks counted in memory and written together, once per interval. */
export interface RejectionCounter {
  count(options: { userId: string; count: number; now: Date }): void;
  /** Writes what is pending and stops the timer. */
  close(): Promise<void>;
}

/** Users' pending counts one commit may carry: two sums each, under KV's 1,000 mutations. */
const REJECTIONS_PER_COMMIT = 400;

/**
 * A counter that writes refusals at most once per `intervalMs`. Anyone may send requests that
 * are refused before the flood limit applies (a bad signature, a failed handshake); counted one
 * KV write each, their rate would be the rate of KV writes an outsider controls.
 */
export function createRejectionCounter(
  kv: Deno.Kv,
  options: { intervalMs?: number } = {},
): RejectionCounter {
  const pending = new Map<string, { userId: string; count: number; now: Date }>();
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = async () => {
    timer = null;
    const counts = [...pending.values()];
    pending.clear();
    for (let i = 0; i < counts.length; i += REJECTIONS_PER_COMMIT) {
      await writeRejected(kv, counts.slice(i, i + REJECTIONS_PER_COMMIT)).catch((error) =>
        log.error("counting refused webhooks failed", error)
      );
    }
  };
  return {
    count(entry) {
      const key = `${entry.userId}\0${dayOf(entry.now)}`;
      const prior = pending.get(key);
      if (prior) prior.count += entry.count;
      else pending.set(key, { ...entry });
      timer ??= setTimeout(flush, options.intervalMs ?? 1000);
    },
    async close() {
      if (timer !== null) clearTimeout(timer);
      await flush();
    },
  };
}

async function writeRejected(
  kv: Deno.Kv,
  counts: { userId: string; count: number; now: Date }[],
): Promise<void> {
  const op = kv.atomic();
  for (const { userId, count, now } of counts) {
    op.sum(usageRejectedMonthKey(userId, monthOf(now)), BigInt(count))
      .sum(usageRejectedDayKey(userId, dayOf(now)), BigInt(count));
  }
  await op.commit();
}
