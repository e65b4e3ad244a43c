/** Part "ceiling": the load generator against a trivial Deno.serve server (bench/hello.ts). */
import { runGenerator } from "../generator.ts";
import type { PartContext } from "../part.ts";
import { freePort, spawnDeno } from "../procs.ts";
import { fmt, printCpu, printGen } from "../report.ts";
import { BODY_BYTES, CONCURRENCY, WARMUP_MS } from "../settings.ts";

/** The generator's own ceiling in requests per second; figures under `ceiling`. */
export async function run(context: PartContext): Promise<void> {
  console.log("\n## ceiling: load generator vs a trivial Deno.serve server");
  const port = freePort();
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
      durationMs: Math.min(context.settings.seconds, 5) * 1000,
      bodyBytes: BODY_BYTES,
    }, child.pid);
    console.log(`  generator ceiling: ${fmt(result.rps, 0)} req/s at concurrency ${CONCURRENCY}`);
    printGen(result);
    printCpu(cpu);
    context.record("ceiling", { rps: result.rps, http: result.http, cpu });
  } finally {
    await child.stop();
  }
}
