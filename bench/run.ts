/**
 * `deno task bench`: throughput, latency, fan-out and memory of the relay, measured against
 * main.ts running in its own process with SQLite-backed KV. Prints figures; asserts nothing.
 *
 * Parts (all by default, about 100 s; pick some with `--parts=load,steady` or
 * BENCH_PARTS=load,steady):
 * - ceiling    the load generator (bench/loadgen.ts, its own process) against a trivial
 *              Deno.serve server (bench/hello.ts): the generator's own ceiling
 * - load       accepted webhooks/s at concurrency 50 with ~1 KiB JSON bodies, every one
 *              delivered to a WebSocket subscriber; POST→client latency under that load
 * - steady     POST→client latency at a steady, open-loop 500 webhooks/s
 * - fanout     one endpoint, 1,000 WebSocket + 1,000 SSE clients: POST → last client
 * - rss        server RSS per idle SSE and per idle WebSocket connection, and the same for a
 *              trivial Deno.serve (Deno's own floor)
 * - profile    V8 CPU profiles of the server's main thread under "load" and during "fanout"
 * - breakdown  "load" and "steady" against bench/traced_main.ts (main.ts with timers around KV
 *              reads, commits, queue jobs and request handling): where a webhook's time goes
 * - kv         bench/kv_micro.ts: an ingest-shaped KV commit alone on SQLite, and without each
 *              of its parts, by batch size; bench/kv_isolates.ts: several KV handles on one
 *              file in one process (commits, watch and queue across handles)
 * - isolates   every core: wrk unpinned against WORKERS=1 and WORKERS=2 at concurrency 50 and
 *              200, with one user and with 20 users; POST→client latency under load and at
 *              500/s on WORKERS=2; 18,000 idle connections (half WebSocket, half SSE) on it
 *
 * Other knobs (flag or env): --seconds=N / BENCH_SECONDS (measured seconds of load and steady;
 * default 10), --idle=N / BENCH_IDLE (idle connections per kind; default 5000), --fanout=N /
 * BENCH_FANOUT (fan-out clients per transport; default 1000), --isolatesIdle=N /
 * BENCH_ISOLATES_IDLE (idle connections of part isolates; default 18000). Figures also go to
 * bench/out/results.json, profiles to bench/out/*.cpuprofile (open them in Chrome DevTools).
 */
import { recalibrate, wallClock } from "./clock.ts";
import {
  type FanoutClient,
  idleSse,
  leanSse,
  leanWs,
  openMany,
  openSocket,
  Subscriber,
} from "./clients.ts";
import { bodyTemplate, type GenOptions, type GenResult } from "./loadgen.ts";
import type { KvVariantResult } from "./kv_micro.ts";
import type { KvIsolatesResult } from "./kv_isolates.ts";
import {
  analyze,
  analyzeHeap,
  connectInspector,
  type CpuProfile,
  type HeapNode,
  type ProfileAnalysis,
} from "./profile.ts";
import {
  cpuSeconds,
  cpuSplit,
  DENO,
  freePort,
  ROOT,
  rssKiB,
  signUpUser,
  sleep,
  spawnDeno,
  startRelay,
  threadCpuSeconds,
} from "./procs.ts";
import { summarize, type Summary } from "./stats.ts";

const PARTS = [
  "ceiling",
  "wrk",
  "load",
  "steady",
  "fanout",
  "rss",
  "profile",
  "breakdown",
  "kv",
  "isolates",
] as const;
type Part = typeof PARTS[number];

function setting(name: string, env: string): string | undefined {
  const flag = Deno.args.find((arg) => arg.startsWith(`--${name}=`));
  return flag ? flag.slice(name.length + 3) : Deno.env.get(env);
}

const partsSetting = setting("parts", "BENCH_PARTS");
const parts = new Set<Part>(
  partsSetting
    ? partsSetting.split(",").map((p) => p.trim()).filter((p): p is Part => {
      if ((PARTS as readonly string[]).includes(p)) return true;
      console.error(`unknown part "${p}" (known: ${PARTS.join(", ")})`);
      return false;
    })
    : PARTS,
);
const SECONDS = Number(setting("seconds", "BENCH_SECONDS") ?? 10);
let IDLE = Number(setting("idle", "BENCH_IDLE") ?? 5000);
let FANOUT = Number(setting("fanout", "BENCH_FANOUT") ?? 1000);
const CONCURRENCY = 50;
const BODY_BYTES = 1024;
const WARMUP_MS = 2000;
const STEADY_RATE = 500;
const FANOUT_WEBHOOKS = 50;
const FANOUT_WARMUP = 5;
/** Connections opened on top of IDLE while sampling who holds their JS heap. */
const HEAP_SAMPLED = 1000;
/** Idle connections the multi-isolate part holds (half WebSocket, half SSE); 18,000 because
 * this machine allows 20,000 open files per process, which the server hits first. */
const ISOLATES_IDLE = Number(setting("isolatesIdle", "BENCH_ISOLATES_IDLE") ?? 18_000);
const OUT = `${ROOT}bench/out`;

const TARGETS = {
  throughput: 12_000,
  p99Load: 15,
  p99Steady: 5,
  idleKiB: 20,
};

const results: Record<string, unknown> = {};
const fmt = (n: number, digits = 2) =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "n/a";
const ms = (s: Summary) =>
  `p50 ${fmt(s.p50)} ms, p90 ${fmt(s.p90)} ms, p99 ${fmt(s.p99)} ms, max ${
    fmt(s.max)
  } ms (n=${s.n})`;
const verdict = (ok: boolean) => ok ? "meets target" : "MISSES target";

function machine() {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const meminfo = Deno.readTextFileSync("/proc/meminfo");
  return {
    date: new Date().toISOString().slice(0, 10),
    nproc: navigator.hardwareConcurrency,
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown",
    memoryGiB: Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) / 1024 / 1024,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    kernel: Deno.osRelease(),
    git: gitState(),
  };
}

