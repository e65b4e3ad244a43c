/**
 * Part "fanout": one endpoint, `fanout` WebSocket + `fanout` SSE clients, webhooks one at a
 * time: POST → last client. `measureFanout(context, true)` is the fan-out half of part "profile".
 */
import { wallClock } from "../clock.ts";
import { type FanoutClient, leanSse, leanWs, openMany } from "../clients.ts";
import { bodyTemplate } from "../loadgen.ts";
import type { PartContext } from "../part.ts";
import { analyze, connectInspector, type CpuProfile } from "../profile.ts";
import { cpuSeconds, cpuSplit, signUpUser, sleep, startRelay, threadCpuSeconds } from "../procs.ts";
import { fmt, ms, printProfile } from "../report.ts";
import { BODY_BYTES, FANOUT_WARMUP, FANOUT_WEBHOOKS, OUT } from "../settings.ts";
import { summarize } from "../stats.ts";

/** Part "fanout"; figures under `fanout`. */
export function run(context: PartContext): Promise<void> {
  return measureFanout(context);
}

/**
 * Fans webhooks out to every client; `profiled` runs the server under the inspector, saves
 * bench/out/fanout.cpuprofile and files its analysis under `fanoutProfile` instead.
 */
export async function measureFanout(context: PartContext, profiled = false): Promise<void> {
  const fanout = context.settings.fanout;
  console.log(
    profiled
      ? `\n## profile of fan-out: server main thread while fanning out to ${fanout} WebSocket + ${fanout} SSE clients`
      : `\n## fanout: one endpoint, ${fanout} WebSocket + ${fanout} SSE clients, ${FANOUT_WEBHOOKS} webhooks one at a time`,
  );
  const server = await startRelay({ inspect: profiled });
  const clients: FanoutClient[] = [];
  try {
    const user = await signUpUser(server.url);
    const inspector = profiled ? await connectInspector(server.inspectPort!) : null;
    await inspector?.send("Profiler.enable");
    await inspector?.send("Profiler.setSamplingInterval", { interval: 200 });
    let expected = fanout * 2;
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
    const ws = await openMany(fanout, {
      parallel: 50,
      deadline,
      open: () =>
        leanWs({ port: server.port, path: `/?token=${user.token}`, onMessage: arrive("ws") }),
    });
    const sse = await openMany(fanout, {
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
      context.record("fanoutProfile", analysis);
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
    context.record("fanout", {
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
    });
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
}
