/** /dashboard/usage: the usage and billing page, and its cap form. */
import { Hono } from "hono";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import { capSavedFlash, UsagePage } from "../components/usage/UsagePage.tsx";
import { billingView, MAX_MONTHLY_CAP, setMonthlyCap } from "../lib/billing/plans.ts";
import type { Flash } from "../lib/accounts/flash.ts";
import { formatCount } from "../lib/shared/format.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { listInvoices } from "../lib/billing/invoices.ts";
import { usageReport } from "../lib/billing/usage.ts";
import type { User } from "../lib/accounts/users.ts";
import type { AppEnv } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { readForm } from "./_parse.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
  redirect,
  requireViewer,
  sendPage,
  viewerOf,
} from "./_page.tsx";

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
    .refine((value) => value === null || value <= MAX_MONTHLY_CAP, {
      // Written when needed: formatting a number at import loaded ICU's data on every start.
      error: () => `the cap must be at most ${formatCount(MAX_MONTHLY_CAP)} webhooks`,
    }),
});

/** Reads the viewer's month, plan and invoices and renders the page. */
async function usagePage(
  c: Context<AppEnv>,
  options: { flash: Flash | null; cap?: string; error?: string; status?: ContentfulStatusCode },
) {
  const { user } = viewerOf(c);
  const { kv, config } = c.get("services");
  const now = new Date();
  const [report, billing, invoices] = await Promise.all([
    usageReport(kv, { userId: user.id, now }),
    billingView(kv, { user, freeAllowance: config.freeMonthlyLimit, now }),
    listInvoices(kv, user.id),
  ]);
  return sendPage(
    c,
    <UsagePage
      user={user}
      report={report}
      billing={billing}
      invoices={invoices}
      freeAllowance={config.freeMonthlyLimit}
      stripeEnabled={config.stripe !== null}
      flash={options.flash}
      cap={options.cap}
      error={options.error}
    />,
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
    const { kv, config, capChanges } = c.get("services");
    let user: User;
    try {
      user = await setMonthlyCap(kv, {
        userId: viewerOf(c).user.id,
        monthlyCap: form.data.monthlyCap,
        freeAllowance: config.freeMonthlyLimit,
        changes: capChanges,
      });
    } catch (error) {
      // A cap the plan does not allow, or changed too often, is an answer for the field;
      // anything else is a fault.
      if (!(error instanceof HttpError) || (error.status !== 400 && error.status !== 429)) {
        throw error;
      }
      return await usagePage(c, {
        flash: null,
        cap: typed,
        error: error.message,
        status: error.status as 400 | 429,
      });
    }
    return await redirect(c, "/dashboard/usage", { flash: capSavedFlash(user) });
  });

  return app;
}
