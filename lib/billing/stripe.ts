/**
 * The Stripe edge: Checkout to upgrade, the customer portal, webhook events, and usage reported
 * to a Billing Meter. Optional: without STRIPE_SECRET_KEY none of this runs and plans change
 * with `deno task admin`.
 */
import type Stripe from "stripe";
import { withPlan } from "./plans.ts";
import type { StripeConfig } from "../runtime/config.ts";
import { HttpError } from "../http/http_error.ts";
import {
  invoiceKey,
  stripeEventKey,
  stripePendingKey,
  stripeReportedKey,
  usageMonthKey,
  userByStripeCustomerKey,
  userKey,
} from "../store/kv_keys.ts";
import { type Invoice, previousMonth } from "./invoices.ts";
import { monthOf, quotaResetAt } from "./usage.ts";
import { sameUser, type User } from "../accounts/users.ts";
import { log } from "../observe/log.ts";
import { onFirstUse } from "../runtime/first_use.ts";

/** How long an applied event id is remembered: Stripe retries for up to three days. */
const EVENT_MEMORY_MS = 30 * 86400_000;

/**
 * The Stripe SDK: its ~200 modules were a good part of a cold start's module loading on servers
 * without Stripe, which never need them.
 */
const loadStripe = onFirstUse(() => import("stripe").then((module) => module.default));

/** A Stripe client for the configuration (pointed at `apiUrl` when set, as in tests). */
export async function createStripe(config: StripeConfig): Promise<Stripe> {
  const Stripe = await loadStripe();
  const api = config.apiUrl ? new URL(config.apiUrl) : null;
  return new Stripe(config.secretKey, {
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: 2,
    ...(api
      ? {
        host: api.hostname,
        port: Number(api.port || (api.protocol === "https:" ? 443 : 80)),
        protocol: api.protocol === "https:" ? "https" : "http",
      }
      : {}),
  });
}

function requireStripe(stripe: Stripe | null, action: string): Stripe {
  if (!stripe) {
    throw new HttpError(
      503,
      `Cannot ${action}: Stripe is not configured on this server; an admin can change plans ` +
        "with `deno task admin set-plan`",
    );
  }
  return stripe;
}

/** A Checkout session that subscribes the user to the metered Pro price; returns its URL. */
export async function startCheckout(
  stripe: Stripe | null,
  options: { user: User; config: StripeConfig | null; publicUrl: string },
): Promise<string> {
  const client = requireStripe(stripe, "start checkout");
  const { user } = options;
  if (user.plan === "pro") {
    throw new HttpError(409, "Cannot start checkout: you are on Pro already");
  }
  if (user.stripeSubscriptionId) {
    // Free limits after a failed payment, on a subscription Stripe still holds: a second one
    // would bill the same meter, and leave the unpaid one behind.
    throw new HttpError(
      409,
      "Cannot start checkout: your Pro subscription is still open at Stripe after a failed " +
        "payment; pay it with Manage payment to get Pro back, or downgrade to end it first",
    );
  }
  if (!user.emailVerifiedAt) {
    throw new HttpError(
      403,
      `Cannot upgrade to Pro: verify your email address first (${user.email}); follow the link ` +
        "in the mail we sent, or send a new one from the banner on your dashboard",
    );
  }
  const session = await client.checkout.sessions.create({
    mode: "subscription",
    line_items: [{ price: options.config!.priceId }],
    client_reference_id: user.id,
    // Billing periods on calendar months (UTC), like our counters and invoices.
    subscription_data: {
      billing_cycle_anchor: Math.floor(quotaResetAt(new Date()).getTime() / 1000),
    },
    ...(user.stripeCustomerId
      ? { customer: user.stripeCustomerId }
      : { customer_email: user.email }),
    success_url: `${options.publicUrl}/dashboard/usage?checkout=done`,
    cancel_url: `${options.publicUrl}/dashboard/usage?checkout=cancelled`,
  }, { idempotencyKey: `checkout-${user.id}-${Math.floor(Date.now() / 60_000)}` });
  if (!session.url) throw new Error("Stripe returned a Checkout session without a URL");
  return session.url;
}

