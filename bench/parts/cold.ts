/**
 * Part "cold": process start to the first 200 on `/`, with island bundles prebuilt once (build.ts
 * into bench/out/islands, served through ISLANDS_DIR as `deno task build` + main.ts would), over
 * `coldRuns` starts of each kind, interleaved: a first start (a fresh KV file) and a restart (the
 * same KV file again, as after a deploy or a crash). Deno is spawned directly (no shell) and `/`
 * is polled every 2 ms from the spawn on; the figure includes Deno's own start and module loading.
 */
import type { PartContext } from "../part.ts";
import { DENO, freePort, relayEnv, ROOT, SERVER_V8_FLAGS, sleep } from "../procs.ts";
import { fmt, ms } from "../report.ts";
import { OUT } from "../settings.ts";
import { summarize } from "../stats.ts";

/** How long one start may take before the part gives up on it. */
const START_TIMEOUT_MS = 30_000;

/**
 * Spawns main.ts and resolves with ms from spawn to the first 200 on `/` (NaN on timeout), on a
 * fresh KV file, or on the one in `kvDir` when given (which is then kept).
 */
async function oneStart(
  islands: string,
  reuse?: string,
): Promise<{ toFirst200: number; status: number }> {
  const port = freePort();
  const kvDir = reuse ?? await Deno.makeTempDir({ prefix: "cold_" });
  const url = `http://127.0.0.1:${port}/`;
  const started = performance.now();
  const process = new Deno.Command(DENO, {
    args: ["run", "-A", SERVER_V8_FLAGS, "main.ts"],
    cwd: ROOT,
    env: { ...relayEnv(port, `${kvDir}/bench.kv`), ISLANDS_DIR: islands },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let toFirst200 = NaN;
  let status = 0;
  try {
    while (performance.now() - started < START_TIMEOUT_MS) {
      try {
        const response = await fetch(url);
        await response.arrayBuffer();
        status = response.status;
        if (status === 200) {
          toFirst200 = performance.now() - started;
          break;
        }
      } catch {
        // not listening yet
      }
      await sleep(2);
    }
  } finally {
    try {
      process.kill("SIGTERM");
    } catch {
      // gone already
    }
    await process.status;
    if (!reuse) await Deno.remove(kvDir, { recursive: true }).catch(() => {});
  }
  return { toFirst200, status };
}

/** `coldRuns` starts of main.ts; figures under `cold`. */
export async function run(context: PartContext): Promise<void> {
  const runs = context.settings.coldRuns;
  console.log(`\n## cold: process start → first 200 on /, prebuilt island bundles, ${runs} starts`);
  const islands = `${OUT}/islands`;
  const buildStarted = performance.now();
  const build = await new Deno.Command(DENO, {
    args: ["run", "-A", "build.ts", islands],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!build.success) {
    console.log(
      `  skipped: build.ts failed: ${new TextDecoder().decode(build.stderr).slice(-400)}`,
    );
    return;
  }
  console.log(
    `  bundles built once into bench/out/islands in ${
      fmt((performance.now() - buildStarted) / 1000, 1)
    } s`,
  );
  // One start of each kind first, not counted: it fills Deno's module cache the way any start
  // after a deploy would have, and the restarts' KV file.
  const kept = await Deno.makeTempDir({ prefix: "cold_restart_" });
  try {
    await oneStart(islands);
    await oneStart(islands, kept);
    const kinds = { first: [] as number[], restart: [] as number[] };
    let failed = 0;
    let lastStatus = 0;
    for (let i = 0; i < runs; i++) {
      for (const kind of ["first", "restart"] as const) {
        const { toFirst200, status } = await oneStart(
          islands,
          kind === "restart" ? kept : undefined,
        );
        lastStatus = status;
        if (Number.isFinite(toFirst200)) kinds[kind].push(toFirst200);
        else failed++;
      }
    }
    const first = summarize(kinds.first);
    const restart = summarize(kinds.restart);
    console.log(
      `  first start (fresh KV file) → first 200: median ${fmt(first.p50, 0)} ms; ${ms(first)}` +
        " (target < 300 ms)",
    );
    console.log(
      `  restart (same KV file) → first 200: median ${fmt(restart.p50, 0)} ms; ${ms(restart)}` +
        " (target < 300 ms)" +
        (failed
          ? `; ${failed} starts gave no 200 within ${
            START_TIMEOUT_MS / 1000
          } s (last status ${lastStatus})`
          : ""),
    );
    context.record("cold", {
      runs,
      failed,
      toFirst200: first,
      restartToFirst200: restart,
      times: kinds.first,
      restartTimes: kinds.restart,
    });
  } finally {
    await Deno.remove(kept, { recursive: true }).catch(() => {});
  }
}
