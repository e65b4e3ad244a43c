/**
 * Prometheus metrics of one isolate, and the text one scrape returns for the whole process.
 *
 * The hot path (ingest, group commit, fan-out) only adds to the plain numbers in `counters`
 * (no label strings, no awaits, no allocation); the registry reads them when scraped. Histograms
 * are observed directly: once per request or per commit, without labels.
 *
 * There is no KV queue (see lib/intake/group_commit.ts: publishing needs no durable job), so
 * there are no queue re-publishes to count, and nothing in the broker publishes a message twice.
 *
 * prom-client is imported when first needed (a scrape, or enough observations waiting): loading
 * it took about a quarter of a cold start's CPU, and nothing before the first request needs it.
 * Until then the histograms keep their observations.
 */
import type client from "prom-client";
import { log } from "./log.ts";

/** Plain counters the hot path increments; the registry reads them at scrape time. */
export const counters = {
  /** Webhooks stored (ingest answered with the event id, or respond mode went on to wait). */
  webhooksAccepted: 0,
  /** Events handed to a client's transport: live, catch-up, resend or a group's dispatch. */
  deliveries: 0,
  /** Connections closed because their client fell behind (SLOW_CONSUMER_BYTES). */
  slowConsumerCloses: 0,
  /**
   * Consumer groups: claims tried for an event that turned out done or held by another member,
   * each a KV round trip spent for nothing (a race between isolates, or a stale candidate).
   */
  groupClaimsLost: 0,
  /** Catch-ups run (a reconnecting client's read of the log after its last event id). */
  catchUpReads: 0,
  /** Respond mode: senders answered with a client's response, and senders given 504. */
  respondAnswers: 0,
  respondTimeouts: 0,
  /** Mails handed to the SMTP server, and attempts that failed (each is retried). */
  mailsSent: 0,
  mailsFailed: 0,
  /** KV writes tried again: the file was busy (another isolate or instance writing) … */
  kvBusyRetries: 0,
  /** … or a group commit's check failed (another writer changed a user's quota or head). */
  kvConflictRetries: 0,
  /** KV writes that failed for good (full disk, a refused value, busy for too long). */
  kvCommitErrors: 0,
  /** Live connections open on this isolate, by transport. */
  connectedSse: 0,
  connectedWs: 0,
};

/** Refused webhooks by HTTP status (a handful of statuses: 402, 404, 413, 429, 503, …). */
const refusedByStatus = new Map<number, number>();

/** Counts a webhook the ingest route refused with `status`. */
export function countRefusedWebhook(status: number): void {
  refusedByStatus.set(status, (refusedByStatus.get(status) ?? 0) + 1);
}

/** Counts a mail's outcome; the mail sender's `onResult` callback is wired to it. */
export function countMail(outcome: "sent" | "failed"): void {
  if (outcome === "sent") counters.mailsSent++;
  else counters.mailsFailed++;
}

/** Counts a live connection opening (+1) or ending (−1) on this isolate. */
export function countConnected(transport: "sse" | "ws", change: 1 | -1): void {
  if (transport === "sse") counters.connectedSse += change;
  else counters.connectedWs += change;
}

/** A histogram's settings, as prom-client takes them. */
interface HistogramSpec {
  name: string;
  help: string;
  buckets: number[];
}

/** A histogram observed on the hot path; its values wait in a list until prom-client loads. */
export interface LazyHistogram {
  observe(value: number): void;
}

/** Observations waiting for prom-client at which it is loaded without waiting for a scrape. */
const PENDING_LOAD_AT = 1000;
/**
 * The most a histogram keeps before prom-client is there: senders drive observations, and if
 * the import failed the list would grow with every webhook. Past it, observations are dropped.
 */
const PENDING_MAX = 100_000;
/** Every histogram, so loading prom-client can create them and replay what they kept. */
const histograms: { spec: HistogramSpec; pending: number[]; set(real: client.Histogram): void }[] =
  [];

/** A histogram that observes into prom-client's once loaded, and into a list before. */
function lazyHistogram(spec: HistogramSpec): LazyHistogram {
  const pending: number[] = [];
  let real: client.Histogram | null = null;
  histograms.push({ spec, pending, set: (histogram) => real = histogram });
  return {
    observe(value) {
      if (real) return real.observe(value);
      if (pending.length < PENDING_MAX) pending.push(value);
      // Bounded memory on a server nobody scrapes: load, then the values are replayed.
      if (pending.length === PENDING_LOAD_AT) {
        loadRegistry().catch((error) => log.error("loading prom-client failed", error));
      }
    },
  };
}

