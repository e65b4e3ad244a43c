/** The 80% and 100% quota alerts, shown alike on the dashboard and the usage page. */
import type { Flash } from "../lib/accounts/flash.ts";
import { formatCount } from "../lib/shared/format.ts";
import type { Plan } from "../lib/accounts/users.ts";
import { alertThreshold, QUOTA_ALERT_LEVELS } from "../lib/billing/usage.ts";

/** This month's use as the alert needs it. */
export interface QuotaAlertInput {
  used: number;
  /** The enforced limit; null is unlimited. */
  limit: number | null;
  plan: Plan;
  freeAllowance: number;
}

/** The alert for this month's use: null below 80% of the limit, or without a limit. */
export function quotaAlert(input: QuotaAlertInput): Flash | null {
  const { used, limit } = input;
  if (limit === null || limit === 0 || used < alertThreshold(limit, QUOTA_ALERT_LEVELS[0])) {
    return null;
  }
  if (used < limit) {
    return {
      kind: "info",
      message: `You have used ${Math.floor((used / limit) * 100)}% of this month's ` +
        `${formatCount(limit)} webhooks.`,
    };
  }
  const remedy = input.plan === "pro"
    ? "Raise or remove your cap to accept more."
    : limit < input.freeAllowance
    ? `Raise your cap (up to ${formatCount(input.freeAllowance)}) or upgrade to Pro to accept more.`
    : "Upgrade to Pro to accept more.";
  return {
    kind: "error",
    message: `You have used all ${formatCount(limit)} webhooks of this month: senders now get ` +
      `402 until the month ends. ${remedy}`,
  };
}

/** The alert as a notice; `linkToUsage` adds a link to the usage page (from other pages). */
export function QuotaAlert(props: QuotaAlertInput & { linkToUsage?: boolean }) {
  const alert = quotaAlert(props);
  if (!alert) return null;
  return (
    <div
      class={`notice ${alert.kind} quota-alert`}
      role={alert.kind === "error" ? "alert" : "status"}
    >
      <p>
        {alert.message}
        {props.linkToUsage
          ? (
            <>
              {" "}
              <a href="/dashboard/usage">See usage and set your cap</a>
            </>
          )
          : null}
      </p>
    </div>
  );
}
