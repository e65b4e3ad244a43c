/**
 * The state file: the last event id done, so a restart resumes with `lastEventId` and loses
 * nothing. It records the server it came from, and by default lives in the user's state folder
 * (`$XDG_STATE_HOME/websocks/`, else `~/.local/state/websocks/`), one file per server, endpoint
 * and filter set: two forwarders, or one forwarder pointed at two servers, never resume from
 * each other's ids.
 */
import { createHash } from "node:crypto";
import { z } from "zod";

const stateSchema = z.object({
  lastEventId: z.string().min(1).nullable(),
  /** Absent in files written before it was recorded. */
  server: z.string().optional(),
});

/** What a state file belongs to: the server and the filters sent to it. */
export interface StateScope {
  url: string;
  endpoints: string[];
  events: string[];
}

/** A server URL as state files compare it: origin and path, no trailing slash, no query. */
export function serverKey(url: string): string {
  const parsed = new URL(url);
  return parsed.origin + parsed.pathname.replace(/\/+$/, "");
}

/** The folder state files go in by default, or null when neither variable says where home is. */
export function stateDir(env: Record<string, string | undefined>): string | null {
  const xdg = env.XDG_STATE_HOME;
  // The XDG spec: a relative path is invalid and must be ignored.
  if (xdg && xdg.startsWith("/")) return `${xdg.replace(/\/+$/, "")}/websocks`;
  const home = env.HOME || env.USERPROFILE;
  return home ? `${home.replace(/[\\/]+$/, "")}/.local/state/websocks` : null;
}

/**
 * The default state file for a scope: a readable name (server host, endpoints) and a short hash
 * of the server and the filter set, in `stateDir`; null when there is no home to put it in.
 */
export function defaultStateFile(
  scope: StateScope,
  env: Record<string, string | undefined>,
): string | null {
  const dir = stateDir(env);
  if (dir === null) return null;
  const sorted = (list: string[]) => [...new Set(list)].sort();
  const hash = createHash("sha256")
    .update(JSON.stringify([serverKey(scope.url), sorted(scope.endpoints), sorted(scope.events)]))
    .digest("hex")
    .slice(0, 12);
  const readable = [new URL(scope.url).host, ...sorted(scope.endpoints)].join("-")
    .replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80);
  return `${dir}/${readable}-${hash}.json`;
}

/**
 * The last event id done, or null when there is no state yet. A file recorded for another
 * server is refused (an error saying so), never used.
 */
export async function readState(file: string, server: string): Promise<string | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  const parsed = stateSchema.safeParse(
    (() => {
      try {
        return JSON.parse(text);
      } catch {
        return null;
      }
    })(),
  );
  if (!parsed.success) throw new Error(`state file ${file} is not valid; delete it to start over`);
  const recorded = parsed.data.server;
  if (recorded !== undefined && recorded !== serverKey(server)) {
    throw new Error(
      `state file ${file} belongs to ${recorded}, not ${serverKey(server)}; ` +
        "give another --state (or none, for the default one per server)",
    );
  }
  return parsed.data.lastEventId;
}

/** Creates the state file's folder (private to the user) if it is missing. */
export async function prepareStateDir(file: string): Promise<void> {
  const slash = file.lastIndexOf("/");
  if (slash <= 0) return;
  await Deno.mkdir(file.slice(0, slash), { recursive: true, mode: 0o700 });
}

/** Records the last event id done; temp file + rename, so a crash never leaves half a file. */
export async function writeState(file: string, server: string, lastEventId: string): Promise<void> {
  const temp = `${file}.${Deno.pid}.tmp`;
  const text = JSON.stringify({
    server: serverKey(server),
    lastEventId,
    updatedAt: new Date().toISOString(),
  }) + "\n";
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, file);
}
