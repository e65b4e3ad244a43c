/**
 * Client bundles of the islands, built with `deno bundle` and kept in memory.
 *
 * One `deno bundle --code-splitting` run turns a tiny generated entry per island into that
 * island's module plus shared chunks (Preact, signals, the hydration runtime), so a page loads
 * only its islands and the shared code once. Entries are renamed `Name.<content hash>.js`;
 * esbuild already names chunks by content hash. Every URL therefore changes when its content
 * does, and can be cached forever.
 *
 * Production serves bundles prebuilt by `deno task build` (build.ts writes them and a manifest
 * to dist/islands; ISLANDS_DIR, or main.ts finding a fresh dist/islands, serves them), so a
 * start never runs the bundler, which downloads esbuild on first use and differs between Deno
 * versions. The manifest names every source file the bundles were built from with a hash of
 * them all (`sources`), so a start can tell, by hashing a few dozen files, whether they are
 * still current (`bundlesStaleness`). Without prebuilt bundles (tests, `deno task dev`) the
 * build runs synchronously once per process when the app is created: a fraction of a second,
 * failing the start loudly on a broken island. Which islands to build comes from the caller
 * (islands/_registry.ts's ISLAND_MODULES): lib/ never imports islands/.
 */
import type { IslandScripts } from "./islands.ts";
import { pathOf } from "../runtime/paths.ts";

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
  /**
   * What they were built from: files relative to the project root (islands, what they import,
   * deno.json and package-lock.json for the npm packages and compiler options) and one hash of
   * them all. Absent in manifests written before it existed: such bundles count as stale.
   */
  sources?: { files: string[]; hash: string };
}

/** The project's root folder (where deno.json is), as a path. */
const ROOT = pathOf(new URL("../../", import.meta.url));
/** Names of files a build writes: entries `Name.<hash>.js` and esbuild's `chunk-<hash>.js`. */
const BUILT_FILE = /^(?:\w+\.[0-9a-f]{16}|chunk-[\w-]+)\.js$/;
/** Files every bundle depends on besides the module graph. */
const BUILD_INPUTS = ["deno.json", "package-lock.json"];

/**
 * A 64-bit fingerprint of `bytes`, 16 hex digits (two 32-bit multiply-xorshift lanes, as
 * cyrb53). It names bundle files and tells edited sources apart, neither of which an outsider
 * chooses, so it need not be a cryptographic hash; it must be synchronous (the build runs when
 * the app is created) and must not import node:crypto, which costs every start ~40 ms.
 */
