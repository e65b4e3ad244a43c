/**
 * Part "peers": WebSocks and smee.io (bench/peers.ts) in the same run on the same settings: each
 * server pinned to core 0, the load generator and this process (the subscriber) to core 1,
 * concurrency 50, 1 KiB JSON, one subscriber, with wrk (a Lua script numbering every body) and
 * with bench/loadgen.ts. smee.io's subscriber is SSE, the one transport it has; WebSocks runs twice
 * per generator, once with an SSE subscriber (the like-for-like comparison, and the ratio the issue's
 * target is read against) and once with a WebSocket one. Every delivery is checked by `seq`
 * (missing, repeated); prints accepted/s, server CPU per accepted webhook and the ratios.
 */
import { type FanoutClient, SMEE_BODY, Tally, tallySse, tallyWs } from "../clients.ts";
import { runGenerator } from "../generator.ts";
import { bodyTemplate } from "../loadgen.ts";
import type { PartContext } from "../part.ts";
import { smeeDir, startSmee } from "../peers.ts";
import { cpuSeconds, pinProcess, rssKiB, signUpUser, startRelay } from "../procs.ts";
import { fmt, ms } from "../report.ts";
import { BODY_BYTES, CONCURRENCY, WARMUP_MS } from "../settings.ts";
import { median, summarize, type Summary } from "../stats.ts";
import { findWrk } from "./wrk.ts";

/** Core of the server under test; the generator and the subscriber get GENERATOR_CPU. */
const SERVER_CPU = "0";
const GENERATOR_CPU = "1";

/** One server of the comparison, started pinned, with its subscriber open. */
interface Target {
  name: string;
  pid: number;
  webhookUrl: string;
  subscriber: FanoutClient;
  stop(): Promise<void>;
}

/** What one server measured under one generator. */
interface PeerFigures {
  rps: number;
  accepted: number;
  delivered: number;
  distinct: number;
  missing: number;
  repeated: number;
  non2xx: number;
  cpuUsPerWebhook: number;
  serverCores: number;
  rssAfterKiB: number;
  latency?: Summary;
  http?: string;
}

/** How WebSocks' subscriber is connected: SSE as smee.io's is, or a WebSocket. */
type Transport = "sse" | "ws";

