/**
 * Part "scale": `scale` idle connections (half SSE, half WebSocket) on one relay process, its RSS
 * against the 2 GiB target. The server's descriptor limit is raised as far as this machine allows
 * (bench/procs.ts: `ulimit -n 65536`, else the hard limit) and printed; when it is below `scale`,
 * the part opens as many as fit and prints the RSS that `scale` would take at the measured rate.
 * The client ends live in processes of bench/idle_clients.ts, each from its own source address
 * 127.0.0.x, so neither their descriptor limit nor ~28k ephemeral ports per address caps it.
 */
import type { PartContext } from "../part.ts";
import {
  type Child,
  openFilesOf,
  rssKiB,
  signUpUser,
  sleep,
  spawnDeno,
  startRelay,
} from "../procs.ts";
import { fmt, verdict } from "../report.ts";
import { openFilesLimit } from "../settings.ts";

/**
 * Descriptors left to the server (KV, listeners, pipes) and to its load guard, which this part
 * sets to keep 1 % of the limit free (MIN_FREE_FILES_PERCENT, default 10 %).
 */
const SERVER_SPARE = 400;
/**
 * Connections per client process and source address: under the ~28k ephemeral ports of one
 * address, and small enough that several processes open them in parallel.
 */
const PER_ADDRESS = 10_000;
const TARGET_GIB = 2;

/** Part "scale"; figures under `scale`. */
export async function run(context: PartContext): Promise<void> {
  const asked = context.settings.scale;
  console.log(
    `\n## scale: ${
      asked.toLocaleString("en-US")
    } idle connections (half SSE, half WebSocket) on one process`,
  );
  // The load guard would answer 503 at 90 % of the descriptors and at 2 GiB of RSS: this part
  // measures what the connections cost, so it lets them in.
  const server = await startRelay({ env: { MIN_FREE_FILES_PERCENT: "1", MAX_RSS_MB: "0" } });
  const children: Child[] = [];
  try {
    const pid = server.child.pid;
    const limits = openFilesOf(pid);
    const fits = Math.min(asked, Math.max(0, limits.soft - SERVER_SPARE));
    console.log(
      `  server descriptor limit: ${limits.soft} (hard ${limits.hard}; this machine let the bench raise it ` +
        `to ${limits.soft}` +
        (fits < asked ? `, so ${fits.toLocaleString("en-US")} connections fit)` : ")"),
    );
    const user = await signUpUser(server.url);
    // Each client process: as many as its own limit and one source address allow.
    const perProcess = Math.max(100, Math.min(PER_ADDRESS, openFilesLimit() - SERVER_SPARE));
    await sleep(1000);
    const before = rssKiB(pid);
    const started = performance.now();
    const readies: Promise<void>[] = [];
    let opened = 0;
    let failed = 0;
    let firstError = "";
    for (let i = 0; i * perProcess < fits; i++) {
      const count = Math.min(perProcess, fits - i * perProcess);
      let markReady: () => void = () => {};
      readies.push(new Promise<void>((resolve) => markReady = resolve));
      const { child } = spawnDeno({
        script: "bench/idle_clients.ts",
        args: [
          JSON.stringify({
            port: server.port,
            token: user.token,
            count,
            localAddress: `127.0.0.${2 + i}`,
          }),
        ],
        onLine(line) {
          if (!line.startsWith("READY ")) return;
          const [, ok, bad, ...error] = line.split(" ");
          opened += Number(ok);
          failed += Number(bad);
          if (!firstError && error.join(" ").trim()) firstError = error.join(" ").trim();
          markReady();
        },
      });
      children.push(child);
    }
    await Promise.race([Promise.all(readies), sleep(180_000)]);
    const openSeconds = (performance.now() - started) / 1000;
    await sleep(3000);
    const after = rssKiB(pid);
    const perConnection = (after - before) / Math.max(1, opened);
    const atAsked = (before + perConnection * asked) / 1024 / 1024;
    console.log(
      `  opened ${opened.toLocaleString("en-US")} in ${
        fmt(openSeconds, 1)
      } s from ${children.length} client processes ` +
        `(127.0.0.2–127.0.0.${1 + children.length})` +
        (failed ? `; ${failed} failed: ${firstError}` : ""),
    );
    console.log(
      `  server RSS ${fmt(before / 1024, 1)} → ${fmt(after / 1024, 1)} MiB: ${
        fmt(perConnection, 1)
      } KiB per connection; ` +
        (opened >= asked
          ? `${fmt(after / 1024 / 1024, 2)} GiB with ${
            asked.toLocaleString("en-US")
          } (target ≤ ${TARGET_GIB} GiB: ${verdict(after / 1024 / 1024 <= TARGET_GIB)})`
          : `${asked.toLocaleString("en-US")} would take ${
            fmt(atAsked, 2)
          } GiB at that rate (extrapolated; target ≤ ${TARGET_GIB} GiB: ${
            verdict(atAsked <= TARGET_GIB)
          })`),
    );
    context.record("scale", {
      asked,
      serverOpenFiles: limits,
      opened,
      failed,
      clientProcesses: children.length,
      beforeKiB: before,
      afterKiB: after,
      kibPerConnection: perConnection,
      gibAtAsked: opened >= asked ? after / 1024 / 1024 : atAsked,
      extrapolated: opened < asked,
    });
  } finally {
    for (const child of children) await child.stop(2000);
    await server.stop();
  }
}
