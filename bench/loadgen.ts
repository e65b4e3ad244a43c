/**
 * The load generator: a separate Deno process that POSTs ~1 KiB JSON webhooks with `fetch`
 * over keep-alive connections and prints one `RESULT {json}` line when done.
 *
 * Usage: deno run -A bench/loadgen.ts '<json GenOptions>'
 *
 * - closed loop (`mode: "closed"`): `concurrency` workers, each sending its next request as soon
 *   as the previous one was answered;
 * - open loop (`mode: "open"`): requests start on a fixed schedule of `rate` per second whatever
 *   the answers, at most `maxInFlight` outstanding.
 *
 * Every body carries `t` (send time from bench/clock.ts), `w` (0 warm-up, 1 measured) and `seq`,
 * so a subscriber can compute POST→client latency of the measured requests.
 */
import { wallClock } from "./clock.ts";
import { NumberList, summarize, type Summary } from "./stats.ts";

/** What the driver asks of one generator run. */
export interface GenOptions {
  url: string;
  mode: "closed" | "open";
  concurrency?: number;
  rate?: number;
  maxInFlight?: number;
  warmupMs: number;
  durationMs: number;
  bodyBytes: number;
}

/** What one generator run reports. */
export interface GenResult {
  /** Requests started in the measured window. */
  sent: number;
  /** 200 answers to requests started in the measured window. */
  ok: number;
  /** 200 answers received during the measured window (closed-loop throughput). */
  okInWindow: number;
  /** 200 answers overall, warm-up included. */
  okTotal: number;
  errors: number;
  statuses: Record<string, number>;
  windowMs: number;
  /** okInWindow per second. */
  rps: number;
  /** HTTP round-trip of measured requests, ms. */
  http: Summary;
  /** Open loop: how late requests started against their schedule, ms. */
  lag?: Summary;
  /** Open loop: requests skipped because `maxInFlight` were outstanding. */
  skipped?: number;
  firstError?: string;
}

/** A realistic-looking ~1 KiB webhook (a push event), padded or trimmed to `bytes`. */
export function bodyTemplate(bytes: number): (t: number, w: number, seq: number) => string {
  const rest = JSON.stringify({
    event: "push",
    ref: "refs/heads/main",
    before: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    after: "0000000000000000000000000000000000000000",
    repository: {
      id: 186853002,
      name: "websocks-bench",
      full_name: "octo-org/websocks-bench",
      private: false,
      owner: { login: "octo-org", id: 6811672, type: "Organization" },
      default_branch: "main",
      topics: ["webhooks", "relay", "benchmark"],
    },
    pusher: { name: "octocat", email: "octocat@example.com" },
    sender: { login: "octocat", id: 583231, site_admin: false },
    head_commit: {
      id: "0000000000000000000000000000000000000000",
      message: "Update the benchmark figures",
      timestamp: "2026-01-01T00:00:00Z",
      author: { name: "The Octocat", email: "octocat@example.com", username: "octocat" },
      added: ["bench/RESULTS.md"],
      removed: [],
      modified: ["bench/run.ts", "lib/ingest.ts"],
    },
  }).slice(1);
  const sample = `{"t":${wallClock().toFixed(3)},"w":0,"seq":1000000,"pad":"",` + rest;
  const pad = "x".repeat(Math.max(0, bytes - sample.length));
  return (t, w, seq) => `{"t":${t.toFixed(3)},"w":${w},"seq":${seq},"pad":"${pad}",${rest}`;
}

async function run(options: GenOptions): Promise<GenResult> {
  const makeBody = bodyTemplate(options.bodyBytes);
  const headers = { "Content-Type": "application/json" };
  const start = wallClock();
  const measureFrom = start + options.warmupMs;
  const end = measureFrom + options.durationMs;
  const statuses: Record<string, number> = {};
  const http = new NumberList();
  let seq = 0;
  let sent = 0;
  let ok = 0;
  let okInWindow = 0;
  let okTotal = 0;
  let errors = 0;
  let firstError: string | undefined;
  // Tell the driver when the measured window opens and closes (it samples CPU then).
  setTimeout(() => console.log("MEASURE_START"), measureFrom - wallClock());
  setTimeout(() => console.log("MEASURE_END"), end - wallClock());

  async function one(sentAt: number): Promise<void> {
    const measured = sentAt >= measureFrom;
    if (measured) sent++;
    try {
      const response = await fetch(options.url, {
        method: "POST",
        headers,
        body: makeBody(sentAt, measured ? 1 : 0, seq++),
      });
      await response.arrayBuffer();
      const now = wallClock();
      statuses[response.status] = (statuses[response.status] ?? 0) + 1;
      if (response.status === 200) {
        okTotal++;
        if (now >= measureFrom && now < end) okInWindow++;
        if (measured) {
          ok++;
          http.push(now - sentAt);
        }
      } else if (!firstError) firstError = `HTTP ${response.status}`;
    } catch (error) {
      errors++;
      firstError ??= String(error);
      if (errors > 1000) throw new Error(`too many errors, first: ${firstError}`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  let lag: NumberList | undefined;
  let skipped = 0;
  if (options.mode === "closed") {
    const workers = Array.from({ length: options.concurrency ?? 50 }, async () => {
      for (let now = wallClock(); now < end; now = wallClock()) await one(now);
    });
    await Promise.all(workers);
  } else {
    lag = new NumberList();
    const interval = 1000 / (options.rate ?? 500);
    const maxInFlight = options.maxInFlight ?? 1000;
    const inFlight = new Set<Promise<void>>();
    const total = Math.floor((end - start) / interval);
    let next = 0;
    while (next < total) {
      let now = wallClock();
      while (next < total && start + next * interval <= now) {
        const due = start + next * interval;
        next++;
        if (inFlight.size >= maxInFlight) {
          skipped++;
          continue;
        }
        if (due >= measureFrom) lag.push(now - due);
        const request = one(now);
        inFlight.add(request);
        request.finally(() => inFlight.delete(request));
        now = wallClock();
      }
      const wait = start + next * interval - wallClock();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait - 0.5)));
      else await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await Promise.all(inFlight);
  }
  const windowMs = end - measureFrom;
  return {
    sent,
    ok,
    okInWindow,
    okTotal,
    errors,
    statuses,
    windowMs,
    rps: okInWindow / (windowMs / 1000),
    http: summarize(http.values()),
    ...(lag ? { lag: summarize(lag.values()), skipped } : {}),
    firstError,
  };
}

if (import.meta.main) {
  const options = JSON.parse(Deno.args[0]) as GenOptions;
  const result = await run(options);
  console.log(`RESULT ${JSON.stringify(result)}`);
}
