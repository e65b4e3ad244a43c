/// <reference lib="dom" />
/**
 * "N of 1,000 webhooks this month" on the dashboard, moving with each arrival the inspector
 * sees. Without JavaScript (and until hydration) it shows the server's number.
 */
import { useEffect } from "preact/hooks";
import { liveMonthUsage, setUsageBase } from "./month_usage.ts";

/** Props: the server's count and what it was read with (see lib/billing/usage.ts). */
export interface MonthUsageProps {
  used: number;
  /** The monthly limit, or null when unlimited. */
  limit: number | null;
  /** The month `used` counts, "YYYY-MM" (UTC). */
  month: string;
  /** The newest event's id when `used` was read: later ids are counted on top. */
  head: string | null;
}

/** The month's count, live. */
export default function MonthUsage(props: MonthUsageProps) {
  useEffect(() => setUsageBase({ used: props.used, month: props.month, head: props.head }), []);
  const used = liveMonthUsage.value ?? props.used;
  return (
    <p class="usage" title="Accepted webhooks this calendar month (UTC)">
      <strong data-testid="month-usage">{used.toLocaleString("en")}</strong>
      {props.limit === null
        ? " webhooks this month"
        : ` of ${props.limit.toLocaleString("en")} webhooks this month`}
    </p>
  );
}
