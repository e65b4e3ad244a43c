/**
 * The layout's rules, read from the import graph of the project's own files: nothing in lib/
 * points up into the web layers, the browser-safe folder stands alone, islands take only what
 * the browser can run, and lib/ has no import cycles. A failure names every offending import.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url)).replace(/\/$/, "");

/** npm packages that run in a browser: the only ones islands and lib/shared/ may import. */
const BROWSER_SAFE = ["preact", "@preact/signals", "zod"];

/** One import found in a file: the written specifier and, when relative, the resolved path. */
interface Import {
  /** Project-relative path of the importing file, e.g. `lib/http/server.ts`. */
  from: string;
  specifier: string;
  /** Project-relative path it resolves to (relative specifiers only), else null. */
  target: string | null;
  /** A `new URL(\`…${x}…\`)` template: `target` is then the folder its fixed part names. */
  folder: boolean;
}

/** Every .ts/.tsx file under `dir` (project-relative), skipping what is not the app's own. */
function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(`${ROOT}/${dir}`)) {
    const path = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory) {
      if (!["node_modules", "data", "dist", ".git", "static"].includes(entry.name)) {
        out.push(...sourceFiles(path));
      }
    } else if (/\.tsx?$/.test(entry.name)) {
      out.push(path);
    }
  }
  return out.sort();
}