async function openWebSocks(tally: Tally, transport: Transport): Promise<Target> {
  const server = await startRelay({ cpus: SERVER_CPU });
  try {
    const user = await signUpUser(server.url);
    const subscriber = transport === "sse"
      ? await tallySse(`${server.url}/api/events/stream?token=${user.token}`, tally)
      : await tallyWs(`ws://127.0.0.1:${server.port}/?token=${user.token}`, tally);
    return {
      name: transport === "sse" ? "WebSocks, SSE" : "WebSocks, WS",
      pid: server.child.pid,
      webhookUrl: user.webhookUrl,
      subscriber,
      stop: () => server.stop(),
    };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

async function openSmee(dir: string, tally: Tally): Promise<Target> {
  const peer = await startSmee(dir, { cpus: SERVER_CPU });
  try {
    const channel = `bench-${crypto.randomUUID().slice(0, 8)}`;
    const subscriber = await tallySse(`${peer.url}/${channel}`, tally, SMEE_BODY);
    return {
      name: "smee.io",
      pid: peer.pid,
      webhookUrl: `${peer.url}/${channel}`,
      subscriber,
      stop: () => peer.stop(),
    };
  } catch (error) {
    await peer.stop();
    throw error;
  }
}

/** Waits for the subscriber, then counts what is missing and what came twice. */
async function check(tally: Tally, accepted: number) {
  const all = await tally.waitFor(accepted, 15_000);
  return {
    all,
    delivered: tally.delivered,
    distinct: tally.distinct,
    missing: Math.max(0, accepted - tally.distinct),
    repeated: tally.repeats,
  };
}

/** One wrk run pinned to GENERATOR_CPU whose Lua script numbers bodies from `first`. */
async function wrkOnce(wrk: string, url: string, seconds: number, first: number) {
  // `{"t":0.000,"w":0,"seq":` + n + `,"pad":…`: w=0, so wrk's bodies never count as latencies.
  const sample = bodyTemplate(BODY_BYTES)(0, 0, 0);
  const cut = sample.indexOf('"seq":0') + '"seq":'.length;
  const script = await Deno.makeTempFile({ prefix: "peers_", suffix: ".lua" });
  try {
    await Deno.writeTextFile(
      script,
      `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n` +
        `local head = ${JSON.stringify(sample.slice(0, cut))}\n` +
        `local tail = ${JSON.stringify(sample.slice(cut + 1))}\nlocal n = ${first}\n` +
        `request = function()\n  n = n + 1\n  return wrk.format(nil, nil, nil, head .. n .. tail)\nend\n`,
    );
    const out = await new Deno.Command("taskset", {
      args: [
        "-c",
        GENERATOR_CPU,
        wrk,
        "-t1",
        `-c${CONCURRENCY}`,
        `-d${seconds}s`,
        "--latency",
        "-s",
        script,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const total = Number(/(\d+) requests in/.exec(text)?.[1] ?? 0);
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0);
    const latency = /Latency Distribution[\s\S]*?50%\s+(\S+)[\s\S]*?99%\s+(\S+)/.exec(text);
    return { total, non2xx, accepted: total - non2xx, rps, latency };
  } finally {
    await Deno.remove(script).catch(() => {});
  }
}

/**
 * wrk for WARMUP_MS (not measured: both servers' JITs start cold), then `seconds` measured; the
 * two runs number their bodies from different offsets so every delivery can be checked.
 */
async function underWrk(wrk: string, target: Target, tally: Tally, seconds: number) {
  const warm = await wrkOnce(wrk, target.webhookUrl, WARMUP_MS / 1000, 10_000_000);
  const before = cpuSeconds(target.pid);
  const started = performance.now();
  const run = await wrkOnce(wrk, target.webhookUrl, seconds, 20_000_000);
  const cpu = cpuSeconds(target.pid) - before;
  const wall = (performance.now() - started) / 1000;
  const accepted = warm.accepted + run.accepted;
  const checked = await check(tally, accepted);
  const figures: PeerFigures = {
    rps: run.rps * (run.accepted / Math.max(1, run.total)),
    accepted,
    delivered: checked.delivered,
    distinct: checked.distinct,
    missing: checked.missing,
    repeated: checked.repeated,
    non2xx: warm.non2xx + run.non2xx,
    cpuUsPerWebhook: (cpu * 1e6) / Math.max(1, run.accepted),
    serverCores: cpu / wall,
    rssAfterKiB: rssKiB(target.pid),
    http: run.latency ? `p50 ${run.latency[1]}, p99 ${run.latency[2]}` : undefined,
  };
  return figures;
}

/** bench/loadgen.ts pinned to GENERATOR_CPU, closed loop after WARMUP_MS of warm-up. */
async function underLoadgen(target: Target, tally: Tally, seconds: number) {
  const { result, cpu } = await runGenerator(
    {
      url: target.webhookUrl,
      mode: "closed",
      concurrency: CONCURRENCY,
      warmupMs: WARMUP_MS,
      durationMs: seconds * 1000,
      bodyBytes: BODY_BYTES,
    },
    target.pid,
    { cpus: GENERATOR_CPU },
  );
  const checked = await check(tally, result.okTotal);
  const non2xx = Object.entries(result.statuses)
    .filter(([status]) => status !== "200").reduce((sum, [, n]) => sum + n, 0);
  const figures: PeerFigures = {
    rps: result.rps,
    accepted: result.okTotal,
    delivered: checked.delivered,
    distinct: checked.distinct,
    missing: checked.missing,
    repeated: checked.repeated,
    non2xx: non2xx + result.errors,
    // Server CPU over the measured window ÷ webhooks answered in it.
    cpuUsPerWebhook: (cpu.serverCores / Math.max(1e-9, result.rps)) * 1e6,
    serverCores: cpu.serverCores,
    rssAfterKiB: rssKiB(target.pid),
    latency: summarize(tally.latencies.values()),
    http: ms(result.http),
  };
  return figures;
}

function printFigures(name: string, f: PeerFigures): void {
  console.log(
    `  ${name.padEnd(13)} ${fmt(f.rps, 0).padStart(7)} accepted/s; server CPU ${
      fmt(f.cpuUsPerWebhook, 1)
    } µs per accepted webhook (${
      fmt(f.serverCores)
    } cores); delivered ${f.distinct} of ${f.accepted} accepted: ` +
      `missing ${f.missing}, repeated ${f.repeated}${
        f.non2xx ? `, non-2xx/errors ${f.non2xx}` : ""
      }; ` +
      `RSS after ${fmt(f.rssAfterKiB / 1024, 1)} MiB`,
  );
  if (f.latency) console.log(`                POST→subscriber: ${ms(f.latency)}`);
  if (f.http) console.log(`                HTTP round trip: ${f.http}`);
}

/** What one round measured under one generator: WebSocks with SSE, smee.io, WebSocks with WS. */
type Round = Record<Kind, PeerFigures>;
type Kind = "websocks" | "smee" | "websocksWs";

/** Ratios of one transport against smee.io over the rounds: each round's, and their medians. */
interface PeerRatios {
  rate: number[];
  cpu: number[];
  medianRate: number;
  medianCpu: number;
}

function ratiosOf(rounds: Round[], kind: "websocks" | "websocksWs"): PeerRatios {
  const rate = rounds.map((round) => round[kind].rps / round.smee.rps);
  const cpu = rounds.map((round) => round[kind].cpuUsPerWebhook / round.smee.cpuUsPerWebhook);
  return { rate, cpu, medianRate: median(rate), medianCpu: median(cpu) };
}

/**
 * Every server under every generator, `peerRounds` times, interleaved (this VM's speed drifts
 * over minutes, and a ratio is only fair between runs of the same minutes); figures under
 * `peers`: each generator's rounds, and the median ratios over them.
 */
export async function run(context: PartContext): Promise<void> {
  const { seconds, peerRounds } = context.settings;
  console.log(
    `\n## peers: WebSocks (WORKERS=1, durable) and smee.io (in memory) in the same run; each server ` +
      `pinned to core ${SERVER_CPU}, generator and subscriber to core ${GENERATOR_CPU}; ` +
      `concurrency ${CONCURRENCY}, ${BODY_BYTES} B JSON, ${seconds} s (loadgen after ${
        WARMUP_MS / 1000
      } s warm-up); one subscriber: SSE for smee.io, and for WebSocks SSE (like for like) then a ` +
      `WebSocket; ${peerRounds} interleaved round(s), ratios as their medians`,
  );
  const dir = await smeeDir();
  const wrk = findWrk();
  if (!dir) return;
  // Restored afterwards: the CPUs this process was allowed before the part pinned it.
  const allowed =
    Deno.readTextFileSync("/proc/self/status").match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1] ??
      `0-${navigator.hardwareConcurrency - 1}`;
  if (!pinProcess(Deno.pid, GENERATOR_CPU)) console.log("  note: could not pin this process");
  const generators = [
    ...(wrk
      ? [["wrk", (t: Target, tally: Tally) => underWrk(wrk, t, tally, seconds)] as const]
      : []),
    ["loadgen", (t: Target, tally: Tally) => underLoadgen(t, tally, seconds)] as const,
  ];
  if (!wrk) console.log("  wrk skipped: it could not be installed");
  const rounds = new Map<string, Round[]>(generators.map(([generator]) => [generator, []]));
  try {
    for (let round = 1; round <= peerRounds; round++) {
      for (const [generator, measure] of generators) {
        console.log(
          `  round ${round}, ${
            generator === "wrk" ? "wrk (Lua POST script)" : "bench/loadgen.ts"
          }:`,
        );
        const figures = {} as Round;
        // Keys as earlier runs recorded them: `websocks` is the SSE run, the like-for-like one.
        for (const kind of ["websocks", "smee", "websocksWs"] as const) {
          const tally = new Tally();
          const target = kind === "smee"
            ? await openSmee(dir, tally)
            : await openWebSocks(tally, kind === "websocks" ? "sse" : "ws");
          try {
            figures[kind] = await measure(target, tally);
          } finally {
            target.subscriber.close();
            await target.stop();
          }
          printFigures(target.name, figures[kind]);
        }
        const theirs = figures.smee;
        for (
          const [label, ours] of [["SSE", figures.websocks], ["WS", figures.websocksWs]] as const
        ) {
          console.log(
            `  → WebSocks (${label})/smee.io (SSE): ${fmt(ours.rps / theirs.rps)}× the rate, ${
              fmt(ours.cpuUsPerWebhook / theirs.cpuUsPerWebhook)
            }× the CPU per webhook`,
          );
        }
        rounds.get(generator)!.push(figures);
        context.record("peers", recordOf(rounds));
      }
    }
  } finally {
    pinProcess(Deno.pid, allowed);
  }
  console.log(`  medians over ${peerRounds} round(s), WebSocks/smee.io:`);
  for (const [generator, list] of rounds) {
    for (const [label, kind] of [["SSE", "websocks"], ["WS", "websocksWs"]] as const) {
      const ratios = ratiosOf(list, kind);
      console.log(
        `    ${generator.padEnd(7)} ${label.padEnd(3)} rate ${fmt(ratios.medianRate)}× (rounds: ${
          ratios.rate.map((r) => fmt(r)).join(", ")
        }), CPU per webhook ${fmt(ratios.medianCpu)}×`,
      );
    }
  }
}

/** What results.json keeps: per generator, its rounds and the median ratios of each transport. */
function recordOf(rounds: Map<string, Round[]>) {
  return Object.fromEntries(
    [...rounds].filter(([, list]) => list.length > 0).map(([generator, list]) => [generator, {
      rounds: list,
      sse: ratiosOf(list, "websocks"),
      ws: ratiosOf(list, "websocksWs"),
    }]),
  );
}
