/**
 * Part "fanrate": sustained fan-out, `fanRate` webhooks/s (open loop, bench/loadgen.ts) to
 * `fanRateClients` WebSockets of one endpoint (default 100/s × 1,000 = 100,000 deliveries/s),
 * held by client processes of 500 each (bench/fan_clients.ts). Prints deliveries/s achieved in the
 * measured window, POST→last client per webhook, and every delivery checked (missing, repeated).
 *
 * The clients share this machine's two cores with the server, so the rate is as much theirs as
 * the server's: the figure that belongs to the server alone is its CPU per delivery, all its
 * threads from the first webhook sent to the last delivery arrived, divided by the deliveries
 * (ingest included: 1 webhook in 1,000 deliveries); the client processes' CPU per delivery is
 * printed beside it.
 */
import type { FanClientsResult } from "../fan_clients.ts";
import { runGenerator } from "../generator.ts";
import type { PartContext } from "../part.ts";
import { type Child, cpuSeconds, signUpUser, sleep, spawnDeno, startRelay } from "../procs.ts";
import { fmt, ms, printCpu } from "../report.ts";
import { BODY_BYTES, WARMUP_MS } from "../settings.ts";
import { summarize } from "../stats.ts";
import { wallClock } from "../clock.ts";
import { floorLine, measureWsSendFloor } from "../ws_send_floor.ts";

/** WebSockets per client process. */
const PER_PROCESS = 500;
const BUCKET_MS = 100;

