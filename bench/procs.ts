/**
 * Child processes of the benchmark (the server under test, the load generator, the trivial
 * server) and what /proc says about them: CPU time, per-thread CPU and resident memory.
 */

/** The repository root, where main.ts and deno.json are. */
export const ROOT = new URL("..", import.meta.url).pathname;
/** The deno binary running this benchmark (node_modules/.bin/deno resolves to it). */
export const DENO = Deno.execPath();
const CLOCK_TICKS = 100; // USER_HZ on Linux

/** A loopback port that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Calls `onLine` for every line of a byte stream until it ends. */
async function eachLine(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for await (const bytes of stream) {
      buffer += decoder.decode(bytes, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) !== -1) {
        onLine(buffer.slice(0, newline));
        buffer = buffer.slice(newline + 1);
      }
    }
  } catch {
    // the process was killed
  }
  if (buffer) onLine(buffer);
}

/** A running child process. */
export interface Child {
  pid: number;
  /** The last lines it printed (stdout and stderr), for error messages. */
  tail(): string;
  /** Resolves with every stdout line once the process has exited. */
  exited: Promise<{ code: number; lines: string[] }>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts `deno run -A <script> ...args` from the repository root through bash, which first
 * raises the open-files limit (5,000 idle connections need 5,000 descriptors) and then execs
 * deno, so `pid` is deno's own.
 */
export function spawnDeno(
  options: {
    script: string;
    args?: string[];
    env?: Record<string, string>;
    denoFlags?: string[];
    ready?: string;
    readyTimeoutMs?: number;
    onLine?: (line: string) => void;
    /** CPUs to pin the process to (`taskset -c`), e.g. "0"; unpinned when absent. */
    cpus?: string;
  },
): { child: Child; ready: Promise<void> } {
  const command = new Deno.Command("bash", {
    args: [
      "-c",
      'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"',
      "bench-child",
      ...(options.cpus === undefined ? [] : ["taskset", "-c", options.cpus]),
      DENO,
      "run",
      "-A",
      ...(options.denoFlags ?? []),
      options.script,
      ...(options.args ?? []),
    ],
    cwd: ROOT,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const process = command.spawn();
  const recent: string[] = [];
  const lines: string[] = [];
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => markReady = resolve);
  const remember = (line: string) => {
    recent.push(line);
    if (recent.length > 40) recent.shift();
    if (options.ready && line.includes(options.ready)) markReady();
    options.onLine?.(line);
  };
  const out = eachLine(process.stdout, (line) => {
    lines.push(line);
    remember(line);
  });
  const err = eachLine(process.stderr, remember);
  const exited = (async () => {
    const status = await process.status;
    await Promise.all([out, err]);
    return { code: status.code, lines };
  })();
  const child: Child = {
    pid: process.pid,
    tail: () => recent.join("\n"),
    exited,
    async stop(graceMs = 5000) {
      try {
        process.kill("SIGTERM");
      } catch {
        return; // already gone
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), graceMs);
      });
      const outcome = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (outcome === "timeout") {
        try {
          process.kill("SIGKILL");
        } catch {
          // exited meanwhile
        }
        await exited;
      }
    },
  };
  const readyOrFail = options.ready
    ? (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const failed = Promise.race([
        exited.then(() => "exited" as const),
        new Promise<"timeout">((resolve) => {
          timer = setTimeout(() => resolve("timeout"), options.readyTimeoutMs ?? 30_000);
        }),
      ]);
      const outcome = await Promise.race([ready.then(() => "ready" as const), failed]);
      clearTimeout(timer);
      if (outcome !== "ready") {
        await child.stop(1000);
        throw new Error(`${options.script} did not start (${outcome}):\n${child.tail()}`);
      }
    })()
    : Promise.resolve();
  return { child, ready: readyOrFail };
}

/** The relay under test, in its own process with its own SQLite KV file. */
export interface ServerUnderTest {
  child: Child;
  url: string;
  port: number;
  kvDir: string;
  inspectPort: number | null;
  stop(): Promise<void>;
}

/** The environment the bench runs main.ts with: its port, its KV file and the limits it lifts. */
export function relayEnv(port: number, kvPath: string): Record<string, string> {
  const url = `http://127.0.0.1:${port}`;
  return {
    PORT: String(port),
    HOST: "127.0.0.1",
    PUBLIC_URL: url,
    KV_PATH: kvPath,
    FREE_MONTHLY_LIMIT: "1000000000",
    INGEST_RATE_PER_SECOND: "0",
    // The benchmark holds thousands of connections on one token.
    MAX_CONNECTIONS_PER_TOKEN: "0",
    MAX_CONNECTIONS_PER_USER: "0",
    // Every sender of the benchmark is one loopback address.
    MAX_BUFFERED_BODY_MB_PER_ADDRESS: "256",
    LOG_REQUESTS: "0",
    WORKERS: "1",
  };
}

/**
 * The V8 flags `deno task start` gives the server (deno.json): a young generation of at most 8 MiB
 * per semi-space, whose default let the heap's slack grow to 3–5 KiB per idle connection.
 * BENCH_V8_FLAGS replaces them, for an A/B run of a V8 setting.
 */
export const SERVER_V8_FLAGS = Deno.env.get("BENCH_V8_FLAGS") ??
  "--v8-flags=--max-semi-space-size=8";

