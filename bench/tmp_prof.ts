import { analyze, connectInspector, type CpuProfile } from "./profile.ts";
import { signUpUser, startRelay } from "./procs.ts";
import { Subscriber } from "./clients.ts";
const server = await startRelay({ inspect: true, env: { WORKERS: Deno.env.get("W") ?? "2" } });
const user = await signUpUser(server.url);
const subscriber = await Subscriber.open(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
const inspector = await connectInspector(server.inspectPort!);
await inspector.send("Profiler.enable");
await inspector.send("Profiler.setSamplingInterval", { interval: 200 });
await inspector.send("Profiler.start");
const out = await new Deno.Command("wrk", {
  args: ["-t1", "-c50", "-d6s", "-s", "/tmp/m/post.lua", user.webhookUrl],
  stdout: "piped",
}).output();
const profile = (await inspector.send("Profiler.stop")).profile as CpuProfile;
console.log(new TextDecoder().decode(out.stdout).match(/Requests\/sec.*/)?.[0]);
const a = analyze(profile, 25);
console.log("idle", a.idlePercent);
for (const r of a.areas) console.log("area", r.percent.toFixed(1), r.name);
for (const r of a.self) console.log("self", r.percent.toFixed(1), r.name);
for (const r of a.projectInclusive) console.log("incl", r.percent.toFixed(1), r.name);
inspector.close();
subscriber.close();
await server.stop();
