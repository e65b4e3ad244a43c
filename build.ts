/**
 * `deno task build [dir]`: writes the island bundles and their manifest to a folder (default
 * dist/islands), for hosts that cannot run `deno bundle`; ISLANDS_DIR then serves them.
 */
import { writeBundles } from "./lib/web/bundles.ts";
import { ISLAND_MODULES } from "./islands/_registry.ts";

const dir = Deno.args[0] ?? "dist/islands";
const written = writeBundles(dir, ISLAND_MODULES);
console.log(`Wrote ${written.length} island bundles to ${dir}; serve them with ISLANDS_DIR=${dir}`);
