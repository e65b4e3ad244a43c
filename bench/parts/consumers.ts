/**
 * Part "consumers": what filters and consumer groups (issue #13) cost. Part "load"'s closed loop
 * (concurrency 50, ~1 KiB JSON) runs against a fresh server for each of four ways to consume:
 *
 * - `unfiltered`  one WebSocket subscriber without filters (the baseline, = part "load");
 * - `filterAll`   one subscriber with `?event=invoice.*&endpoint=<slug>`, every body matching;
 * - `filter1in10` the same filter, one body in ten matching (the others are `customer.created`);
 * - `group`       a consumer group of three WebSocket members (`group=bench`) acking each event;
 * - `groupSteady` the same group under part "steady"'s open loop (500/s): the latency of a group
 *                 that keeps up, where under the closed loop it falls behind and the latency is
 *                 the backlog's.
 *
 * Only here do the bodies carry a JSON `"type"` (`invoice.paid`), which the relay takes as the
 * event's type. Each run checks that every webhook meant for the consumers arrived once (for the
 * group: once across its members) and that no other did.
 *
 * The group's server runs with `ACKS_PER_SECOND=0`: the default (20 acks a second per account
 * and isolate) guards KV against one account's acks, and a member holds one unacked event at a
 * time, so with it on the group would deliver about 20 events a second and this would measure the
 * limiter rather than the groups.
 */
import { Consumer } from "../clients.ts";
import { runGenerator } from "../generator.ts";
import type { EventTypes } from "../loadgen.ts";
import type { PartContext } from "../part.ts";
import { rssKiB, signUpUser, sleep, startRelay } from "../procs.ts";
import { fmt, ms, printCpu, printGen } from "../report.ts";
import { BODY_BYTES, CONCURRENCY, STEADY_RATE, WARMUP_MS } from "../settings.ts";
import { summarize } from "../stats.ts";

/** One way to consume the same load. */
interface Variant {
  key: string;
  title: string;
  /** Query parameters after the token; `<slug>` is the user's endpoint. */
  query: string;
  members: number;
  ack: boolean;
  every: number;
  env?: Record<string, string>;
  /** The open loop at STEADY_RATE rather than the closed loop. */
  steady?: boolean;
}

const FILTER = "&event=invoice.*&endpoint=<slug>";

const VARIANTS: readonly Variant[] = [
  {
    key: "unfiltered",
    title: "one unfiltered WebSocket subscriber",
    query: "",
    members: 1,
    ack: false,
    every: 1,
  },
  {
    key: "filterAll",
    title: "one subscriber, event=invoice.*&endpoint=<slug>, all match",
    query: FILTER,
    members: 1,
    ack: false,
    every: 1,
  },
  {
    key: "filter1in10",
    title: "one subscriber, same filter, 1 in 10 match",
    query: FILTER,
    members: 1,
    ack: false,
    every: 10,
  },
  {
    key: "group",
    title: "group=bench, 3 WebSocket members acking each event (ACKS_PER_SECOND=0)",
    query: "&group=bench",
    members: 3,
    ack: true,
    every: 1,
    env: { ACKS_PER_SECOND: "0" },
  },
  {
    key: "groupSteady",
    title: `the same group under an open loop at ${STEADY_RATE}/s`,
    query: "&group=bench",
    members: 3,
    ack: true,
    every: 1,
    env: { ACKS_PER_SECOND: "0" },
    steady: true,
  },
];

/** How long delivery may stand still after the load before a run counts as incomplete. */
const STALL_MS = 15_000;
/**
 * How long a run may take to deliver after the load, moving or not: a group delivers far
 * slower than the relay accepts (see bench/RESULTS.md), so its backlog can take minutes.
 */
const DRAIN_CAP_MS = 300_000;

/** Part "consumers": each variant in turn; figures under `consumers.<variant>`. */
export async function run(context: PartContext): Promise<void> {
  const figures: Record<string, unknown> = {};
  const only = context.settings.consumerVariants;
  for (const variant of VARIANTS) {
    if (only && !only.includes(variant.key)) continue;
    figures[variant.key] = await measureVariant(context, variant);
    context.record("consumers", figures);
  }
}

