/**
 * Part "load": accepted webhooks/s at concurrency 50 with ~1 KiB JSON bodies, every one delivered
 * to a WebSocket subscriber, and POST→client latency under that load. `measureLoad` also serves
 * parts "steady" (open loop) and "isolates" (WORKERS=2).
 */
import { Subscriber } from "../clients.ts";
import { runGenerator } from "../generator.ts";
import type { PartContext } from "../part.ts";
import { rssKiB, signUpUser, startRelay } from "../procs.ts";
import { fmt, ms, printCpu, printGen, verdict } from "../report.ts";
import { BODY_BYTES, CONCURRENCY, STEADY_RATE, TARGETS, WARMUP_MS } from "../settings.ts";
import { summarize } from "../stats.ts";

/** Part "load" on one isolate; figures under `load`. */
export function run(context: PartContext): Promise<void> {
  return measureLoad(context, "load");
}

/**
 * The relay under the generator, closed loop ("load") or open loop at STEADY_RATE ("steady"),
 * on `workers` serving isolates; figures under `key`.
 */
export async function measureLoad(
  context: PartContext,
  kind: "load" | "steady",
  options: { workers: number; key: string } = { workers: 1, key: kind },
): Promise<void> {
  const seconds = context.settings.seconds;
  const closed = kind === "load";
  console.log(
    closed
      ? `\n## ${options.key}: WORKERS=${options.workers}, concurrency ${CONCURRENCY}, ${BODY_BYTES} B JSON, ${seconds} s after ${
        WARMUP_MS / 1000
      } s warm-up`
      : `\n## ${options.key}: WORKERS=${options.workers}, open loop at ${STEADY_RATE}/s, ${seconds} s after ${
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
      durationMs: seconds * 1000,
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
    // Server CPU over the measured window ÷ webhooks answered in it (utime+stime, all threads).
    const cpuUsPerWebhook = (cpu.serverCores / Math.max(1e-9, result.rps)) * 1e6;
    console.log(`  server CPU per accepted webhook: ${fmt(cpuUsPerWebhook, 1)} µs`);
    console.log(`  server RSS after the run: ${fmt(rss / 1024, 1)} MiB`);
    context.record(options.key, {
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
      cpuUsPerWebhook,
      serverRssKiB: rss,
    });
  } finally {
    await server.stop();
  }
}
