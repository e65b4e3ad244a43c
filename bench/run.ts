/**
 * `deno task bench`: throughput, latency, fan-out and memory of the relay, measured against
 * main.ts running in its own process with SQLite-backed KV. Prints figures; asserts nothing.
 *
 * Parts (all by default, about 100 s; pick some with `--parts=load,steady` or
 * BENCH_PARTS=load,steady):
 * - ceiling    the load generator (bench/loadgen.ts, its own process) against a trivial
 *              Deno.serve server (bench/hello.ts): the generator's own ceiling
 * - peers      WebSocks and smee.io (a copy of ../shared/peers/smee.io, installed once into
 *              bench/out/peers) in the same run: each server pinned to core 0, generator and
 *              subscriber to core 1, c=50, 1 KiB JSON, wrk and our generator, every delivery
 *              checked by seq; smee.io's subscriber is SSE, WebSocks runs with an SSE one (like
 *              for like) and with a WebSocket one; accepted/s, server CPU µs per accepted webhook
 *              and the ratios, over --peerRounds interleaved rounds (default 3), with medians
 * - load       accepted webhooks/s at concurrency 50 with ~1 KiB JSON bodies, every one
 *              delivered to a WebSocket subscriber; POST→client latency under that load
 * - consumers  "load" again with each way to consume (issue #13), a fresh server for each: one
 *              unfiltered subscriber, one with `event=invoice.*&endpoint=<slug>` taking all or
 *              1 in 10 of the webhooks (only this part's bodies carry a JSON `type`), and a
 *              consumer group of 3 acking members (with ACKS_PER_SECOND=0), also at 500/s open
 *              loop; every delivery checked
 * - steady     POST→client latency at a steady, open-loop 500 webhooks/s
 * - fanout     one endpoint, 1,000 WebSocket + 1,000 SSE clients: POST → last client
 * - fanrate    100 webhooks/s (open loop) to 1,000 WebSockets held by client processes:
 *              deliveries/s achieved, POST → last client, every delivery checked
 * - rss        server RSS per idle SSE and per idle WebSocket connection, and the same for a
 *              trivial Deno.serve (Deno's own floor) and for smee.io's SSE listeners
 * - profile    V8 CPU profiles of the server's main thread under "load" and during "fanout"
 * - breakdown  "load" and "steady" against bench/traced_main.ts (main.ts with timers around KV
 *              reads, commits, queue jobs and request handling): where a webhook's time goes
 * - kv         bench/kv_micro.ts: an ingest-shaped KV commit alone on SQLite, and without each
 *              of its parts, by batch size; bench/kv_isolates.ts: several KV handles on one
 *              file in one process (commits, watch and queue across handles)
 * - isolates   every core: wrk unpinned against WORKERS=1 and WORKERS=2 at concurrency 50 and
 *              200, with one user and with 20 users; POST→client latency under load and at
 *              500/s on WORKERS=2; 18,000 idle connections (half WebSocket, half SSE) on it
 * - large      20 senders posting 25 MiB at once (server RSS sampled throughout), then one
 *              25 MiB body to an SSE and a WebSocket client: time until each has it whole
 * - cold       process start → first 200 on / with prebuilt island bundles, median of N starts
 * - scale      50,000 idle connections (half SSE, half WebSocket) on one process, from client
 *              processes on their own 127.0.0.x: server RSS; prints the descriptor limit it got
 *
 * Other knobs (flag or env): --seconds=N / BENCH_SECONDS (measured seconds of load, steady and consumers;
 * default 10), --idle=N / BENCH_IDLE (idle connections per kind; default 5000), --fanout=N /
 * BENCH_FANOUT (fan-out clients per transport; default 1000), --isolatesIdle=N /
 * BENCH_ISOLATES_IDLE (idle connections of part isolates; default 18000), --coldRuns=N /
 * BENCH_COLD_RUNS (starts timed by cold; default 10), --scale=N / BENCH_SCALE (idle connections of
 * scale; default 50000), --fanRate=N / BENCH_FAN_RATE and --fanRateClients=N /
 * BENCH_FAN_RATE_CLIENTS (fanrate's webhooks/s and WebSockets; 100 and 1000), --peerRounds=N /
 * BENCH_PEER_ROUNDS (interleaved rounds of peers; 3), --consumers=a,b / BENCH_CONSUMERS (variants
 * of consumers to run, e.g. group,groupSteady; all). Figures also go to
 * bench/out/results.json, profiles to bench/out/*.cpuprofile (open them in Chrome DevTools).
 *
 * This file is only the runner: each part lives in bench/parts/<part>.ts and gets its settings
 * and a place to record figures through a context (bench/part.ts), never through globals.
 */