/** Part "fanrate"; figures under `fanrate`. */
export async function run(context: PartContext): Promise<void> {
  const { fanRate, fanRateClients, seconds } = context.settings;
  console.log(
    `\n## fanrate: ${fanRate} webhooks/s to ${fanRateClients} WebSockets of one endpoint (${
      fmt(fanRate * fanRateClients, 0)
    } deliveries/s asked), ${BODY_BYTES} B JSON, ${seconds} s after ${WARMUP_MS / 1000} s warm-up`,
  );
  const server = await startRelay();
  const children: Child[] = [];
  /** The mean envelope the clients received, so the floor sends messages of that size. */
  let envelopeBytes: number | undefined;
  try {
    const user = await signUpUser(server.url);
    const processes = Math.ceil(fanRateClients / PER_PROCESS);
    const readies: Promise<void>[] = [];
    const progress: number[] = [];
    let opened = 0;
    let failed = 0;
    for (let i = 0; i < processes; i++) {
      const count = Math.min(PER_PROCESS, fanRateClients - i * PER_PROCESS);
      let markReady: () => void = () => {};
      readies.push(new Promise<void>((resolve) => markReady = resolve));
      const { child } = spawnDeno({
        script: "bench/fan_clients.ts",
        args: [JSON.stringify({
          port: server.port,
          path: `/?token=${user.token}`,
          count,
          bucketMs: BUCKET_MS,
        })],
        onLine(line) {
          if (line.startsWith("PROGRESS ")) progress[i] = Number(line.slice(9));
          if (!line.startsWith("READY ")) return;
          const [, ok, bad] = line.split(" ");
          opened += Number(ok);
          failed += Number(bad);
          markReady();
        },
      });
      children.push(child);
    }
    // At most 90 s, without a timer left behind to hold the run open for the rest of them.
    let timeout: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(readies),
      new Promise((resolve) => timeout = setTimeout(resolve, 90_000)),
    ]);
    clearTimeout(timeout);
    console.log(
      `  opened ${opened} WebSockets in ${processes} client processes` +
        (failed ? ` (${failed} failed)` : ""),
    );
    let windowStart = 0;
    let windowEnd = 0;
    const clientCpuBefore = children.map((c) => cpuSeconds(c.pid));
    const serverCpuBefore = cpuSeconds(server.child.pid);
    const { result, cpu } = await runGenerator(
      {
        url: user.webhookUrl,
        mode: "open",
        rate: fanRate,
        maxInFlight: 1000,
        warmupMs: WARMUP_MS,
        durationMs: seconds * 1000,
        bodyBytes: BODY_BYTES,
      },
      server.child.pid,
      {
        onStart: () => Promise.resolve(void (windowStart = wallClock())),
        onEnd: () => Promise.resolve(void (windowEnd = wallClock())),
      },
    );
    const clientCores = children.reduce((sum, c, i) =>
      sum + cpuSeconds(c.pid) - clientCpuBefore[i], 0) /
      ((windowEnd - windowStart) / 1000 || seconds);
    // Let the last webhooks arrive everywhere (until 10 s pass without progress), then collect.
    const expectedEach = result.okTotal;
    const arrived = () => progress.reduce((sum, n) => sum + (n ?? 0), 0);
    let seen = -1;
    let stalledSince = Date.now();
    while (arrived() < expectedEach * opened && Date.now() - stalledSince < 10_000) {
      if (arrived() !== seen) {
        seen = arrived();
        stalledSince = Date.now();
      }
      await sleep(100);
    }
    // Every delivery arrived (or none moved for 10 s): the CPU spent on all of them.
    const serverCpu = cpuSeconds(server.child.pid) - serverCpuBefore;
    const clientCpu = children.reduce(
      (sum, c, i) => sum + cpuSeconds(c.pid) - clientCpuBefore[i],
      0,
    );
    const results: FanClientsResult[] = [];
    for (const child of children) {
      await child.stop(5000);
      const { lines } = await child.exited;
      const line = lines.find((l) => l.startsWith("RESULT "));
      if (line) results.push(JSON.parse(line.slice("RESULT ".length)));
    }
    children.length = 0;
    const last = new Map<number, [number, number]>();
    let inWindow = 0;
    let repeats = 0;
    let missing = 0;
    let messageBytes = 0;
    for (const r of results) {
      repeats += r.repeats;
      messageBytes += r.messageBytes;
      for (const distinct of r.distinctPerClient) missing += Math.max(0, expectedEach - distinct);
      for (const [seq, [t, at]] of Object.entries(r.last)) {
        const entry = last.get(Number(seq));
        if (!entry || at > entry[1]) last.set(Number(seq), [t, at]);
      }
      for (const [bucket, count] of Object.entries(r.buckets)) {
        const start = Number(bucket);
        if (start >= windowStart && start + BUCKET_MS <= windowEnd) inWindow += count;
      }
    }
    // Whole buckets inside the window only, so divide by their span.
    const spanMs = Math.floor(windowEnd / BUCKET_MS) * BUCKET_MS -
      Math.ceil(windowStart / BUCKET_MS) * BUCKET_MS;
    const perSecond = inWindow / Math.max(1e-9, spanMs / 1000);
    const delivered = results.reduce((sum, r) => sum + r.deliveries, 0);
    envelopeBytes = delivered > 0 ? Math.round(messageBytes / delivered) : undefined;
    const serverUsPerDelivery = (serverCpu * 1e6) / Math.max(1, delivered);
    const clientUsPerDelivery = (clientCpu * 1e6) / Math.max(1, delivered);
    const toLast = summarize(
      [...last.values()].filter(([t]) => t >= windowStart && t < windowEnd).map(([t, at]) =>
        at - t
      ),
    );
    console.log(
      `  accepted ${
        fmt(result.rps, 1)
      } webhooks/s answered in the window (${result.okTotal} in all, ${
        result.skipped ?? 0
      } skipped; HTTP ${ms(result.http)}); deliveries achieved: ${
        fmt(perSecond, 0)
      }/s in the measured window`,
    );
    console.log(
      `  every delivery checked: ${expectedEach} webhooks × ${opened} clients; missing ${missing}, repeated ${repeats}`,
    );
    console.log(`  POST → last client: ${ms(toLast)}; envelope ${envelopeBytes ?? "?"} B`);
    printCpu(cpu);
    console.log(`  client processes: ${fmt(clientCores)} cores`);
    console.log(
      `  CPU per delivery, from the first webhook sent to the last arrival (${delivered} ` +
        `deliveries): server ${fmt(serverUsPerDelivery, 2)} µs (${fmt(serverCpu, 2)} s), ` +
        `client processes ${fmt(clientUsPerDelivery, 2)} µs (${fmt(clientCpu, 2)} s)`,
    );
    context.record("fanrate", {
      rate: fanRate,
      clients: opened,
      accepted: result.okTotal,
      rps: result.rps,
      deliveriesPerSecond: perSecond,
      missing,
      repeats,
      toLast,
      cpu,
      clientCores,
      delivered,
      envelopeBytes,
      serverCpuSeconds: serverCpu,
      serverUsPerDelivery,
      clientCpuSeconds: clientCpu,
      clientUsPerDelivery,
    });
  } finally {
    for (const child of children) await child.stop(1000);
    await server.stop();
  }
  // Deno's own cost of WebSocket.send, with nothing of WebSocks around it: the same number of
  // clients, rate and message size (the envelopes', 2.5 KB for a 1 KiB body) from a trivial
  // Deno.serve.
  const floor = await measureWsSendFloor({
    clients: fanRateClients,
    rate: fanRate,
    seconds,
    messageBytes: envelopeBytes,
  });
  console.log(floorLine(floor, fanRate));
  context.record("fanrateFloor", floor);
}
