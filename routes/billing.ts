/** Plan, cap, usage and invoices: /api/billing, /api/billing/cap, /api/usage, /api/invoices. */
import { Hono } from "hono";
import { z } from "zod";
import { billingView, MAX_MONTHLY_CAP, setMonthlyCap } from "../lib/billing/plans.ts";
import { listInvoices, publicInvoice } from "../lib/billing/invoices.ts";
import { usageReport } from "../lib/billing/usage.ts";
import type { AppEnv } from "./_env.ts";
import { requireAuth, requireScope } from "./_auth.ts";
import { parseBody } from "./_parse.ts";

export const capBody = z.object({
  monthlyCap: z.number().int("must be a whole number of webhooks").min(0, "must be 0 or more")
    .max(MAX_MONTHLY_CAP).nullable(),
});

/** /api/billing and /api/usage */
export function billingRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const manage = [requireAuth, requireScope("manage")] as const;
  app.use("/api/billing", ...manage);
  app.use("/api/billing/*", ...manage);
  app.use("/api/usage", ...manage);
  app.use("/api/invoices", ...manage);

  app.get("/api/billing", async (c) => {
    const { kv, config } = c.get("services");
    const view = await billingView(kv, {
      user: c.get("auth").user,
      freeAllowance: config.freeMonthlyLimit,
    });
    return c.json(view);
  });

  app.put("/api/billing/cap", async (c) => {
    const { monthlyCap } = await parseBody(c, { schema: capBody, action: "set cap" });
    const { kv, config, capChanges } = c.get("services");
    const user = await setMonthlyCap(kv, {
      userId: c.get("auth").user.id,
      monthlyCap,
      freeAllowance: config.freeMonthlyLimit,
      changes: capChanges,
    });
    return c.json(await billingView(kv, { user, freeAllowance: config.freeMonthlyLimit }));
  });

  app.get("/api/invoices", async (c) => {
    const invoices = await listInvoices(c.get("services").kv, c.get("auth").user.id);
    return c.json({ invoices: invoices.map(publicInvoice) });
  });

  app.get("/api/usage", async (c) => {
    const { kv, config } = c.get("services");
    const user = c.get("auth").user;
    const [report, billing] = await Promise.all([
      usageReport(kv, { userId: user.id }),
      billingView(kv, { user, freeAllowance: config.freeMonthlyLimit }),
    ]);
    return c.json({
      ...report,
      monthlyLimit: billing.monthlyLimit,
      monthlyCap: billing.monthlyCap,
      plan: billing.plan,
      costSoFarUsd: billing.costSoFarUsd,
      projectedCostUsd: billing.projectedCostUsd,
    });
  });

  return app;
}