/** The commit measured, and whether the server's code differed from it. */
function gitState(): string {
  const run = (...args: string[]) => {
    try {
      const out = new Deno.Command("git", { args, cwd: ROOT, stdout: "piped", stderr: "null" })
        .outputSync();
      return new TextDecoder().decode(out.stdout).trim();
    } catch {
      return "";
    }
  };
  const head = run("rev-parse", "--short", "HEAD") || "unknown";
  const dirty = run("status", "--porcelain", "--", "main.ts", "lib", "routes") !== "";
  return dirty ? `${head} + uncommitted changes in main.ts/lib/routes` : head;
}

/** CPU use of the processes involved over the generator's measured window. */
interface CpuUse {
  /** Cores busy on average (1.0 = one core fully). */
  serverCores: number;
  generatorCores: number;
  driverCores: number;
  /** Per server thread name, cores busy. */
  serverThreads: Record<string, number>;
}

/** Runs bench/loadgen.ts in its own process; samples CPU while it measures. */
async function runGenerator(
  options: GenOptions,
  serverPid: number,
  hooks: { onStart?: () => Promise<void>; onEnd?: () => Promise<void> } = {},
): Promise<{ result: GenResult; cpu: CpuUse }> {
  let startSample: {
    at: number;
    server: number;
    gen: number;
    me: number;
    threads: Map<string, number>;
  } | null = null;
  let cpu: CpuUse | null = null;
  const hookRuns: Promise<void>[] = [];
  const { child } = spawnDeno({
    script: "bench/loadgen.ts",
    args: [JSON.stringify(options)],
    onLine(line) {
      if (line === "MEASURE_START") {
        startSample = {
          at: performance.now(),
          server: cpuSeconds(serverPid),
          gen: cpuSeconds(child.pid),
          me: cpuSeconds(Deno.pid),
          threads: threadCpuSeconds(serverPid),
        };
        if (hooks.onStart) hookRuns.push(hooks.onStart());
      } else if (line === "MEASURE_END" && startSample) {
        const s = startSample;
        const seconds = (performance.now() - s.at) / 1000;
        const threads: Record<string, number> = {};
        for (const [name, value] of threadCpuSeconds(serverPid)) {
          const used = (value - (s.threads.get(name) ?? 0)) / seconds;
          if (used >= 0.005) threads[name] = Number(used.toFixed(3));
        }
        cpu = {
          serverCores: (cpuSeconds(serverPid) - s.server) / seconds,
          generatorCores: (cpuSeconds(child.pid) - s.gen) / seconds,
          driverCores: (cpuSeconds(Deno.pid) - s.me) / seconds,
          serverThreads: threads,
        };
        if (hooks.onEnd) hookRuns.push(hooks.onEnd());
      }
    },
  });
  const hardLimit = setTimeout(
    () => child.stop(1000),
    options.warmupMs + options.durationMs + 60_000,
  );
  const { code, lines } = await child.exited;
  clearTimeout(hardLimit);
  await Promise.all(hookRuns);
  const line = lines.find((l) => l.startsWith("RESULT "));
  if (code !== 0 || !line) {
    throw new Error(`load generator failed (exit ${code}):\n${child.tail()}`);
  }
  const empty = { serverCores: NaN, generatorCores: NaN, driverCores: NaN, serverThreads: {} };
  return { result: JSON.parse(line.slice("RESULT ".length)), cpu: cpu ?? empty };
}

function printCpu(cpu: CpuUse, indent = "  "): void {
  console.log(
    `${indent}CPU (cores busy): server ${fmt(cpu.serverCores)}, generator ${
      fmt(cpu.generatorCores)
    }, ` +
      `driver/subscriber ${fmt(cpu.driverCores)}`,
  );
  const threads = Object.entries(cpu.serverThreads).sort((a, b) => b[1] - a[1]);
  console.log(`${indent}server threads: ${threads.map(([n, c]) => `${n} ${fmt(c)}`).join(", ")}`);
}

function printGen(result: GenResult): void {
  const statuses = Object.entries(result.statuses).map(([s, n]) => `${s}×${n}`).join(" ");
  console.log(
    `  generator: ${result.okTotal} accepted in all (${statuses}), ${result.errors} errors` +
      (result.firstError ? ` (first: ${result.firstError})` : ""),
  );
  console.log(`  HTTP round trip: ${ms(result.http)}`);
}

async function partCeiling(): Promise<void> {
  console.log("\n## ceiling: load generator vs a trivial Deno.serve server");
  const port = (() => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (l.addr as Deno.NetAddr).port;
    l.close();
    return p;
  })();
  const { child, ready } = spawnDeno({
    script: "bench/hello.ts",
    env: { PORT: String(port) },
    ready: "hello listening",
  });
  await ready;
  try {
    const { result, cpu } = await runGenerator({
      url: `http://127.0.0.1:${port}/api/in/x`,
      mode: "closed",
      concurrency: CONCURRENCY,
      warmupMs: WARMUP_MS,
      durationMs: Math.min(SECONDS, 5) * 1000,
      bodyBytes: BODY_BYTES,
    }, child.pid);
    console.log(`  generator ceiling: ${fmt(result.rps, 0)} req/s at concurrency ${CONCURRENCY}`);
    printGen(result);
    printCpu(cpu);
    results.ceiling = { rps: result.rps, http: result.http, cpu };
  } finally {
    await child.stop();
  }
}

