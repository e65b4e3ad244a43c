/**
 * Part "breakdown": "load" and "steady" against bench/traced_main.ts (main.ts with timers around
 * KV reads, commits, queue jobs and request handling): where a webhook's time goes.
 */
import { Subscriber } from "../clients.ts";
import { runGenerator } from "../generator.ts";
import type { PartContext } from "../part.ts";
import { freePort, signUpUser, startRelay } from "../procs.ts";
import { fmt, ms, printCpu } from "../report.ts";
import { BODY_BYTES, CONCURRENCY, STEADY_RATE, WARMUP_MS } from "../settings.ts";
import { summarize, type Summary } from "../stats.ts";

/** Both loads against the traced server; figures under `breakdown`. */
export async function run(context: PartContext): Promise<void> {
  const seconds = Math.min(context.settings.seconds, 6);
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
  context.record("breakdown", out);
}
