/**
 * Part "kv": bench/kv_micro.ts (an ingest-shaped KV commit alone on SQLite, and without each of
 * its parts, by batch size) and bench/kv_isolates.ts (several KV handles on one file in one
 * process: commits, watch and queue across handles), each in its own process.
 */
import type { KvIsolatesResult } from "../kv_isolates.ts";
import type { KvVariantResult } from "../kv_micro.ts";
import type { PartContext } from "../part.ts";
import { spawnDeno } from "../procs.ts";
import { fmt } from "../report.ts";

/** Both KV micro-benchmarks; figures under `kv` and `kvIsolates`. */
export async function run(context: PartContext): Promise<void> {
  console.log(
    "\n## kv: one ingest-shaped commit on SQLite, alone in its own process (bench/kv_micro.ts)",
  );
  const { child } = spawnDeno({ script: "bench/kv_micro.ts" });
  const hardLimit = setTimeout(() => child.stop(1000), 120_000);
  const { code, lines } = await child.exited;
  clearTimeout(hardLimit);
  const line = lines.find((l) => l.startsWith("RESULT "));
  if (code !== 0 || !line) throw new Error(`kv_micro failed (exit ${code}):\n${child.tail()}`);
  const rows = JSON.parse(line.slice("RESULT ".length)) as KvVariantResult[];
  for (const row of rows) {
    console.log(
      `  ${row.variant.padEnd(26)} ${String(row.batch).padStart(3)} events: commit p50 ${
        fmt(row.commit.p50)
      } ms, p90 ${fmt(row.commit.p90)} ms; ${fmt(row.perEventMs * 1000, 0)} µs per event`,
    );
  }
  context.record("kv", rows);

  console.log(
    "\n## kv: several KV handles on one SQLite file in one process (bench/kv_isolates.ts)",
  );
  const isolates = spawnDeno({ script: "bench/kv_isolates.ts" });
  const limit = setTimeout(() => isolates.child.stop(1000), 120_000);
  const done = await isolates.child.exited;
  clearTimeout(limit);
  const result = done.lines.find((l) => l.startsWith("RESULT "));
  if (done.code !== 0 || !result) {
    throw new Error(`kv_isolates failed (exit ${done.code}):\n${isolates.child.tail()}`);
  }
  const measured = JSON.parse(result.slice("RESULT ".length)) as KvIsolatesResult;
  for (const row of measured.commits) {
    console.log(
      `  ${row.workers} Worker(s), ${row.hot ? "one shared key" : "own keys"}: ${
        row.commitsPerSecond.toLocaleString("en-US")
      } commits/s (${row.conflicts} conflicts, ${row.locked} "database is locked")`,
    );
  }
  for (const row of [measured.watch, measured.queue]) {
    console.log(
      `  ${row.task} seen from another handle: p50 ${row.p50ms} ms, max ${row.maxms} ms, ` +
        `${row.missed} of ${row.rounds} missed`,
    );
  }
  context.record("kvIsolates", measured);
}
