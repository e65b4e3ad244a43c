/**
 * Peers the relay is compared with, run by the bench in the same run and on the same settings.
 * smee.io (probot/smee.io: Node, fastify, in-memory EventEmitter, SSE listeners) is copied from
 * SMEE_SOURCE to bench/out/peers/smee.io (git-ignored) and `npm ci --omit=dev` runs there once:
 * the copy in ../shared stays read-only and the repository gets no node_modules of another app.
 */
import { OUT } from "./settings.ts";
import { freePort, ROOT, sleep } from "./procs.ts";

/** Where the pristine copy of smee.io is (env SMEE_SOURCE overrides it). */
const SMEE_SOURCE = Deno.env.get("SMEE_SOURCE") ?? `${ROOT}../shared/peers/smee.io`;
/** The bench's own installed copy. */
const SMEE_DIR = `${OUT}/peers/smee.io`;
// Built by smee's webpack (a devDependency) for its browser UI, which the bench never loads; the
// server reads them at start, so the copy gets empty ones instead of a webpack build.
const SMEE_ASSETS = ["main.min.css", "main.min.js", "main.min.js.gz", "main.min.css.gz"];

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function sh(script: string, cwd?: string): Promise<{ ok: boolean; out: string }> {
  const result = await new Deno.Command("bash", { args: ["-c", script], cwd, stderr: "piped" })
    .output();
  const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  return { ok: result.success, out };
}

/**
 * The installed copy of smee.io, copying and installing it when missing; null (with the reason
 * printed) when node, npm or the source copy is not there.
 */
export async function smeeDir(): Promise<string | null> {
  if (await exists(`${SMEE_DIR}/node_modules/fastify`)) return SMEE_DIR;
  if (!(await exists(`${SMEE_SOURCE}/package-lock.json`))) {
    console.log(`  smee.io skipped: no copy at ${SMEE_SOURCE} (set SMEE_SOURCE)`);
    return null;
  }
  console.log(`  installing smee.io: copy of ${SMEE_SOURCE}, npm ci --omit=dev`);
  await Deno.mkdir(`${OUT}/peers`, { recursive: true });
  const copy = await sh(
    `rm -rf '${SMEE_DIR}' && cp -r '${SMEE_SOURCE}' '${SMEE_DIR}' && chmod -R u+w '${SMEE_DIR}'`,
  );
  if (!copy.ok) {
    console.log(`  smee.io skipped: copy failed: ${copy.out.trim()}`);
    return null;
  }
  const install = await sh("npm ci --omit=dev --no-audit --no-fund", SMEE_DIR);
  if (!install.ok) {
    console.log(`  smee.io skipped: npm ci failed: ${install.out.trim().split("\n").pop()}`);
    return null;
  }
  for (const asset of SMEE_ASSETS) {
    const path = `${SMEE_DIR}/public/${asset}`;
    if (!(await exists(path))) await Deno.writeFile(path, new Uint8Array());
  }
  return SMEE_DIR;
}

/** A running smee.io. */
export interface Peer {
  pid: number;
  port: number;
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts smee.io as its README says (`PORT=… NODE_ENV=production node index.js`), with its
 * request logger as shipped (pino, one JSON line per request) written to /dev/null; pinned to
 * `cpus` when given. Resolves once `GET /` answers 200.
 */
export async function startSmee(dir: string, options: { cpus?: string } = {}): Promise<Peer> {
  const port = freePort();
  const process = new Deno.Command("bash", {
    args: [
      "-c",
      'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"',
      "bench-smee",
      ...(options.cpus === undefined ? [] : ["taskset", "-c", options.cpus]),
      "node",
      "index.js",
    ],
    cwd: dir,
    env: { PORT: String(port), NODE_ENV: "production" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(process.stderr).text();
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  let up = false;
  while (!up && Date.now() < deadline) {
    try {
      const response = await fetch(`${url}/`);
      await response.arrayBuffer();
      up = response.status === 200;
    } catch {
      await sleep(50);
    }
  }
  const stop = async () => {
    try {
      process.kill("SIGKILL");
    } catch {
      // gone already
    }
    await process.status;
    await stderr.catch(() => "");
  };
  if (!up) {
    await stop();
    throw new Error(`smee.io did not start: ${(await stderr.catch(() => "")).slice(-500)}`);
  }
  return { pid: process.pid, port, url, stop };
}