function fingerprint(bytes: Uint8Array): string {
  let h1 = 0xdeadbeef ^ bytes.length;
  let h2 = 0x41c6ce57 ^ bytes.length;
  for (let i = 0; i < bytes.length; i++) {
    h1 = Math.imul(h1 ^ bytes[i], 2654435761);
    h2 = Math.imul(h2 ^ bytes[i], 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (h2 >>> 0).toString(16).padStart(8, "0") + (h1 >>> 0).toString(16).padStart(8, "0");
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

/**
 * The Deno that builds: the project's pinned one (node_modules/.bin/deno) when installed, so
 * bundles do not depend on which Deno serves (Deno 2.5's bundler leaves zod in the inspector's
 * bundle, four times its size), else the one running (a host without node_modules).
 */
function bundlerDeno(): string {
  const pinned = `${ROOT}node_modules/.bin/deno`;
  try {
    if (Deno.statSync(pinned).isFile) return pinned;
  } catch {
    // not installed: this Deno builds
  }
  return Deno.execPath();
}

/** One hash over `files` (relative to ROOT) and their contents; null when one is missing. */
function sourcesHash(files: readonly string[]): string | null {
  let list = "";
  for (const file of files) {
    try {
      list += `${file}\0${fingerprint(Deno.readFileSync(`${ROOT}${file}`))}\n`;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw error;
    }
  }
  return fingerprint(new TextEncoder().encode(list));
}

/**
 * The project files the bundles of `islands` are built from, by `deno info` (the module graph
 * of the same entries the bundler gets). Packages under node_modules are left out: the lockfile
 * pins them.
 */
function bundleSources(entry: string): string[] {
  const result = new Deno.Command(bundlerDeno(), {
    args: ["info", "--json", "--config", `${ROOT}deno.json`, entry],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!result.success) {
    const stderr = new TextDecoder().decode(result.stderr).trim();
    throw new Error(`Cannot list the islands' sources: deno info failed:\n${stderr}`);
  }
  const graph = JSON.parse(new TextDecoder().decode(result.stdout)) as {
    modules: { specifier: string }[];
  };
  const files = new Set(BUILD_INPUTS);
  for (const { specifier } of graph.modules) {
    if (!specifier.startsWith("file:")) continue;
    const path = pathOf(specifier);
    if (!path.startsWith(ROOT)) continue;
    const file = path.slice(ROOT.length);
    if (!file.startsWith("node_modules")) files.add(file);
  }
  return [...files].sort();
}

/** Writes one generated entry per island (the hydration runtime plus the island) into `dir`. */
function writeEntries(dir: string, islands: IslandModules): string[] {
  const runtime = new URL("_hydrate.ts", islands.folder).href;
  return islands.names.map((name) => {
    const island = new URL(`${name}.tsx`, islands.folder).href;
    const path = `${dir}/${name}.ts`;
    Deno.writeTextFileSync(
      path,
      `import { hydrateIslands } from "${runtime}";\nimport island from "${island}";\n` +
        `hydrateIslands("${name}", island);\n`,
    );
    return path;
  });
}

/** Runs `deno bundle` for every island; returns the files by served name and the entries. */
function runBundler(islands: IslandModules): {
  files: Map<string, Uint8Array<ArrayBuffer>>;
  entries: Record<string, string>;
} {
  const dir = Deno.makeTempDirSync({ prefix: "websocks-islands-" });
  try {
    const entryPaths = writeEntries(dir, islands);
    const out = `${dir}/out`;
    const result = new Deno.Command(bundlerDeno(), {
      args: [
        "bundle",
        "--quiet",
        "--config",
        pathOf(new URL("../../deno.json", import.meta.url)),
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
        entries[island] = `${island}.${fingerprint(bytes)}.js`;
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

/** The project files the bundles of `islands` are built from (see `Manifest.sources`). */
function listSources(islands: IslandModules): string[] {
  const dir = Deno.makeTempDirSync({ prefix: "websocks-islands-" });
  try {
    const all = `${dir}/all.ts`;
    Deno.writeTextFileSync(
      all,
      writeEntries(dir, islands).map((path) => `import "${new URL(`file://${path}`).href}";\n`)
        .join(""),
    );
    return bundleSources(all);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Writes freshly built bundles and their manifest to `dir` (what `deno task build` does). */
export function writeBundles(dir: string, islands: IslandModules): string[] {
  // Sources first: a file edited while the bundler runs then makes the result stale, not fresh.
  const sourceFiles = listSources(islands);
  const hash = sourcesHash(sourceFiles);
  const { files, entries } = runBundler(islands);
  // The previous build's files go (only names this build writes): loadBundles reads every .js
  // of the folder into memory, so old builds must not pile up there.
  Deno.mkdirSync(dir, { recursive: true });
  for (const item of Deno.readDirSync(dir)) {
    if (item.isFile && (BUILT_FILE.test(item.name) || item.name === MANIFEST)) {
      Deno.removeSync(`${dir}/${item.name}`);
    }
  }
  for (const [name, bytes] of files) Deno.writeFileSync(`${dir}/${name}`, bytes);
  const manifest: Manifest = {
    entries,
    ...(hash ? { sources: { files: sourceFiles, hash } } : {}),
  };
  Deno.writeTextFileSync(`${dir}/${MANIFEST}`, JSON.stringify(manifest, null, 2) + "\n");
  return [...files.keys()].sort();
}

/**
 * Null when `dir` holds bundles of every island built from the sources as they are now; else
 * why not ("no manifest", "built from other sources", …), for a log line.
 */
export function bundlesStaleness(dir: string, islands: IslandModules): string | null {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(Deno.readTextFileSync(`${dir}/${MANIFEST}`));
  } catch (error) {
    return error instanceof Deno.errors.NotFound
      ? `${dir} has no ${MANIFEST}`
      : `${dir}/${MANIFEST} is unreadable: ${(error as Error).message}`;
  }
  const missing = islands.names.filter((name) => !manifest.entries?.[name]);
  if (missing.length > 0) return `${dir} has no bundle of ${missing.join(", ")}`;
  if (!manifest.sources) return `${dir}/${MANIFEST} does not say what it was built from`;
  if (sourcesHash(manifest.sources.files) !== manifest.sources.hash) {
    return `${dir} was built from other sources (an island or what it imports has changed)`;
  }
  return null;
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
