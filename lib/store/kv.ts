/** Opening the Deno KV store named by the configuration, and what its errors mean. */
import { HttpError } from "../http/http_error.ts";
import { parentOf } from "../runtime/paths.ts";
import { counters } from "../observe/metrics.ts";

/**
 * Opens KV at `path`: a file (its folder is created first), `:memory:`, a KV server URL, or
 * `default` for the platform's own database (Deno Deploy), which is `Deno.openKv()` with no path.
 */
export async function openKv(path: string): Promise<Deno.Kv> {
  // Deno KV is unstable in every supported Deno: without the flag there is no Deno.openKv at all,
  // and "Deno.openKv is not a function" would not say what to do.
  if (typeof Deno.openKv !== "function") {
    throw new Error(
      `Cannot open the KV store: Deno ${Deno.version.deno} runs without Deno KV; start it with ` +
        "--unstable-kv (deno.json's unstable list sets it: run from the project folder)",
    );
  }
  if (path === "default") return retryingBusy(await Deno.openKv());
  if (path !== ":memory:" && !/^https?:\/\//.test(path)) {
    await Deno.mkdir(parentOf(path), { recursive: true });
  }
  return retryingBusy(await Deno.openKv(path));
}

const MAX_BUSY_ATTEMPTS = 50;

/**
 * Runs a KV write, retrying while SQLite reports the file busy. Several handles on one file
 * (the isolates of one process, instances sharing a file) take turns holding the write lock;
 * a refused write was not applied, so waiting a moment and writing again is safe.
 */
export async function retryBusy<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await write();
    } catch (error) {
      if (attempt >= MAX_BUSY_ATTEMPTS || !/database is locked/.test(String(error))) {
        counters.kvCommitErrors++;
        throw error;
      }
      counters.kvBusyRetries++;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(10, attempt)));
    }
  }
}

/** The same handle, with every write (set, delete, atomic commit) under `retryBusy`. */
function retryingBusy(kv: Deno.Kv): Deno.Kv {
  // Methods are bound once: reads on the ingest path must not allocate a function per call.
  const methods = new Map<PropertyKey, unknown>();
  const wrap = (property: PropertyKey, value: (...args: unknown[]) => unknown): unknown => {
    if (property === "atomic") {
      return () => {
        const op = kv.atomic();
        const commit = op.commit.bind(op);
        op.commit = () => retryBusy(commit);
        return op;
      };
    }
    if (property === "set" || property === "delete") {
      return (...args: unknown[]) => retryBusy(() => value.apply(kv, args) as Promise<unknown>);
    }
    return value.bind(kv);
  };
  return new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      let method = methods.get(property);
      if (method === undefined) methods.set(property, method = wrap(property, value));
      return method;
    },
  });
}

/** Collects every entry of a `kv.list` selector into an array. */
export async function listAll<T>(
  kv: Deno.Kv,
  selector: Deno.KvListSelector,
  options: Deno.KvListOptions = {},
): Promise<Deno.KvEntry<T>[]> {
  const out: Deno.KvEntry<T>[] = [];
  for await (const entry of kv.list<T>(selector, options)) out.push(entry);
  return out;
}

/**
 * What SQLite (and the OS under it) reports when the store cannot take writes for now: a full
 * disk, a failing disk, a read-only or vanished file, or a lock held too long. Such a write
 * was not applied, so the caller may say "retry later"; a bad value or key (too large) is not
 * one of these.
 */
const UNAVAILABLE: [RegExp, string][] = [
  [
    /database or disk is full|No space left on device|os error 28\b|Disk quota exceeded/i,
    "disk full",
  ],
  [/disk I\/O error|os error 5\b/i, "disk I/O error"],
  [/readonly database|Read-only file system|os error 30\b/i, "read-only"],
  [/unable to open database file|database disk image is malformed/i, "cannot open the database"],
  // Still locked after retryBusy's attempts: contention, not a fault of the data written.
  [/database is locked|database is busy/i, "busy"],
];

/** Why the store is unavailable (e.g. "disk full"), or null when `error` is no such fault. */
export function storageUnavailableReason(error: unknown): string | null {
  if (error instanceof HttpError) return null; // already an answer
  const message = error instanceof Error ? error.message : String(error);
  for (const [pattern, reason] of UNAVAILABLE) if (pattern.test(message)) return reason;
  return null;
}

/** True when `error` says the store cannot take writes for now (full, failing, read-only). */
export function isStorageUnavailable(error: unknown): boolean {
  return storageUnavailableReason(error) !== null;
}

/** Seconds a sender is asked to wait when storage is unavailable. */
export const STORAGE_RETRY_AFTER_SECONDS = 30;

/** The 503 for a storage fault: `action` names what could not be done ("ingest", "save"). */
export function storageUnavailableError(error: unknown, action: string): HttpError {
  const reason = storageUnavailableReason(error) ?? "storage fault";
  return new HttpError(
    503,
    `Cannot ${action}: storage is unavailable (${reason}); retry later`,
    { "Retry-After": String(STORAGE_RETRY_AFTER_SECONDS) },
  );
}
