/**
 * Deleting an account, safely at any size.
 *
 * The first commit makes the account unreachable at once: it deletes the user, the email and
 * Stripe-customer indexes, every slug and token-hash index, and writes a durable marker. From then
 * on its sessions and tokens are 401 (no user), its endpoint URLs 404 (no slug; every isolate's
 * endpoint cache is told), and the group commit, which checks the user's versionstamp, stores no
 * further webhook for it. The rest (events, body chunks, counters, …) goes in sweeps of at most
 * BATCH_MUTATIONS per commit, resumed from the marker at start-up if the process died.
 *
 * Webhooks committed just before the first commit are in the log when the sweep reads it, and a
 * body streamed meanwhile is discarded when its commit is refused. Writers already in flight
 * (a refusal count flushed a second later, a client's ack, a usage report to Stripe) may still
 * write a key after the first sweep passed it: a second sweep runs `settleMs` later
 * (DELETION_SETTLE_SECONDS), and only then does the marker go.
 */
import type Stripe from "stripe";
import { log } from "../observe/log.ts";
import type { Broker } from "../fanout/broker.ts";
import { HttpError } from "../http/http_error.ts";
import { listEndpoints } from "../endpoints/endpoints.ts";
import { listTokens, type Token } from "./tokens.ts";
import type { User } from "./users.ts";
import type { Endpoint } from "../endpoints/endpoints.ts";
import { leavePro } from "../billing/stripe.ts";
import type { Invoice } from "../billing/invoices.ts";
import {
  accountDeletionKey,
  accountDeletionsPrefix,
  endpointBySlugKey,
  eventHeadKey,
  flashKey,
  invoicesOfUserPrefix,
  loginDevicesPrefix,
  loginFailuresKey,
  sessionKey,
  tokenByHashKey,
  userByEmailKey,
  userByStripeCustomerKey,
  userKey,
  userKeyPrefixes,
} from "../store/kv_keys.ts";

/** What is left to delete of an account, kept in KV until its last key is gone. */
export interface DeletionMarker {
  userId: string;
  /** Needed for the keys named by email (log-in failures and devices); deleted last. */
  email: string;
  startedAt: string;
  /** When the second sweep may run (epoch ms): writers in flight have finished by then. */
  sweepAgainAt: number;
}

/** A Stripe-billed invoice of a deleted account: the accounting record, without its owner. */
export type AnonymisedInvoice = Omit<Invoice, "userId"> & { accountDeletedAt: string };

/** Deletes a user's keys that other concerns own (mail: links, notices, queued mails). */
export type ExtraCleanup = (account: { userId: string; email: string }) => Promise<void>;

/** Mutations per sweep commit: KV allows 1,000. */
const BATCH_MUTATIONS = 900;
/** Mutations the first commit may spend on token-hash indexes; the sweep removes any others. */
const FIRST_COMMIT_MUTATIONS = 900;
/** How long a failed sweep waits before it tries again. */
const RETRY_MS = 5_000;

/** The deletions of one isolate: started by a request, resumed at start-up. */
export interface Deletions {
  /**
   * Makes the account unreachable in one commit (after cancelling its Stripe subscription) and
   * sweeps the rest in the background; 404 when there is no such account.
   */
  begin(options: { userId: string; stripe: Stripe | null }): Promise<DeletionMarker>;
  /** Resumes every deletion a previous process left unfinished; returns how many. */
  resume(): Promise<number>;
  /** Resolves once no sweep runs in this isolate. */
  idle(): Promise<void>;
  /** Stops sweeping; what is left resumes at the next start. */
  stop(): Promise<void>;
}