/** Seconds from a webhook's arrival to its answer (respond mode: to the client's answer). */
export const ingestLatency = lazyHistogram({
  name: "websocks_ingest_duration_seconds",
  help: "Time from a webhook's arrival to its answer",
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
});

/** Seconds one group commit takes (reading the gates, the atomic commit, its retries). */
export const groupCommitLatency = lazyHistogram({
  name: "websocks_group_commit_duration_seconds",
  help: "Time one group commit of webhooks takes, retries included",
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
});

/** Webhooks committed together in one group commit. */
export const groupCommitBatch = lazyHistogram({
  name: "websocks_group_commit_batch_size",
  help: "Webhooks committed together in one group commit",
  buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
});

/**
 * Event-loop delay, measured as timer drift: prom-client's default collector relies on Node's
 * perf_hooks.monitorEventLoopDelay, which Deno does not implement faithfully (it reports a few
 * microseconds whatever the load), so a timer every EVENT_LOOP_TICK_MS records how late it ran.
 */
const eventLoopDelay = lazyHistogram({
  name: "websocks_event_loop_delay_seconds",
  help: "How late a periodic timer ran: time the event loop was busy elsewhere",
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
});

/** prom-client and this isolate's registry. */
interface Loaded {
  client: typeof client;
  registry: client.Registry;
}
let loading: Promise<Loaded> | null = null;

