/**
 * Monthly invoices, made from our own counters after a month closes. Writing one is
 * idempotent (created only when absent), so the job may run twice, or late, and change nothing.
 */
import { costUsd, PRO_PRICE_PER_WEBHOOK_USD } from "./plans.ts";
import { log } from "../observe/log.ts";
import { listAll } from "../store/kv.ts";
import {
  invoiceKey,
  invoicesOfUserPrefix,
  stripeReportedKey,
  usageMonthKey,
} from "../store/kv_keys.ts";
import type { Plan, User } from "../accounts/users.ts";
import type { PublicInvoice } from "../shared/wire.ts";

/** One user's invoice for one calendar month (UTC). */
export interface Invoice {
  userId: string;
  /** "YYYY-MM" */
  period: string;
  plan: Plan;
  acceptedRequests: number;
  /** Webhooks the plan includes at no charge. */
  freeAllowance: number;
  unitPriceUsd: number;
  amountUsd: number;
  status: "paid" | "due";
  createdAt: string;
  /** The Stripe invoice that billed this month, once Stripe says it was paid (stripe.ts). */
  stripeInvoiceId?: string | null;
}

/** The month before the one containing `now`, as "YYYY-MM". */
export function previousMonth(now: Date): string {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1)).toISOString().slice(
    0,
    7,
  );
}

/** Writes every user's invoice for a closed month; returns how many were new. */
export async function generateInvoices(
  kv: Deno.Kv,
  options: {
    period: string;
    freeAllowance: number;
    now?: Date;
    /** A new invoice was written (the invoice mail); errors are logged, not thrown. */
    onInvoice?: (invoice: Invoice, user: User) => Promise<void>;
  },
): Promise<number> {
  let created = 0;
  for await (const entry of kv.list<User>({ prefix: ["users"] })) {
    const user = entry.value;
    const [used, metered] = await kv.getMany<[Deno.KvU64, Deno.KvU64]>([
      usageMonthKey(user.id, options.period),
      stripeReportedKey(user.id, options.period),
    ]);
    const accepted = Number(used.value?.value ?? 0n);
    // Free at the month's end, but Pro for part of it: a downgrade reported the Pro webhooks
    // to Stripe's meter and had them invoiced. Those are charged; the rest were Free's.
    const proPart = user.plan === "free" ? Number(metered.value?.value ?? 0n) : 0;
    const plan: Plan = proPart > 0 ? "pro" : user.plan;
    const charged = plan === "pro" ? (proPart > 0 ? proPart : accepted) : 0;
    const amountUsd = costUsd(plan, charged);
    const invoice: Invoice = {
      userId: user.id,
      period: options.period,
      plan,
      acceptedRequests: accepted,
      freeAllowance: plan === "free" ? options.freeAllowance : accepted - charged,
      unitPriceUsd: plan === "pro" ? PRO_PRICE_PER_WEBHOOK_USD : 0,
      amountUsd,
      status: amountUsd === 0 ? "paid" : "due",
      createdAt: (options.now ?? new Date()).toISOString(),
    };
    const key = invoiceKey(user.id, options.period);
    const result = await kv.atomic().check({ key, versionstamp: null }).set(key, invoice).commit();
    if (!result.ok) continue;
    created++;
    await options.onInvoice?.(invoice, user).catch((error) =>
      log.error(`mailing the invoice ${options.period} failed`, error, { userId: user.id })
    );
  }
  return created;
}

/** An invoice as the API shows it to its owner (its one definition is lib/shared/wire.ts). */
export type { PublicInvoice };

/** The invoice without the owner's id, which the caller already is. */
export function publicInvoice(invoice: Invoice): PublicInvoice {
  const { userId: _userId, ...rest } = invoice;
  return rest;
}

/** A user's invoices, newest first. */
export async function listInvoices(kv: Deno.Kv, userId: string): Promise<Invoice[]> {
  const entries = await listAll<Invoice>(kv, { prefix: invoicesOfUserPrefix(userId) }, {
    reverse: true,
  });
  return entries.map((e) => e.value);
}
