/**
 * The write path: accepted webhooks become durable in group commits, then fan out.
 *
 * Requests of one user queue up while that user's previous commit is in flight and then commit
 * together: one read of the user, month counter and log head; one atomic operation that checks
 * those three versionstamps, writes the admitted events, moves the head, sums the counters and
 * enqueues the delivery job. The batch admits only what the remaining quota allows, so the quota
 * is exact under any concurrency without a read-check-write per request on a hot key. A
 * conflicting commit (another isolate or instance wrote for the same user) just re-reads and
 * tries again.
 */
import type { Broker } from "./broker.ts";
import type { Endpoint } from "./endpoints.ts";
import {
  type BodyKind,
  discardBody,
  eventsAfter,
  INLINE_BODY_BYTES,
  PACK_BYTES,
  packedSize,
  stageBody,
  type StoredEvent,
  toLiveEvent,
  toPacks,
} from "./events.ts";
import { nextId } from "./ids.ts";
import {
  eventHeadKey,
  eventKey,
  usageDayKey,
  usageMonthKey,
  usageRejectedDayKey,
  usageRejectedMonthKey,
  userKey,
} from "./kv_keys.ts";
import { crossedLevels, dayOf, monthOf, quotaResetAt, type QuotaState } from "./usage.ts";
import type { User } from "./users.ts";

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
  body: Uint8Array;
  /** The body decoded as UTF-8 when it is valid UTF-8, else null; decoded once, reused. */
  text: string | null;
}

/** The outcome of one submitted webhook. */
export type IngestResult =
  | { accepted: true; id: string; quota: QuotaState }
  | { accepted: false; reason: "quota"; quota: QuotaState }
  | { accepted: false; reason: "no_account" };

/** The durable delivery job enqueued with every batch. */
export interface DeliveryJob {
  kind: "deliver";
  userId: string;
  firstId: string;
  lastId: string;
}

/** Group-commit front of the event log. */
export interface Ingest {
  submit(webhook: IncomingWebhook): Promise<IngestResult>;
  /** Handles a delivery job from the KV queue: publishes what the live path did not. */
  handleJob(job: DeliveryJob): Promise<void>;
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
  resolve(result: IngestResult): void;
  reject(error: unknown): void;
}

const MAX_BATCH_EVENTS = 500;
const MAX_BATCH_BYTES = 600 * 1024;
const MAX_COMMIT_ATTEMPTS = 50;
const MAX_REMEMBERED_GATES = 10_000;
/** Batches published live whose queue job has not come back yet. Bounded against leaks. */
const MAX_TRACKED_BATCHES = 100_000;

