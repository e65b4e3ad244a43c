/** The usage and billing page: this month against the cap, the daily chart, cost, plan, invoices. */
import { Field } from "../Form.tsx";
import { Layout } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import { QuotaAlert } from "../QuotaAlert.tsx";
import { UsageChart } from "../UsageChart.tsx";
import { type BillingView, costUsd } from "../../lib/billing/plans.ts";
import type { Flash } from "../../lib/accounts/flash.ts";
import { formatCount, formatMonth, formatUsd, formatUtc } from "../../lib/shared/format.ts";
import type { Invoice } from "../../lib/billing/invoices.ts";
import { alertThreshold, QUOTA_ALERT_LEVELS, type UsageReport } from "../../lib/billing/usage.ts";
import type { User } from "../../lib/accounts/users.ts";

/** Upgrading, managing payment and downgrading; what each can do depends on Stripe being on. */
function PlanCard(props: { user: User; stripeEnabled: boolean; priceUsd: number }) {
  const { user, stripeEnabled } = props;
  return (
    <section class="card" aria-labelledby="plan-title">
      <h2 id="plan-title">Plan</h2>
      {user.graceEndsAt
        ? (
          <p class="notice error">
            {user.plan === "pro"
              ? (
                <>
                  Your last payment failed. Pro limits stay until{" "}
                  {formatUtc(user.graceEndsAt)}; after that Free limits apply unless a payment
                  succeeds.
                </>
              )
              : (
                <>
                  Your last payment failed, and Free limits apply since{" "}
                  {formatUtc(user.graceEndsAt)}. Pay it with Manage payment to get Pro back, or end
                  the subscription.
                </>
              )}
          </p>
        )
        : null}
      {user.plan === "free" && !user.stripeSubscriptionId
        ? stripeEnabled
          ? (
            <form method="post" action="/dashboard/billing/upgrade">
              <p class="muted">
                Pro accepts every webhook you allow at {formatUsd(props.priceUsd)}{" "}
                each, billed monthly by Stripe.
              </p>
              <button type="submit" class="button primary">Upgrade to Pro</button>
            </form>
          )
          : (
            <p class="muted">
              This server has no Stripe account; an administrator moves accounts to Pro with{" "}
              <code>deno task admin set-plan {user.email} pro</code>.
            </p>
          )
        : (
          <div class="inline-fields">
            {stripeEnabled && user.stripeCustomerId
              ? (
                <form method="post" action="/dashboard/billing/portal">
                  <button type="submit" class="button">Manage payment</button>
                </form>
              )
              : null}
            <form method="post" action="/dashboard/billing/downgrade">
              <button type="submit" class="button danger">
                {user.plan === "pro" ? "Downgrade to Free" : "End the Pro subscription"}
              </button>
            </form>
          </div>
        )}
    </section>
  );
}

/** What the cap form says under its field, for the plan. */
function capHint(billing: BillingView): string {
  if (billing.plan === "free") {
    const allowance = formatCount(billing.planAllowance ?? 0);
    return `Free includes ${allowance} webhooks a month. You may set a lower cap, not a higher one.`;
  }
  return `Leave empty for no cap. At ${formatUsd(billing.pricePerWebhookUsd)} each, ` +
    `10,000 webhooks cost ${formatUsd(costUsd("pro", 10_000))}.`;
}

/** The flash after a cap change. */
export function capSavedFlash(user: User): Flash {
  const cap = user.monthlyCap ?? null;
  if (cap === null) {
    return {
      kind: "success",
      message: "Removed your monthly cap: every webhook is accepted, and billed.",
    };
  }
  const dollars = user.plan === "pro" ? ` (${formatUsd(costUsd("pro", cap))})` : "";
  return {
    kind: "success",
    message: `Your monthly cap is now ${formatCount(cap)} webhooks${dollars}: past it, senders ` +
      "get 402 until the month ends.",
  };
}

