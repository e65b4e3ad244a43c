/**
 * Part "wrk": throughput with wrk, the usual C load generator, pinned to one core as in the
 * reference measurement of smee.io (server and generator on one core each). One WebSocket
 * subscriber must receive every accepted webhook. `measureWrk` also serves part "isolates".
 */
import { Subscriber } from "../clients.ts";
import { bodyTemplate } from "../loadgen.ts";
import type { PartContext } from "../part.ts";
import { cpuSeconds, signUpUser, sleep, startRelay } from "../procs.ts";
import { fmt, verdict } from "../report.ts";
import { BODY_BYTES, CONCURRENCY, TARGETS } from "../settings.ts";

/** Part "wrk": WORKERS=1, wrk pinned to core 1; figures under `wrk`. */
export function run(context: PartContext): Promise<void> {
  return measureWrk(context, { workers: 1, pinned: true, key: "wrk", concurrency: CONCURRENCY });
}

/** wrk, installing Debian's package when it is missing (the bench runs as root here). */
export function findWrk(): string | null {
  const has = () => new Deno.Command("bash", { args: ["-c", "command -v wrk"] }).outputSync();
  let found = has();
  if (!found.success) {
    console.log("  wrk is missing: apt-get install -y wrk");
    new Deno.Command("bash", {
      args: [
        "-c",
        "apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1)",
      ],
    }).outputSync();
    found = has();
  }
  return found.success ? new TextDecoder().decode(found.stdout).trim() : null;
}

/** The relay under wrk on `workers` serving isolates, `users` round robin; figures under `key`. */
export async function measureWrk(
  context: PartContext,
  options: {
    workers: number;
    pinned: boolean;
    key: string;
    concurrency: number;
    users?: number;
  },
): Promise<void> {
  const seconds = context.settings.seconds;
  const userCount = options.users ?? 1;
  console.log(
    `\n## ${options.key}: WORKERS=${options.workers}, concurrency ${options.concurrency}, ${userCount} user${
      userCount > 1 ? "s (round robin)" : ""
    }, ${BODY_BYTES} B JSON, ${seconds} s, ` +
      (options.pinned ? "wrk pinned to core 1" : "wrk unpinned (server and wrk share both cores)"),
  );
  const wrk = findWrk();
  if (!wrk) {
    console.log("  skipped: wrk could not be installed");
    return;
  }
  const server = await startRelay({ env: { WORKERS: String(options.workers) } });
  const script = await Deno.makeTempFile({ suffix: ".lua" });
  try {
    const users = [];
    for (let i = 0; i < userCount; i++) users.push(await signUpUser(server.url));
    const subscribers = await Promise.all(
      users.map((user) => Subscriber.open(`ws://127.0.0.1:${server.port}/?token=${user.token}`)),
    );
    const body = bodyTemplate(BODY_BYTES)(0, 0, 0);
    // Several users: each request goes to the next user's URL, so commits carry many users.
    const slugs = users.map((user) => JSON.stringify(`/api/in/${user.slug}`)).join(", ");
    await Deno.writeTextFile(
      script,
      `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\n` +
        `wrk.headers["Content-Type"] = "application/json"\n` +
        (userCount > 1
          ? `local paths = {${slugs}}\nlocal n = 0\n` +
            `request = function()\n  n = n + 1\n  return wrk.format(nil, paths[(n % #paths) + 1])\nend\n`
          : ""),
    );
    const user = users[0];
    const before = cpuSeconds(server.child.pid);
    const out = await new Deno.Command(options.pinned ? "taskset" : wrk, {
      args: [
        ...(options.pinned ? ["-c", "1", wrk] : []),
        "-t1",
        `-c${options.concurrency}`,
        `-d${seconds}s`,
        "--latency",
        "-s",
        script,
        user.webhookUrl,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const serverCores = (cpuSeconds(server.child.pid) - before) / seconds;
    const text = new TextDecoder().decode(out.stdout);
    const total = Number(/(\d+) requests in/.exec(text)?.[1] ?? 0);
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0);
    const latency = /Latency Distribution[\s\S]*?50%\s+(\S+)[\s\S]*?99%\s+(\S+)/.exec(text);
    const accepted = total - non2xx;
    const deadline = Date.now() + 15_000;
    const delivered = () => subscribers.reduce((sum, s) => sum + s.delivered, 0);
    while (delivered() < accepted && Date.now() < deadline) await sleep(20);
    const all = delivered() >= accepted;
    for (const subscriber of subscribers) subscriber.close();
    console.log(
      `  accepted: ${fmt(rps * (accepted / Math.max(1, total)), 0)} webhooks/s (target ≥ ${
        TARGETS.throughput.toLocaleString("en-US")
      }: ${verdict(rps * (accepted / Math.max(1, total)) >= TARGETS.throughput)})`,
    );
    console.log(
      `  delivered to the ${userCount} WebSocket subscriber(s): ${delivered()} of ${accepted} accepted` +
        (all ? " (all)" : " (NOT all, after waiting 15 s)") + `; non-2xx answers: ${non2xx}`,
    );
    console.log(`  HTTP round trip (wrk): p50 ${latency?.[1]}, p99 ${latency?.[2]}`);
    const cpuUsPerWebhook = (serverCores * seconds * 1e6) / Math.max(1, accepted);
    console.log(
      `  CPU (cores busy): server ${fmt(serverCores)}; ${
        fmt(cpuUsPerWebhook, 1)
      } µs of server CPU per accepted webhook`,
    );
    context.record(options.key, {
      workers: options.workers,
      pinned: options.pinned,
      concurrency: options.concurrency,
      users: userCount,
      rps: rps * (accepted / Math.max(1, total)),
      accepted,
      delivered: delivered(),
      allDelivered: all,
      non2xx,
      httpP50: latency?.[1],
      httpP99: latency?.[2],
      serverCores,
      cpuUsPerWebhook,
    });
  } finally {
    await Deno.remove(script).catch(() => {});
    await server.stop();
  }
}