/** Starts main.ts (or `script`, a wrapper of it) on a free port with a fresh KV file and the benchmark's settings. */
export async function startRelay(
  options: {
    env?: Record<string, string>;
    inspect?: boolean;
    script?: string;
    /** CPUs to pin the server to (`taskset -c`); unpinned when absent. */
    cpus?: string;
  } = {},
): Promise<ServerUnderTest> {
  const port = freePort();
  const inspectPort = options.inspect ? freePort() : null;
  const kvDir = await Deno.makeTempDir({ prefix: "websocks-bench-" });
  const url = `http://127.0.0.1:${port}`;
  const { child, ready } = spawnDeno({
    script: options.script ?? "main.ts",
    denoFlags: [SERVER_V8_FLAGS, ...(inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : [])],
    env: { ...relayEnv(port, `${kvDir}/bench.kv`), ...options.env },
    ready: "WebSocks listening on",
    cpus: options.cpus,
  });
  try {
    await ready;
  } catch (error) {
    await Deno.remove(kvDir, { recursive: true }).catch(() => {});
    throw error;
  }
  return {
    child,
    url,
    port,
    kvDir,
    inspectPort,
    async stop() {
      await child.stop();
      await Deno.remove(kvDir, { recursive: true }).catch(() => {});
    },
  };
}

/** A signed-up user of the server under test. */
export interface BenchUser {
  slug: string;
  token: string;
  webhookUrl: string;
}

/** Signs up a fresh user through the API. */
export async function signUpUser(baseUrl: string): Promise<BenchUser> {
  const response = await fetch(`${baseUrl}/api/auth/signup`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      email: `bench-${crypto.randomUUID().slice(0, 8)}@example.com`,
      password: "benchmark password",
    }),
  });
  const text = await response.text();
  if (response.status !== 201) throw new Error(`signup failed: ${response.status} ${text}`);
  const body = JSON.parse(text);
  return {
    slug: body.endpoint.slug,
    token: body.token.value,
    webhookUrl: `${baseUrl}/api/in/${body.endpoint.slug}`,
  };
}

function statFields(path: string): string[] | null {
  try {
    const text = Deno.readTextFileSync(path);
    // Fields after the command name, which is in parentheses and may contain spaces.
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** CPU seconds (user + system) a process has used so far, all threads. */
export function cpuSeconds(pid: number): number {
  const fields = statFields(`/proc/${pid}/stat`);
  if (!fields) return NaN;
  // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** User and system CPU seconds of a process so far, all threads. */
export function cpuSplit(pid: number): { user: number; system: number } {
  const fields = statFields(`/proc/${pid}/stat`);
  if (!fields) return { user: NaN, system: NaN };
  return { user: Number(fields[11]) / CLOCK_TICKS, system: Number(fields[12]) / CLOCK_TICKS };
}

/** CPU seconds per thread name (threads of one name, e.g. tokio workers, are summed). */
export function threadCpuSeconds(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tasks: Deno.DirEntry[];
  try {
    tasks = [...Deno.readDirSync(`/proc/${pid}/task`)];
  } catch {
    return out;
  }
  for (const task of tasks) {
    const fields = statFields(`/proc/${pid}/task/${task.name}/stat`);
    if (!fields) continue;
    let name: string;
    try {
      name = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/comm`).trim();
    } catch {
      continue;
    }
    if (task.name === String(pid)) name = `${name} (main JS thread)`;
    const seconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
    out.set(name, (out.get(name) ?? 0) + seconds);
  }
  return out;
}

/**
 * Pins every thread of a running process to `cpus` (`taskset -a -p -c`); the bench pins its own
 * process while it runs subscribers next to a pinned generator. False when taskset failed.
 */
export function pinProcess(pid: number, cpus: string): boolean {
  try {
    return new Deno.Command("taskset", {
      args: ["-a", "-p", "-c", cpus, String(pid)],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/** The soft and hard limits on open files of a running process, from /proc/<pid>/limits. */
export function openFilesOf(pid: number): { soft: number; hard: number } {
  try {
    const line = Deno.readTextFileSync(`/proc/${pid}/limits`).split("\n")
      .find((l) => l.startsWith("Max open files"));
    const [soft, hard] = line?.slice("Max open files".length).trim().split(/\s+/) ?? [];
    const value = (v: string | undefined) => v === "unlimited" ? Infinity : Number(v ?? NaN);
    return { soft: value(soft), hard: value(hard) };
  } catch {
    return { soft: NaN, hard: NaN };
  }
}

/** Resident memory of a process in KiB (VmRSS), NaN when unreadable. */
export function rssKiB(pid: number): number {
  try {
    const match = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmRSS:\s+(\d+)\s+kB/m);
    return match ? Number(match[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The port a child server prints on its stdout, read from the first line matching `pattern`
 * (its one group is the port); the rest of its stdout is drained so the child never blocks.
 */
export async function portFromOutput(
  child: Deno.ChildProcess,
  pattern: RegExp,
  what: string,
): Promise<number> {
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const line = await lines.read();
    if (line.done) throw new Error(`${what} did not start`);
    const port = Number(pattern.exec(line.value)?.[1] ?? 0);
    if (port) {
      (async () => {
        while (!(await lines.read()).done);
      })();
      return port;
    }
  }
}