/** A customer-portal session for managing payment; returns its URL. */
export async function openPortal(
  stripe: Stripe | null,
  options: { user: User; publicUrl: string },
): Promise<string> {
  const client = requireStripe(stripe, "open the billing portal");
  if (!options.user.stripeCustomerId) {
    throw new HttpError(409, "Cannot open the billing portal: upgrade to Pro first");
  }
  const session = await client.billingPortal.sessions.create({
    customer: options.user.stripeCustomerId,
    return_url: `${options.publicUrl}/dashboard/usage`,
  });
  return session.url;
}

/** Rounds of reporting before a subscription ends: a pending batch, the rest, waits for another. */
const MAX_REPORT_ROUNDS = 50;

/**
 * Ends a subscription at Stripe with its usage billed, once the user is off Pro (leavePro):
 * first the webhooks not yet reported go to the meter (the last month's, and this month's up to
 * `proUsed`, the count when Pro ended), then the cancel asks Stripe to invoice them at once
 * (`invoice_now`): a plain cancel drops metered usage not yet invoiced, and the 5-minute report
 * skips Free users. One Stripe no longer knows counts as cancelled. 502 when Stripe fails.
 */
async function cancelSubscription(
  kv: Deno.Kv,
  client: Stripe,
  options: {
    user: User;
    subscriptionId: string;
    meterEventName: string;
    action: string;
    proUsed: { month: string; count: number };
  },
): Promise<void> {
  const { user, action } = options;
  const fail = (what: string, error: unknown) =>
    new HttpError(
      502,
      `Cannot ${action}: ${what} failed (${
        error instanceof Error ? error.message : error
      }); nothing was changed, try again`,
    );
  if (user.stripeCustomerId) {
    const now = new Date();
    for (const month of [previousMonth(now), monthOf(now)]) {
      const upTo = month === options.proUsed.month ? options.proUsed.count : undefined;
      // A batch left pending by a failed report is resent first; then what came after it.
      // While the 5-minute report sends one, wait: if it fails, it is ours to resend now, as
      // that report skips Free users.
      for (let batch = 0;; batch++) {
        if (batch === MAX_REPORT_ROUNDS) {
          throw fail("reporting this month's usage to Stripe", "another report kept it busy");
        }
        const result = await reportMonth(kv, {
          stripe: client,
          meterEventName: options.meterEventName,
          user,
          month,
          now,
          upTo,
        });
        if (result === "failed") {
          throw fail("reporting this month's usage to Stripe", "the meter refused it");
        }
        if (result === "nothing") break;
        if (result === "busy") await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }
  try {
    await endSubscription(client, options.subscriptionId, { invoice_now: true });
  } catch (error) {
    throw fail("cancelling the Stripe subscription", error);
  }
}

/** Subscription statuses that bill nothing more. */
const ENDED_STATUSES = ["canceled", "incomplete_expired"];

/**
 * Cancels a subscription at Stripe; returns once it has ended, by this call or before (one
 * Stripe no longer knows counts as ended), and throws Stripe's error otherwise.
 */
async function endSubscription(
  client: Stripe,
  subscriptionId: string,
  params: Stripe.SubscriptionCancelParams,
): Promise<void> {
  try {
    await client.subscriptions.cancel(subscriptionId, params);
  } catch (error) {
    const Stripe = await loadStripe();
    if (error instanceof Stripe.errors.StripeInvalidRequestError && error.statusCode === 404) {
      return;
    }
    // The cancel may have been applied though its answer was lost (or by an earlier delivery):
    // Stripe's word on the subscription decides.
    const ended = await client.subscriptions.retrieve(subscriptionId).then(
      (subscription) => ENDED_STATUSES.includes(subscription.status),
      () => false,
    );
    if (!ended) throw error;
  }
}

/**
 * Moves a user to Free and ends their Pro subscription (when there is one) with its usage
 * billed: a downgrade, or the first step of an account's deletion (`action` names it). Free
 * comes first, in one commit with the month's count: ingest commits check both, so the count is
 * every webhook accepted as Pro and none is accepted as Pro while Stripe is being told, which is
 * what is reported and invoiced. When Stripe fails the user is Pro again and gets the 502; with
 * a subscription and no Stripe here, 503 and nothing changes.
 */
export async function leavePro(
  kv: Deno.Kv,
  options: {
    stripe: Stripe | null;
    userId: string;
    freeAllowance: number;
    meterEventName: string;
    action: string;
    /** Without Stripe configured, keep a subscription as it is (the admin's plans) or refuse. */
    withoutStripe: "keep" | "refuse";
  },
): Promise<User> {
  for (;;) {
    const month = monthOf(new Date());
    const [entry, used] = await kv.getMany<[User, Deno.KvU64]>([
      userKey(options.userId),
      usageMonthKey(options.userId, month),
    ]);
    if (!entry.value) {
      throw new HttpError(404, `Cannot ${options.action}: the account no longer exists`);
    }
    const before = entry.value;
    const subscriptionId = before.stripeSubscriptionId ?? null;
    const client = subscriptionId && (options.stripe || options.withoutStripe === "refuse")
      ? requireStripe(options.stripe, options.action)
      : null;
    const free: User = {
      ...withPlan(before, { plan: "free", freeAllowance: options.freeAllowance }),
      stripeSubscriptionId: null,
      graceEndsAt: null,
    };
    // Nothing to write (a second downgrade): a write would only make the account's commits
    // conflict, and the downgrade button can be posted in a loop.
    if (sameUser(before, free)) return before;
    const committed = await kv.atomic().check(entry).check(used).set(entry.key, free).commit();
    if (!committed.ok) continue;
    if (client && subscriptionId) {
      try {
        await cancelSubscription(kv, client, {
          user: before,
          subscriptionId,
          meterEventName: options.meterEventName,
          action: options.action,
          proUsed: { month, count: Number(used.value?.value ?? 0n) },
        });
      } catch (error) {
        // Pro again, unless something else changed the plan meanwhile (a new Checkout).
        await updateUser(
          kv,
          options.userId,
          (user) =>
            user.plan === "free" && !user.stripeSubscriptionId
              ? {
                ...user,
                plan: before.plan,
                monthlyCap: before.monthlyCap,
                monthlyLimit: before.monthlyLimit,
                stripeSubscriptionId: subscriptionId,
                graceEndsAt: before.graceEndsAt,
              }
              : user,
        ).catch((restoring) => log.error("restoring Pro failed", restoring, { userId: before.id }));
        throw error;
      }
    }
    return free;
  }
}

/** Back to Free at once; a Pro subscription ends with its usage billed (leavePro). */
export async function downgrade(
  kv: Deno.Kv,
  options: Omit<Parameters<typeof leavePro>[1], "action" | "withoutStripe">,
): Promise<User> {
  return await leavePro(kv, { ...options, action: "downgrade", withoutStripe: "keep" });
}

async function updateUser(
  kv: Deno.Kv,
  userId: string,
  change: (user: User) => User,
): Promise<User> {
  for (;;) {
    const entry = await kv.get<User>(userKey(userId));
    if (!entry.value) {
      throw new HttpError(404, "Cannot update billing: the account no longer exists");
    }
    const updated = change(entry.value);
    // Nothing to write (a second downgrade): a write would only make the account's commits
    // conflict, and the downgrade button can be posted in a loop.
    if (sameUser(entry.value, updated)) return entry.value;
    if ((await kv.atomic().check(entry).set(entry.key, updated).commit()).ok) return updated;
  }
}

/** How far a signed event's time may be from ours, either way (Stripe's default, 5 minutes). */
export const STRIPE_TOLERANCE_SECONDS = 300;

/**
 * Verifies a webhook's signature over the raw body; 400 when it does not match, or when the
 * signed time is more than the tolerance away from now. Stripe's library only refuses events
 * that are too old; one dated in the future would stay replayable until then.
 */
export async function verifyStripeEvent(
  stripe: Stripe | null,
  options: { body: string; signature: string | null; secret: string; now?: number },
): Promise<Stripe.Event> {
  const client = requireStripe(stripe, "accept Stripe events");
  if (!options.signature) {
    throw new HttpError(400, "Cannot accept Stripe event: the Stripe-Signature header is missing");
  }
  const now = options.now ?? Date.now();
  let event: Stripe.Event;
  const Stripe = await loadStripe();
  try {
    event = await client.webhooks.constructEventAsync(
      options.body,
      options.signature,
      options.secret,
      STRIPE_TOLERANCE_SECONDS,
      Stripe.createSubtleCryptoProvider(),
      now,
    );
  } catch (error) {
    throw new HttpError(
      400,
      `Cannot accept Stripe event: ${error instanceof Error ? error.message : "bad signature"}`,
    );
  }
  // The signature covers `t`, so once it verified this is the time Stripe signed.
  const signedAt = Number(/(?:^|,)\s*t=(\d+)/.exec(options.signature)?.[1]);
  const ahead = signedAt - Math.floor(now / 1000);
  if (!Number.isFinite(ahead) || ahead > STRIPE_TOLERANCE_SECONDS) {
    throw new HttpError(
      400,
      `Cannot accept Stripe event: its timestamp is ${ahead} s in the future, more than the ` +
        `tolerance of ${STRIPE_TOLERANCE_SECONDS} s; check this server's clock`,
    );
  }
  return event;
}

function idOf(value: string | { id: string } | null | undefined): string | null {
  return typeof value === "string" ? value : value?.id ?? null;
}

/** How a Stripe event changes the user it is about. */
interface PlanChange {
  userId: string;
  change: (user: User) => User;
  customerId: string | null;
  /**
   * A subscription this event starts that must end instead: a second Checkout completed while
   * the user has another subscription would bill the customer's metered usage twice.
   */
  duplicate?: (user: User) => string | null;
}

/** The user a Stripe event is about, and how the event changes them (null: not ours). */
async function planChange(
  kv: Deno.Kv,
  event: Stripe.Event,
  options: { freeAllowance: number; graceMs: number; now: Date },
): Promise<PlanChange | null> {
  const pro = (user: User) => withPlan(user, { plan: "pro", freeAllowance: options.freeAllowance });
  const free = (user: User) =>
    withPlan(user, { plan: "free", freeAllowance: options.freeAllowance });
  const byCustomer = async (customer: string | { id: string } | null | undefined) => {
    const id = idOf(customer);
    return id ? (await kv.get<string>(userByStripeCustomerKey(id))).value : null;
  };
  switch (event.type) {
    case "checkout.session.completed": {
      const session = event.data.object;
      if (!session.client_reference_id) return null;
      const customerId = idOf(session.customer);
      const subscriptionId = idOf(session.subscription);
      return {
        userId: session.client_reference_id,
        customerId,
        change: (user) => ({
          ...pro(user),
          stripeCustomerId: customerId,
          stripeSubscriptionId: subscriptionId,
          graceEndsAt: null,
        }),
        // On Free limits too: a payment failed and its grace ended, the subscription still open.
        duplicate: (user) =>
          subscriptionId && user.stripeSubscriptionId &&
            user.stripeSubscriptionId !== subscriptionId
            ? subscriptionId
            : null,
      };
    }
    case "customer.subscription.updated":
    case "customer.subscription.deleted": {
      const subscription = event.data.object;
      const userId = await byCustomer(subscription.customer);
      if (!userId) return null;
      const ended = event.type === "customer.subscription.deleted" ||
        ["canceled", "incomplete_expired"].includes(subscription.status);
      return {
        userId,
        customerId: null,
        // Only the user's current subscription changes the plan. Stripe does not deliver events
        // in order: an "active" update of a subscription a downgrade since cancelled would give
        // Pro back with nothing to bill it, and the end of an old one would end the new one's.
        change: (user) =>
          user.stripeSubscriptionId !== subscription.id
            ? user
            : ended
            ? { ...free(user), stripeSubscriptionId: null, graceEndsAt: null }
            : subscription.status === "active" || subscription.status === "trialing"
            ? pro(user)
            : user,
      };
    }
    case "invoice.paid": {
      const userId = await byCustomer(event.data.object.customer);
      if (!userId) return null;
      return { userId, customerId: null, change: (user) => ({ ...user, graceEndsAt: null }) };
    }
    case "invoice.payment_failed": {
      const userId = await byCustomer(event.data.object.customer);
      if (!userId) return null;
      const graceEndsAt = new Date(options.now.getTime() + options.graceMs).toISOString();
      return {
        userId,
        customerId: null,
        change: (user) => ({ ...user, graceEndsAt: user.graceEndsAt ?? graceEndsAt }),
      };
    }
    default:
      return null;
  }
}

/**
 * Applies a verified Stripe event exactly once: the event id is recorded in the same commit as
 * the change, so a redelivery finds it and changes nothing. A subscription that duplicates the
 * user's current one is cancelled at Stripe first; when that fails, 502 and nothing is recorded,
 * so that Stripe delivers the event again.
 */
export async function applyStripeEvent(
  kv: Deno.Kv,
  options: {
    stripe: Stripe | null;
    event: Stripe.Event;
    freeAllowance: number;
    graceMs: number;
    now?: Date;
    /** A payment failed (the mail to the owner); errors are logged, not thrown. */
    onPaymentFailed?: (user: User) => Promise<void>;
  },
): Promise<"applied" | "duplicate" | "ignored"> {
  const now = options.now ?? new Date();
  const marker = stripeEventKey(options.event.id);
  if ((await kv.get(marker)).versionstamp) return "duplicate";
  const plan = await planChange(kv, options.event, { ...options, now });
  /** The duplicate subscription this call ended: it never becomes the user's. */
  let ended: string | null = null;
  for (;;) {
    const seen = await kv.get(marker);
    if (seen.versionstamp) return "duplicate";
    const op = kv.atomic().check(seen).set(marker, {
      type: options.event.type,
      appliedAt: now.toISOString(),
    }, { expireIn: EVENT_MEMORY_MS });
    let changed: User | null = null;
    if (plan) {
      const entry = await kv.get<User>(userKey(plan.userId));
      const duplicate: string | null = entry.value && !ended
        ? plan.duplicate?.(entry.value) ?? null
        : null;
      if (duplicate) {
        const client = requireStripe(options.stripe, "apply Stripe event");
        await endSubscription(client, duplicate, {}).catch((error) => {
          throw new HttpError(
            502,
            `Cannot apply Stripe event: cancelling the duplicate subscription ${duplicate} ` +
              `failed (${error instanceof Error ? error.message : error}); Stripe will send ` +
              "the event again",
          );
        });
        log.warn("a second Pro subscription was cancelled at Stripe", undefined, {
          userId: plan.userId,
          subscriptionId: duplicate,
        });
        ended = duplicate;
      }
      if (entry.value && !ended) {
        changed = plan.change(entry.value);
        op.check(entry).set(entry.key, changed);
        if (plan.customerId) op.set(userByStripeCustomerKey(plan.customerId), plan.userId);
      }
    }
    if ((await op.commit()).ok) {
      if (options.event.type === "invoice.payment_failed" && changed) {
        await options.onPaymentFailed?.(changed).catch((error) =>
          log.error("mailing the failed payment failed", error, { userId: changed.id })
        );
      }
      if (options.event.type === "invoice.paid" && plan) {
        await markInvoicePaid(kv, { userId: plan.userId, invoice: options.event.data.object });
      }
      return plan ? "applied" : "ignored";
    }
  }
}

/** Marks our invoice for the month a paid Stripe invoice covers as paid. */
async function markInvoicePaid(
  kv: Deno.Kv,
  options: { userId: string; invoice: Stripe.Invoice },
): Promise<void> {
  const start = options.invoice.period_start;
  if (!start) return;
  const key = invoiceKey(options.userId, monthOf(new Date(start * 1000)));
  for (;;) {
    const entry = await kv.get<Invoice>(key);
    if (!entry.value || entry.value.status === "paid") return;
    // Stripe's id marks the invoice as billed by Stripe: kept, anonymised, if the account goes.
    const paid = { ...entry.value, status: "paid" as const, stripeInvoiceId: options.invoice.id };
    if ((await kv.atomic().check(entry).set(key, paid).commit()).ok) return;
  }
}

/** Moves Pro accounts whose payment grace period ended to Free limits; returns how many. */
export async function endExpiredGrace(
  kv: Deno.Kv,
  options: { freeAllowance: number; now?: Date },
): Promise<number> {
  const now = (options.now ?? new Date()).toISOString();
  let ended = 0;
  for await (const entry of kv.list<User>({ prefix: ["users"] })) {
    const user = entry.value;
    if (user.plan !== "pro" || !user.graceEndsAt || user.graceEndsAt > now) continue;
    const updated = withPlan(user, { plan: "free", freeAllowance: options.freeAllowance });
    if ((await kv.atomic().check(entry).set(entry.key, updated).commit()).ok) ended++;
  }
  return ended;
}

/** A batch of usage sent to the meter but not yet confirmed; resent as is until it is. */
interface PendingReport {
  from: number;
  to: number;
  identifier: string;
}

/**
 * Reports each Pro user's accepted webhooks of the month to Stripe's Billing Meter, as the
 * difference since the last confirmed report. A batch is written down before it is sent and
 * resent unchanged after a failure, with the same identifier, which Stripe deduplicates: the
 * meter's total equals our own count.
 */
export async function reportUsage(
  kv: Deno.Kv,
  options: { stripe: Stripe; meterEventName: string; now?: Date },
): Promise<{ sent: number; failed: number }> {
  const now = options.now ?? new Date();
  // The month just closed may still hold webhooks accepted after its last report.
  const months = [previousMonth(now), monthOf(now)];
  let sent = 0;
  let failed = 0;
  for await (const entry of kv.list<User>({ prefix: ["users"] })) {
    const user = entry.value;
    if (user.plan !== "pro" || !user.stripeCustomerId) continue;
    for (const month of months) {
      const result = await reportMonth(kv, { ...options, user, month, now });
      if (result === "sent") sent++;
      if (result === "failed") failed++;
    }
  }
  return { sent, failed };
}

async function reportMonth(
  kv: Deno.Kv,
  options: {
    stripe: Stripe;
    meterEventName: string;
    user: User;
    month: string;
    now: Date;
    /** Report no further than this count (the month's webhooks accepted while Pro). */
    upTo?: number;
  },
): Promise<"sent" | "failed" | "nothing" | "busy"> {
  const { user, month } = options;
  const [used, reported, pendingEntry] = await kv.getMany<
    [Deno.KvU64, Deno.KvU64, PendingReport]
  >([
    usageMonthKey(user.id, month),
    stripeReportedKey(user.id, month),
    stripePendingKey(user.id, month),
  ]);
  let pending = pendingEntry.value;
  if (!pending) {
    const from = Number(reported.value?.value ?? 0n);
    const to = Math.min(Number(used.value?.value ?? 0n), options.upTo ?? Infinity);
    if (to <= from) return "nothing";
    pending = { from, to, identifier: `${user.id}-${month}-${from}-${to}` };
    const ok = await kv.atomic().check(pendingEntry).set(pendingEntry.key, pending).commit();
    if (!ok.ok) return "busy"; // another reporter is on it
  }
  // Usage belongs to its month: a late report of a closed month carries its last second.
  const end = quotaResetAt(new Date(`${month}-01T00:00:00Z`)).getTime() - 1000;
  try {
    await options.stripe.billing.meterEvents.create({
      event_name: options.meterEventName,
      identifier: pending.identifier,
      timestamp: Math.floor(Math.min(options.now.getTime(), end) / 1000),
      payload: {
        stripe_customer_id: user.stripeCustomerId!,
        value: String(pending.to - pending.from),
      },
    });
  } catch (error) {
    log.error("reporting usage to Stripe failed; will resend", error, { userId: user.id });
    return "failed";
  }
  await confirmReport(kv, { userId: user.id, month, sent: pending });
  return "sent";
}

/**
 * Records a batch Stripe confirmed. Another reporter (a downgrade, the report of another
 * instance) may have resent the same batch and gone on meanwhile: the reported count only ever
 * rises, and the pending batch is cleared only if it is still this one. Written over, either
 * would have sent the next batch's range again, under a new identifier: billed twice.
 */
async function confirmReport(
  kv: Deno.Kv,
  options: { userId: string; month: string; sent: PendingReport },
): Promise<void> {
  const { userId, month, sent } = options;
  for (;;) {
    const [reported, pending] = await kv.getMany<[Deno.KvU64, PendingReport]>([
      stripeReportedKey(userId, month),
      stripePendingKey(userId, month),
    ]);
    const op = kv.atomic().check(reported, pending);
    if (Number(reported.value?.value ?? 0n) < sent.to) {
      op.set(reported.key, new Deno.KvU64(BigInt(sent.to)));
    }
    if (pending.value?.identifier === sent.identifier) op.delete(pending.key);
    if ((await op.commit()).ok) return;
  }
}
