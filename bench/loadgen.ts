/**
 * The load generator: a separate Deno process that POSTs ~1 KiB JSON webhooks over keep-alive
 * HTTP/1.1 connections and prints one `RESULT {json}` line when done.
 *
 * It speaks HTTP over raw TCP rather than through `fetch`: with `fetch` the generator's own
 * per-request latency (~1.8 ms at concurrency 50) set the closed loop's pace, and the relay
 * measured 6–8k/s where `wrk` on the same server measured 14k/s.
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
  /** Part "consumers" only: bodies carry `"type"`, `match` on every `every`-th seq, else `other`. */
  eventType?: EventTypes;
}

/** The JSON `type` the bodies of part "consumers" carry, which `event=` filters match. */
export interface EventTypes {
  match: string;
  other: string;
  every: number;
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
  /** With `eventType`: 200 answers, warm-up included, whose body carried the `match` type. */
  okMatching?: number;
}

/**
 * A realistic-looking ~1 KiB webhook (a push event), padded or trimmed to `bytes`. With `types`,
 * the body also carries a JSON `"type"` after the padding (padded so both types keep the size),
 * which the relay takes as the event's type over the `event` field.
 */
export function bodyTemplate(
  bytes: number,
  types?: EventTypes,
): (t: number, w: number, seq: number) => string {
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
  const tail = (type: string | null) =>
    (type === null ? "" : `"type":${JSON.stringify(type)},`) + rest;
  const padFor = (type: string | null) => {
    const sample = `{"t":${wallClock().toFixed(3)},"w":0,"seq":1000000,"pad":"",` + tail(type);
    return "x".repeat(Math.max(0, bytes - sample.length));
  };
  if (!types) {
    const pad = padFor(null);
    return (t, w, seq) => `{"t":${t.toFixed(3)},"w":${w},"seq":${seq},"pad":"${pad}",${rest}`;
  }
  const match = `"pad":"${padFor(types.match)}",${tail(types.match)}`;
  const other = `"pad":"${padFor(types.other)}",${tail(types.other)}`;
  return (t, w, seq) =>
    `{"t":${t.toFixed(3)},"w":${w},"seq":${seq},${seq % types.every === 0 ? match : other}`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One keep-alive HTTP/1.1 connection that POSTs JSON and reads `Content-Length` answers. */
interface RawClient {
  post(body: string): Promise<number>;
  close(): void;
}

async function openRawClient(url: URL): Promise<RawClient> {
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port || 80) });
  conn.setNoDelay(true);
  const head = `POST ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
    "Content-Type: application/json\r\nContent-Length: ";
  let buffer = new Uint8Array(64 * 1024);
  let have = 0;
  async function fill(): Promise<void> {
    if (have === buffer.length) {
      const bigger = new Uint8Array(buffer.length * 2);
      bigger.set(buffer);
      buffer = bigger;
    }
    const n = await conn.read(buffer.subarray(have));
    if (n === null) throw new Error("connection closed by the server");
    have += n;
  }
  function headerEnd(): number {
    for (let i = 3; i < have; i++) {
      if (
        buffer[i] === 10 && buffer[i - 1] === 13 && buffer[i - 2] === 10 && buffer[i - 3] === 13
      ) {
        return i + 1;
      }
    }
    return -1;
  }
  return {
    async post(body) {
      const bodyBytes = encoder.encode(body);
      const request = encoder.encode(`${head}${bodyBytes.length}\r\n\r\n`);
      const out = new Uint8Array(request.length + bodyBytes.length);
      out.set(request);
      out.set(bodyBytes, request.length);
      for (let written = 0; written < out.length;) {
        written += await conn.write(out.subarray(written));
      }
      let end = headerEnd();
      while (end === -1) {
        await fill();
        end = headerEnd();
      }
      const headers = decoder.decode(buffer.subarray(0, end));
      const status = Number(headers.slice(9, 12));
      const length = Number(/content-length:\s*(\d+)/i.exec(headers)?.[1] ?? 0);
      while (have < end + length) await fill();
      buffer.copyWithin(0, end + length, have);
      have -= end + length;
      return status;
    },
    close() {
      conn.close();
    },
  };
}

async function run(options: GenOptions): Promise<GenResult> {
  const makeBody = bodyTemplate(options.bodyBytes, options.eventType);
  const every = options.eventType?.every ?? 0;
  const target = new URL(options.url);
  const idle: RawClient[] = [];
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
  let okMatching = 0;
  let errors = 0;
  let firstError: string | undefined;
  // Tell the driver when the measured window opens and closes (it samples CPU then).
  setTimeout(() => console.log("MEASURE_START"), measureFrom - wallClock());
  setTimeout(() => console.log("MEASURE_END"), end - wallClock());

  async function one(sentAt: number): Promise<void> {
    const measured = sentAt >= measureFrom;
    if (measured) sent++;
    let client: RawClient | undefined;
    try {
      client = idle.pop() ?? await openRawClient(target);
      const mySeq = seq++;
      const status = await client.post(makeBody(sentAt, measured ? 1 : 0, mySeq));
      idle.push(client);
      const now = wallClock();
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status === 200) {
        okTotal++;
        if (every > 0 && mySeq % every === 0) okMatching++;
        if (now >= measureFrom && now < end) okInWindow++;
        if (measured) {
          ok++;
          http.push(now - sentAt);
        }
      } else if (!firstError) firstError = `HTTP ${status}`;
    } catch (error) {
      client?.close();
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
  for (const client of idle) client.close();
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
    ...(every > 0 ? { okMatching } : {}),
  };
}

if (import.meta.main) {
  const options = JSON.parse(Deno.args[0]) as GenOptions;
  const result = await run(options);
  console.log(`RESULT ${JSON.stringify(result)}`);
}
