/**
 * File paths from file URLs, and the folder of a path, without `node:path` or `node:url`: the
 * first `node:` module a process imports loads Deno's Node layer, 15–50 ms of every start
 * (bench part `cold`), and the server needs nothing else from it on its start path.
 */

/** The local path of a `file:` URL (`fileURLToPath` of node:url, for the paths this server uses). */
export function pathOf(url: URL | string): string {
  const parsed = typeof url === "string" ? new URL(url) : url;
  if (parsed.protocol !== "file:") throw new TypeError(`Not a file URL: ${parsed.href}`);
  const path = decodeURIComponent(parsed.pathname);
  // Windows: file:///C:/x is C:/x, and a host names a UNC share.
  if (Deno.build.os === "windows") {
    const local = /^\/[A-Za-z]:/.test(path) ? path.slice(1) : path;
    return (parsed.hostname ? `//${parsed.hostname}${local}` : local).replaceAll("/", "\\");
  }
  return path;
}

/** The folder holding `path` ("." for a bare name), as node:path's `dirname`. */
export function parentOf(path: string): string {
  const trimmed = path.replace(/[\\/]+$/, "");
  const cut = Math.max(trimmed.lastIndexOf("/"), trimmed.lastIndexOf("\\"));
  if (cut < 0) return ".";
  return cut === 0 ? trimmed[0] : trimmed.slice(0, cut);
}

/** `name` in folder `dir`, with one separator between them. */
export function joinPath(dir: string, name: string): string {
  return /[\\/]$/.test(dir) ? dir + name : `${dir}/${name}`;
}
