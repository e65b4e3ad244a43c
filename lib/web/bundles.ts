/**
 * Client bundles of the islands, built with `deno bundle` and kept in memory.
 *
 * One `deno bundle --code-splitting` run turns a tiny generated entry per island into that
 * island's module plus shared chunks (Preact, signals, the hydration runtime), so a page loads
 * only its islands and the shared code once. Entries are renamed `Name.<content hash>.js`;
 * esbuild already names chunks by content hash. Every URL therefore changes when its content
 * does, and can be cached forever.
 *
 * The build runs synchronously once per process when the app is created: it takes a fraction
 * of a second, fails the start loudly on a broken island, and leaves no work in flight behind.
 * `deno task build` (build.ts) writes the same files to a folder for hosts that cannot run
 * `deno bundle` (ISLANDS_DIR then serves them). Which islands to build comes from the caller
 * (islands/_registry.ts's ISLAND_MODULES): lib/ never imports islands/.
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { IslandScripts } from "./islands.ts";

/**
 * The islands to build: each name is a module `<folder><name>.tsx` exporting the component by
 * default, and `<folder>_hydrate.ts` is the hydration runtime; `folder` is a URL ending in "/".
 */
export interface IslandModules {
  names: readonly string[];
  folder: string;
}

/** Where bundles are served. */
export const BUNDLE_PREFIX = "/islands/";

const MANIFEST = "manifest.json";

/** Built bundles: script URLs per island and the files behind them. */
export interface Bundles {
  scripts(name: string): IslandScripts;
  /** A bundle file by its (hashed) file name, or null. */
  file(name: string): Uint8Array<ArrayBuffer> | null;
}

/** The manifest written next to prebuilt bundles. */
interface Manifest {
  entries: Record<string, string>;
}

function contentHash(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex").slice(0, 16);
}

/** The chunk files a module imports, directly or through other chunks. */
function chunkClosure(files: Map<string, Uint8Array<ArrayBuffer>>, start: string): string[] {
  const seen = new Set<string>();
  const visit = (name: string) => {
    const text = new TextDecoder().decode(files.get(name));
    for (const match of text.matchAll(/["']\.\/(chunk-[\w-]+\.js)["']/g)) {
      if (!seen.has(match[1]) && files.has(match[1])) {
        seen.add(match[1]);
        visit(match[1]);
      }
    }
  };
  visit(start);
  return [...seen].sort();
}

function fromFiles(
  islands: IslandModules,
  files: Map<string, Uint8Array<ArrayBuffer>>,
  entries: Record<string, string>,
): Bundles {
  const scripts = new Map<string, IslandScripts>();
  for (const name of islands.names) {
    const entry = entries[name];
    if (!entry || !files.has(entry)) {
      throw new Error(`Cannot load island bundles: island ${name} has no bundle; rebuild them`);
    }
    scripts.set(name, {
      src: BUNDLE_PREFIX + entry,
      preload: chunkClosure(files, entry).map((chunk) => BUNDLE_PREFIX + chunk),
    });
  }
  return {
    scripts: (name) => scripts.get(name)!,
    file: (name) => files.get(name) ?? null,
  };
}

/** Runs `deno bundle` for every island; returns the files by served name and the entries. */
function runBundler(islands: IslandModules): {
  files: Map<string, Uint8Array<ArrayBuffer>>;
  entries: Record<string, string>;
} {
  const dir = Deno.makeTempDirSync({ prefix: "websocks-islands-" });
  try {
    const runtime = new URL("_hydrate.ts", islands.folder).href;
    const entryPaths = islands.names.map((name) => {
      const island = new URL(`${name}.tsx`, islands.folder).href;
      const path = `${dir}/${name}.ts`;
      Deno.writeTextFileSync(
        path,
        `import { hydrateIslands } from "${runtime}";\nimport island from "${island}";\n` +
          `hydrateIslands("${name}", island);\n`,
      );
      return path;
    });
    const out = `${dir}/out`;
    const result = new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--config",
        fileURLToPath(new URL("../../deno.json", import.meta.url)),
        "--platform",
        "browser",
        "--minify",
        "--code-splitting",
        "--outdir",
        out,
        ...entryPaths,
      ],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    if (!result.success) {
      const stderr = new TextDecoder().decode(result.stderr).trim();
      throw new Error(`Cannot build island bundles: deno bundle failed:\n${stderr}`);
    }
    const files = new Map<string, Uint8Array<ArrayBuffer>>();
    const entries: Record<string, string> = {};
    for (const item of Deno.readDirSync(out)) {
      const bytes = Deno.readFileSync(`${out}/${item.name}`);
      const island = item.name.replace(/\.js$/, "");
      if (islands.names.includes(island)) {
        entries[island] = `${island}.${contentHash(bytes)}.js`;
        files.set(entries[island], bytes);
      } else {
        files.set(item.name, bytes);
      }
    }
    return { files, entries };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Builds the bundles of `islands` now, with `deno bundle`. */
export function buildBundles(islands: IslandModules): Bundles {
  const { files, entries } = runBundler(islands);
  return fromFiles(islands, files, entries);
}

/** Writes freshly built bundles and their manifest to `dir` (what `deno task build` does). */
export function writeBundles(dir: string, islands: IslandModules): string[] {
  const { files, entries } = runBundler(islands);
  Deno.mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of files) Deno.writeFileSync(`${dir}/${name}`, bytes);
  const manifest: Manifest = { entries };
  Deno.writeTextFileSync(`${dir}/${MANIFEST}`, JSON.stringify(manifest, null, 2) + "\n");
  return [...files.keys()].sort();
}

/** Loads bundles of `islands` written by `writeBundles`. */
export function loadBundles(dir: string, islands: IslandModules): Bundles {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(Deno.readTextFileSync(`${dir}/${MANIFEST}`));
  } catch (error) {
    throw new Error(
      `Cannot load island bundles from ${dir}: ${(error as Error).message}; run deno task build`,
    );
  }
  const files = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const item of Deno.readDirSync(dir)) {
    if (item.isFile && item.name.endsWith(".js")) {
      files.set(item.name, Deno.readFileSync(`${dir}/${item.name}`));
    }
  }
  return fromFiles(islands, files, manifest.entries);
}

const cache = new Map<string, Bundles>();

/** The bundles of `islands` for a configuration, built or loaded once per process. */
export function islandBundles(
  options: { islandsDir: string | null },
  islands: IslandModules,
): Bundles {
  const key = options.islandsDir ?? "";
  let bundles = cache.get(key);
  if (!bundles) {
    bundles = options.islandsDir ? loadBundles(options.islandsDir, islands) : buildBundles(islands);
    cache.set(key, bundles);
  }
  return bundles;
}
