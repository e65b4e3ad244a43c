/**
 * This month's webhook count, live: the page's number (read with the id of the newest event at
 * that moment) plus each webhook that arrives after that id, raised to the latest `quota` notice.
 * The inspector reports arrivals and notices; the MonthUsage island shows the number. One module
 * shared by both islands' bundles, so both see the same signals.
 */
import { computed, signal } from "@preact/signals";

/** What the server read in one snapshot: the count, its month ("YYYY-MM", UTC), the newest id. */
export interface UsageBase {
  used: number;
  month: string;
  head: string | null;
}

/** Set in the browser only (by the island's effect), so server rendering never shares it. */
const base = signal<UsageBase | null>(null);
/** Webhook ids the page saw, with the month each arrived in; `seen` moves when it grows. */
const arrivals = new Map<string, string>();
const seen = signal(0);
/** The latest quota notice: the server's own count, authoritative when ahead of ours. */
const notice = signal<{ used: number; month: string } | null>(null);

/** The count to show, or null before the page's number is known (then the server's stands). */
export const liveMonthUsage = computed(() => {
  const from = base.value;
  if (!from) return null;
  // A new month starts from zero: the newest month anything arrived in is the one shown.
  let month = from.month;
  seen.value;
  for (const m of arrivals.values()) if (m > month) month = m;
  if (notice.value && notice.value.month > month) month = notice.value.month;
  let counted = month === from.month ? from.used : 0;
  for (const [id, m] of arrivals) {
    if (m === month && (from.head === null || id > from.head)) counted++;
  }
  // A notice may come just before the webhook that crossed its level: it never lowers the count.
  const floor = notice.value?.month === month ? notice.value.used : 0;
  return Math.max(counted, floor);
});

/** Starts counting from the server's snapshot. */
export function setUsageBase(value: UsageBase): void {
  base.value = value;
}

/** Counts a webhook the page saw (from history or the stream); repeats are ignored. */
export function countArrival(event: { id: string; receivedAt: string }): void {
  if (arrivals.has(event.id)) return;
  arrivals.set(event.id, event.receivedAt.slice(0, 7));
  seen.value++;
}

/** Takes a `quota` notice's count (`{"used", "resetsAt"}`); malformed notices are ignored. */
export function applyQuotaNotice(data: unknown): void {
  if (typeof data !== "object" || data === null) return;
  const { used, resetsAt } = data as Record<string, unknown>;
  if (typeof used !== "number" || !Number.isFinite(used)) return;
  const reset = typeof resetsAt === "string" ? new Date(resetsAt) : new Date(NaN);
  // The notice counts the month before the one it resets into.
  const month = Number.isNaN(reset.getTime())
    ? base.value?.month ?? new Date().toISOString().slice(0, 7)
    : new Date(Date.UTC(reset.getUTCFullYear(), reset.getUTCMonth() - 1, 1)).toISOString()
      .slice(0, 7);
  notice.value = { used, month };
}
