/** Drives the load generator (bench/loadgen.ts) in its own process and samples CPU meanwhile. */
import type { GenOptions, GenResult } from "./loadgen.ts";
import { cpuSeconds, spawnDeno, threadCpuSeconds } from "./procs.ts";

/** CPU use of the processes involved over the generator's measured window. */
export interface CpuUse {
  /** Cores busy on average (1.0 = one core fully). */
  serverCores: number;
  generatorCores: number;
  driverCores: number;
  /** Per server thread name, cores busy. */
  serverThreads: Record<string, number>;
}

/** Runs bench/loadgen.ts in its own process; samples CPU while it measures. */
export async function runGenerator(
  options: GenOptions,
  serverPid: number,
  hooks: {
    onStart?: () => Promise<void>;
    onEnd?: () => Promise<void>;
    /** CPUs to pin the generator to (`taskset -c`); unpinned when absent. */
    cpus?: string;
  } = {},
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
    cpus: hooks.cpus,
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
