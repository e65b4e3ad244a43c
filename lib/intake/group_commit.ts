/**
 * The write path: accepted webhooks become durable in group commits, then fan out.
 *
 * Requests queue up while the previous commit is in flight, those received by the next turn of
 * the event loop join them, and they commit together, across users: for each user one read of
 * the user, month counter and log head (skipped when this isolate wrote them last); one atomic
 * operation that checks those versionstamps, writes the admitted events, moves the heads and
 * sums the counters. Each user's batch admits only what that user's remaining quota allows, so
 * the quota is exact under any concurrency without a read-check-write per request on a hot key.
 * A conflicting commit (another isolate or instance wrote for one of the users, or a user's
 * record changed) re-reads: the users whose keys moved commit apart, the rest together again.
 *
 * Many senders share a commit, so none may fail it for the others: every event is measured
 * against KV's value limit before it joins, and a commit that fails anyway (not a conflict, not
 * a full store) is split, by user and then in halves, until only the webhook at fault fails.
 * Nor may any hold the others up: users take turns, and one whose webhooks do not all fit a
 * commit goes behind the rest.
 *
 * There is no outbox job in KV's queue: publishing follows the commit in the same isolate, and
 * if the process dies between the two, its connections die with it and their clients resume
 * from the log by last id; other instances (BROKER=kv) learn of commits by watching each user's
 * log head, not from this publish. A queue would only add a write per commit, and its thread
 * panics the process when the disk fills.
 */
import type { Broker } from "../fanout/broker.ts";
import type { Endpoint } from "../endpoints/endpoints.ts";
import type { BodyKind } from "./body_types.ts";
import type { Verified } from "../shared/envelope.ts";
import {
  discardBody,
  INLINE_BODY_BYTES,
  type LargeBodyFacts,
  packedSize,
  stageBody,
  type StoredEvent,
  toPacks,
} from "../log/events.ts";
import { toLargeEvent, toLiveEvent } from "../log/envelope_json.ts";
import { encodePack, PACK_BYTES } from "../log/pack_codec.ts";
import { HttpError } from "../http/http_error.ts";
import { nextId } from "../store/ids.ts";
import { isStorageUnavailable } from "../store/kv.ts";
import type { StorageGuard } from "../store/storage_guard.ts";
import { eventHeadKey, eventKey, usageDayKey, usageMonthKey, userKey } from "../store/kv_keys.ts";
import {
  countRejected,
  crossedLevels,
  dayOf,
  monthOf,
  quotaResetAt,
  type QuotaState,
  quotaState,
  type RejectionCounter,
  remainingQuota,
} from "../billing/usage.ts";
import type { RateLimiter } from "./rate_limit.ts";
import type { User } from "../accounts/users.ts";
import { counters, groupCommitBatch, groupCommitLatency } from "../observe/metrics.ts";
import { log } from "../observe/log.ts";

/** A webhook as received, before it has an id. */
export interface IncomingWebhook {
  endpoint: Endpoint;
  receivedAt: Date;
  method: string;
  path: string;
  /** The query as JSON text (repeated names as arrays). */
  queryJson: string;
  /** The request headers as JSON text (lowercase names). */
  headersJson: string;
  contentType: string | null;
  kind: BodyKind;
  /** The body when it was read into memory; empty when it was streamed (see `staged`). */
  body: Uint8Array;
  /** The body decoded as UTF-8 when it is valid UTF-8, else null; decoded once, reused. */
  text: string | null;
  /**
   * Set when the body was streamed into KV chunks as it arrived (over STREAM_BODY_BYTES), after
   * `Ingest.admit` let it in: submit neither stages it again nor takes the flood limit twice,
   * and discards the chunks when the webhook is refused.
   */
  staged?: StagedWebhookBody;
  /** The endpoint's provider check, when it names a provider. */
  verified?: Verified;
  /**
   * A provider's URL handshake the relay answered: stored, shown and counted as any webhook;
   * over the limit still answered, but not stored.
   */
  handshake?: boolean;
  /** The provider's name for the event (event_type.ts), or null. */
  eventType?: string | null;
}

