/**
 * CPU per accepted webhook (issue 15): the relay with WORKERS=1 pinned to core 0, wrk pinned to
 * core 1 (c=50, 1 KiB JSON), one WebSocket subscriber that must receive every accepted webhook.
 * Prints server CPU time (/proc/<pid>/stat utime+stime, all threads) ÷ accepted webhooks.
 * `--v8flags=…` starts the server with those V8 flags (DENO_V8_FLAGS).
 * `--profile=FILE` also records a V8 CPU profile of the main thread and prints the top ten self
 * costs. Each run also prints a `RESULT {json}` line (CpuRunResult).
 * Usage: deno run -A bench/cpu_per_webhook.ts [--seconds=10] [--runs=3] [--profile=FILE]
 */
import { Subscriber } from "./clients.ts";
import { bodyTemplate } from "./loadgen.ts";
import { analyze, connectInspector, type CpuProfile } from "./profile.ts";
import { cpuSplit, signUpUser, sleep, startRelay } from "./procs.ts";
import { BODY_BYTES, CONCURRENCY } from "./settings.ts";

const args = Object.fromEntries(
  Deno.args.map((arg) => /^--(\w+)=(.*)$/.exec(arg)).filter((m) => m !== null).map((
    m,
  ) => [m![1], m![2]]),
);
const seconds = Number(args.seconds ?? 10);

/** One run's figures, printed as a `RESULT {json}` line. */
export interface CpuRunResult {
  /** Webhooks accepted per second. */
  perSecond: number;
  /** Server CPU (all threads) per accepted webhook, µs. */
  usPerWebhook: number;
  /** Whether the subscriber received every accepted webhook. */
  allDelivered: boolean;
  /** µs per webhook by thread name (threads of one name summed). */
  threads: Record<string, number>;
}
const runs = Number(args.runs ?? 3);
const profileFile = args.profile;

/** CPU seconds per thread name (threads of one name summed), from /proc/<pid>/task. */
function threadCpu(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
      const name = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")")).replace(/[0-9]+$/, "#");
      const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
      const seconds = (Number(fields[11]) + Number(fields[12])) / 100;
      byName.set(name, (byName.get(name) ?? 0) + seconds);
    } catch {
      // the thread ended meanwhile
    }
  }
  return byName;
}

const pin = (pid: number, core: number) =>
  new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", String(core), String(pid)],
    stdout: "null",
  })
    .outputSync();

// This process holds the subscriber: on wrk's core, away from the server's.
pin(Deno.pid, 1);

for (let run = 1; run <= runs; run++) {
  const v8Flags = args.v8flags ?? "";
  const server = await startRelay({
    inspect: profileFile !== undefined,
    env: v8Flags ? { DENO_V8_FLAGS: v8Flags } : {},
  });
  const script = await Deno.makeTempFile({ prefix: "cpu_wrk_", suffix: ".lua" });
  try {
    pin(server.child.pid, 0);
    const user = await signUpUser(server.url);
    const subscriber = await Subscriber.open(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
    const body = bodyTemplate(BODY_BYTES)(0, 0, 0);
    await Deno.writeTextFile(
      script,
      `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\n` +
        `wrk.headers["Content-Type"] = "application/json"\n`,
    );
    const wrkRun = (d: number) =>
      new Deno.Command("taskset", {
        args: [
          "-c",
          "1",
          "wrk",
          "-t1",
          `-c${CONCURRENCY}`,
          `-d${d}s`,
          "-s",
          script,
          user.webhookUrl,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
    await wrkRun(2); // warm-up: JIT, KV file growth
    await subscriber.waitFor(1, 5000);
    await sleep(300);
    const deliveredBefore = subscriber.delivered;
    const inspector = profileFile ? await connectInspector(server.inspectPort!) : null;
    if (inspector) {
      await inspector.send("Profiler.enable");
      await inspector.send("Profiler.setSamplingInterval", { interval: 200 });
      await inspector.send("Profiler.start");
    }
    const before = cpuSplit(server.child.pid);
    const threadsBefore = threadCpu(server.child.pid);
    const out = await wrkRun(seconds);
    const text = new TextDecoder().decode(out.stdout);
    const total = Number(/(\d+) requests in/.exec(text)?.[1] ?? 0);
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
    const accepted = total - non2xx;
    const ok = await subscriber.waitFor(deliveredBefore + accepted, 15_000);
    // After the deliveries: the fan-out of the last webhooks is part of their cost.
    const after = cpuSplit(server.child.pid);
    const threadsAfter = threadCpu(server.child.pid);
    if (inspector) {
      const profile = (await inspector.send("Profiler.stop")).profile as CpuProfile;
      inspector.close();
      await Deno.writeTextFile(profileFile!, JSON.stringify(profile));
      const analysis = analyze(profile, 10);
      console.log(`  profile: main thread idle ${analysis.idlePercent.toFixed(1)} %`);
      for (const row of analysis.self) {
        console.log(
          `    ${row.percent.toFixed(1).padStart(5)} %  ${
            row.ms.toFixed(0).padStart(6)
          } ms  ${row.name}`,
        );
      }
    }
    const user_ = after.user - before.user;
    const system = after.system - before.system;
    const us = ((user_ + system) * 1e6) / accepted;
    console.log(
      `run ${run}: ${accepted} accepted (${
        (accepted / seconds).toFixed(0)
      }/s), non-2xx ${non2xx}, ` +
        `delivered ${subscriber.delivered - deliveredBefore}${ok ? " (all)" : " (NOT all)"}; ` +
        `server CPU ${(user_ + system).toFixed(2)} s (user ${user_.toFixed(2)}, sys ${
          system.toFixed(2)
        }) ` +
        `= ${us.toFixed(1)} µs/webhook (user ${(user_ * 1e6 / accepted).toFixed(1)}, sys ${
          (system * 1e6 / accepted).toFixed(1)
        })`,
    );
    const perThread = [...threadsAfter].map(([name, cpu]) =>
      [name, cpu - (threadsBefore.get(name) ?? 0)] as const
    )
      .filter(([, cpu]) => cpu > 0).sort((a, b) => b[1] - a[1]);
    console.log(
      "  by thread, µs/webhook: " +
        perThread.map(([name, cpu]) => `${name} ${(cpu * 1e6 / accepted).toFixed(1)}`).join(", "),
    );
    // One line for bench/before_after.ts, which runs this script in two checkouts.
    const result: CpuRunResult = {
      perSecond: accepted / seconds,
      usPerWebhook: us,
      allDelivered: ok,
      threads: Object.fromEntries(perThread.map(([name, cpu]) => [name, (cpu * 1e6) / accepted])),
    };
    console.log(`RESULT ${JSON.stringify(result)}`);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(metrics)?.[1]);
    const batches = metric("websocks_group_commit_batch_size_count");
    console.log(
      `  group commits: ${batches}, mean batch ${
        (metric("websocks_group_commit_batch_size_sum") / batches).toFixed(1)
      } (whole life of the server, warm-up included)`,
    );
    subscriber.close();
  } finally {
    await server.stop();
    await Deno.remove(script).catch(() => {});
    await Deno.remove(server.kvDir, { recursive: true }).catch(() => {});
  }
}
