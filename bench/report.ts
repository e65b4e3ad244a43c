/** How the benchmark prints figures: number formats, verdicts and the blocks parts share. */
import type { CpuUse } from "./generator.ts";
import type { GenResult } from "./loadgen.ts";
import type { ProfileAnalysis } from "./profile.ts";
import type { Summary } from "./stats.ts";

/** A number with `digits` decimals and thousands separators; "n/a" when not finite. */
export const fmt = (n: number, digits = 2): string =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "n/a";

/** A latency summary in milliseconds. */
export const ms = (s: Summary): string =>
  `p50 ${fmt(s.p50)} ms, p90 ${fmt(s.p90)} ms, p99 ${fmt(s.p99)} ms, max ${
    fmt(s.max)
  } ms (n=${s.n})`;

/** Whether a figure meets its target, as printed. */
export const verdict = (ok: boolean): string => ok ? "meets target" : "MISSES target";

/** Prints CPU use of the processes involved and of the server's threads. */
export function printCpu(cpu: CpuUse, indent = "  "): void {
  console.log(
    `${indent}CPU (cores busy): server ${fmt(cpu.serverCores)}, generator ${
      fmt(cpu.generatorCores)
    }, ` +
      `driver/subscriber ${fmt(cpu.driverCores)}`,
  );
  const threads = Object.entries(cpu.serverThreads).sort((a, b) => b[1] - a[1]);
  console.log(`${indent}server threads: ${threads.map(([n, c]) => `${n} ${fmt(c)}`).join(", ")}`);
}

/** Prints what the load generator saw: answers, errors and the HTTP round trip. */
export function printGen(result: GenResult): void {
  const statuses = Object.entries(result.statuses).map(([s, n]) => `${s}×${n}`).join(" ");
  console.log(
    `  generator: ${result.okTotal} accepted in all (${statuses}), ${result.errors} errors` +
      (result.firstError ? ` (first: ${result.firstError})` : ""),
  );
  console.log(`  HTTP round trip: ${ms(result.http)}`);
}

/** Prints a CPU profile's idle share and its tables. */
export function printProfile(analysis: ProfileAnalysis): void {
  console.log(
    `  main thread idle: ${fmt(analysis.idlePercent, 1)} % of ${fmt(analysis.totalMs, 0)} ms`,
  );
  const table = (title: string, rows: ProfileAnalysis["self"]) => {
    console.log(`  ${title}:`);
    for (const row of rows) {
      console.log(
        `    ${fmt(row.percent, 1).padStart(5)} %  ${fmt(row.ms, 0).padStart(6)} ms  ${row.name}`,
      );
    }
  };
  table("by area (self time)", analysis.areas);
  table("top functions (self time)", analysis.self);
  table("project functions (inclusive time)", analysis.projectInclusive);
}