/** The code without its comments; string and template contents are kept. */
function stripComments(code: string): string {
  let out = "";
  let i = 0;
  while (i < code.length) {
    const c = code[i];
    if (c === "/" && code[i + 1] === "/") {
      while (i < code.length && code[i] !== "\n") i++;
    } else if (c === "/" && code[i + 1] === "*") {
      const end = code.indexOf("*/", i + 2);
      i = end === -1 ? code.length : end + 2;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < code.length && code[j] !== c) j += code[j] === "\\" ? 2 : 1;
      out += code.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Resolves `specifier` written in `from` to a project-relative path. */
function resolve(from: string, specifier: string): string {
  const parts = from.split("/").slice(0, -1);
  for (const part of specifier.split("/")) {
    if (part === "..") parts.pop();
    else if (part !== "." && part !== "") parts.push(part);
  }
  return parts.join("/");
}

const PATTERNS = [
  // import … from "x", export … from "x" (also `import type`, multi-line lists)
  /\b(?:import|export)\s[^;"'`]*?\bfrom\s*["']([^"']+)["']/g,
  // import "x" (side effects only)
  /\bimport\s*["']([^"']+)["']/g,
  // import("x")
  /\bimport\s*\(\s*["']([^"']+)["']\s*[,)]/g,
];
/** new URL("./x.ts", import.meta.url), also inside new Worker(…); a template's fixed part too. */
const URL_PATTERN = /\bnew\s+URL\(\s*(["'`])(\.{1,2}\/[^"'`]*)\1\s*,\s*import\.meta\.url/g;

/** The imports of one file. */
function importsOf(from: string): Import[] {
  const code = stripComments(Deno.readTextFileSync(`${ROOT}/${from}`));
  const found: Import[] = [];
  for (const pattern of PATTERNS) {
    for (const match of code.matchAll(pattern)) {
      const specifier = match[1];
      const relative = specifier.startsWith("./") || specifier.startsWith("../");
      found.push({
        from,
        specifier,
        target: relative ? resolve(from, specifier) : null,
        folder: false,
      });
    }
  }
  for (const match of code.matchAll(URL_PATTERN)) {
    const [, quote, specifier] = match;
    const templated = quote === "`" && specifier.includes("${");
    if (templated) {
      const fixed = specifier.slice(0, specifier.indexOf("${"));
      const folder = fixed.slice(0, fixed.lastIndexOf("/") + 1);
      found.push({ from, specifier, target: resolve(from, folder), folder: true });
    } else if (/\.tsx?$/.test(specifier)) {
      found.push({ from, specifier, target: resolve(from, specifier), folder: false });
    }
  }
  return found;
}

/** The npm package a bare specifier names: `preact/hooks` → `preact`, `npm:zod@4` → `zod`. */
function packageOf(specifier: string): string {
  const bare = specifier.replace(/^(npm|jsr):/, "");
  const parts = bare.split("/");
  const name = bare.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
  return name.replace(/(.)@.*$/, "$1");
}

const within = (path: string, folder: string) => path === folder || path.startsWith(folder + "/");
const describe = (i: Import) =>
  `${i.from} imports ${i.target ?? i.specifier}${i.folder ? ` (${i.specifier})` : ""}`;

const files = sourceFiles("");
const imports = files.flatMap(importsOf);

Deno.test("[layout] the import scan sees every kind of import", () => {
  // Guards the scanner itself: if it stopped seeing imports, every rule would pass vacuously.
  assert.ok(files.includes("main.ts") && files.includes("lib/runtime/config.ts"));
  const seen = (from: string, target: string) =>
    imports.some((i) => i.from === from && i.target === target);
  assert.ok(seen("main.ts", "lib/runtime/config.ts"), "static imports");
  assert.ok(imports.some((i) => i.from.startsWith("islands/") && i.target === null), "npm imports");
  assert.ok(imports.length > 300, `only ${imports.length} imports found`);
});

Deno.test("[layout] lib/ never imports routes/, islands/ or components/", () => {
  const wrong = imports.filter((i) =>
    within(i.from, "lib") && i.target !== null &&
    ["routes", "islands", "components"].some((up) => within(i.target!, up))
  );
  assert.deepEqual(wrong.map(describe), []);
});

Deno.test("[layout] lib/shared/ imports nothing outside itself but browser-safe packages", () => {
  const wrong = imports.filter((i) =>
    within(i.from, "lib/shared") &&
    (i.target === null
      ? !BROWSER_SAFE.includes(packageOf(i.specifier))
      : !within(i.target, "lib/shared"))
  );
  assert.deepEqual(wrong.map(describe), []);
});

Deno.test("[layout] islands import only lib/shared/, other islands, client/ and browser-safe packages", () => {
  const wrong = imports.filter((i) =>
    within(i.from, "islands") &&
    (i.target === null
      ? !BROWSER_SAFE.includes(packageOf(i.specifier))
      : !within(i.target, "lib/shared") && !within(i.target, "islands") &&
        // The client library is one dependency-free module made to run in browsers.
        !within(i.target, "client"))
  );
  assert.deepEqual(wrong.map(describe), []);
});

Deno.test("[layout] no import cycles among lib/ files", () => {
  const graph = new Map<string, string[]>();
  for (const i of imports) {
    if (!within(i.from, "lib") || i.target === null || i.folder || !within(i.target, "lib")) {
      continue;
    }
    graph.set(i.from, [...(graph.get(i.from) ?? []), i.target]);
  }
  // Depth-first search; a back edge to a file on the current path closes a cycle.
  const cycles: string[] = [];
  const done = new Set<string>();
  const path: string[] = [];
  const visit = (file: string) => {
    path.push(file);
    for (const next of graph.get(file) ?? []) {
      const at = path.indexOf(next);
      if (at !== -1) cycles.push([...path.slice(at), next].join(" → "));
      else if (!done.has(next)) visit(next);
    }
    path.pop();
    done.add(file);
  };
  for (const file of [...graph.keys()].sort()) if (!done.has(file)) visit(file);
  assert.deepEqual(cycles, []);
});

Deno.test("[layout] every lib/ folder has a README.md and no .ts file sits in lib/ itself", () => {
  const loose: string[] = [];
  const missing: string[] = [];
  for (const entry of Deno.readDirSync(`${ROOT}/lib`)) {
    if (entry.isFile && /\.tsx?$/.test(entry.name)) loose.push(`lib/${entry.name}`);
    if (!entry.isDirectory) continue;
    try {
      const header = Deno.readTextFileSync(`${ROOT}/lib/${entry.name}/README.md`).trim();
      if (!header) missing.push(`lib/${entry.name}/README.md is empty`);
    } catch {
      missing.push(`lib/${entry.name}/README.md is missing`);
    }
  }
  assert.deepEqual({ loose, missing: missing.sort() }, { loose: [], missing: [] });
});

Deno.test("[layout] the server's start path imports no node: module", () => {
  // The first `node:` module a process imports loads Deno's Node layer: 15–50 ms of every start
  // (bench part `cold`). What needs one imports it when first used; this keeps it that way.
  const STATIC =
    /\b(?:import|export)\s+(?!type\b)[^;"'`]*?\bfrom\s*["']([^"']+)["']|\bimport\s*["']([^"']+)["']/g;
  const reached = new Set<string>();
  const nodeImports: string[] = [];
  const visit = (file: string) => {
    if (reached.has(file)) return;
    reached.add(file);
    for (const match of stripComments(Deno.readTextFileSync(`${ROOT}/${file}`)).matchAll(STATIC)) {
      const specifier = match[1] ?? match[2];
      if (specifier.startsWith("node:")) nodeImports.push(`${file} imports ${specifier}`);
      else if (specifier.startsWith("./") || specifier.startsWith("../")) {
        visit(resolve(file, specifier));
      }
    }
  };
  visit("main.ts");
  assert.ok(reached.has("lib/http/server.ts") && reached.has("routes/_app.ts"), "the scan follows");
  assert.deepEqual(nodeImports, []);
});
