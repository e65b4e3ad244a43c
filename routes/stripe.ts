/** Upgrading, the billing portal, downgrading, and Stripe's webhook. */
import { Hono } from "hono";
import {
  applyStripeEvent,
  downgrade,
  openPortal,
  startCheckout,
  verifyStripeEvent,
} from "../lib/billing/stripe.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { notifyPaymentFailed } from "../lib/mail/account_mail.ts";
import { readBody } from "../lib/http/load_guard.ts";
import type { AppEnv } from "./_env.ts";
import { requireAuth, requireScope } from "./_auth.ts";

/** /api/billing/{checkout,portal,downgrade} and /api/stripe/webhook */
export function stripeRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const manage = [requireAuth, requireScope("manage")] as const;

  app.post("/api/billing/checkout", ...manage, async (c) => {
    const { stripe, config } = c.get("services");
    const url = await startCheckout(stripe, {
      user: c.get("auth").user,
      config: config.stripe,
      publicUrl: config.publicUrl,
    });
    return c.json({ url });
  });

  app.post("/api/billing/portal", ...manage, async (c) => {
    const { stripe, config } = c.get("services");
    const url = await openPortal(stripe, { user: c.get("auth").user, publicUrl: config.publicUrl });
    return c.json({ url });
  });

  app.post("/api/billing/downgrade", ...manage, async (c) => {
    const { kv, stripe, config } = c.get("services");
    const user = await downgrade(kv, {
      stripe,
      userId: c.get("auth").user.id,
      freeAllowance: config.freeMonthlyLimit,
      meterEventName: config.stripe?.meterEventName ?? "",
    });
    return c.json({ plan: user.plan, monthlyLimit: user.monthlyLimit });
  });

  app.post("/api/stripe/webhook", async (c) => {
    const { kv, stripe, config } = c.get("services");
    if (!config.stripe) {
      throw new HttpError(404, "Cannot accept Stripe events: Stripe is not configured here");
    }
    const event = await verifyStripeEvent(stripe, {
      body: new TextDecoder().decode(
        await readBody(c.req.raw, {
          // Stripe's events are small; held in memory whole, so never the streamed size.
          maxBytes: config.streamBodyBytes,
          action: "accept Stripe event",
        }),
      ),
      signature: c.req.header("Stripe-Signature") ?? null,
      secret: config.stripe.webhookSecret,
    });
    const outcome = await applyStripeEvent(kv, {
      stripe,
      event,
      freeAllowance: config.freeMonthlyLimit,
      graceMs: config.paymentGraceMs,
      onPaymentFailed: (user) =>
        notifyPaymentFailed(c.get("services"), { user, eventId: event.id }),
    });
    return c.json({ received: true, outcome });
  });

  return app;
}