/** Where a streamed body's chunks are, and what was learnt of it on the way in. */
export interface StagedWebhookBody {
  blobId: string;
  chunks: number;
  /** Body bytes. */
  size: number;
  /** Whether the body is valid UTF-8. */
  utf8: boolean;
  /** For UTF-8 text: characters, characters as a JSON string, any beyond Latin-1. */
  chars?: number;
  escapedChars?: number;
  wide?: boolean;
}

/** The outcome of one submitted webhook. */
export type IngestResult =
  | { accepted: true; id: string; quota: QuotaState }
  | { accepted: false; reason: "quota"; quota: QuotaState }
  | { accepted: false; reason: "no_account" }
  /** The endpoint's flood limit: counted where webhooks are committed, so once per process. */
  | { accepted: false; reason: "rate_limited"; retryAfterSeconds: number };

/** A refused webhook's outcome. */
export type Refusal = Extract<IngestResult, { accepted: false }>;

/** One user's share of a commit. */
interface Group {
  userId: string;
  batch: Pending[];
}

/** What a commit will write for one user, kept to settle it afterwards. */
interface Plan {
  group: Group;
  gate: GateState;
  user: User;
  used: number;
  admitted: Pending[];
  /** Of `admitted`, those counted against the quota (all of them). */
  counted: number;
  records: StoredEvent[];
  quota(n: number): QuotaState;
}

/** A user's month crossing an alert level in a commit. */
export interface QuotaCrossing {
  userId: string;
  level: number;
  used: number;
  limit: number;
  /** "YYYY-MM" */
  month: string;
  resetsAt: string;
}

/** Group-commit front of the event log. */
export interface Ingest {
  submit(webhook: IncomingWebhook): Promise<IngestResult>;
  /**
   * Lets a large body in before a byte of it is staged: the endpoint's flood limit (taken here,
   * not again at submit), the full-store hold (throws as submit does), and the user's quota
   * (one KV read unless this isolate committed for the user last). Null when admitted, else
   * the refusal; the commit still decides the quota exactly.
   */
  admit(endpoint: Endpoint): Promise<Refusal | null>;
}

interface GateState {
  month: string;
  user: Deno.KvEntryMaybe<User>;
  used: Deno.KvEntryMaybe<Deno.KvU64>;
  head: Deno.KvEntryMaybe<string>;
}

interface Pending {
  webhook: IncomingWebhook;
  staged: { blobId: string; chunks: number } | null;
  bytes: number;
  /** Answered already; a later failure of the same commit round must not touch it. */
  settled: boolean;
  resolve(result: IngestResult): void;
  reject(error: unknown): void;
}

const MAX_BATCH_EVENTS = 500;
const MAX_BATCH_BYTES = 600 * 1024;
const MAX_COMMIT_ATTEMPTS = 50;
/** KV allows 100 checks per atomic operation; each user's part checks three keys. */
const MAX_USERS_PER_COMMIT = 33;
/** Conflicting attempts before a commit of several users splits into one per user. */
const SPLIT_AFTER_ATTEMPTS = 2;
const MAX_REMEMBERED_GATES = 10_000;
/** KV's own refusals of one value or key (a bug in the measuring above if ever seen). */
const KV_LIMIT_ERROR = /too large/i;

/**
 * One turn of the event loop, taken before each commit: requests whose bytes are already here
 * (read while the last commit was in flight or being answered) are parsed and join this commit.
 * SQLite's writer costs about the same per commit whatever it holds, and at c=50 the mean commit
 * went from 18 webhooks to 25 (issue 15). `setImmediate`, not `setTimeout(0)`: a timer waits a
 * millisecond or more with the core idle.
 */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Creates the ingest pipeline over a KV store and a broker. */
