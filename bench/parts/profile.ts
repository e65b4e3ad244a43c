/** Part "profile": V8 CPU profiles of the server's main thread under "load" and during "fanout". */
import { Subscriber } from "../clients.ts";
import { runGenerator } from "../generator.ts";
import type { PartContext } from "../part.ts";
import { analyze, connectInspector, type CpuProfile, type ProfileAnalysis } from "../profile.ts";
import { signUpUser, startRelay } from "../procs.ts";
import { fmt, printProfile } from "../report.ts";
import { BODY_BYTES, CONCURRENCY, OUT, WARMUP_MS } from "../settings.ts";
import { measureFanout } from "./fanout.ts";

/** Both profiles; figures under `profile` and `fanoutProfile`. */
export async function run(context: PartContext): Promise<void> {
  await profileLoad(context);
  await measureFanout(context, true);
}

/** The server under the load of part "load", saved to bench/out/server.cpuprofile. */
async function profileLoad(context: PartContext): Promise<void> {
  const seconds = Math.min(context.settings.seconds, 8);
  console.log(`\n## profile: server main thread under the load of part "load", ${seconds} s`);
  const server = await startRelay({ inspect: true });
  try {
    const user = await signUpUser(server.url);
    const subscriber = await Subscriber.open(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
    const inspector = await connectInspector(server.inspectPort!);
    await inspector.send("Profiler.enable");
    await inspector.send("Profiler.setSamplingInterval", { interval: 200 });
    let profile: CpuProfile | null = null;
    const { result } = await runGenerator(
      {
        url: user.webhookUrl,
        mode: "closed",
        concurrency: CONCURRENCY,
        warmupMs: WARMUP_MS,
        durationMs: seconds * 1000,
        bodyBytes: BODY_BYTES,
      },
      server.child.pid,
      {
        onStart: async () => {
          await inspector.send("Profiler.start");
        },
        onEnd: async () => {
          profile = (await inspector.send("Profiler.stop")).profile as CpuProfile;
        },
      },
    );
    inspector.close();
    subscriber.close();
    if (!profile) throw new Error("no profile came back");
    await Deno.mkdir(OUT, { recursive: true });
    await Deno.writeTextFile(`${OUT}/server.cpuprofile`, JSON.stringify(profile));
    const analysis: ProfileAnalysis = analyze(profile);
    console.log(
      `  throughput while profiling: ${
        fmt(result.rps, 0)
      } webhooks/s; profile saved to bench/out/server.cpuprofile`,
    );
    printProfile(analysis);
    context.record("profile", { rps: result.rps, ...analysis });
  } finally {
    await server.stop();
  }
}
