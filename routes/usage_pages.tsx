/** /dashboard/usage: this month against the cap, the daily chart, cost, the cap form, invoices. */
import { Hono } from "hono";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import { Field } from "../components/Form.tsx";
import { Layout } from "../components/Layout.tsx";
import { Notice } from "../components/Notice.tsx";
import { QuotaAlert } from "../components/QuotaAlert.tsx";
import { UsageChart } from "../components/UsageChart.tsx";
import { type BillingView, billingView, costUsd, setMonthlyCap } from "../lib/billing/plans.ts";
import type { Flash } from "../lib/accounts/flash.ts";
import { formatCount, formatMonth, formatUsd, formatUtc } from "../lib/shared/format.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { type Invoice, listInvoices } from "../lib/billing/invoices.ts";
import { usageReport } from "../lib/billing/usage.ts";
import type { User } from "../lib/accounts/users.ts";
import { type AppEnv, requireSameOrigin } from "./_env.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
  readForm,
  redirect,
  requireViewer,
  sendPage,
  viewerOf,
} from "./_page.tsx";

/** The same bound as PUT /api/billing/cap. */
const MAX_CAP = 1_000_000_000_000;

/**
 * The cap form. The field is text, not type=number: a browser turns a number field it cannot
 * parse ("5k") into an empty value, which here would mean "no cap". Thousands separators are
 * fine; empty means no cap.
 */
const capForm = z.object({
  monthlyCap: z.string({ error: "the cap is missing from the form" })
    .transform((value) => value.replace(/[\s,_]/g, ""))
    .refine((value) => /^\d*$/.test(value), "the cap must be a whole number of webhooks, like 5000")
    .transform((value) => (value === "" ? null : Number(value)))
    .refine(
      (value) => value === null || value <= MAX_CAP,
      `the cap must be at most ${formatCount(MAX_CAP)} webhooks`,
    ),
});

/** Upgrading, managing payment and downgrading; what each can do depends on Stripe being on. */
function PlanCard(props: { user: User; stripeEnabled: boolean }) {
  const { user, stripeEnabled } = props;
  return (
    <section class="card" aria-labelledby="plan-title">
      <h2 id="plan-title">Plan</h2>
      {user.graceEndsAt
        ? (
          <p class="notice error">
            Your last payment failed. Pro limits stay until{" "}
            {formatUtc(user.graceEndsAt)}; after that Free limits apply unless a payment succeeds.
          </p>
        )
        : null}
      {user.plan === "free"
        ? stripeEnabled
          ? (
            <form method="post" action="/dashboard/billing/upgrade">
              <p class="muted">
                Pro accepts every webhook you allow at $0.0001 each, billed monthly by Stripe.
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
              <button type="submit" class="button danger">Downgrade to Free</button>
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
function capSaved(user: User): Flash {
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

/** The page; after a refused cap the field keeps what was typed, with the reason under it. */
async function usagePage(
  c: Context<AppEnv>,
  options: {
    flash: Flash | null;
    cap?: string;
    error?: string;
    status?: ContentfulStatusCode;
  },
) {
  const { user } = viewerOf(c);
  const { kv, config } = c.get("services");
  const now = new Date();
  const [report, billing, invoices] = await Promise.all([
    usageReport(kv, { userId: user.id, now }),
    billingView(kv, { user, freeAllowance: config.freeMonthlyLimit, now }),
    listInvoices(kv, user.id),
  ]);
  const { used, monthlyLimit: limit } = billing;
  const monthName = formatMonth(report.month).split(" ")[0];
  // A Free user without a cap has the allowance as limit: show it, since empty is refused there.
  const capValue = options.cap ??
    String(billing.monthlyCap ?? (billing.plan === "free" ? (billing.planAllowance ?? "") : ""));
  return sendPage(
    c,
    <Layout title="Usage and billing: WebSocks" user={user} section="usage">
      <div class="page-head">
        <h1>Usage and billing</h1>
        <p class={`plan-badge ${billing.plan}`}>
          {billing.plan === "pro" ? "Pro plan" : "Free plan"}
        </p>
      </div>
      <Notice flash={options.flash} />
      <QuotaAlert
        used={used}
        limit={limit}
        plan={billing.plan}
        freeAllowance={config.freeMonthlyLimit}
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
                low={Math.ceil(limit * 0.8) - 0.5}
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
            error={options.error}
            // A refused cap takes focus, which scrolls its message into view far down the page.
            autofocus={options.error !== undefined}
            hint={capHint(billing)}
            inputMode="numeric"
            autocomplete="off"
            maxLength={20}
          />
          <button type="submit" class="button primary">Save cap</button>
        </form>
      </section>
      <PlanCard user={user} stripeEnabled={config.stripe !== null} />
      <section aria-labelledby="invoices-title">
        <h2 id="invoices-title">Invoices</h2>
        <Invoices invoices={invoices} />
      </section>
    </Layout>,
    { status: options.status },
  );
}

/** /dashboard/usage and its cap form. */
export function usagePageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);

  app.get("/dashboard/usage", loadViewer, requireViewer, async (c) => {
    return await usagePage(c, { flash: await pageFlash(c) });
  });

  app.post("/dashboard/usage/cap", requireSameOrigin, loadViewer, requireViewer, async (c) => {
    const form = await readForm(c, capForm);
    const typed = form.values.monthlyCap ?? "";
    if (!form.ok) {
      const problem = form.errors.monthlyCap ?? Object.values(form.errors)[0];
      return await usagePage(c, {
        flash: null,
        cap: typed,
        error: `Cannot set cap: ${problem}.`,
        status: 400,
      });
    }
    const { kv, config } = c.get("services");
    let user: User;
    try {
      user = await setMonthlyCap(kv, {
        userId: viewerOf(c).user.id,
        monthlyCap: form.data.monthlyCap,
        freeAllowance: config.freeMonthlyLimit,
      });
    } catch (error) {
      // A cap the plan does not allow is an answer for the field; anything else is a fault.
      if (!(error instanceof HttpError) || error.status !== 400) throw error;
      return await usagePage(c, { flash: null, cap: typed, error: error.message, status: 400 });
    }
    return await redirect(c, "/dashboard/usage", { flash: capSaved(user) });
  });

  return app;
}
