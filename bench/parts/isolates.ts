/**
 * Part "isolates", every core: wrk unpinned against WORKERS=1 and WORKERS=2 at concurrency 50
 * and 200, with one user and with 20 users; POST→client latency under load and at 500/s on
 * WORKERS=2; `isolatesIdle` idle connections (half WebSocket, half SSE) on it.
 */
import { idleSse, openMany, openSocket } from "../clients.ts";
import type { PartContext } from "../part.ts";
import { rssKiB, signUpUser, sleep, startRelay } from "../procs.ts";
import { fmt, verdict } from "../report.ts";
import { CONCURRENCY, TARGETS } from "../settings.ts";
import { measureLoad } from "./load.ts";
import { measureWrk } from "./wrk.ts";

/**
 * The same load with one isolate and with WORKERS=2 (two serving Workers plus the main isolate
 * as KV writer), wrk unpinned so server and generator share both cores as a deployment on this
 * machine would; figures under `wrkWorkers*`, `loadWorkers2`, `steadyWorkers2`, `idleWorkers2`.
 */
export async function run(context: PartContext): Promise<void> {
  for (const concurrency of [CONCURRENCY, 200]) {
    for (const workers of [1, 2]) {
      const key = `wrkWorkers${workers}c${concurrency}`;
      await measureWrk(context, { workers, pinned: false, key, concurrency });
    }
  }
  for (const workers of [1, 2]) {
    const key = `wrkWorkers${workers}Users20`;
    await measureWrk(context, { workers, pinned: false, key, concurrency: 200, users: 20 });
  }
  await measureLoad(context, "load", { workers: 2, key: "loadWorkers2" });
  await measureLoad(context, "steady", { workers: 2, key: "steadyWorkers2" });
  await idleOnWorkers2(context);
}

/** Idle connections held by a WORKERS=2 server: half WebSocket, then half SSE. */
async function idleOnWorkers2(context: PartContext): Promise<void> {
  const isolatesIdle = context.settings.isolatesIdle;
  const half = isolatesIdle / 2;
  console.log(`\n## idleWorkers2: ${isolatesIdle} idle connections on WORKERS=2`);
  const server = await startRelay({ env: { WORKERS: "2" } });
  const clients: { close(): void }[] = [];
  try {
    const pid = server.child.pid;
    const user = await signUpUser(server.url);
    const sse = () =>
      idleSse({ port: server.port, path: `/api/events/stream?token=${user.token}` });
    const ws = async () => {
      const socket = await openSocket(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
      return { close: () => socket.close() };
    };
    for (const open of [sse, ws]) {
      const warm = await openMany(100, { parallel: 20, deadline: Date.now() + 20_000, open });
      for (const client of warm.opened) client.close();
    }
    await sleep(1500);
    const figures: Record<string, unknown> = {};
    let before = rssKiB(pid);
    const start = before;
    for (const [label, open] of [["ws", ws], ["sse", sse]] as const) {
      const opened = await openMany(half, { parallel: 100, deadline: Date.now() + 90_000, open });
      clients.push(...opened.opened);
      await sleep(2000);
      const after = rssKiB(pid);
      const per = (after - before) / Math.max(1, opened.opened.length);
      console.log(
        `  ${label}: ${opened.opened.length} opened${
          opened.failed ? ` (${opened.failed} failed: ${opened.firstError})` : ""
        }, RSS ${fmt(before / 1024, 1)} → ${fmt(after / 1024, 1)} MiB: ${
          fmt(per, 1)
        } KiB per connection`,
      );
      figures[label] = { opened: opened.opened.length, failed: opened.failed, kibEach: per };
      before = after;
    }
    const total = clients.length;
    const each = (before - start) / Math.max(1, total);
    const mixed = (TARGETS.idleSseKiB + TARGETS.idleWsKiB) / 2;
    console.log(
      `  all ${total}: ${fmt(each, 1)} KiB per connection (target ≤ ${mixed} KiB, half SSE: ${
        verdict(each <= mixed)
      })`,
    );
    context.record("idleWorkers2", { ...figures, total, kibEach: each });
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
}
