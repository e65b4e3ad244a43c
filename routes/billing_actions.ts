/** The usage page's plan buttons (form posts, no pages): upgrade through Checkout, the portal, downgrade. */
import { Hono } from "hono";
import { downgrade, openPortal, startCheckout } from "../lib/billing/stripe.ts";
import type { AppEnv } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { loadViewer, pageError, redirect, requireViewer, viewerOf } from "./_page.tsx";

/** POST /dashboard/billing/{upgrade,portal,downgrade} */
export function billingActionRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);
  const guarded = [requireSameOrigin, loadViewer, requireViewer] as const;

  app.post("/dashboard/billing/upgrade", ...guarded, async (c) => {
    const { stripe, config } = c.get("services");
    const url = await startCheckout(stripe, {
      user: viewerOf(c).user,
      config: config.stripe,
      publicUrl: config.publicUrl,
    });
    return c.redirect(url, 303);
  });

  app.post("/dashboard/billing/portal", ...guarded, async (c) => {
    const { stripe, config } = c.get("services");
    const url = await openPortal(stripe, { user: viewerOf(c).user, publicUrl: config.publicUrl });
    return c.redirect(url, 303);
  });

  app.post("/dashboard/billing/downgrade", ...guarded, async (c) => {
    const { kv, stripe, config } = c.get("services");
    const user = await downgrade(kv, {
      stripe,
      userId: viewerOf(c).user.id,
      freeAllowance: config.freeMonthlyLimit,
      meterEventName: config.stripe?.meterEventName ?? "",
    });
    return await redirect(c, "/dashboard/usage", {
      flash: {
        kind: "info",
        message: `You are on Free again: ${
          user.monthlyLimit?.toLocaleString("en")
        } webhooks a month.`,
      },
    });
  });

  return app;
}
