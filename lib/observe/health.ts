/**
 * Liveness and readiness. `/healthz` says the process answers; `/readyz` says whether a load
 * balancer should send it traffic: KV answers a write and a read within a second, the cron jobs
 * are registered where the platform has Deno.cron, and the server is not shutting down (on
 * SIGTERM it turns 503 first, SHUTDOWN_DRAIN_SECONDS before streams close).
 */
import { readinessProbeKey } from "../store/kv_keys.ts";

/** Longest a KV write and read may take for the server to count as ready. */
const KV_CHECK_TIMEOUT_MS = 1000;
/**
 * Anyone may call /readyz: a KV check's result is reused this long (and concurrent calls share
 * one check), so probes cost at most one small KV write per second per isolate.
 */
const KV_CHECK_REUSE_MS = 1000;

/** One isolate's readiness state, shared by its request handler and its shutdown. */
export interface Readiness {
  /** Set when shutdown begins: /readyz answers 503 from then on. */
  shuttingDown: boolean;
  /** Names this isolate's probe key, so isolates and instances on one KV do not collide. */
  readonly isolateId: string;
  /** The last KV check and when it finished, or the one running. */
  kvCheck: { at: number; result: Promise<CheckResult> } | null;
}

/** Creates the readiness state of one server. */
export function createReadiness(): Readiness {
  return { shuttingDown: false, isolateId: crypto.randomUUID(), kvCheck: null };
}

/** One named check in /readyz's answer. */
export interface CheckResult {
  ok: boolean;
  /** What was found: "registered", "unavailable on this platform", an error, … */
  status: string;
  durationMs?: number;
}

/** /readyz's JSON body. */
export interface ReadinessReport {
  status: "ready" | "not ready";
  /** Names of the checks that failed (empty when ready). */
  failing: string[];
  checks: Record<"kv" | "cron" | "queue" | "shutdown", CheckResult>;
}

/** Cron registration of this isolate, as the entry point recorded it (see `noteCron`). */
const crons = new Map<string, string | null>();

/**
 * Records a cron job's registration (main.ts): `error` is null when Deno.cron took it. Where
 * the platform has no Deno.cron nothing is recorded and the check says "unavailable".
 */
export function noteCron(name: string, error: string | null): void {
  crons.set(name, error);
}

function cronCheck(): CheckResult {
  if (typeof (Deno as { cron?: unknown }).cron !== "function") {
    return { ok: true, status: "unavailable on this platform (scheduled jobs do not run)" };
  }
  if (crons.size === 0) {
    // Workers and embedded servers: the entry point's main isolate registers the jobs.
    return { ok: true, status: "not registered by this isolate (the main isolate runs them)" };
  }
  const failed = [...crons].filter(([, error]) => error !== null);
  if (failed.length > 0) {
    return {
      ok: false,
      status: `not registered: ${failed.map(([name, error]) => `${name}: ${error}`).join("; ")}`,
    };
  }
  return { ok: true, status: `registered: ${[...crons.keys()].join(", ")}` };
}

async function runKvCheck(kv: Deno.Kv, isolateId: string): Promise<CheckResult> {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${KV_CHECK_TIMEOUT_MS} ms`)),
      KV_CHECK_TIMEOUT_MS,
    );
  });
  try {
    const key = readinessProbeKey(isolateId);
    const written = Date.now();
    await Promise.race([
      (async () => {
        await kv.set(key, written, { expireIn: 60_000 });
        const read = await kv.get<number>(key);
        if (read.value !== written) throw new Error("read back a different value than written");
      })(),
      timeout,
    ]);
    const durationMs = Math.round((performance.now() - started) * 10) / 10;
    return { ok: true, status: "read and write answered", durationMs };
  } catch (error) {
    return { ok: false, status: `failed: ${(error as Error).message}` };
  } finally {
    clearTimeout(timer);
  }
}

function kvCheck(kv: Deno.Kv, readiness: Readiness): Promise<CheckResult> {
  const last = readiness.kvCheck;
  if (last && (last.at === 0 || performance.now() - last.at < KV_CHECK_REUSE_MS)) {
    return last.result;
  }
  const check = { at: 0, result: runKvCheck(kv, readiness.isolateId) };
  check.result.finally(() => check.at = performance.now());
  readiness.kvCheck = check;
  return check.result;
}

/** Runs the checks; `status` is "ready" only when each of them passes. */
export async function checkReadiness(
  kv: Deno.Kv,
  readiness: Readiness,
): Promise<ReadinessReport> {
  const checks: ReadinessReport["checks"] = {
    // During shutdown KV may already be closing: the answer is 503 either way.
    kv: readiness.shuttingDown
      ? { ok: true, status: "not checked during shutdown" }
      : await kvCheck(kv, readiness),
    cron: cronCheck(),
    queue: { ok: true, status: "none: WebSocks uses no KV queue (see lib/intake/group_commit.ts)" },
    shutdown: readiness.shuttingDown
      ? { ok: false, status: "shutting down: streams close after SHUTDOWN_DRAIN_SECONDS" }
      : { ok: true, status: "serving" },
  };
  const failing = Object.entries(checks).filter(([, check]) => !check.ok).map(([name]) => name);
  return { status: failing.length === 0 ? "ready" : "not ready", failing, checks };
}