/** Creates the ingest pipeline over a KV store and a broker. */
export function createIngest(
  kv: Deno.Kv,
  options: { broker: Broker; retentionMs: number; now?: () => Date },
): Ingest {
  const clock = options.now ?? (() => new Date());
  const queues = new Map<string, Pending[]>();
  const publishedLive = new Set<string>();

  function takeBatch(queue: Pending[]): Pending[] {
    let bytes = 0;
    let count = 0;
    while (count < queue.length && count < MAX_BATCH_EVENTS) {
      bytes += queue[count].bytes;
      if (count > 0 && bytes > MAX_BATCH_BYTES) break;
      count++;
    }
    return queue.splice(0, count);
  }

  async function drain(userId: string, queue: Pending[]): Promise<void> {
    while (queue.length > 0) {
      const batch = takeBatch(queue);
      try {
        await commitBatch(userId, batch);
      } catch (error) {
        for (const pending of batch) pending.reject(error);
      }
    }
    queues.delete(userId);
  }

  /**
   * What this isolate last committed for a user: after our own commit we know every checked
   * key's value and versionstamp, so the next batch skips the read. Anyone else's write makes
   * the check fail, and the retry reads afresh.
   */
  const gates = new Map<string, GateState>();

  async function readGate(userId: string, month: string): Promise<GateState> {
    const known = gates.get(userId);
    if (known && known.month === month) return known;
    const [user, used, head] = await kv.getMany<[User, Deno.KvU64, string]>([
      userKey(userId),
      usageMonthKey(userId, month),
      eventHeadKey(userId),
    ]);
    return { month, user, used, head };
  }

  function rememberGate(userId: string, state: GateState): void {
    gates.delete(userId); // re-insert so iteration order is least recently used first
    if (gates.size >= MAX_REMEMBERED_GATES) gates.delete(gates.keys().next().value!);
    gates.set(userId, state);
  }

  async function commitBatch(userId: string, batch: Pending[]): Promise<void> {
    for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS; attempt++) {
      const now = clock();
      const gate = await readGate(userId, monthOf(now));
      const { user: userEntry, used: usedEntry, head: headEntry } = gate;
      const user = userEntry.value;
      if (!user) {
        for (const pending of batch) {
          settleRejected(pending, { accepted: false, reason: "no_account" });
        }
        return;
      }
      const used = Number(usedEntry.value?.value ?? 0n);
      const remaining = user.monthlyLimit === null
        ? Infinity
        : Math.max(0, user.monthlyLimit - used);
      const admitted = batch.slice(0, remaining);
      const rejected = batch.slice(admitted.length);
      const quotaAfter = (n: number): QuotaState => ({
        limit: user.monthlyLimit,
        used: used + n,
        resetAt: quotaResetAt(now),
      });
      if (admitted.length > 0) {
        const op = kv.atomic().check(userEntry, usedEntry, headEntry);
        let head = headEntry.value;
        const records: StoredEvent[] = [];
        for (const pending of admitted) {
          head = nextId(head);
          records.push(toRecord(head, pending, userId));
        }
        for (const pack of toPacks(records)) {
          op.set(eventKey(userId, pack[0].id), pack, { expireIn: options.retentionMs });
        }
        const count = BigInt(admitted.length);
        const job: DeliveryJob = { kind: "deliver", userId, firstId: records[0].id, lastId: head! };
        op.set(eventHeadKey(userId), head)
          .sum(usageMonthKey(userId, monthOf(now)), count)
          .sum(usageDayKey(userId, dayOf(now)), count)
          .enqueue(job);
        const result = await op.commit();
        if (!result.ok) {
          gates.delete(userId); // someone else wrote for this user: read again
          continue;
        }
        rememberGate(userId, {
          month: gate.month,
          user: userEntry,
          used: {
            key: usedEntry.key,
            value: new Deno.KvU64(BigInt(used) + count),
            versionstamp: result.versionstamp,
          },
          head: { key: headEntry.key, value: head!, versionstamp: result.versionstamp },
        });
        publish(userId, { records, admitted, after: headEntry.value });
        admitted.forEach((pending, i) =>
          pending.resolve({ accepted: true, id: records[i].id, quota: quotaAfter(i + 1) })
        );
        const after = used + admitted.length;
        for (const level of crossedLevels(user.monthlyLimit, { before: used, after })) {
          options.broker.publish({
            kind: "notice",
            userId,
            name: "quota",
            json: JSON.stringify({
              type: "quota",
              level,
              used: after,
              limit: user.monthlyLimit,
              resetsAt: quotaResetAt(now).toISOString(),
            }),
          });
        }
      }
      for (const pending of rejected) {
        settleRejected(pending, {
          accepted: false,
          reason: "quota",
          quota: quotaAfter(admitted.length),
        });
      }
      if (rejected.length > 0) countRejected(userId, { count: rejected.length, now });
      return;
    }
    throw new Error(
      `Cannot ingest: commit for user ${userId} conflicted ${MAX_COMMIT_ATTEMPTS} times`,
    );
  }

  /** Counts refusals for the usage page; off the accepted path, and a lost count is no fault. */
  function countRejected(userId: string, options: { count: number; now: Date }): void {
    const count = BigInt(options.count);
    kv.atomic()
      .sum(usageRejectedMonthKey(userId, monthOf(options.now)), count)
      .sum(usageRejectedDayKey(userId, dayOf(options.now)), count)
      .commit()
      .catch((error) => console.error("counting refused webhooks failed", error));
  }

  function settleRejected(pending: Pending, result: IngestResult): void {
    pending.resolve(result);
    if (pending.staged) {
      discardBody(kv, { userId: pending.webhook.endpoint.userId, ...pending.staged }).catch((
        error,
      ) => console.error("discarding staged body failed", error));
    }
  }

  function toRecord(id: string, pending: Pending, userId: string): StoredEvent {
    const w = pending.webhook;
    return {
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
      size: w.body.byteLength,
      body: pending.staged ? null : w.body,
      blobId: pending.staged?.blobId ?? null,
      chunks: pending.staged?.chunks ?? 0,
      ...(w.endpoint.respond ? { respond: true } : {}),
    };
  }

  function publish(
    userId: string,
    { records, admitted, after }: {
      records: StoredEvent[];
      admitted: Pending[];
      after: string | null;
    },
  ): void {
    if (publishedLive.size >= MAX_TRACKED_BATCHES) publishedLive.clear();
    publishedLive.add(records[0].id);
    options.broker.publish({
      kind: "events",
      userId,
      after,
      events: records.map((record, i) =>
        toLiveEvent(record, admitted[i].webhook.body, admitted[i].webhook.text)
      ),
    });
  }

  return {
    async submit(webhook) {
      const userId = webhook.endpoint.userId;
      // A body stays inline when it and the rest of the event fit one pack comfortably.
      const room = PACK_BYTES - packedSize({ ...webhook, body: null });
      const staged = webhook.body.byteLength > Math.min(INLINE_BODY_BYTES, room)
        ? await stageBody(kv, { userId, body: webhook.body, expireIn: options.retentionMs })
        : null;
      const bytes = 512 + (staged ? 0 : webhook.body.byteLength) +
        webhook.headersJson.length;
      return await new Promise<IngestResult>((resolve, reject) => {
        let queue = queues.get(userId);
        const pending: Pending = { webhook, staged, bytes, resolve, reject };
        if (queue) {
          queue.push(pending);
          return;
        }
        queue = [pending];
        queues.set(userId, queue);
        drain(userId, queue);
      });
    },

    async handleJob(job) {
      if (publishedLive.delete(job.firstId)) return;
      // The process that committed this batch did not publish it (it stopped first): publish
      // from the log. Connections drop ids they already sent, so a repeat is harmless.
      const events = [];
      for await (
        const event of eventsAfter(kv, { userId: job.userId, from: job.firstId, until: job.lastId })
      ) events.push(event);
      if (events.length > 0) options.broker.publish({ kind: "events", userId: job.userId, events });
    },
  };
}