async function measureVariant(context: PartContext, variant: Variant): Promise<unknown> {
  const seconds = context.settings.seconds;
  console.log(
    `\n## consumers/${variant.key}: ${variant.title}; WORKERS=1, ${
      variant.steady ? `open loop at ${STEADY_RATE}/s` : `concurrency ${CONCURRENCY}`
    }, ` +
      `${BODY_BYTES} B JSON, ${seconds} s after ${WARMUP_MS / 1000} s warm-up`,
  );
  const server = await startRelay({ env: variant.env ?? {} });
  const consumers: Consumer[] = [];
  try {
    const user = await signUpUser(server.url);
    const url = `ws://127.0.0.1:${server.port}/?token=${user.token}${
      variant.query.replace("<slug>", user.slug)
    }`;
    const seen = new Set<number>();
    for (let i = 0; i < variant.members; i++) {
      consumers.push(await Consumer.open(url, seen, variant.ack));
    }
    const eventType: EventTypes = {
      match: "invoice.paid",
      other: "customer.created",
      every: variant.every,
    };
    let windowStart = 0;
    let windowMs = 0;
    const { result, cpu } = await runGenerator(
      {
        url: user.webhookUrl,
        mode: variant.steady ? "open" : "closed",
        concurrency: CONCURRENCY,
        rate: STEADY_RATE,
        maxInFlight: 1000,
        warmupMs: WARMUP_MS,
        durationMs: seconds * 1000,
        bodyBytes: BODY_BYTES,
        eventType,
      },
      server.child.pid,
      {
        onStart() {
          windowStart = performance.now();
          for (const consumer of consumers) consumer.counting = true;
          return Promise.resolve();
        },
        onEnd() {
          windowMs = performance.now() - windowStart;
          for (const consumer of consumers) consumer.counting = false;
          return Promise.resolve();
        },
      },
    );
    const loadEnded = performance.now();
    const deliveredAtEnd = consumers.reduce((n, c) => n + c.delivered, 0);
    const expected = variant.every === 1 ? result.okTotal : result.okMatching ?? 0;
    // Wait while delivery progresses: a group may still be draining a backlog.
    let last = -1;
    let lastChange = performance.now();
    while (
      seen.size < expected && performance.now() - lastChange < STALL_MS &&
      performance.now() - loadEnded < DRAIN_CAP_MS
    ) {
      if (seen.size !== last) {
        last = seen.size;
        lastChange = performance.now();
      }
      await sleep(20);
    }
    const drainMs = performance.now() - loadEnded;
    const all = seen.size >= expected;
    const sum = (pick: (c: Consumer) => number) => consumers.reduce((n, c) => n + pick(c), 0);
    const delivered = sum((c) => c.delivered);
    const repeats = sum((c) => c.repeats);
    const retries = sum((c) => c.retries);
    let unexpected = 0;
    for (const seq of seen) if (seq % variant.every !== 0) unexpected++;
    const deliveredPerSecond = sum((c) => c.inWindow) / (windowMs / 1000);
    // The backlog's pace once the load stopped (what a group manages with the writer to itself).
    const drainPerSecond = drainMs > 1000 ? (delivered - deliveredAtEnd) / (drainMs / 1000) : NaN;
    for (const consumer of consumers) consumer.close();
    const joined = new Float64Array(sum((c) => c.latencies.length));
    let offset = 0;
    for (const consumer of consumers) {
      joined.set(consumer.latencies.values(), offset);
      offset += consumer.latencies.length;
    }
    const latency = summarize(joined);
    const rss = rssKiB(server.child.pid);
    console.log(`  accepted: ${fmt(result.rps, 0)} webhooks/s`);
    console.log(
      `  delivered: ${delivered} (${seen.size} distinct) of ${expected} meant for the consumer(s)` +
        (all ? " (all" : " (NOT all: delivery stood still 15 s or took 300 s") +
        `, ${fmt(drainMs / 1000, 1)} s after the load ended); repeats ${repeats}, ` +
        `redeliveries ${retries}, not matching ${unexpected}`,
    );
    if (variant.members > 1) {
      console.log(`  per member: ${consumers.map((c) => c.delivered).join(" / ")}`);
    }
    console.log(
      `  delivered during the measured window: ${fmt(deliveredPerSecond, 0)}/s; ` +
        `after the load: ${fmt(drainPerSecond, 0)}/s`,
    );
    console.log(`  POST→client latency: ${ms(latency)}`);
    printGen(result);
    printCpu(cpu);
    console.log(`  server RSS after the run: ${fmt(rss / 1024, 1)} MiB`);
    return {
      title: variant.title,
      rps: result.rps,
      accepted: result.okTotal,
      expected,
      delivered,
      distinct: seen.size,
      allDelivered: all,
      repeats,
      redeliveries: retries,
      unexpected,
      perMember: consumers.map((c) => c.delivered),
      deliveredPerSecond,
      drainPerSecond,
      drainMs,
      latency,
      http: result.http,
      statuses: result.statuses,
      errors: result.errors,
      cpu,
      serverRssKiB: rss,
    };
  } finally {
    for (const consumer of consumers) consumer.close();
    await server.stop();
  }
}