async function partLoad(
  kind: "load" | "steady",
  options: { workers: number; key: string } = { workers: 1, key: kind },
): Promise<void> {
  const closed = kind === "load";
  console.log(
    closed
      ? `\n## ${options.key}: WORKERS=${options.workers}, concurrency ${CONCURRENCY}, ${BODY_BYTES} B JSON, ${SECONDS} s after ${
        WARMUP_MS / 1000
      } s warm-up`
      : `\n## ${options.key}: WORKERS=${options.workers}, open loop at ${STEADY_RATE}/s, ${SECONDS} s after ${
        WARMUP_MS / 1000
      } s warm-up`,
  );
  const server = await startRelay({ env: { WORKERS: String(options.workers) } });
  try {
    const user = await signUpUser(server.url);
    const subscriber = await Subscriber.open(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
    const { result, cpu } = await runGenerator({
      url: user.webhookUrl,
      mode: closed ? "closed" : "open",
      concurrency: CONCURRENCY,
      rate: STEADY_RATE,
      maxInFlight: 1000,
      warmupMs: WARMUP_MS,
      durationMs: SECONDS * 1000,
      bodyBytes: BODY_BYTES,
    }, server.child.pid);
    const all = await subscriber.waitFor(result.okTotal, 15_000);
    subscriber.close();
    const latency = summarize(subscriber.latencies.values());
    const rss = rssKiB(server.child.pid);
    if (closed) {
      console.log(
        `  accepted: ${fmt(result.rps, 0)} webhooks/s (target ≥ ${
          TARGETS.throughput.toLocaleString("en-US")
        }: ${verdict(result.rps >= TARGETS.throughput)})`,
      );
    } else {
      console.log(
        `  accepted: ${fmt(result.rps, 0)} webhooks/s (scheduled ${STEADY_RATE}/s; ${
          result.skipped ?? 0
        } skipped; send lag ${ms(result.lag!)})`,
      );
    }
    console.log(
      `  delivered to the WebSocket subscriber: ${subscriber.delivered} of ${result.okTotal} accepted` +
        (all ? " (all)" : " (NOT all, after waiting 15 s)"),
    );
    const target = closed ? TARGETS.p99Load : TARGETS.p99Steady;
    console.log(
      `  POST→client latency: ${ms(latency)} (target p99 < ${target} ms: ${
        verdict(latency.p99 < target)
      })`,
    );
    printGen(result);
    printCpu(cpu);
    console.log(`  server RSS after the run: ${fmt(rss / 1024, 1)} MiB`);
    results[options.key] = {
      workers: options.workers,
      rps: result.rps,
      accepted: result.okTotal,
      delivered: subscriber.delivered,
      allDelivered: all,
      latency,
      http: result.http,
      lag: result.lag,
      skipped: result.skipped,
      statuses: result.statuses,
      errors: result.errors,
      cpu,
      serverRssKiB: rss,
    };
  } finally {
    await server.stop();
  }
}

/** wrk, installing Debian's package when it is missing (the bench runs as root here). */
function findWrk(): string | null {
  const has = () => new Deno.Command("bash", { args: ["-c", "command -v wrk"] }).outputSync();
  let found = has();
  if (!found.success) {
    console.log("  wrk is missing: apt-get install -y wrk");
    new Deno.Command("bash", {
      args: [
        "-c",
        "apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1)",
      ],
    }).outputSync();
    found = has();
  }
  return found.success ? new TextDecoder().decode(found.stdout).trim() : null;
}

/**
 * Throughput with wrk, the usual C load generator, pinned to one core as in the reference
 * measurement of smee.io (server and generator on one core each). One WebSocket subscriber
 * must receive every accepted webhook.
 */
async function partWrk(
  options: {
    workers: number;
    pinned: boolean;
    key: string;
    concurrency: number;
    users?: number;
  } = {
    workers: 1,
    pinned: true,
    key: "wrk",
    concurrency: CONCURRENCY,
  },
): Promise<void> {
  const userCount = options.users ?? 1;
  console.log(
    `\n## ${options.key}: WORKERS=${options.workers}, concurrency ${options.concurrency}, ${userCount} user${
      userCount > 1 ? "s (round robin)" : ""
    }, ${BODY_BYTES} B JSON, ${SECONDS} s, ` +
      (options.pinned ? "wrk pinned to core 1" : "wrk unpinned (server and wrk share both cores)"),
  );
  const wrk = findWrk();
  if (!wrk) {
    console.log("  skipped: wrk could not be installed");
    return;
  }
  const server = await startRelay({ env: { WORKERS: String(options.workers) } });
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  try {
    const users = [];
    for (let i = 0; i < userCount; i++) users.push(await signUpUser(server.url));
    const subscribers = await Promise.all(
      users.map((user) => Subscriber.open(`ws://127.0.0.1:${server.port}/?token=${user.token}`)),
    );
    const body = bodyTemplate(BODY_BYTES)(0, 0, 0);
    // Several users: each request goes to the next user's URL, so commits carry many users.
    const slugs = users.map((user) => JSON.stringify(`/api/in/${user.slug}`)).join(", ");
    await Deno.writeTextFile(
      script,
      `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\n` +
        `wrk.headers["Content-Type"] = "application/json"\n` +
        (userCount > 1
          ? `local paths = {${slugs}}\nlocal n = 0\n` +
            `request = function()\n  n = n + 1\n  return wrk.format(nil, paths[(n % #paths) + 1])\nend\n`
          : ""),
    );
    const user = users[0];
    const before = cpuSeconds(server.child.pid);
    const out = await new Deno.Command(options.pinned ? "taskset" : wrk, {
      args: [
        ...(options.pinned ? ["-c", "1", wrk] : []),
        "-t1",
        `-c${options.concurrency}`,
        `-d${SECONDS}s`,
        "--latency",
        "-s",
        script,
        user.webhookUrl,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const serverCores = (cpuSeconds(server.child.pid) - before) / SECONDS;
    const text = new TextDecoder().decode(out.stdout);
    const total = Number(/(\d+) requests in/.exec(text)?.[1] ?? 0);
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0);
    const latency = /Latency Distribution[\s\S]*?50%\s+(\S+)[\s\S]*?99%\s+(\S+)/.exec(text);
    const accepted = total - non2xx;
    const deadline = Date.now() + 15_000;
    const delivered = () => subscribers.reduce((sum, s) => sum + s.delivered, 0);
    while (delivered() < accepted && Date.now() < deadline) await sleep(20);
    const all = delivered() >= accepted;
    for (const subscriber of subscribers) subscriber.close();
    console.log(
      `  accepted: ${fmt(rps * (accepted / Math.max(1, total)), 0)} webhooks/s (target ≥ ${
        TARGETS.throughput.toLocaleString("en-US")
      }: ${verdict(rps * (accepted / Math.max(1, total)) >= TARGETS.throughput)})`,
    );
    console.log(
      `  delivered to the ${userCount} WebSocket subscriber(s): ${delivered()} of ${accepted} accepted` +
        (all ? " (all)" : " (NOT all, after waiting 15 s)") + `; non-2xx answers: ${non2xx}`,
    );
    console.log(`  HTTP round trip (wrk): p50 ${latency?.[1]}, p99 ${latency?.[2]}`);
    console.log(`  CPU (cores busy): server ${fmt(serverCores)}`);
    results[options.key] = {
      workers: options.workers,
      pinned: options.pinned,
      concurrency: options.concurrency,
      users: userCount,
      rps: rps * (accepted / Math.max(1, total)),
      accepted,
      delivered: delivered(),
      allDelivered: all,
      non2xx,
      httpP50: latency?.[1],
      httpP99: latency?.[2],
      serverCores,
    };
  } finally {
    await Deno.remove(script).catch(() => {});
    await server.stop();
  }
}

/**
 * Every core: the same load with one isolate and with WORKERS=2 (two serving Workers plus the
 * main isolate as KV writer), wrk unpinned so server and generator share both cores as a
 * deployment on this machine would.
 */
async function partIsolates(): Promise<void> {
  for (const concurrency of [CONCURRENCY, 200]) {
    for (const workers of [1, 2]) {
      const key = `wrkWorkers${workers}c${concurrency}`;
      await partWrk({ workers, pinned: false, key, concurrency });
    }
  }
  for (const workers of [1, 2]) {
    const key = `wrkWorkers${workers}Users20`;
    await partWrk({ workers, pinned: false, key, concurrency: 200, users: 20 });
  }
  await partLoad("load", { workers: 2, key: "loadWorkers2" });
  await partLoad("steady", { workers: 2, key: "steadyWorkers2" });
  await isolatesIdle();
}

/** Idle connections held by a WORKERS=2 server: half WebSocket, then half SSE. */
async function isolatesIdle(): Promise<void> {
  const half = ISOLATES_IDLE / 2;
  console.log(`\n## idleWorkers2: ${ISOLATES_IDLE} idle connections on WORKERS=2`);
  const server = await startRelay({ env: { WORKERS: "2" } });
  const clients: { close(): void }[] = [];
  try {
    const pid = server.child.pid;
    const user = await signUpUser(server.url);
    const sse = () =>
      idleSse({ port: server.port, path: `/api/events/stream?token=${user.token}` });
    const ws = async () => {
      const socket = await openSocket(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
      return { close: () => socket.close() };
    };
    for (const open of [sse, ws]) {
      const warm = await openMany(100, { parallel: 20, deadline: Date.now() + 20_000, open });
      for (const client of warm.opened) client.close();
    }
    await sleep(1500);
    const figures: Record<string, unknown> = {};
    let before = rssKiB(pid);
    const start = before;
    for (const [label, open] of [["ws", ws], ["sse", sse]] as const) {
      const opened = await openMany(half, { parallel: 100, deadline: Date.now() + 90_000, open });
      clients.push(...opened.opened);
      await sleep(2000);
      const after = rssKiB(pid);
      const per = (after - before) / Math.max(1, opened.opened.length);
      console.log(
        `  ${label}: ${opened.opened.length} opened${
          opened.failed ? ` (${opened.failed} failed: ${opened.firstError})` : ""
        }, RSS ${fmt(before / 1024, 1)} → ${fmt(after / 1024, 1)} MiB: ${
          fmt(per, 1)
        } KiB per connection`,
      );
      figures[label] = { opened: opened.opened.length, failed: opened.failed, kibEach: per };
      before = after;
    }
    const total = clients.length;
    const each = (before - start) / Math.max(1, total);
    console.log(
      `  all ${total}: ${fmt(each, 1)} KiB per connection (target ≤ ${TARGETS.idleKiB} KiB: ${
        verdict(each <= TARGETS.idleKiB)
      })`,
    );
    results.idleWorkers2 = { ...figures, total, kibEach: each };
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
}

async function partFanout(profiled = false): Promise<void> {
  console.log(
    profiled
      ? `\n## profile of fan-out: server main thread while fanning out to ${FANOUT} WebSocket + ${FANOUT} SSE clients`
      : `\n## fanout: one endpoint, ${FANOUT} WebSocket + ${FANOUT} SSE clients, ${FANOUT_WEBHOOKS} webhooks one at a time`,
  );
  const server = await startRelay({ inspect: profiled });
  const clients: FanoutClient[] = [];
  try {
    const user = await signUpUser(server.url);
    const inspector = profiled ? await connectInspector(server.inspectPort!) : null;
    await inspector?.send("Profiler.enable");
    await inspector?.send("Profiler.setSamplingInterval", { interval: 200 });
    let expected = FANOUT * 2;
    let current = -1;
    let got = 0;
    let first = 0;
    let lastWs = 0;
    let lastSse = 0;
    let done: () => void = () => {};
    // Webhooks go one at a time, so whatever event a client completes belongs to `current`.
    const arrive = (transport: "ws" | "sse") => () => {
      if (current < 0) return;
      const now = wallClock();
      if (got === 0) first = now;
      if (transport === "ws") lastWs = now;
      else lastSse = now;
      if (++got === expected) done();
    };
    const deadline = Date.now() + 60_000;
    const opened = Date.now();
    const ws = await openMany(FANOUT, {
      parallel: 50,
      deadline,
      open: () =>
        leanWs({ port: server.port, path: `/?token=${user.token}`, onMessage: arrive("ws") }),
    });
    const sse = await openMany(FANOUT, {
      parallel: 50,
      deadline,
      open: () =>
        leanSse({
          port: server.port,
          path: `/api/events/stream?token=${user.token}`,
          onEvent: arrive("sse"),
        }),
    });
    clients.push(...ws.opened, ...sse.opened);
    console.log(
      `  opened ${ws.opened.length} WebSocket + ${sse.opened.length} SSE clients in ${
        fmt((Date.now() - opened) / 1000, 1)
      } s` + (ws.failed + sse.failed
        ? `; ${ws.failed + sse.failed} failed: ${ws.firstError ?? sse.firstError}`
        : ""),
    );
    expected = clients.length;
    await sleep(500);
    const makeBody = bodyTemplate(BODY_BYTES);
    const toLast: number[] = [];
    const toFirst: number[] = [];
    const toLastWs: number[] = [];
    const toLastSse: number[] = [];
    let incomplete = 0;
    let cpuBefore = { user: 0, system: 0 };
    let threadsBefore = new Map<string, number>();
    let driverBefore = 0;
    for (let seq = 0; seq < FANOUT_WARMUP + FANOUT_WEBHOOKS; seq++) {
      if (seq === FANOUT_WARMUP) {
        await inspector?.send("Profiler.start");
        cpuBefore = cpuSplit(server.child.pid);
        threadsBefore = threadCpuSeconds(server.child.pid);
        driverBefore = cpuSeconds(Deno.pid);
      }
      current = seq;
      got = 0;
      lastWs = lastSse = 0;
      const complete = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 10_000);
        done = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      const sentAt = wallClock();
      const response = await fetch(user.webhookUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: makeBody(sentAt, seq >= FANOUT_WARMUP ? 1 : 0, seq),
      });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`webhook answered ${response.status}`);
      if (!(await complete)) incomplete++;
      done = () => {};
      if (seq >= FANOUT_WARMUP) {
        toFirst.push(first - sentAt);
        toLast.push(Math.max(lastWs, lastSse) - sentAt);
        toLastWs.push(lastWs - sentAt);
        toLastSse.push(lastSse - sentAt);
      }
      await sleep(20);
    }
    const cpuAfter = cpuSplit(server.child.pid);
    const perWebhook = (seconds: number) => (seconds * 1000) / FANOUT_WEBHOOKS;
    const serverUserMs = perWebhook(cpuAfter.user - cpuBefore.user);
    const serverSystemMs = perWebhook(cpuAfter.system - cpuBefore.system);
    const serverMsPerWebhook = serverUserMs + serverSystemMs;
    const mainThreadName = [...threadsBefore.keys()].find((name) => name.includes("main JS"));
    const mainThreadMs = mainThreadName
      ? perWebhook(
        (threadCpuSeconds(server.child.pid).get(mainThreadName) ?? NaN) -
          (threadsBefore.get(mainThreadName) ?? NaN),
      )
      : NaN;
    const driverMsPerWebhook = ((cpuSeconds(Deno.pid) - driverBefore) * 1000) / FANOUT_WEBHOOKS;
    if (inspector) {
      const profile = (await inspector.send("Profiler.stop")).profile as CpuProfile;
      inspector.close();
      await Deno.mkdir(OUT, { recursive: true });
      await Deno.writeTextFile(`${OUT}/fanout.cpuprofile`, JSON.stringify(profile));
      const analysis = analyze(profile);
      console.log(
        `  ${FANOUT_WEBHOOKS} webhooks; POST→last client with the profiler on: ${
          ms(summarize(toLast))
        }; server CPU ${
          fmt(serverMsPerWebhook)
        } ms per webhook; profile saved to bench/out/fanout.cpuprofile`,
      );
      printProfile(analysis);
      results.fanoutProfile = analysis;
      return;
    }
    const last = summarize(toLast);
    console.log(`  POST → last of ${expected} clients: ${ms(last)}`);
    console.log(`  POST → first client: ${ms(summarize(toFirst))}`);
    console.log(`  POST → last WebSocket client: ${ms(summarize(toLastWs))}`);
    console.log(`  POST → last SSE client: ${ms(summarize(toLastSse))}`);
    console.log(
      `  CPU per fanned-out webhook: server ${fmt(serverMsPerWebhook)} ms (user ${
        fmt(serverUserMs)
      }, kernel ${fmt(serverSystemMs)}; main thread ${fmt(mainThreadMs)}), ` +
        `clients (this driver process) ${fmt(driverMsPerWebhook)} ms` +
        (incomplete ? `; ${incomplete} webhooks did not reach every client within 10 s` : ""),
    );
    results.fanout = {
      clients: { ws: ws.opened.length, sse: sse.opened.length },
      toLast: last,
      toFirst: summarize(toFirst),
      toLastWs: summarize(toLastWs),
      toLastSse: summarize(toLastSse),
      serverCpuMsPerWebhook: serverMsPerWebhook,
      serverUserMsPerWebhook: serverUserMs,
      serverSystemMsPerWebhook: serverSystemMs,
      serverMainThreadMsPerWebhook: mainThreadMs,
      clientCpuMsPerWebhook: driverMsPerWebhook,
      incomplete,
    };
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
}

async function partRss(): Promise<void> {
  console.log(`\n## rss: ${IDLE} idle connections of each kind, separate server runs`);
  const out: Record<string, unknown> = {};
  for (const kind of ["sse", "ws"] as const) {
    const label = kind === "sse" ? "SSE" : "WebSocket";
    // The inspector only serves heap figures (GC on demand, heap size, allocation sampling).
    const server = await startRelay({ inspect: true });
    const clients: FanoutClient[] = [];
    try {
      const pid = server.child.pid;
      const user = await signUpUser(server.url);
      const inspector = await connectInspector(server.inspectPort!);
      await inspector.send("HeapProfiler.enable");
      const heapUsed = async () => {
        await inspector.send("HeapProfiler.collectGarbage");
        return (await inspector.send("Runtime.getHeapUsage")).usedSize as number;
      };
      const open = kind === "sse"
        ? () => idleSse({ port: server.port, path: `/api/events/stream?token=${user.token}` })
        : async () => {
          const socket = await openSocket(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
          return { close: () => socket.close() };
        };
      // Warm the code paths once so the baseline includes compiled code, not just connections.
      const warm = await openMany(100, { parallel: 20, deadline: Date.now() + 20_000, open });
      for (const client of warm.opened) client.close();
      await sleep(1000);
      const heapBefore = await heapUsed();
      await sleep(500);
      const before = rssKiB(pid);
      const started = Date.now();
      const opened = await openMany(IDLE, { parallel: 100, deadline: Date.now() + 60_000, open });
      clients.push(...opened.opened);
      const openSeconds = (Date.now() - started) / 1000;
      await sleep(2000);
      const after = rssKiB(pid);
      const heapAfter = await heapUsed();
      const afterGc = rssKiB(pid);
      const n = opened.opened.length;
      const perConnection = (after - before) / n;
      const heapPerConnection = (heapAfter - heapBefore) / 1024 / n;
      console.log(
        `  ${label}: RSS ${fmt(before / 1024, 1)} → ${fmt(after / 1024, 1)} MiB with ${n} idle ` +
          `connections (opened in ${fmt(openSeconds, 1)} s${
            opened.failed ? `, ${opened.failed} failed: ${opened.firstError}` : ""
          }): ${fmt(perConnection, 1)} KiB per connection, ${
            fmt((perConnection * 1000) / 1024, 1)
          } MiB per 1,000 (target ≤ ${TARGETS.idleKiB} KiB: ${
            verdict(perConnection <= TARGETS.idleKiB)
          })`,
      );
      console.log(
        `    of which live JS heap (after a forced GC): ${fmt(heapPerConnection, 1)} KiB; ` +
          `the rest is native (Rust/hyper/tokio buffers, V8 heap slack). RSS after that GC: ${
            fmt((afterGc - before) / n, 1)
          } KiB per connection`,
      );
      // Who holds that JS heap: sample allocations of 1,000 more connections.
      const sampled = HEAP_SAMPLED;
      await inspector.send("HeapProfiler.startSampling", { samplingInterval: 1024 });
      const more = await openMany(sampled, { parallel: 100, deadline: Date.now() + 30_000, open });
      clients.push(...more.opened);
      await sleep(1000);
      await inspector.send("HeapProfiler.collectGarbage");
      const sampling = (await inspector.send("HeapProfiler.getSamplingProfile")).profile as {
        head: HeapNode;
      };
      await inspector.send("HeapProfiler.stopSampling");
      inspector.close();
      const heap = analyzeHeap(sampling.head, 8);
      const per = (bytes: number) => `${fmt(bytes / more.opened.length / 1024, 2)} KiB`;
      console.log(
        `    live JS heap by allocating owner (sampled over ${more.opened.length} more; ${
          per(heap.totalBytes)
        } per connection sampled):`,
      );
      for (const row of heap.byOwner) {
        console.log(`      ${per(row.ms).padStart(10)}  ${row.name}`);
      }
      console.log("    the same by allocating function:");
      for (const row of heap.byFunction) {
        console.log(`      ${per(row.ms).padStart(10)}  ${row.name}`);
      }
      out[kind] = {
        beforeKiB: before,
        afterKiB: after,
        afterGcKiB: afterGc,
        connections: n,
        failed: opened.failed,
        kibPerConnection: perConnection,
        heapKibPerConnection: heapPerConnection,
        heapByOwner: heap.byOwner.map((row) => ({
          name: row.name,
          bytesPerConnection: row.ms / more.opened.length,
        })),
        heapByFunction: heap.byFunction.map((row) => ({
          name: row.name,
          bytesPerConnection: row.ms / more.opened.length,
        })),
      };
    } finally {
      for (const client of clients) client.close();
      await server.stop();
    }
  }
  // The same with a trivial Deno.serve (bench/hello.ts): what Deno itself costs per connection.
  for (const kind of ["sse", "ws"] as const) {
    const port = freePort();
    const { child, ready } = spawnDeno({
      script: "bench/hello.ts",
      env: { PORT: String(port) },
      ready: "hello listening",
    });
    const clients: FanoutClient[] = [];
    try {
      await ready;
      const open = kind === "sse" ? () => idleSse({ port, path: "/sse" }) : async () => {
        const socket = await openSocket(`ws://127.0.0.1:${port}/ws`);
        return { close: () => socket.close() };
      };
      const warm = await openMany(100, { parallel: 20, deadline: Date.now() + 20_000, open });
      for (const client of warm.opened) client.close();
      await sleep(1500);
      const before = rssKiB(child.pid);
      const opened = await openMany(IDLE, { parallel: 100, deadline: Date.now() + 60_000, open });
      clients.push(...opened.opened);
      await sleep(2000);
      const perConnection = (rssKiB(child.pid) - before) / opened.opened.length;
      console.log(
        `  floor, trivial Deno.serve (bench/hello.ts) with ${opened.opened.length} idle ${
          kind === "sse" ? "SSE streams" : "WebSockets"
        }: ${fmt(perConnection, 1)} KiB per connection`,
      );
      out[`${kind}Floor`] = { connections: opened.opened.length, kibPerConnection: perConnection };
    } finally {
      for (const client of clients) client.close();
      await child.stop();
    }
  }
  results.rss = out;
}

function printProfile(analysis: ProfileAnalysis): void {
  console.log(
    `  main thread idle: ${fmt(analysis.idlePercent, 1)} % of ${fmt(analysis.totalMs, 0)} ms`,
  );
  const table = (title: string, rows: ProfileAnalysis["self"]) => {
    console.log(`  ${title}:`);
    for (const row of rows) {
      console.log(
        `    ${fmt(row.percent, 1).padStart(5)} %  ${fmt(row.ms, 0).padStart(6)} ms  ${row.name}`,
      );
    }
  };
  table("by area (self time)", analysis.areas);
  table("top functions (self time)", analysis.self);
  table("project functions (inclusive time)", analysis.projectInclusive);
}

async function partProfile(): Promise<void> {
  const seconds = Math.min(SECONDS, 8);
  console.log(`\n## profile: server main thread under the load of part "load", ${seconds} s`);
  const server = await startRelay({ inspect: true });
  try {
    const user = await signUpUser(server.url);
    const subscriber = await Subscriber.open(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
    const inspector = await connectInspector(server.inspectPort!);
    await inspector.send("Profiler.enable");
    await inspector.send("Profiler.setSamplingInterval", { interval: 200 });
    let profile: CpuProfile | null = null;
    const { result } = await runGenerator(
      {
        url: user.webhookUrl,
        mode: "closed",
        concurrency: CONCURRENCY,
        warmupMs: WARMUP_MS,
        durationMs: seconds * 1000,
        bodyBytes: BODY_BYTES,
      },
      server.child.pid,
      {
        onStart: async () => {
          await inspector.send("Profiler.start");
        },
        onEnd: async () => {
          profile = (await inspector.send("Profiler.stop")).profile as CpuProfile;
        },
      },
    );
    inspector.close();
    subscriber.close();
    if (!profile) throw new Error("no profile came back");
    await Deno.mkdir(OUT, { recursive: true });
    await Deno.writeTextFile(`${OUT}/server.cpuprofile`, JSON.stringify(profile));
    const analysis: ProfileAnalysis = analyze(profile);
    console.log(
      `  throughput while profiling: ${
        fmt(result.rps, 0)
      } webhooks/s; profile saved to bench/out/server.cpuprofile`,
    );
    printProfile(analysis);
    results.profile = { rps: result.rps, ...analysis };
  } finally {
    await server.stop();
  }
}

async function partBreakdown(): Promise<void> {
  const seconds = Math.min(SECONDS, 6);
  console.log(
    `\n## breakdown: timers around KV and the request handler (bench/traced_main.ts), ${seconds} s each`,
  );
  const out: Record<string, unknown> = {};
  for (const mode of ["closed", "open"] as const) {
    console.log(
      mode === "closed"
        ? `  — at concurrency ${CONCURRENCY} (as part "load"):`
        : `  — at ${STEADY_RATE}/s open loop (as part "steady"):`,
    );
    const statsPort = freePort();
    const server = await startRelay({
      script: "bench/traced_main.ts",
      env: { BENCH_STATS_PORT: String(statsPort) },
    });
    try {
      const user = await signUpUser(server.url);
      const subscriber = await Subscriber.open(
        `ws://127.0.0.1:${server.port}/?token=${user.token}`,
      );
      const statsUrl = `http://127.0.0.1:${statsPort}/`;
      let stats: Record<string, unknown> | null = null;
      const { result, cpu } = await runGenerator(
        {
          url: user.webhookUrl,
          mode,
          concurrency: CONCURRENCY,
          rate: STEADY_RATE,
          warmupMs: WARMUP_MS,
          durationMs: seconds * 1000,
          bodyBytes: BODY_BYTES,
        },
        server.child.pid,
        {
          onStart: async () => {
            await (await fetch(statsUrl, { method: "POST" })).arrayBuffer();
          },
          onEnd: async () => {
            stats = await (await fetch(statsUrl)).json();
          },
        },
      );
      await subscriber.waitFor(result.okTotal, 10_000);
      subscriber.close();
      if (!stats) throw new Error("no stats came back");
      const s = stats as Record<string, Summary & number>;
      const latency = summarize(subscriber.latencies.values());
      console.log(`    throughput ${fmt(result.rps, 0)} webhooks/s; POST→client ${ms(latency)}`);
      console.log(`    in-server handling of POST /api/in: ${ms(s.requests)}`);
      console.log(
        `    ingest commits: ${fmt(s.ingestCommit.n / s.seconds, 0)}/s carrying ${
          fmt(s.meanBatch, 1)
        } events on average (batch p50 ${s.batch.p50}, p99 ${s.batch.p99}, max ${s.batch.max})`,
      );
      console.log(`    ingest commit (atomic write): ${ms(s.ingestCommit)}`);
      console.log(
        `    a commit is in flight ${fmt(100 * s.ingestCommitBusy, 0)} % of the time; ` +
          `from one commit's end to the next one's start: ${ms(s.betweenCommits)}`,
      );
      console.log(
        `    kv.getMany (the read before a commit): ${
          s.getMany.n ? ms(s.getMany) : "not called in the window"
        }`,
      );
      console.log(
        `    KV queue jobs handled: ${fmt(s.queueJobsPerSecond, 0)}/s, handler ${ms(s.queueJobs)}`,
      );
      console.log(`    main-thread timer lateness (5 ms timer): ${ms(s.loopLag)}`);
      printCpu(cpu, "    ");
      out[mode === "closed" ? "load" : "steady"] = { rps: result.rps, latency, cpu, ...s };
    } finally {
      await server.stop();
    }
  }
  results.breakdown = out;
}

async function partKv(): Promise<void> {
  console.log(
    "\n## kv: one ingest-shaped commit on SQLite, alone in its own process (bench/kv_micro.ts)",
  );
  const { child } = spawnDeno({ script: "bench/kv_micro.ts" });
  const hardLimit = setTimeout(() => child.stop(1000), 120_000);
  const { code, lines } = await child.exited;
  clearTimeout(hardLimit);
  const line = lines.find((l) => l.startsWith("RESULT "));
  if (code !== 0 || !line) throw new Error(`kv_micro failed (exit ${code}):\n${child.tail()}`);
  const rows = JSON.parse(line.slice("RESULT ".length)) as KvVariantResult[];
  for (const row of rows) {
    console.log(
      `  ${row.variant.padEnd(26)} ${String(row.batch).padStart(3)} events: commit p50 ${
        fmt(row.commit.p50)
      } ms, p90 ${fmt(row.commit.p90)} ms; ${fmt(row.perEventMs * 1000, 0)} µs per event`,
    );
  }
  results.kv = rows;

  console.log(
    "\n## kv: several KV handles on one SQLite file in one process (bench/kv_isolates.ts)",
  );
  const isolates = spawnDeno({ script: "bench/kv_isolates.ts" });
  const limit = setTimeout(() => isolates.child.stop(1000), 120_000);
  const done = await isolates.child.exited;
  clearTimeout(limit);
  const result = done.lines.find((l) => l.startsWith("RESULT "));
  if (done.code !== 0 || !result) {
    throw new Error(`kv_isolates failed (exit ${done.code}):\n${isolates.child.tail()}`);
  }
  const measured = JSON.parse(result.slice("RESULT ".length)) as KvIsolatesResult;
  for (const row of measured.commits) {
    console.log(
      `  ${row.workers} Worker(s), ${row.hot ? "one shared key" : "own keys"}: ${
        row.commitsPerSecond.toLocaleString("en-US")
      } commits/s (${row.conflicts} conflicts, ${row.locked} "database is locked")`,
    );
  }
  for (const row of [measured.watch, measured.queue]) {
    console.log(
      `  ${row.task} seen from another handle: p50 ${row.p50ms} ms, max ${row.maxms} ms, ` +
        `${row.missed} of ${row.rounds} missed`,
    );
  }
  results.kvIsolates = measured;
}

function printSummary(): void {
  console.log("\n## summary");
  const rows: [string, string, string][] = [];
  const ceiling = results.ceiling as { rps: number } | undefined;
  const load = results.load as {
    rps: number;
    latency: Summary;
    delivered: number;
    accepted: number;
  } | undefined;
  const steady = results.steady as { latency: Summary } | undefined;
  const fanout = results.fanout as { toLast: Summary } | undefined;
  const rss = results.rss as Record<string, { kibPerConnection: number }> | undefined;
  if (ceiling) rows.push(["generator ceiling (trivial server), req/s", fmt(ceiling.rps, 0), "—"]);
  const wrk = results.wrk as { rps: number; delivered: number; accepted: number } | undefined;
  if (wrk) {
    rows.push([
      "accepted webhooks/s, c=50, 1 KiB, wrk",
      `${fmt(wrk.rps, 0)} (${wrk.delivered}/${wrk.accepted} delivered)`,
      `≥ ${TARGETS.throughput.toLocaleString("en-US")}`,
    ]);
  }
  if (load) {
    rows.push([
      "accepted webhooks/s, c=50, 1 KiB, our generator",
      `${fmt(load.rps, 0)} (${load.delivered}/${load.accepted} delivered)`,
      `≥ ${TARGETS.throughput.toLocaleString("en-US")}`,
    ]);
    rows.push([
      "POST→client p50 / p99 under load, ms",
      `${fmt(load.latency.p50)} / ${fmt(load.latency.p99)}`,
      `p99 < ${TARGETS.p99Load}`,
    ]);
  }
  if (steady) {
    rows.push([
      `POST→client p50 / p99 at ${STEADY_RATE}/s, ms`,
      `${fmt(steady.latency.p50)} / ${fmt(steady.latency.p99)}`,
      `p99 < ${TARGETS.p99Steady}`,
    ]);
  }
  if (fanout) {
    rows.push([
      `fan-out to ${FANOUT} WS + ${FANOUT} SSE, POST→last p50 / p99, ms`,
      `${fmt(fanout.toLast.p50)} / ${fmt(fanout.toLast.p99)}`,
      "—",
    ]);
  }
  if (rss) {
    for (const kind of ["sse", "ws"]) {
      const value = rss[kind];
      if (!value) continue;
      const floor = rss[`${kind}Floor`];
      rows.push([
        `RSS per idle ${kind === "ws" ? "WebSocket" : "SSE"} connection, KiB`,
        `${fmt(value.kibPerConnection, 1)} (${fmt((value.kibPerConnection * 1000) / 1024, 1)} MiB` +
        ` per 1,000${floor ? `; bare Deno.serve: ${fmt(floor.kibPerConnection, 1)}` : ""})`,
        `≤ ${TARGETS.idleKiB}`,
      ]);
    }
  }
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), 8));
  console.log(
    `| ${"figure".padEnd(widths[0])} | ${"measured".padEnd(widths[1])} | ${
      "target".padEnd(widths[2])
    } |`,
  );
  console.log(`| ${"-".repeat(widths[0])} | ${"-".repeat(widths[1])} | ${"-".repeat(widths[2])} |`);
  for (const row of rows) {
    console.log(
      `| ${row[0].padEnd(widths[0])} | ${row[1].padEnd(widths[1])} | ${row[2].padEnd(widths[2])} |`,
    );
  }
}

/** The soft limit on open files of this process. */
function openFilesLimit(): number {
  const line = Deno.readTextFileSync("/proc/self/limits").split("\n")
    .find((l) => l.startsWith("Max open files"));
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
  return soft === "unlimited" ? Infinity : Number(soft ?? 1024);
}

// This process holds the client ends of the idle and fan-out connections. Deno raises its soft
// limit to the hard one; when even that is too low, run again under bash with a raised limit.
const neededFiles = Math.max(
  IDLE + HEAP_SAMPLED,
  2 * FANOUT,
  parts.has("isolates") ? ISOLATES_IDLE : 0,
) + 600;
if (openFilesLimit() < neededFiles && !Deno.env.get("BENCH_RAISED_LIMIT")) {
  const { code } = await new Deno.Command("bash", {
    args: [
      "-c",
      'ulimit -n 65536 2>/dev/null; exec "$@"',
      "bench",
      DENO,
      "run",
      "-A",
      import.meta.filename!,
      ...Deno.args,
    ],
    env: { BENCH_RAISED_LIMIT: "1" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  Deno.exit(code);
}
if (openFilesLimit() < neededFiles) {
  const room = openFilesLimit() - 600;
  IDLE = Math.max(100, Math.min(IDLE, room - HEAP_SAMPLED));
  FANOUT = Math.max(50, Math.min(FANOUT, Math.floor(room / 2)));
  console.log(
    `note: only ${openFilesLimit()} open files allowed and the limit cannot be raised; ` +
      `using ${IDLE} idle connections per kind and ${FANOUT} fan-out clients per transport`,
  );
}

const info = machine();
results.machine = info;
console.log(
  `WebSocks benchmark, ${info.date}: ${info.nproc} cores (${info.cpu}), ${
    fmt(info.memoryGiB, 1)
  } GiB, ` +
    `Deno ${info.deno}, Linux ${info.kernel}, code ${info.git}; parts: ${[...parts].join(", ")}`,
);
console.log(
  "Server: main.ts in its own process, SQLite KV in a temp dir, FREE_MONTHLY_LIMIT=1000000000, " +
    "INGEST_RATE_PER_SECOND=0 (per-endpoint rate limiter off).",
);
const started = performance.now();
const runners: Record<Part, () => Promise<void>> = {
  ceiling: partCeiling,
  load: () => partLoad("load"),
  steady: () => partLoad("steady"),
  wrk: partWrk,
  fanout: partFanout,
  rss: partRss,
  profile: async () => {
    await partProfile();
    await partFanout(true);
  },
  breakdown: partBreakdown,
  kv: partKv,
  isolates: partIsolates,
};
for (const part of PARTS) {
  if (!parts.has(part)) continue;
  try {
    recalibrate(); // this process lives long: pin its clock to Date.now() again
    await runners[part]();
  } catch (error) {
    console.error(`  part ${part} failed: ${error instanceof Error ? error.stack : error}`);
    results[`${part}Error`] = String(error);
  }
}
printSummary();
console.log(`\ntotal ${fmt((performance.now() - started) / 1000, 1)} s`);
await Deno.mkdir(OUT, { recursive: true });
await Deno.writeTextFile(`${OUT}/results.json`, JSON.stringify(results, null, 2) + "\n");
console.log("figures written to bench/out/results.json");