import { recalibrate } from "./clock.ts";
import { machine } from "./machine.ts";
import type { PartContext, PartRun } from "./part.ts";
import { run as breakdown } from "./parts/breakdown.ts";
import { run as ceiling } from "./parts/ceiling.ts";
import { run as cold } from "./parts/cold.ts";
import { run as consumers } from "./parts/consumers.ts";
import { run as fanout } from "./parts/fanout.ts";
import { run as fanrate } from "./parts/fanrate.ts";
import { run as isolates } from "./parts/isolates.ts";
import { run as kv } from "./parts/kv.ts";
import { run as large } from "./parts/large.ts";
import { run as load } from "./parts/load.ts";
import { run as peers } from "./parts/peers.ts";
import { run as profile } from "./parts/profile.ts";
import { run as rss } from "./parts/rss.ts";
import { run as scale } from "./parts/scale.ts";
import { run as steady } from "./parts/steady.ts";
import { run as wrk } from "./parts/wrk.ts";
import { DENO } from "./procs.ts";
import { fmt } from "./report.ts";
import {
  fitOpenFiles,
  neededOpenFiles,
  openFilesLimit,
  OUT,
  type PartName,
  PARTS,
  readSettings,
} from "./settings.ts";
import { printSummary } from "./summary.ts";

/** Each part's entry point, by the name `--parts` uses. */
const RUNS: Readonly<Record<PartName, PartRun>> = {
  ceiling,
  wrk,
  peers,
  load,
  consumers,
  steady,
  fanout,
  rss,
  profile,
  breakdown,
  kv,
  isolates,
  large,
  cold,
  scale,
  fanrate,
};

/** Runs the chosen parts in order, prints their figures and the summary, writes results.json. */
async function main(): Promise<void> {
  const asked = readSettings();
  // This process holds the client ends of the idle and fan-out connections. Deno raises its soft
  // limit to the hard one; when even that is too low, run again under bash with a raised limit.
  if (openFilesLimit() < neededOpenFiles(asked) && !Deno.env.get("BENCH_RAISED_LIMIT")) {
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
  const settings = fitOpenFiles(asked, openFilesLimit());
  if (settings !== asked) {
    console.log(
      `note: only ${openFilesLimit()} open files allowed and the limit cannot be raised; ` +
        `using ${settings.idle} idle connections per kind and ${settings.fanout} fan-out clients per transport`,
    );
  }

  const results: Record<string, unknown> = {};
  const info = machine();
  results.machine = info;
  console.log(
    `WebSocks benchmark, ${info.date}: ${info.nproc} cores (${info.cpu}), ${
      fmt(info.memoryGiB, 1)
    } GiB, ` +
      `Deno ${info.deno}, Linux ${info.kernel}, code ${info.git}; parts: ${
        settings.parts.join(", ")
      }`,
  );
  console.log(
    "Server: main.ts in its own process, SQLite KV in a temp dir, FREE_MONTHLY_LIMIT=1000000000, " +
      "INGEST_RATE_PER_SECOND=0 (per-endpoint rate limiter off).",
  );
  const context: PartContext = {
    settings,
    machine: info,
    record(key, figures) {
      results[key] = figures;
    },
  };
  const started = performance.now();
  for (const part of PARTS) {
    if (!settings.parts.includes(part)) continue;
    try {
      recalibrate(); // this process lives long: pin its clock to Date.now() again
      await RUNS[part](context);
    } catch (error) {
      console.error(`  part ${part} failed: ${error instanceof Error ? error.stack : error}`);
      results[`${part}Error`] = String(error);
    }
  }
  printSummary(results, settings);
  console.log(`\ntotal ${fmt((performance.now() - started) / 1000, 1)} s`);
  await Deno.mkdir(OUT, { recursive: true });
  await Deno.writeTextFile(`${OUT}/results.json`, JSON.stringify(results, null, 2) + "\n");
  console.log("figures written to bench/out/results.json");
}

if (import.meta.main) await main();
