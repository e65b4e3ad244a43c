/**
 * Bytes of the event log each account may read a second for its catch-ups and replays, in one
 * isolate. A catch-up reads the log whatever the client's filter lets through: a replay that
 * matches nothing sends nothing, so the client's own reading never slows it, and an account's
 * 200 connections asking 20 times a second would read the log as fast as the isolate can, at
 * every other tenant's expense.
 */

/** Per-account read budgets: a second's worth at once, refilled at the rate. */
export interface ReadBudget {
  /** Takes `bytes` when they fit and returns 0, or returns the milliseconds to wait first. */
  take(userId: string, bytes: number): number;
}

/** Accounts whose budgets are kept at once; past it, full ones are dropped (as absent). */
const MAX_ACCOUNTS = 10_000;

/** A budget of `bytesPerSecond` per account (0: no limit); `now` is in milliseconds. */
export function createReadBudget(
  options: { bytesPerSecond: number; now?: () => number },
): ReadBudget {
  const rate = options.bytesPerSecond;
  const now = options.now ?? (() => performance.now());
  const budgets = new Map<string, { bytes: number; at: number }>();
  return {
    take(userId, bytes) {
      if (rate <= 0) return 0;
      const at = now();
      let budget = budgets.get(userId);
      if (!budget) {
        if (budgets.size >= MAX_ACCOUNTS) {
          for (const [id, other] of budgets) if (at - other.at >= 1000) budgets.delete(id);
        }
        budgets.set(userId, budget = { bytes: rate, at });
      }
      budget.bytes = Math.min(rate, budget.bytes + ((at - budget.at) / 1000) * rate);
      budget.at = at;
      // More than a second's worth at once goes while any is left, and leaves the budget short:
      // waiting for a full one, it never came while other readers of the account took pieces.
      const needed = bytes > rate ? Number.MIN_VALUE : bytes;
      if (budget.bytes >= needed) {
        budget.bytes -= bytes;
        return 0;
      }
      return Math.max(1, Math.ceil(((needed - budget.bytes) / rate) * 1000));
    },
  };
}