/** Creates the deletion runner of an isolate. */
export function createDeletions(
  kv: Deno.Kv,
  options: {
    broker: Broker;
    settleMs: number;
    /** Stripe's meter event name (STRIPE_METER_EVENT). */
    meterEventName: string;
    /** FREE_MONTHLY_LIMIT. */
    freeAllowance: number;
    extraCleanup?: ExtraCleanup;
  },
): Deletions {
  const running = new Map<string, Promise<void>>();
  const stop = new AbortController();

  function run(userId: string): Promise<void> {
    const current = running.get(userId);
    if (current) return current;
    const job = finish(kv, {
      ...options,
      userId,
      signal: stop.signal,
    }).catch((error) => {
      if (!stop.signal.aborted) log.error("deleting an account failed", error, { userId });
    }).finally(() => running.delete(userId));
    running.set(userId, job);
    return job;
  }

  return {
    async begin({ userId, stripe }) {
      const marker = await beginDeletion(kv, { ...options, userId, stripe });
      run(userId);
      return marker;
    },
    async resume() {
      let count = 0;
      try {
        for await (const entry of kv.list<DeletionMarker>({ prefix: accountDeletionsPrefix() })) {
          run(entry.value.userId);
          count++;
        }
      } catch (error) {
        // Stopped while listing (KV closed under us): the next start resumes instead.
        if (stop.signal.aborted) return count;
        throw error;
      }
      if (count > 0) log.info(`resuming ${count} unfinished account deletion(s)`);
      return count;
    },
    async idle() {
      while (running.size > 0) await Promise.all(running.values());
    },
    async stop() {
      stop.abort();
      await Promise.all(running.values());
    },
  };
}

/**
 * The first commit: cancels the Stripe subscription (nothing is deleted if that fails), then
 * removes the user and every index that reaches it, and writes the marker, in one atomic commit
 * that checks the user did not change meanwhile.
 */
export async function beginDeletion(
  kv: Deno.Kv,
  options: {
    userId: string;
    broker: Broker;
    stripe: Stripe | null;
    /** Stripe's meter event name, for the usage reported before the subscription ends. */
    meterEventName: string;
    /** FREE_MONTHLY_LIMIT: the account is moved off Pro before it goes. */
    freeAllowance: number;
    settleMs: number;
    now?: number;
  },
): Promise<DeletionMarker> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const entry = await kv.get<User>(userKey(options.userId));
    const user = entry.value;
    if (!user) throw new HttpError(404, "Cannot delete account: it no longer exists");
    if (user.stripeSubscriptionId) {
      // Off Pro first, its usage billed and the subscription ended; then read the account again.
      await leavePro(kv, {
        stripe: options.stripe,
        userId: user.id,
        freeAllowance: options.freeAllowance,
        meterEventName: options.meterEventName,
        action: "delete account",
        withoutStripe: "refuse",
      });
      continue;
    }
    const [endpoints, tokens] = await Promise.all([
      listEndpoints(kv, user.id),
      listTokens(kv, user.id),
    ]);
    const now = options.now ?? Date.now();
    const marker: DeletionMarker = {
      userId: user.id,
      email: user.email,
      startedAt: new Date(now).toISOString(),
      sweepAgainAt: now + options.settleMs,
    };
    const op = kv.atomic()
      .check(entry)
      .delete(userKey(user.id))
      .delete(userByEmailKey(user.email))
      .set(accountDeletionKey(user.id), marker);
    if (user.stripeCustomerId) op.delete(userByStripeCustomerKey(user.stripeCustomerId));
    // At most 100 endpoints per account; tokens past the room are 401 anyway (no user) and swept.
    for (const endpoint of endpoints) op.delete(endpointBySlugKey(endpoint.slug));
    const room = FIRST_COMMIT_MUTATIONS - 4 - endpoints.length;
    for (const token of tokens.slice(0, Math.max(0, room))) op.delete(tokenByHashKey(token.hash));
    if (!(await op.commit()).ok) continue;
    announce(options.broker, user.id, endpoints);
    return marker;
  }
  throw new HttpError(409, "Cannot delete account: it kept changing meanwhile; try again");
}

/** Tells every isolate: forget these slugs, close every connection of the account. */
function announce(broker: Broker, userId: string, endpoints: Endpoint[]): void {
  for (const endpoint of endpoints) {
    broker.publish({ kind: "endpoint_changed", slug: endpoint.slug });
  }
  broker.publish({ kind: "user_deleted", userId });
}