export function createIngest(
  kv: Deno.Kv,
  options: {
    broker: Broker;
    retentionMs: number;
    now?: () => Date;
    limiter?: RateLimiter;
    /** Holds writes back while the disk is full (see storage_guard.ts). */
    storage?: Pick<StorageGuard, "unavailable" | "firstCheck" | "report">;
    /** Where refusals are counted; without one each batch's refusals are written at once. */
    rejections?: Pick<RejectionCounter, "count">;
    /**
     * A commit took a user's month across an alert level (80, 100 %): the quota mail. Called
     * only on a crossing, never per webhook; it must not throw (errors are its own to log).
     */
    onQuotaLevel?: (crossing: QuotaCrossing) => void;
  },
): Ingest {
  const clock = options.now ?? (() => new Date());
  const rejections = options.rejections ?? { count: (entry) => countRejected(kv, entry) };
  /** Webhooks waiting for the next commit, per user, in arrival order of each user's first. */
  const waiting = new Map<string, Pending[]>();
  let draining = false;

  /**
   * Takes the next commit's share of the waiting webhooks, within KV's limits: each user's in
   * arrival order, users in turn, so that no account's backlog holds up another's webhooks.
   */
  function takeGroups(): Group[] {
    const groups: Group[] = [];
    let events = 0;
    let bytes = 0;
    for (const [userId, queue] of waiting) {
      if (groups.length >= MAX_USERS_PER_COMMIT || events >= MAX_BATCH_EVENTS) break;
      let count = 0;
      while (count < queue.length && events + count < MAX_BATCH_EVENTS) {
        if ((events > 0 || count > 0) && bytes + queue[count].bytes > MAX_BATCH_BYTES) break;
        bytes += queue[count].bytes;
        count++;
      }
      if (count === 0) break;
      events += count;
      groups.push({ userId, batch: queue.splice(0, count) });
      if (queue.length === 0) waiting.delete(userId);
    }
    // A user left with webhooks waiting goes behind everyone else: one account's flood, which
    // could keep its queue above a commit's worth, takes turns instead of every commit.
    for (const { userId } of groups) {
      const rest = waiting.get(userId);
      if (rest) {
        waiting.delete(userId);
        waiting.set(userId, rest);
      }
    }
    return groups;
  }

  async function drain(): Promise<void> {
    draining = true;
    try {
      while (waiting.size > 0) {
        await nextTurn();
        const groups = takeGroups();
        const started = performance.now();
        await commitOrFail(groups);
        groupCommitLatency.observe((performance.now() - started) / 1000);
        let size = 0;
        for (const group of groups) size += group.batch.length;
        groupCommitBatch.observe(size);
      }
    } finally {
      draining = false;
    }
  }

  /** Commits, or fails each of these webhooks with the error; never throws. */
  async function commitOrFail(groups: Group[]): Promise<void> {
    try {
      await commitGroups(groups);
    } catch (error) {
      for (const group of groups) for (const pending of group.batch) fail(pending, error);
    }
  }

  /**
   * A commit failed for a reason other than a conflict or an unavailable store: something in it
   * is at fault (KV refused a value or a key). Commit the users apart, then each user's batch in
   * halves, so only the webhook at fault fails and every other one is stored.
   */
  async function commitApart(groups: Group[], error: unknown): Promise<void> {
    if (groups.length > 1) {
      log.warn(
        `a commit of ${groups.length} users failed (${(error as Error).message}); ` +
          "committing them apart",
      );
      // Different users' keys do not overlap, so their commits may run side by side.
      await Promise.all(groups.map((group) => commitOrFail([group])));
      return;
    }
    const [{ userId, batch }] = groups;
    if (batch.length === 1) {
      const message = (error as Error).message;
      throw KV_LIMIT_ERROR.test(message)
        ? new HttpError(413, `Cannot ingest: the event cannot be stored (${message})`)
        : error;
    }
    // One after the other: both halves move the same user's log head.
    const half = Math.ceil(batch.length / 2);
    await commitOrFail([{ userId, batch: batch.slice(0, half) }]);
    await commitOrFail([{ userId, batch: batch.slice(half) }]);
  }

  /**
   * What this isolate last committed for a user: after our own commit we know every checked
   * key's value and versionstamp, so the next batch skips the read. Anyone else's write makes
   * the check fail, and the retry reads afresh.
   */
  const gates = new Map<string, GateState>();

  async function readGates(userIds: string[], month: string): Promise<Map<string, GateState>> {
    const found = new Map<string, GateState>();
    const unknown: string[] = [];
    for (const userId of userIds) {
      const known = gates.get(userId);
      if (known && known.month === month) found.set(userId, known);
      else unknown.push(userId);
    }
    // getMany takes at most 10 keys: three users at a time.
    for (let i = 0; i < unknown.length; i += 3) {
      const users = unknown.slice(i, i + 3);
      const entries = await kv.getMany(
        users.flatMap((userId) => [
          userKey(userId),
          usageMonthKey(userId, month),
          eventHeadKey(userId),
        ]),
      );
      users.forEach((userId, n) => {
        const [user, used, head] = entries.slice(n * 3, n * 3 + 3);
        found.set(userId, {
          month,
          user: user as Deno.KvEntryMaybe<User>,
          used: used as Deno.KvEntryMaybe<Deno.KvU64>,
          head: head as Deno.KvEntryMaybe<string>,
        });
      });
    }
    return found;
  }

  function rememberGate(userId: string, state: GateState): void {
    gates.delete(userId); // re-insert so iteration order is least recently used first
    if (gates.size >= MAX_REMEMBERED_GATES) gates.delete(gates.keys().next().value!);
    gates.set(userId, state);
  }

  /**
   * Commits several users' batches in one atomic operation. Each user's part checks that
   * user's own three keys, so the quota stays exact per user; one SQLite commit serves them
   * all, which is what lets many users' webhooks share the single writer. When the commit
   * keeps conflicting (another writer is busy with one of these users), the users commit
   * apart so one contended user cannot hold up the rest.
   */
  async function commitGroups(groups: Group[]): Promise<void> {
    /** Users whose remembered gate was dropped before refusing them: read afresh, once. */
    const refreshed = new Set<string>();
    for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS;) {
      if (attempt >= SPLIT_AFTER_ATTEMPTS && groups.length > 1) {
        await Promise.all(groups.map((group) => commitOrFail([group])));
        return;
      }
      const now = clock();
      const month = monthOf(now);
      const states = await readGates(groups.map((g) => g.userId), month);
      const op = kv.atomic();
      const plans: Plan[] = [];
      const refusals: { group: Group; refused: Pending[]; result: Refusal }[] = [];
      let stale = false;
      for (const group of groups) {
        const gate = states.get(group.userId)!;
        const user = gate.user.value;
        if (!user) {
          refusals.push({
            group,
            refused: group.batch,
            result: { accepted: false, reason: "no_account" },
          });
          continue;
        }
        const used = Number(gate.used.value?.value ?? 0n);
        const room = remainingQuota(user.monthlyLimit, used);
        // Handshakes count too: what is stored and delivered is whatever the sender put around
        // the few fields that make a handshake, so uncounted they carried any payload free.
        const admitted = group.batch.slice(0, room);
        const refused = group.batch.slice(admitted.length);
        const counted = admitted.length;
        const quota = (n: number): QuotaState => quotaState(user.monthlyLimit, used + n, now);
        // Never refuse on a remembered gate: an upgrade or a raised cap written since (by a
        // route, another isolate) conflicts with no commit of a user who is refused, so the
        // remembered limit would stand until a restart.
        if (
          refused.length > 0 && gate === gates.get(group.userId) && !refreshed.has(group.userId)
        ) {
          refreshed.add(group.userId);
          gates.delete(group.userId);
          stale = true;
        }
        if (refused.length > 0) {
          refusals.push({
            group,
            refused,
            result: { accepted: false, reason: "quota", quota: quota(counted) },
          });
        }
        if (admitted.length === 0) continue;
        let head = gate.head.value;
        const records: StoredEvent[] = [];
        for (const pending of admitted) {
          head = nextId(head);
          records.push(toRecord(head, pending, group.userId));
        }
        op.check(gate.user, gate.used, gate.head);
        for (const pack of toPacks(records)) {
          const value = await encodePack(pack);
          op.set(eventKey(group.userId, pack[0].id), value, { expireIn: options.retentionMs });
        }
        const count = BigInt(counted);
        op.set(eventHeadKey(group.userId), head)
          .sum(usageMonthKey(group.userId, month), count)
          .sum(usageDayKey(group.userId, dayOf(now)), count);
        plans.push({ group, gate, user, used, admitted, counted, records, quota });
      }
      if (stale) continue;
      if (plans.length > 0) {
        let result: Deno.KvCommitResult | Deno.KvCommitError;
        try {
          result = await op.commit();
        } catch (error) {
          // Nothing was written. A full or failing store fails every webhook here alike, and
          // the sender retries later; anything else is split until the one at fault is found.
          for (const plan of plans) gates.delete(plan.group.userId);
          if (isStorageUnavailable(error)) {
            options.storage?.report(error);
            throw error;
          }
          await commitApart(groups, error);
          return;
        }
        if (!result.ok) {
          counters.kvConflictRetries++;
          // Someone else wrote for one of these users: read them all again.
          for (const plan of plans) gates.delete(plan.group.userId);
          if (groups.length > 1 && await commitSteadyApart(groups, plans, month)) return;
          attempt++;
          continue;
        }
        for (const plan of plans) settleAdmitted(plan, { now, versionstamp: result.versionstamp });
      }
      for (const { group, refused, result } of refusals) {
        for (const pending of refused) settleRejected(pending, result);
        if (result.reason === "quota") {
          rejections.count({ userId: group.userId, count: refused.length, now });
        }
      }
      return;
    }
    throw new Error(
      `Cannot ingest: commit for ${groups.length} user(s) conflicted ${MAX_COMMIT_ATTEMPTS} times`,
    );
  }

  /**
   * After a conflict: reads the users' gates again to see whose moved (an account's own record
   * rewritten, another isolate's commit for it). When some did and some did not, the steady
   * users commit together at once and each moved user apart, so one account whose record keeps
   * changing cannot make every commit it shares conflict and split. False when there is no such
   * split to make (all moved, or none), and the caller retries them together.
   */
  async function commitSteadyApart(
    groups: Group[],
    plans: Plan[],
    month: string,
  ): Promise<boolean> {
    const fresh = await readGates(plans.map((plan) => plan.group.userId), month);
    const moved = new Set<string>();
    for (const { group, gate } of plans) {
      const read = fresh.get(group.userId)!;
      const same = read.user.versionstamp === gate.user.versionstamp &&
        read.used.versionstamp === gate.used.versionstamp &&
        read.head.versionstamp === gate.head.versionstamp;
      if (same) rememberGate(group.userId, read); // read just now: the retry need not again
      else moved.add(group.userId);
    }
    if (moved.size === 0 || moved.size === groups.length) return false;
    const steady = groups.filter((group) => !moved.has(group.userId));
    await Promise.all([
      commitOrFail(steady),
      ...groups.filter((group) => moved.has(group.userId)).map((group) => commitOrFail([group])),
    ]);
    return true;
  }

  /** After the commit: remember the gate, publish live, answer the senders, send alerts. */
  function settleAdmitted(plan: Plan, context: { now: Date; versionstamp: string }): void {
    const { group, gate, user, used, admitted, counted, records } = plan;
    const count = BigInt(counted);
    const head = records.at(-1)!.id;
    rememberGate(group.userId, {
      month: gate.month,
      user: gate.user,
      used: {
        key: gate.used.key,
        value: new Deno.KvU64(BigInt(used) + count),
        versionstamp: context.versionstamp,
      },
      head: { key: gate.head.key, value: head, versionstamp: context.versionstamp },
    });
    try {
      options.broker.publish({
        kind: "events",
        userId: group.userId,
        after: gate.head.value,
        events: records.map((record, i) =>
          record.large
            ? toLargeEvent(record, record.large)
            : toLiveEvent(record, admitted[i].webhook.body, admitted[i].webhook.text)
        ),
      });
    } catch (error) {
      // Committed is stored: a failure to publish must not fail (and discard) what is in the
      // log. Clients that missed it catch up by their last id.
      log.error("publishing committed events failed", error);
    }
    admitted.forEach((pending, i) => {
      pending.resolve({ accepted: true, id: records[i].id, quota: plan.quota(i + 1) });
    });
    const after = used + counted;
    for (const level of crossedLevels(user.monthlyLimit, { before: used, after })) {
      const resetsAt = quotaResetAt(context.now).toISOString();
      try {
        options.broker.publish({
          kind: "notice",
          userId: group.userId,
          name: "quota",
          json: JSON.stringify({
            type: "quota",
            level,
            used: after,
            limit: user.monthlyLimit,
            resetsAt,
          }),
        });
      } catch (error) {
        // As with the events above: what is committed stays committed, and the other users'
        // webhooks of this commit must still be answered. The mail below still goes.
        log.error("publishing a quota notice failed", error);
      }
      options.onQuotaLevel?.({
        userId: group.userId,
        level,
        used: after,
        limit: user.monthlyLimit!,
        month: gate.month,
        resetsAt,
      });
    }
  }

  function settleRejected(pending: Pending, result: IngestResult): void {
    pending.resolve(result);
    if (pending.staged) {
      discardBody(kv, { userId: pending.webhook.endpoint.userId, ...pending.staged }).catch((
        error,
      ) => log.error("discarding staged body failed", error));
    }
  }

  /** A webhook that could not be stored: the sender gets the error, its staged body goes. */
  function fail(pending: Pending, error: unknown): void {
    if (pending.settled) return; // stored and answered: its body chunks belong to the event
    pending.reject(error);
    if (pending.staged) {
      discardBody(kv, { userId: pending.webhook.endpoint.userId, ...pending.staged }).catch(
        // Chunks expire with the retention window anyway; a failing store is already reported.
        (cause) => isStorageUnavailable(cause) || log.error("discarding staged body failed", cause),
      );
    }
  }

  function toRecord(id: string, pending: Pending, userId: string): StoredEvent {
    const w = pending.webhook;
    // Optional fields assigned, not spread from temporary objects (three allocations fewer per
    // webhook), in the order the spreads gave them: stored values stay byte for byte the same.
    const record: StoredEvent = {
      id,
      userId,
      endpointId: w.endpoint.id,
      endpoint: w.endpoint.slug,
      receivedAt: w.receivedAt.toISOString(),
      expiresAt: w.receivedAt.getTime() + options.retentionMs,
      method: w.method,
      path: w.path,
      queryJson: w.queryJson,
      headersJson: w.headersJson,
      contentType: w.contentType,
      kind: w.kind,
      size: w.staged?.size ?? w.body.byteLength,
      body: pending.staged ? null : w.body,
      blobId: pending.staged?.blobId ?? null,
      chunks: pending.staged?.chunks ?? 0,
    };
    if (w.staged) record.large = largeFacts(w.staged);
    record.eventType = w.eventType ?? null;
    if (w.verified) record.verified = w.verified;
    // The relay answered a handshake itself: no client's answer is awaited.
    if (w.handshake) record.handshake = true;
    else if (w.endpoint.respond) record.respond = true;
    return record;
  }

  /** A full disk: write nothing (not even a staged body) until space returns. */
  async function holdWhileFull(): Promise<void> {
    const first = options.storage?.firstCheck();
    if (first) await first;
    // The message is KV's own, so it is classified alike on either side of a Worker's hop.
    if (options.storage?.unavailable()) {
      throw new Error("database or disk is full (writes held back until space returns)");
    }
  }

  /**
   * Refuses, before a byte of its body is written, a webhook whose account is gone or has no
   * quota left (one KV read unless this isolate committed for the user last and left room);
   * null lets it in.
   * The commit still decides the quota exactly: this only spares the store bodies it would
   * write and delete again for an account that is over its limit.
   */
  async function quotaRefusal(endpoint: Endpoint): Promise<Refusal | null> {
    const now = clock();
    const month = monthOf(now);
    const known = gates.get(endpoint.userId);
    let user: User | null = null;
    let used = 0;
    if (known && known.month === month) {
      user = known.user.value;
      used = Number(known.used.value?.value ?? 0n);
    }
    // A remembered gate may let a webhook in (the commit decides), never keep it out: the
    // account's limit may have been raised since (see commitGroups).
    if (!user || remainingQuota(user.monthlyLimit, used) <= 0) {
      if (known) gates.delete(endpoint.userId);
      const [userEntry, usedEntry] = await kv.getMany<[User, Deno.KvU64]>([
        userKey(endpoint.userId),
        usageMonthKey(endpoint.userId, month),
      ]);
      user = userEntry.value;
      used = Number(usedEntry.value?.value ?? 0n);
    }
    if (!user) return { accepted: false, reason: "no_account" };
    if (remainingQuota(user.monthlyLimit, used) > 0) return null;
    rejections.count({ userId: endpoint.userId, count: 1, now });
    return { accepted: false, reason: "quota", quota: quotaState(user.monthlyLimit, used, now) };
  }

  /** Discards a streamed body whose webhook never reached the commit queue. */
  function discardStaged(webhook: IncomingWebhook): void {
    if (!webhook.staged) return;
    discardBody(kv, { userId: webhook.endpoint.userId, ...webhook.staged }).catch((cause) =>
      isStorageUnavailable(cause) || log.error("discarding staged body failed", cause)
    );
  }

  return {
    async admit(endpoint) {
      const wait = options.limiter?.take(endpoint.id) ?? 0;
      if (wait > 0) return { accepted: false, reason: "rate_limited", retryAfterSeconds: wait };
      await holdWhileFull();
      return await quotaRefusal(endpoint);
    },
    async submit(webhook) {
      if (!webhook.staged) {
        const wait = options.limiter?.take(webhook.endpoint.id) ?? 0;
        if (wait > 0) return { accepted: false, reason: "rate_limited", retryAfterSeconds: wait };
      }
      try {
        await holdWhileFull();
      } catch (error) {
        discardStaged(webhook);
        throw error;
      }
      const userId = webhook.endpoint.userId;
      // The event without its body must fit one KV value (receive.ts bounds path, headers and
      // query well below this); checked here too, so nothing too large joins a shared commit.
      const withoutBody = packedSize({ ...webhook, body: null });
      if (withoutBody > PACK_BYTES) {
        discardStaged(webhook);
        throw new HttpError(
          413,
          `Cannot ingest: the event takes ${withoutBody} bytes without its body, over the ` +
            `limit of ${PACK_BYTES} for one stored value`,
        );
      }
      // A body stays inline when it and the rest of the event fit one pack comfortably.
      const room = PACK_BYTES - withoutBody;
      let staged: { blobId: string; chunks: number } | null = webhook.staged
        ? { blobId: webhook.staged.blobId, chunks: webhook.staged.chunks }
        : null;
      if (!staged && webhook.body.byteLength > Math.min(INLINE_BODY_BYTES, room)) {
        const refusal = await quotaRefusal(webhook.endpoint);
        if (refusal) return refusal;
        try {
          staged = await stageBody(kv, {
            userId,
            body: webhook.body,
            expireIn: options.retentionMs,
          });
        } catch (error) {
          options.storage?.report(error);
          throw error;
        }
      }
      const bytes = withoutBody + (staged ? 0 : webhook.body.byteLength);
      return await new Promise<IngestResult>((resolve, reject) => {
        const pending: Pending = {
          webhook,
          staged,
          bytes,
          settled: false,
          resolve(result) {
            pending.settled = true;
            resolve(result);
          },
          reject(error) {
            pending.settled = true;
            reject(error);
          },
        };
        const queue = waiting.get(userId);
        if (queue) queue.push(pending);
        else waiting.set(userId, [pending]);
        if (!draining) drain();
      });
    },
  };
}

/** What a stored record keeps of a staged body's measurements. */
function largeFacts(staged: StagedWebhookBody): LargeBodyFacts {
  const { utf8, chars, escapedChars, wide } = staged;
  return chars === undefined ? { utf8 } : { utf8, chars, escapedChars, wide };
}
