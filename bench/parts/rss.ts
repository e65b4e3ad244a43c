/**
 * Part "rss": server RSS per idle SSE and per idle WebSocket connection, who holds their JS
 * heap, the same RSS for a trivial Deno.serve (Deno's own floor) and for smee.io's idle SSE listener.
 */
import { type FanoutClient, idleSse, openMany, openSocket } from "../clients.ts";
import type { PartContext } from "../part.ts";
import { analyzeHeap, connectInspector, type HeapNode } from "../profile.ts";
import { smeeDir, startSmee } from "../peers.ts";
import { freePort, rssKiB, signUpUser, sleep, spawnDeno, startRelay } from "../procs.ts";
import { fmt, verdict } from "../report.ts";
import { HEAP_SAMPLED, TARGETS } from "../settings.ts";

/** `idle` idle connections of each kind, separate server runs; figures under `rss`. */
export async function run(context: PartContext): Promise<void> {
  const idle = context.settings.idle;
  console.log(`\n## rss: ${idle} idle connections of each kind, separate server runs`);
  const out: Record<string, unknown> = {};
  for (const kind of ["sse", "ws"] as const) {
    const label = kind === "sse" ? "SSE" : "WebSocket";
    const target = kind === "sse" ? TARGETS.idleSseKiB : TARGETS.idleWsKiB;
    // The inspector only serves heap figures (GC on demand, heap size, allocation sampling).
    const server = await startRelay({ inspect: true });
    const clients: FanoutClient[] = [];
    try {
      const pid = server.child.pid;
      const user = await signUpUser(server.url);
      const inspector = await connectInspector(server.inspectPort!);
      await inspector.send("HeapProfiler.enable");
      const heapUsed = async () => {
        await inspector.send("HeapProfiler.collectGarbage");
        return (await inspector.send("Runtime.getHeapUsage")).usedSize as number;
      };
      const open = kind === "sse"
        ? () => idleSse({ port: server.port, path: `/api/events/stream?token=${user.token}` })
        : async () => {
          const socket = await openSocket(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
          return { close: () => socket.close() };
        };
      // Warm the code paths once so the baseline includes compiled code, not just connections.
      const warm = await openMany(100, { parallel: 20, deadline: Date.now() + 20_000, open });
      for (const client of warm.opened) client.close();
      await sleep(1000);
      const heapBefore = await heapUsed();
      await sleep(500);
      const before = rssKiB(pid);
      const started = Date.now();
      const opened = await openMany(idle, { parallel: 100, deadline: Date.now() + 60_000, open });
      clients.push(...opened.opened);
      const openSeconds = (Date.now() - started) / 1000;
      await sleep(2000);
      const after = rssKiB(pid);
      const heapAfter = await heapUsed();
      const afterGc = rssKiB(pid);
      const n = opened.opened.length;
      const perConnection = (after - before) / n;
      const heapPerConnection = (heapAfter - heapBefore) / 1024 / n;
      console.log(
        `  ${label}: RSS ${fmt(before / 1024, 1)} → ${fmt(after / 1024, 1)} MiB with ${n} idle ` +
          `connections (opened in ${fmt(openSeconds, 1)} s${
            opened.failed ? `, ${opened.failed} failed: ${opened.firstError}` : ""
          }): ${fmt(perConnection, 1)} KiB per connection, ${
            fmt((perConnection * 1000) / 1024, 1)
          } MiB per 1,000 (target ≤ ${target} KiB: ${verdict(perConnection <= target)})`,
      );
      console.log(
        `    of which live JS heap (after a forced GC): ${fmt(heapPerConnection, 1)} KiB; ` +
          `the rest is native (Rust/hyper/tokio buffers, V8 heap slack). RSS after that GC: ${
            fmt((afterGc - before) / n, 1)
          } KiB per connection`,
      );
      // Who holds that JS heap: sample allocations of 1,000 more connections.
      const sampled = HEAP_SAMPLED;
      await inspector.send("HeapProfiler.startSampling", { samplingInterval: 1024 });
      const more = await openMany(sampled, { parallel: 100, deadline: Date.now() + 30_000, open });
      clients.push(...more.opened);
      await sleep(1000);
      await inspector.send("HeapProfiler.collectGarbage");
      const sampling = (await inspector.send("HeapProfiler.getSamplingProfile")).profile as {
        head: HeapNode;
      };
      await inspector.send("HeapProfiler.stopSampling");
      inspector.close();
      const heap = analyzeHeap(sampling.head, 8);
      const per = (bytes: number) => `${fmt(bytes / more.opened.length / 1024, 2)} KiB`;
      console.log(
        `    live JS heap by allocating owner (sampled over ${more.opened.length} more; ${
          per(heap.totalBytes)
        } per connection sampled):`,
      );
      for (const row of heap.byOwner) {
        console.log(`      ${per(row.ms).padStart(10)}  ${row.name}`);
      }
      console.log("    the same by allocating function:");
      for (const row of heap.byFunction) {
        console.log(`      ${per(row.ms).padStart(10)}  ${row.name}`);
      }
      out[kind] = {
        beforeKiB: before,
        afterKiB: after,
        afterGcKiB: afterGc,
        connections: n,
        failed: opened.failed,
        kibPerConnection: perConnection,
        heapKibPerConnection: heapPerConnection,
        heapByOwner: heap.byOwner.map((row) => ({
          name: row.name,
          bytesPerConnection: row.ms / more.opened.length,
        })),
        heapByFunction: heap.byFunction.map((row) => ({
          name: row.name,
          bytesPerConnection: row.ms / more.opened.length,
        })),
      };
    } finally {
      for (const client of clients) client.close();
      await server.stop();
    }
  }
  // The same with a trivial Deno.serve (bench/hello.ts): what Deno itself costs per connection.
  for (const kind of ["sse", "ws"] as const) {
    const port = freePort();
    const { child, ready } = spawnDeno({
      script: "bench/hello.ts",
      env: { PORT: String(port) },
      ready: "hello listening",
    });
    const clients: FanoutClient[] = [];
    try {
      await ready;
      const open = kind === "sse" ? () => idleSse({ port, path: "/sse" }) : async () => {
        const socket = await openSocket(`ws://127.0.0.1:${port}/ws`);
        return { close: () => socket.close() };
      };
      const warm = await openMany(100, { parallel: 20, deadline: Date.now() + 20_000, open });
      for (const client of warm.opened) client.close();
      await sleep(1500);
      const before = rssKiB(child.pid);
      const opened = await openMany(idle, { parallel: 100, deadline: Date.now() + 60_000, open });
      clients.push(...opened.opened);
      await sleep(2000);
      const perConnection = (rssKiB(child.pid) - before) / opened.opened.length;
      console.log(
        `  floor, trivial Deno.serve (bench/hello.ts) with ${opened.opened.length} idle ${
          kind === "sse" ? "SSE streams" : "WebSockets"
        }: ${fmt(perConnection, 1)} KiB per connection`,
      );
      out[`${kind}Floor`] = { connections: opened.opened.length, kibPerConnection: perConnection };
    } finally {
      for (const client of clients) client.close();
      await child.stop();
    }
  }
  // smee.io's idle SSE listener, the same way: what the comparison of issue 15 is about.
  const dir = await smeeDir();
  if (dir) {
    const peer = await startSmee(dir);
    const clients: FanoutClient[] = [];
    try {
      const path = `/bench-${crypto.randomUUID().slice(0, 8)}`;
      const open = () => idleSse({ port: peer.port, path });
      const warm = await openMany(100, { parallel: 20, deadline: Date.now() + 20_000, open });
      for (const client of warm.opened) client.close();
      await sleep(1500);
      const before = rssKiB(peer.pid);
      const opened = await openMany(idle, { parallel: 100, deadline: Date.now() + 60_000, open });
      clients.push(...opened.opened);
      await sleep(2000);
      const perConnection = (rssKiB(peer.pid) - before) / opened.opened.length;
      console.log(
        `  smee.io (Node ${nodeVersion()}) with ${opened.opened.length} idle SSE listeners${
          opened.failed ? ` (${opened.failed} failed: ${opened.firstError})` : ""
        }: ${fmt(perConnection, 1)} KiB per connection`,
      );
      out.sseSmee = { connections: opened.opened.length, kibPerConnection: perConnection };
    } finally {
      for (const client of clients) client.close();
      await peer.stop();
    }
  }
  context.record("rss", out);
}

/** The version of the `node` that runs smee.io. */
function nodeVersion(): string {
  try {
    const out = new Deno.Command("node", { args: ["--version"], stderr: "null" }).outputSync();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "unknown";
  }
}