/** Imports prom-client and builds this isolate's registry, once. */
function loadRegistry(): Promise<Loaded> {
  loading ??= import("prom-client").then(({ default: client }) => {
    const registry = new client.Registry();

    /** Creates a histogram's prom-client twin and gives it the observations kept so far. */
    function adopt(histogram: (typeof histograms)[number]): void {
      const real = new client.Histogram({ ...histogram.spec, registers: [registry] });
      for (const value of histogram.pending) real.observe(value);
      histogram.pending.length = 0;
      histogram.set(real);
    }

    /** A counter whose value is one of the plain `counters`, read when scraped. */
    function plainCounter(name: string, help: string, read: () => number): void {
      new client.Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    }

    /** A counter with one label, its values per label value read when scraped. */
    function labeledCounter(
      name: string,
      help: string,
      label: string,
      read: () => Iterable<readonly [string, number]>,
    ): void {
      new client.Counter({
        name,
        help,
        labelNames: [label],
        registers: [registry],
        collect() {
          this.reset();
          for (const [value, count] of read()) this.inc({ [label]: value }, count);
        },
      });
    }

    plainCounter(
      "websocks_webhooks_accepted_total",
      "Webhooks stored by the ingest route",
      () => counters.webhooksAccepted,
    );
    labeledCounter(
      "websocks_webhooks_refused_total",
      "Webhooks the ingest route refused, by HTTP status",
      "status",
      () => Array.from(refusedByStatus, ([status, count]) => [String(status), count] as const),
    );
    plainCounter(
      "websocks_deliveries_total",
      "Events handed to a client's transport (live, catch-up, resend, group dispatch)",
      () => counters.deliveries,
    );
    plainCounter(
      "websocks_slow_consumer_closes_total",
      "Connections closed because the client fell behind (SLOW_CONSUMER_BYTES)",
      () => counters.slowConsumerCloses,
    );
    plainCounter(
      "websocks_group_claims_lost_total",
      "Consumer groups: claims tried for an event already done or held by another member",
      () => counters.groupClaimsLost,
    );
    plainCounter(
      "websocks_catch_up_reads_total",
      "Catch-ups run: reads of the log after a reconnecting client's last event id",
      () => counters.catchUpReads,
    );
    plainCounter(
      "websocks_respond_answers_total",
      "Respond mode: senders answered with a client's response",
      () => counters.respondAnswers,
    );
    plainCounter(
      "websocks_respond_timeouts_total",
      "Respond mode: senders answered 504 because no client answered in time",
      () => counters.respondTimeouts,
    );
    plainCounter(
      "websocks_mails_sent_total",
      "Mails accepted by the SMTP server",
      () => counters.mailsSent,
    );
    plainCounter(
      "websocks_mails_failed_total",
      "Mail sending attempts that failed (the outbox retries them)",
      () => counters.mailsFailed,
    );
    labeledCounter(
      "websocks_kv_commit_retries_total",
      "KV writes tried again: busy (file locked by another writer) or conflict (check failed)",
      "reason",
      () => [["busy", counters.kvBusyRetries], ["conflict", counters.kvConflictRetries]],
    );
    plainCounter(
      "websocks_kv_commit_errors_total",
      "KV writes that failed for good (full disk, refused value, busy too long)",
      () => counters.kvCommitErrors,
    );
    new client.Gauge({
      name: "websocks_connected_clients",
      help: "Live client connections, by transport",
      labelNames: ["transport"],
      registers: [registry],
      collect() {
        this.set({ transport: "sse" }, counters.connectedSse);
        this.set({ transport: "ws" }, counters.connectedWs);
      },
    });
    // In the order they were always registered: a scrape lists them the same way.
    const [ingest, commitLatency, commitBatch, loopDelay] = histograms;
    for (const histogram of [ingest, commitLatency, commitBatch]) adopt(histogram);
    new client.Gauge({
      name: "websocks_process_resident_memory_bytes",
      help: "Resident memory of the process (every isolate reports the same value)",
      registers: [registry],
      // One process: the isolates' readings are the same figure, not parts of a sum.
      aggregator: "max",
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
    new client.Gauge({
      name: "websocks_heap_used_bytes",
      help: "JavaScript heap in use, summed over the isolates",
      registers: [registry],
      collect() {
        this.set(Deno.memoryUsage().heapUsed);
      },
    });
    adopt(loopDelay);
    return { client, registry };
  });
  return loading;
}

const EVENT_LOOP_TICK_MS = 200;
let monitorUsers = 0;
let monitorTimer: ReturnType<typeof setInterval> | undefined;

/** Starts the event-loop timer (shared by servers of one isolate); returns its stop. */
export function startEventLoopMonitor(): () => void {
  if (monitorUsers++ === 0) {
    let expected = performance.now() + EVENT_LOOP_TICK_MS;
    const timer = setInterval(() => {
      const now = performance.now();
      eventLoopDelay.observe(Math.max(0, now - expected) / 1000);
      expected = now + EVENT_LOOP_TICK_MS;
    }, EVENT_LOOP_TICK_MS);
    // A measurement must never keep the process alive.
    Deno.unrefTimer(timer);
    monitorTimer = timer;
  }
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    if (--monitorUsers === 0) clearInterval(monitorTimer);
  };
}

/** This isolate's metrics as prom-client's JSON, what the cluster's isolates exchange. */
export type IsolateMetrics = Awaited<ReturnType<client.Registry["getMetricsAsJSON"]>>;

/** This isolate's metrics, for the isolate gathering a cluster-wide scrape. */
export async function isolateMetrics(): Promise<IsolateMetrics> {
  const { registry } = await loadRegistry();
  return await registry.getMetricsAsJSON();
}

/**
 * Gathers every isolate's metrics (cluster.ts sets it; with one isolate it is unset): one
 * scrape, whichever isolate answers it, shows the whole process.
 */
let gatherIsolates: (() => Promise<IsolateMetrics[]>) | null = null;

/** Sets how this isolate gathers the other isolates' metrics; null for this isolate only. */
export function setMetricsGatherer(gather: (() => Promise<IsolateMetrics[]>) | null): void {
  gatherIsolates = gather;
}

/** The content type of `metricsText` (prom-client's Registry.PROMETHEUS_CONTENT_TYPE). */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** The Prometheus text of the process: this isolate's, or every isolate's added up. */
export async function metricsText(): Promise<string> {
  const { client, registry } = await loadRegistry();
  if (!gatherIsolates) return await registry.metrics();
  const all = await gatherIsolates();
  return await client.AggregatorRegistry.aggregate(all).metrics();
}

/** Compares a presented bearer token with METRICS_TOKEN in constant time. */
export async function metricsTokenMatches(presented: string, expected: string): Promise<boolean> {
  // Hashing first gives equal lengths, so the comparison's time says nothing about either.
  const encoder = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(presented)),
    crypto.subtle.digest("SHA-256", encoder.encode(expected)),
  ]);
  const left = new Uint8Array(a);
  const right = new Uint8Array(b);
  let difference = 0;
  for (let i = 0; i < left.length; i++) difference |= left[i] ^ right[i];
  return difference === 0;
}
