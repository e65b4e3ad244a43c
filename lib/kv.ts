/** Opening the Deno KV store named by the configuration. */
import { dirname } from "node:path";

/**
 * Opens KV at `path`: a file (its folder is created first), `:memory:`, a KV server URL, or
 * `default` for the platform's own database (Deno Deploy), which is `Deno.openKv()` with no path.
 */
export async function openKv(path: string): Promise<Deno.Kv> {
  if (path === "default") return retryingBusy(await Deno.openKv());
  if (path !== ":memory:" && !/^https?:\/\//.test(path)) {
    await Deno.mkdir(dirname(path), { recursive: true });
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
      if (attempt >= MAX_BUSY_ATTEMPTS || !/database is locked/.test(String(error))) throw error;
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
