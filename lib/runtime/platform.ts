/**
 * What this Deno offers of the platform APIs the server uses that are not stable in every
 * supported version (2.5 LTS to 2.9), found by feature detection rather than version numbers:
 * Deploy and other hosts enable flags their own way.
 *
 * - `BroadcastChannel`: unstable before Deno 2.6 (`--unstable-broadcast-channel`, which
 *   deno.json sets); only `WORKERS` > 1 needs it. Without it the process serves with one isolate.
 * - `reusePort` and Workers: the cluster's shared port (`--unstable-net`, which deno.json sets)
 *   and its Workers. Without them, one isolate too.
 * - `Deno.cron` (`--unstable-cron`): without it main.ts names each job it could not schedule.
 * - `Deno.openKv` (`--unstable-kv`): without it the server cannot run and says why (kv.ts).
 *
 * Stable in 2.5 and later, so used as they are: `Deno.serve`, `Deno.upgradeWebSocket`,
 * `Deno.Command`, `Deno.addSignalListener`, `Uint8Array.fromBase64`/`toBase64`.
 * `node:fs/promises` has no `statfs` before 2.6: storage_guard.ts uses `node:fs`'s.
 */

/** The optional platform features, as found in this isolate. */
export interface Platform {
  /** This Deno's version, for log lines. */
  deno: string;
  broadcastChannel: boolean;
  /** Workers, and a listening socket shared by several isolates (`reusePort`). */
  sharedPort: boolean;
  cron: boolean;
  kv: boolean;
}

/** Whether `Deno.listen` accepts `reusePort` here (it is refused without `--unstable-net`). */
function canSharePort(): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port: 0, reusePort: true }).close();
    return true;
  } catch {
    return false;
  }
}

/** Detects the optional features; `scope` and `deno` stand in for globalThis and Deno in tests. */
export function detectPlatform(
  scope: { BroadcastChannel?: unknown; Worker?: unknown } = globalThis,
  deno: { cron?: unknown; openKv?: unknown; version: { deno: string } } = Deno,
): Platform {
  let sharedPort: boolean | undefined;
  return {
    deno: deno.version.deno,
    broadcastChannel: typeof scope.BroadcastChannel === "function",
    // Probed when first read: binding a socket costs a start ~7 ms, and only WORKERS > 1 asks.
    get sharedPort() {
      return sharedPort ??= typeof scope.Worker === "function" && canSharePort();
    },
    cron: typeof deno.cron === "function",
    kv: typeof deno.openKv === "function",
  };
}

/**
 * The isolates to run for `WORKERS=requested` on `platform`, and when that is fewer, the log
 * line that says why and how to get them back.
 */
export function isolatesFor(
  requested: number,
  platform: Platform,
): { workers: number; warning: string | null } {
  if (requested <= 1) return { workers: requested, warning: null };
  const missing = [
    ...(platform.broadcastChannel ? [] : ["BroadcastChannel (--unstable-broadcast-channel)"]),
    ...(platform.sharedPort ? [] : ["Workers sharing a port (--unstable-net)"]),
  ];
  if (missing.length === 0) return { workers: requested, warning: null };
  return {
    workers: 1,
    warning: `WORKERS=${requested} needs ${missing.join(" and ")}, which Deno ${platform.deno} ` +
      "does not provide here (deno.json's unstable list enables them): serving with one isolate",
  };
}

/** Why `Deno.cron` jobs cannot be scheduled here, or null when they can. */
export function cronUnavailable(platform: Platform): string | null {
  return platform.cron
    ? null
    : `Deno.cron is not available in Deno ${platform.deno} (it needs --unstable-cron)`;
}
