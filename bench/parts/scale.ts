/**
 * Part "scale": `scale` idle connections (half SSE, half WebSocket) on one relay process, its RSS
 * against the 2 GiB target. The server's descriptor limit is raised as far as this machine allows
 * (bench/procs.ts: `ulimit -n 65536`, else the hard limit) and printed; when it is below `scale`,
 * the part opens as many as fit and prints the RSS that `scale` would take on the line fitted
 * (least squares) through the RSS read after each of its four batches of connections, and what
 * total ÷ count would say, which also spreads the one-time cost of the first connections.
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
/** Batches the connections are opened in, so the RSS is read at that many counts. */
const STEPS = 4;
/** How long a batch is left before the RSS is read. */
const SETTLE_MS = 3000;

/** The least-squares line through `points` (x, y), at least two of them. */
function fitLine(points: [number, number][]): { slope: number; intercept: number } {
  const n = points.length;
  if (n === 0) return { slope: NaN, intercept: NaN };
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / n;
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (const [x, y] of points) {
    sxx += (x - meanX) ** 2;
    sxy += (x - meanX) * (y - meanY);
  }
  if (sxx === 0) return { slope: NaN, intercept: NaN };
  const slope = sxy / sxx;
  return { slope, intercept: meanY - slope * meanX };
}

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
    // Each client process: as many as its own limit and one source address allow, and at most
    // a quarter of what fits, so the RSS is sampled at several counts.
    const perProcess = Math.max(
      100,
      Math.min(PER_ADDRESS, openFilesLimit() - SERVER_SPARE, Math.ceil(fits / STEPS)),
    );
    await sleep(1000);
    const before = rssKiB(pid);
    const started = performance.now();
    let opened = 0;
    let failed = 0;
    let firstError = "";
    /** (connections open, server RSS KiB) after each batch has settled. */
    const points: [number, number][] = [];
    // One batch at a time, each from its own process and source address, settling before the
    // RSS is read: the slope between batches leaves out what the first connections cost once
    // (compiled code, heap and buffer pools growing), which a line from `before` would spread
    // over every connection.
    for (let i = 0; i * perProcess < fits; i++) {
      const count = Math.min(perProcess, fits - i * perProcess);
      let markReady: () => void = () => {};
      const ready = new Promise<void>((resolve) => markReady = resolve);
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
      // At most 3 minutes a batch, without a timer left behind to hold the run open.
      const timeout = setTimeout(markReady, 180_000);
      await ready;
      clearTimeout(timeout);
      await sleep(SETTLE_MS);
      points.push([opened, rssKiB(pid)]);
    }
    const openSeconds = (performance.now() - started) / 1000;
    const after = points.at(-1)?.[1] ?? rssKiB(pid);
    // Total ÷ count, the first figure this part printed: it counts the one-time costs too.
    const perConnection = (after - before) / Math.max(1, opened);
    // With a single batch, the line runs from `before` (total ÷ count).
    const fit = fitLine(points.length >= 2 ? points : [[0, before], ...points]);
    const atAsked = (fit.intercept + fit.slope * asked) / 1024 / 1024;
    console.log(
      `  opened ${opened.toLocaleString("en-US")} in ${
        fmt(openSeconds, 1)
      } s from ${children.length} client processes, one batch at a time ` +
        `(127.0.0.2–127.0.0.${1 + children.length})` +
        (failed ? `; ${failed} failed: ${firstError}` : ""),
    );
    console.log(
      `  server RSS ${fmt(before / 1024, 1)} MiB before, then ${
        points.map(([n, kib]) => `${fmt(kib / 1024, 1)} at ${n.toLocaleString("en-US")}`).join(
          ", ",
        )
      } MiB: ${fmt(perConnection, 1)} KiB per connection from none (total ÷ count), ${
        fmt(fit.slope, 1)
      } KiB per connection between batches (least squares over ${points.length} counts)`,
    );
    console.log(
      opened >= asked
        ? `  ${fmt(after / 1024 / 1024, 2)} GiB with ${
          asked.toLocaleString("en-US")
        } (target ≤ ${TARGET_GIB} GiB: ${verdict(after / 1024 / 1024 <= TARGET_GIB)})`
        : `  ${asked.toLocaleString("en-US")} would take ${fmt(atAsked, 2)} GiB on that line (${
          fmt(fit.intercept / 1024, 1)
        } MiB + ${fmt(fit.slope, 1)} KiB × n; extrapolated; target ≤ ${TARGET_GIB} GiB: ${
          verdict(atAsked <= TARGET_GIB)
        }), ` +
          `${fmt((before + perConnection * asked) / 1024 / 1024, 2)} GiB at total ÷ count`,
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
      points,
      kibPerConnectionFitted: fit.slope,
      interceptKiB: fit.intercept,
      gibAtAsked: opened >= asked ? after / 1024 / 1024 : atAsked,
      extrapolated: opened < asked,
    });
  } finally {
    for (const child of children) await child.stop(2000);
    await server.stop();
  }
}
