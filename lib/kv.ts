/** Opening the Deno KV store named by the configuration. */
import { dirname } from "node:path";

/** Opens KV at `path` (a file, `:memory:` or a remote URL), creating the file's folder first. */
export async function openKv(path: string): Promise<Deno.Kv> {
  if (path !== ":memory:" && !/^https?:\/\//.test(path)) {
    await Deno.mkdir(dirname(path), { recursive: true });
  }
  return await Deno.openKv(path);
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
