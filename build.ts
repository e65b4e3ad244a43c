/**
 * `deno task build [dir] [--if-stale]`: writes the island bundles and their manifest to a folder
 * (default: ISLANDS_DIR when set, else dist/islands), so the server serves them instead of running
 * `deno bundle` at start. With `--if-stale` (what `deno task start` runs first) it builds only when
 * the folder is missing, lacks an island, or was built from other sources, so starting again never
 * runs the bundler, and a fresh clone still starts with one command.
 */
import { fileURLToPath } from "node:url";
import { bundlesStaleness, writeBundles } from "./lib/web/bundles.ts";
import { ISLAND_MODULES } from "./islands/_registry.ts";

const ifStale = Deno.args.includes("--if-stale");
const dir = Deno.args.find((arg) => !arg.startsWith("--")) ?? Deno.env.get("ISLANDS_DIR") ??
  fileURLToPath(new URL("./dist/islands", import.meta.url));

if (ifStale) {
  const stale = bundlesStaleness(dir, ISLAND_MODULES);
  if (!stale) {
    console.log(`Island bundles in ${dir} are up to date`);
    Deno.exit(0);
  }
  console.log(`Building island bundles: ${stale}`);
}
const written = writeBundles(dir, ISLAND_MODULES);
console.log(`Wrote ${written.length} island bundles to ${dir}; serve them with ISLANDS_DIR=${dir}`);
