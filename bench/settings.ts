/**
 * What a benchmark run measures: the parts chosen and the knobs (flag or env), read once by the
 * runner (bench/run.ts) and handed to every part; plus the fixed shape of the workload and the
 * targets the figures are judged against.
 */
import { ROOT } from "./procs.ts";

/** Every part, in the order they run. */
export const PARTS = [
  "ceiling",
  "wrk",
  "peers",
  "load",
  "consumers",
  "steady",
  "fanout",
  "rss",
  "profile",
  "breakdown",
  "kv",
  "isolates",
  "large",
  "fanrate",
  "cold",
  "scale",
] as const;
/** The name of one part. */
export type PartName = typeof PARTS[number];

/** Connections of the closed-loop generator (and wrk's default). */
export const CONCURRENCY = 50;
/** Size of every webhook body. */
export const BODY_BYTES = 1024;
/** Generator warm-up before the measured window. */
export const WARMUP_MS = 2000;
/** Webhooks per second of the open loop ("steady"). */
export const STEADY_RATE = 500;
/** Webhooks measured by "fanout", sent one at a time. */
export const FANOUT_WEBHOOKS = 50;
/** Webhooks "fanout" sends before measuring. */
export const FANOUT_WARMUP = 5;
/** Connections opened on top of `idle` while sampling who holds their JS heap. */
export const HEAP_SAMPLED = 1000;
/** Where results.json and the CPU profiles go. */
export const OUT = `${ROOT}bench/out`;

/** What the figures are judged against (bench/RESULTS.md). */
export const TARGETS = {
  throughput: 12_000,
  p99Load: 15,
  p99Steady: 5,
  /** Issue 15: an idle SSE stream at most 30 KiB, an idle WebSocket at most 20. */
  idleSseKiB: 30,
  idleWsKiB: 20,
} as const;

/** The knobs of one run; read-only once the runner has fitted them to the open-files limit. */
export interface Settings {
  /** The parts asked for, without repeats, in the order given. */
  readonly parts: readonly PartName[];
  /** Measured seconds of "load" and "steady" (others cap it lower). */
  readonly seconds: number;
  /** Idle connections per kind in "rss". */
  readonly idle: number;
  /** Fan-out clients per transport. */
  readonly fanout: number;
  /** Idle connections of part "isolates" (half WebSocket, half SSE); 18,000 because this
   * machine allows 20,000 open files per process, which the server hits first. */
  readonly isolatesIdle: number;
  /** Starts of main.ts timed by part "cold". */
  readonly coldRuns: number;
  /** Idle connections part "scale" asks for on one process (half SSE, half WebSocket). */
  readonly scale: number;
  /** Webhooks per second of part "fanrate", and its WebSocket clients. */
  readonly fanRate: number;
  readonly fanRateClients: number;
  /**
   * Rounds of part "peers": each runs every server once per generator, interleaved, and the
   * ratios printed are the medians of the rounds', since this VM's speed drifts over minutes.
   */
  readonly peerRounds: number;
  /** The variants of part "consumers" to run (e.g. group,groupSteady); null: all. */
  readonly consumerVariants: readonly string[] | null;
}

/** Reads the knobs from `--name=value` flags, else their env forms, else the defaults. */
export function readSettings(
  args: readonly string[] = Deno.args,
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): Settings {
  const setting = (name: string, envName: string): string | undefined => {
    const flag = args.find((arg) => arg.startsWith(`--${name}=`));
    return flag ? flag.slice(name.length + 3) : env(envName);
  };
  const partsSetting = setting("parts", "BENCH_PARTS");
  const parts = new Set<PartName>(
    partsSetting
      ? partsSetting.split(",").map((p) => p.trim()).filter((p): p is PartName => {
        if ((PARTS as readonly string[]).includes(p)) return true;
        console.error(`unknown part "${p}" (known: ${PARTS.join(", ")})`);
        return false;
      })
      : PARTS,
  );
  return {
    parts: [...parts],
    seconds: Number(setting("seconds", "BENCH_SECONDS") ?? 10),
    idle: Number(setting("idle", "BENCH_IDLE") ?? 5000),
    fanout: Number(setting("fanout", "BENCH_FANOUT") ?? 1000),
    isolatesIdle: Number(setting("isolatesIdle", "BENCH_ISOLATES_IDLE") ?? 18_000),
    coldRuns: Number(setting("coldRuns", "BENCH_COLD_RUNS") ?? 10),
    scale: Number(setting("scale", "BENCH_SCALE") ?? 50_000),
    fanRate: Number(setting("fanRate", "BENCH_FAN_RATE") ?? 100),
    fanRateClients: Number(setting("fanRateClients", "BENCH_FAN_RATE_CLIENTS") ?? 1000),
    peerRounds: Number(setting("peerRounds", "BENCH_PEER_ROUNDS") ?? 3),
    consumerVariants: setting("consumers", "BENCH_CONSUMERS")?.split(",").map((v) => v.trim()) ??
      null,
  };
}

/** Open files this process needs: it holds the client ends of the idle and fan-out connections. */
export function neededOpenFiles(settings: Settings): number {
  return Math.max(
    settings.idle + HEAP_SAMPLED,
    2 * settings.fanout,
    settings.parts.includes("isolates") ? settings.isolatesIdle : 0,
  ) + 600;
}

/** The soft limit on open files of this process. */
export function openFilesLimit(): number {
  const line = Deno.readTextFileSync("/proc/self/limits").split("\n")
    .find((l) => l.startsWith("Max open files"));
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
  return soft === "unlimited" ? Infinity : Number(soft ?? 1024);
}

/** The settings shrunk to fit `limit` open files, or the same settings when they fit. */
export function fitOpenFiles(settings: Settings, limit: number): Settings {
  if (limit >= neededOpenFiles(settings)) return settings;
  const room = limit - 600;
  return {
    ...settings,
    idle: Math.max(100, Math.min(settings.idle, room - HEAP_SAMPLED)),
    fanout: Math.max(50, Math.min(settings.fanout, Math.floor(room / 2))),
  };
}
