/** The machine and the code a benchmark run measured, for the header and results.json. */
import { ROOT } from "./procs.ts";

/** What results.json records under `machine`. */
export interface Machine {
  date: string;
  nproc: number;
  cpu: string;
  memoryGiB: number;
  deno: string;
  v8: string;
  kernel: string;
  git: string;
}

/** Reads the machine's figures from /proc and the commit from git. */
export function machine(): Machine {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const meminfo = Deno.readTextFileSync("/proc/meminfo");
  return {
    date: new Date().toISOString().slice(0, 10),
    nproc: navigator.hardwareConcurrency,
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown",
    memoryGiB: Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) / 1024 / 1024,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    kernel: Deno.osRelease(),
    git: gitState(),
  };
}

/** The commit measured, and whether the server's code differed from it. */
function gitState(): string {
  const run = (...args: string[]) => {
    try {
      const out = new Deno.Command("git", { args, cwd: ROOT, stdout: "piped", stderr: "null" })
        .outputSync();
      return new TextDecoder().decode(out.stdout).trim();
    } catch {
      return "";
    }
  };
  const head = run("rev-parse", "--short", "HEAD") || "unknown";
  const dirty = run("status", "--porcelain", "--", "main.ts", "lib", "routes") !== "";
  return dirty ? `${head} + uncommitted changes in main.ts/lib/routes` : head;
}
