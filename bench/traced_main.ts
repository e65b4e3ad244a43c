/**
 * main.ts with timers around the Deno APIs it uses, for the benchmark's timing breakdown.
 *
 * It patches prototypes of Deno.Kv, Deno.AtomicOperation and Deno.serve's handler (no file under
 * lib/ changes), then imports main.ts. Figures are served on 127.0.0.1:$BENCH_STATS_PORT:
 * `POST /` starts a window, `GET /` reads it.
 *
 * Usage: BENCH_STATS_PORT=<port> PORT=... deno run -A bench/traced_main.ts
 */
import { NumberList, summarize } from "./stats.ts";

interface Window {
  startedAt: number;
  requests: NumberList;
  getMany: NumberList;
  commit: NumberList;
  /** Event records (sets with expireIn) per commit that enqueued a job: the ingest batches. */
  batch: NumberList;
  ingestCommit: NumberList;
  /** Time from one ingest commit's end to the next one's start. */
  betweenCommits: NumberList;
  queueJobs: NumberList;
  /** How late a 5 ms timer fires: how long the main thread is busy at a stretch. */
  loopLag: NumberList;
  lastIngestCommitEnd: number;
}

function newWindow(): Window {
  return {
    startedAt: performance.now(),
    requests: new NumberList(),
    getMany: new NumberList(),
    commit: new NumberList(),
    batch: new NumberList(),
    ingestCommit: new NumberList(),
    betweenCommits: new NumberList(),
    queueJobs: new NumberList(),
    loopLag: new NumberList(),
    lastIngestCommitEnd: NaN,
  };
}

let window = newWindow();

const TICK_MS = 5;
let tickDue = performance.now() + TICK_MS;
function tick(): void {
  const now = performance.now();
  window.loopLag.push(now - tickDue);
  tickDue = now + TICK_MS;
  setTimeout(tick, TICK_MS);
}
setTimeout(tick, TICK_MS);

const kvProto = Deno.Kv.prototype;
const getMany = kvProto.getMany;
kvProto.getMany = async function (this: Deno.Kv, ...args: Parameters<Deno.Kv["getMany"]>) {
  const started = performance.now();
  try {
    return await getMany.apply(this, args);
  } finally {
    window.getMany.push(performance.now() - started);
  }
} as Deno.Kv["getMany"];

const listenQueue = kvProto.listenQueue;
kvProto.listenQueue = function (this: Deno.Kv, handler: (value: unknown) => Promise<void> | void) {
  return listenQueue.call(this, async (value: unknown) => {
    const started = performance.now();
    try {
      await handler(value);
    } finally {
      window.queueJobs.push(performance.now() - started);
    }
  });
};

const shape = new WeakMap<Deno.AtomicOperation, { events: number; enqueued: boolean }>();
const opProto = Deno.AtomicOperation.prototype;
const set = opProto.set;
opProto.set = function (
  this: Deno.AtomicOperation,
  ...args: Parameters<Deno.AtomicOperation["set"]>
) {
  const s = shape.get(this) ?? { events: 0, enqueued: false };
  if (args[2]?.expireIn !== undefined) s.events++;
  shape.set(this, s);
  return set.apply(this, args);
};
const enqueue = opProto.enqueue;
opProto.enqueue = function (
  this: Deno.AtomicOperation,
  ...args: Parameters<Deno.AtomicOperation["enqueue"]>
) {
  const s = shape.get(this) ?? { events: 0, enqueued: false };
  s.enqueued = true;
  shape.set(this, s);
  return enqueue.apply(this, args);
};
const commit = opProto.commit;
opProto.commit = async function (this: Deno.AtomicOperation) {
  const started = performance.now();
  const s = shape.get(this);
  const w = window;
  if (s?.enqueued && Number.isFinite(w.lastIngestCommitEnd)) {
    w.betweenCommits.push(started - w.lastIngestCommitEnd);
  }
  try {
    return await commit.call(this);
  } finally {
    const ended = performance.now();
    w.commit.push(ended - started);
    if (s?.enqueued) {
      w.batch.push(s.events);
      w.ingestCommit.push(ended - started);
      w.lastIngestCommitEnd = ended;
    }
  }
};

const serve = Deno.serve;
const wrapped = (options: Deno.ServeTcpOptions, handler: Deno.ServeHandler) =>
  serve(options, async (request, info) => {
    if (request.method !== "POST" || !request.url.includes("/api/in/")) {
      return await handler(request, info);
    }
    const started = performance.now();
    try {
      return await handler(request, info);
    } finally {
      window.requests.push(performance.now() - started);
    }
  });
Object.defineProperty(Deno, "serve", { value: wrapped, configurable: true, writable: true });

serve({
  port: Number(Deno.env.get("BENCH_STATS_PORT")),
  hostname: "127.0.0.1",
  onListen: () => {},
}, (request) => {
  if (request.method === "POST") {
    window = newWindow();
    return new Response("reset");
  }
  const w = window;
  const seconds = (performance.now() - w.startedAt) / 1000;
  const busy = (list: NumberList) => list.values().reduce((a, b) => a + b, 0) / 1000 / seconds;
  return Response.json({
    seconds,
    requests: summarize(w.requests.values()),
    getMany: summarize(w.getMany.values()),
    commit: summarize(w.commit.values()),
    commitsPerSecond: w.commit.length / seconds,
    ingestCommit: summarize(w.ingestCommit.values()),
    ingestCommitBusy: busy(w.ingestCommit),
    batch: summarize(w.batch.values()),
    meanBatch: w.batch.values().reduce((a, b) => a + b, 0) / Math.max(1, w.batch.length),
    betweenCommits: summarize(w.betweenCommits.values()),
    queueJobs: summarize(w.queueJobs.values()),
    queueJobsPerSecond: w.queueJobs.length / seconds,
    loopLag: summarize(w.loopLag.values()),
  });
});

await import("../main.ts");