/** The invoices of closed months, or a line saying there are none yet. */
function Invoices(props: { invoices: Invoice[] }) {
  if (props.invoices.length === 0) {
    return (
      <p class="muted">
        No invoices yet. Each month's invoice is written here once the month has ended.
      </p>
    );
  }
  return (
    <div class="table-wrap">
      <table class="list invoices">
        <thead>
          <tr>
            <th scope="col">Period</th>
            <th scope="col" class="num">Accepted requests</th>
            <th scope="col" class="num">Free allowance</th>
            <th scope="col" class="num">Unit price</th>
            <th scope="col" class="num">Amount</th>
            <th scope="col">Status</th>
          </tr>
        </thead>
        <tbody>
          {props.invoices.map((invoice) => (
            <tr key={invoice.period} data-period={invoice.period}>
              <th scope="row">
                {formatMonth(invoice.period)}{" "}
                <span class="muted">({invoice.plan === "pro" ? "Pro" : "Free"})</span>
              </th>
              <td class="num" data-label="Accepted requests">
                {formatCount(invoice.acceptedRequests)}
              </td>
              <td class="num" data-label="Free allowance">
                {formatCount(invoice.freeAllowance)}
              </td>
              <td class="num" data-label="Unit price">{formatUsd(invoice.unitPriceUsd)}</td>
              <td class="num" data-label="Amount">
                <strong>{formatUsd(invoice.amountUsd)}</strong>
              </td>
              <td data-label="Status">
                <span class={`badge ${invoice.status}`}>
                  {invoice.status === "paid" ? "Paid" : "Due"}
                </span>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** What the usage page shows: the month, the plan, the invoices and the cap form's state. */
export interface UsagePageProps {
  user: User;
  report: UsageReport;
  billing: BillingView;
  invoices: Invoice[];
  /** FREE_MONTHLY_LIMIT, for the quota alert's remedy. */
  freeAllowance: number;
  stripeEnabled: boolean;
  flash: Flash | null;
  /** After a refused cap: what was typed, and why it was refused. */
  cap?: string;
  error?: string;
}

/** The page; after a refused cap the field keeps what was typed, with the reason under it. */
export function UsagePage(props: UsagePageProps) {
  const { user, report, billing, invoices } = props;
  const { used, monthlyLimit: limit } = billing;
  const monthName = formatMonth(report.month).split(" ")[0];
  // A Free user without a cap has the allowance as limit: show it, since empty is refused there.
  const capValue = props.cap ??
    String(billing.monthlyCap ?? (billing.plan === "free" ? (billing.planAllowance ?? "") : ""));
  return (
    <Layout title="Usage and billing: WebSocks" user={user} section="usage">
      <div class="page-head">
        <h1>Usage and billing</h1>
        <p class={`plan-badge ${billing.plan}`}>
          {billing.plan === "pro" ? "Pro plan" : "Free plan"}
        </p>
      </div>
      <Notice flash={props.flash} />
      <QuotaAlert
        used={used}
        limit={limit}
        plan={billing.plan}
        freeAllowance={props.freeAllowance}
      />
      <section class="card" aria-labelledby="month-title">
        <div class="card-head">
          <h2 id="month-title">{formatMonth(report.month)}</h2>
          <p class="muted">Resets {formatUtc(billing.resetsAt)}</p>
        </div>
        <div class="quota">
          <div class="quota-line">
            {limit === null
              ? <span class="quota-label">Accepted webhooks</span>
              : <label for="quota-meter">Accepted webhooks</label>}
            <span>
              <strong data-testid="used">{formatCount(used)}</strong>
              {limit === null ? " (no cap)" : (
                <>
                  {" of "}
                  <strong data-testid="limit">{formatCount(limit)}</strong>
                  {` (${limit === 0 ? 100 : Math.floor((used / limit) * 100)}%)`}
                </>
              )}
            </span>
          </div>
          {limit === null
            ? (
              <p class="hint">
                No cap: every webhook is accepted and billed. Set a cap below to bound the bill.
              </p>
            )
            : (
              <meter
                id="quota-meter"
                min={0}
                max={Math.max(limit, 1)}
                value={Math.min(used, limit)}
                // The meter turns amber from the 80% alert on and red at the limit.
                low={alertThreshold(limit, QUOTA_ALERT_LEVELS[0]) - 0.5}
                high={limit - 0.5}
                optimum={0}
              >
                {formatCount(used)} of {formatCount(limit)}
              </meter>
            )}
        </div>
        <dl class="stats">
          <div>
            <dt>Accepted</dt>
            <dd data-testid="accepted">{formatCount(report.used)}</dd>
          </div>
          <div>
            <dt>Refused (402)</dt>
            <dd data-testid="refused">{formatCount(report.rejected)}</dd>
          </div>
          <div>
            <dt>Cost so far</dt>
            <dd data-testid="cost">{formatUsd(billing.costSoFarUsd)}</dd>
          </div>
          <div>
            <dt>Projected for {monthName}</dt>
            <dd data-testid="projected">{formatUsd(billing.projectedCostUsd)}</dd>
          </div>
        </dl>
        <p class="muted small">
          {billing.plan === "pro"
            ? `Pro: ${formatUsd(billing.pricePerWebhookUsd)} per accepted webhook. ` +
              "Refused webhooks are never counted or billed. The projection follows this " +
              "month's pace, up to your cap."
            : `Free: ${formatCount(billing.planAllowance ?? 0)} webhooks a month at no charge; ` +
              "past the limit, senders get 402. Pro is " +
              `${formatUsd(billing.pricePerWebhookUsd)} per accepted webhook, under a cap you set.`}
        </p>
      </section>
      <section class="card" aria-labelledby="daily-title">
        <h2 id="daily-title">Per day</h2>
        <UsageChart month={report.month} daily={report.daily} />
      </section>
      <section class="card" aria-labelledby="cap-title">
        <h2 id="cap-title">Monthly cap</h2>
        <p class="muted">
          Past the cap, senders get 402 until the month ends, so the bill holds no surprise. A new
          cap applies to the very next webhook.
          {billing.capUsd !== null
            ? ` Your cap of ${formatCount(billing.monthlyCap ?? 0)} webhooks is at most ` +
              `${formatUsd(billing.capUsd)} a month.`
            : null}
        </p>
        <form method="post" action="/dashboard/usage/cap" class="inline-fields" novalidate>
          <Field
            name="monthlyCap"
            label="Cap (webhooks a month)"
            value={capValue}
            error={props.error}
            // A refused cap takes focus, which scrolls its message into view far down the page.
            autofocus={props.error !== undefined}
            hint={capHint(billing)}
            inputMode="numeric"
            autocomplete="off"
            maxLength={20}
          />
          <button type="submit" class="button primary">Save cap</button>
        </form>
      </section>
      <PlanCard
        user={user}
        stripeEnabled={props.stripeEnabled}
        priceUsd={billing.pricePerWebhookUsd}
      />
      <section aria-labelledby="invoices-title">
        <h2 id="invoices-title">Invoices</h2>
        <Invoices invoices={invoices} />
      </section>
    </Layout>
  );
}