/** Sweeps, waits for writers in flight, sweeps again, then removes the marker; retries on failure. */
async function finish(
  kv: Deno.Kv,
  options: {
    userId: string;
    broker: Broker;
    extraCleanup?: ExtraCleanup;
    signal: AbortSignal;
  },
): Promise<void> {
  const { signal } = options;
  while (!signal.aborted) {
    try {
      const entry = await kv.get<DeletionMarker>(accountDeletionKey(options.userId));
      if (!entry.value) return;
      const marker = entry.value;
      await sweepAccount(kv, { ...options, marker });
      await sleep(marker.sweepAgainAt - Date.now(), signal);
      if (signal.aborted) return;
      await sweepAccount(kv, { ...options, marker });
      // The marker goes last, so a death before this point sweeps again at the next start.
      await kv.atomic().check(entry).delete(entry.key).commit();
      return;
    } catch (error) {
      if (signal.aborted) return;
      log.error("sweeping a deleted account failed; retrying", error, {
        userId: options.userId,
      });
      await sleep(RETRY_MS, signal);
    }
  }
}

/**
 * Deletes every key of the account but its marker: each per-user prefix with the keys that point
 * into it, the keys named by its email, and Stripe-billed invoices anonymised rather than deleted.
 */
export async function sweepAccount(
  kv: Deno.Kv,
  options: {
    marker: DeletionMarker;
    broker: Broker;
    extraCleanup?: ExtraCleanup;
    signal?: AbortSignal;
  },
): Promise<void> {
  const { userId, email } = options.marker;
  const batch = batcher(kv);
  const prefixes = userKeyPrefixes(userId);
  const slugs: Endpoint[] = [];
  for (const prefix of prefixes) {
    for await (const entry of kv.list({ prefix }, { batchSize: 500 })) {
      if (options.signal?.aborted) return;
      const keys = [entry.key, ...linkedKeys(prefix[0], entry)];
      if (prefix[0] === "endpoints") slugs.push(entry.value as Endpoint);
      await batch.add((op) => keys.forEach((key) => op.delete(key)), keys.length);
    }
  }
  const deletedAt = options.marker.startedAt;
  for await (
    const entry of kv.list<Invoice | AnonymisedInvoice>({ prefix: invoicesOfUserPrefix(userId) })
  ) {
    const invoice = entry.value;
    if (!invoice.stripeInvoiceId) {
      await batch.add((op) => op.delete(entry.key), 1);
    } else if ("userId" in invoice) {
      const { userId: _owner, ...rest } = invoice;
      const kept: AnonymisedInvoice = { ...rest, accountDeletedAt: deletedAt };
      await batch.add((op) => op.set(entry.key, kept), 1);
    }
  }
  await batch.add(
    (op) => op.delete(eventHeadKey(userId)).delete(loginFailuresKey("email", email)),
    2,
  );
  // Devices are keyed by their cookie's hash: finding the account's means reading them all, in
  // the background, once per sweep.
  for await (
    const entry of kv.list<{ email?: string }>({ prefix: loginDevicesPrefix() }, { batchSize: 500 })
  ) {
    if (options.signal?.aborted) return;
    if (entry.value?.email === email) await batch.add((op) => op.delete(entry.key), 1);
  }
  await batch.flush();
  await options.extraCleanup?.({ userId, email });
  // Endpoints created while the account went (a request authenticated just before) and
  // connections opened meanwhile: told again once their keys are gone.
  announce(options.broker, userId, slugs);
}

/** Keys outside the user's prefixes that an entry under them points to. */
function linkedKeys(family: Deno.KvKeyPart, entry: Deno.KvEntry<unknown>): Deno.KvKey[] {
  if (family === "sessions_of_user") {
    const hash = entry.key[2] as string;
    return [sessionKey(hash), flashKey(hash)];
  }
  if (family === "tokens") return [tokenByHashKey((entry.value as Token).hash)];
  if (family === "endpoints") return [endpointBySlugKey((entry.value as Endpoint).slug)];
  return [];
}

/** Collects mutations into commits of at most BATCH_MUTATIONS. */
function batcher(kv: Deno.Kv) {
  let op = kv.atomic();
  let pending = 0;
  const flush = async () => {
    if (pending === 0) return;
    // Plain deletes and sets, no checks: a commit cannot conflict.
    await op.commit();
    op = kv.atomic();
    pending = 0;
  };
  return {
    async add(mutate: (op: Deno.AtomicOperation) => void, count: number) {
      if (pending + count > BATCH_MUTATIONS) await flush();
      mutate(op);
      pending += count;
    },
    flush,
  };
}

/** Waits `ms` (nothing when ≤ 0), ending early when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0 || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}
