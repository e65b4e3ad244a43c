/**
 * Keeps a full disk from ending the process, and ingest from eating the last of it.
 *
 * Deno's SQLite KV thread panics, taking the process with it, when it cannot delete expired
 * keys (`KV collect expired failed: database or disk is full`), and it deletes them on its own
 * schedule. So a reserve file is held next to a KV file. When the disk fills (free space under
 * MIN_FREE_BYTES, or a write failed for lack of it), the reserve is released for SQLite's own
 * housekeeping, and ingest answers 503 without writing, so senders do not use that room up.
 * Once free space is back above the reserve, the reserve is taken again and ingest resumes, on
 * its own; so it does when the reserve is found whole again (another run's guard wrote it) with
 * the floor free beside it. A store that is not a local file (`:memory:`, a KV server, Deno Deploy) is not
 * guarded: its errors still become 503s one request at a time.
 */
import type { StatsFs } from "node:fs";
import { storageUnavailableReason } from "./kv.ts";
import { log } from "../observe/log.ts";
import { parentOf } from "../runtime/paths.ts";
import { onFirstUse } from "../runtime/first_use.ts";

/** Below this much free space the disk counts as full. */
const MIN_FREE_BYTES = 1024 * 1024;
const CHECK_MS = 1000;
const WRITE_CHUNK = new Uint8Array(1024 * 1024);

/** node:fs, Deno's only way to free space; a start with its reserve in place needs none. */
const nodeFs = onFirstUse(() => import("node:fs"));

/**
 * statfs(2) of `path`. node:fs/promises has no statfs before Deno 2.6 (the LTS, 2.5, lacks it);
 * node:fs's callback form exists in every supported version.
 */
async function statfs(path: string): Promise<StatsFs> {
  const fs = await nodeFs();
  return await new Promise((resolve, reject) =>
    fs.statfs(path, (error, stats) => error ? reject(error) : resolve(stats))
  );
}

/** Whether the store may be written to now, as far as free space goes. */
export interface StorageGuard {
  /** Null while writes may go ahead; else why not ("disk full"). */
  unavailable(): string | null;
  /**
   * Null once free space has been read since the start; else the first reading, begun now if
   * it was not yet. Writers wait for it, so nothing is written before the guard knows.
   */
  firstCheck(): Promise<void> | null;
  /** Reports a failed write; a full disk holds writes back until space returns. */
  report(error: unknown): void;
  /** Stops watching, once a check under way has finished. */
  stop(): Promise<void>;
}

/** Starts guarding the KV file at `kvPath`; a no-op guard for any other kind of store. */
export async function startStorageGuard(
  options: { kvPath: string; reserveBytes: number },
): Promise<StorageGuard> {
  const { kvPath, reserveBytes } = options;
  if (kvPath === ":memory:" || kvPath === "default" || /^https?:\/\//.test(kvPath)) {
    return {
      unavailable: () => null,
      firstCheck: () => null,
      report() {},
      stop: () => Promise.resolve(),
    };
  }
  const reservePath = `${kvPath}.reserve`;
  const folder = parentOf(kvPath);
  let down: string | null = null;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let checking: Promise<void> = Promise.resolve();
  /** goDown's release of the reserve while it runs: the file on disk is on its way out. */
  let releasing: Promise<void> | null = null;

  /** Free bytes, and the reserve this disk allows: at most a quarter of it, so it can return. */
  async function space(): Promise<{ free: number; reserve: number }> {
    const stats = await statfs(folder);
    const total = Number(stats.blocks) * Number(stats.bsize);
    return {
      free: Number(stats.bavail) * Number(stats.bsize),
      reserve: Math.min(reserveBytes, Math.floor(total / 4)),
    };
  }

  /** The reserve file's size; 0 when there is none. */
  async function reserveSize(): Promise<number> {
    try {
      return (await Deno.stat(reservePath)).size;
    } catch {
      return 0;
    }
  }

  async function hasReserve(bytes: number): Promise<boolean> {
    return await reserveSize() >= bytes;
  }

  /**
   * Whether the reserve is whole, or fits with the floor free beside it. Read after `free`: a
   * reserve file not yet whole (another run's guard is writing it, or died writing it) is room
   * too, since takeReserve rewrites it.
   */
  async function reserveFits(free: number, reserve: number): Promise<boolean> {
    const held = await reserveSize();
    return held >= reserve || free + held >= reserve + MIN_FREE_BYTES;
  }

  /** Writes the reserve (real blocks, not a sparse file); false when the disk has no room. */
  async function takeReserve(bytes: number): Promise<boolean> {
    if (bytes === 0 || await hasReserve(bytes)) return true;
    try {
      const file = await Deno.open(reservePath, { create: true, write: true, truncate: true });
      try {
        for (let written = 0; written < bytes; written += WRITE_CHUNK.byteLength) {
          await file.write(
            WRITE_CHUNK.subarray(0, Math.min(WRITE_CHUNK.byteLength, bytes - written)),
          );
        }
        await file.sync();
      } finally {
        file.close();
      }
      return true;
    } catch (error) {
      await Deno.remove(reservePath).catch(() => {});
      if (storageUnavailableReason(error) !== "disk full") throw error;
      return false;
    }
  }

  async function releaseReserve(): Promise<void> {
    await Deno.remove(reservePath).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }

  function goDown(reason: string): void {
    if (down) return;
    down = reason;
    log.warn(
      `storage unavailable (${reason}): ingest answers 503 until space returns; ` +
        "the reserve next to the KV file is released for the store's own upkeep",
    );
    releasing = releaseReserve()
      .catch((error) => log.warn("releasing the storage reserve failed", error))
      .finally(() => releasing = null);
  }

  async function check(): Promise<void> {
    const { free, reserve } = await space();
    if (!down) {
      if (free < MIN_FREE_BYTES) goDown("disk full");
      else if (await reserveFits(free, reserve)) await takeReserve(reserve);
      return;
    }
    // Back once the reserve is whole with the floor free beside it: taken here, or found in
    // place (the next run's guard took it), where waiting for room for a second one would
    // leave ingest down for good.
    const found = releasing === null && await hasReserve(reserve);
    if (
      found ? free >= MIN_FREE_BYTES : releasing === null &&
        await reserveFits(free, reserve) && await takeReserve(reserve)
    ) {
      down = null;
      log.info("storage available again: ingest resumes");
    }
  }

  function schedule(delayMs: number): void {
    if (stopped) return;
    const id = setTimeout(() => {
      checking = check().catch((error) => log.warn("checking free disk space failed", error))
        .finally(() => schedule(CHECK_MS));
    }, delayMs);
    Deno.unrefTimer(id);
    timer = id;
  }

  /**
   * The first reading when the reserve was not whole at the start: down when the disk is full,
   * or when the reserve is gone (released by an earlier run that saw the disk fill, or never
   * written) and cannot be taken back: that room is the store's upkeep margin, and ingest would
   * eat it. Then the reserve is written, and the usual checks follow.
   */
  async function firstReading(): Promise<void> {
    clearTimeout(timer);
    try {
      const start = await space();
      if (start.free < MIN_FREE_BYTES || !await reserveFits(start.free, start.reserve)) {
        goDown("disk full");
      }
    } catch (error) {
      log.warn("reading free disk space failed; the next check tries again", error);
    } finally {
      reading = null;
      schedule(0);
    }
  }

  // With the whole reserve in place, the disk's room is what it guards: start up, and check on
  // the usual schedule rather than while the first requests come in. Else the first reading is
  // taken by the first write, or after CHECK_MS: not on the start path, where loading node:fs
  // for statfs would cost a fresh start ~30 ms before its first answer.
  let reading: Promise<void> | null = null;
  let begin: (() => Promise<void>) | null = null;
  if (await hasReserve(reserveBytes)) {
    schedule(CHECK_MS);
  } else {
    begin = () => {
      begin = null;
      return reading = firstReading();
    };
    timer = setTimeout(() => begin?.(), CHECK_MS);
    Deno.unrefTimer(timer);
  }
  return {
    unavailable: () => down,
    firstCheck: () => reading ?? begin?.() ?? null,
    report(error) {
      if (storageUnavailableReason(error) === "disk full") goDown("disk full");
    },
    async stop() {
      stopped = true;
      begin = null;
      clearTimeout(timer);
      await reading;
      await checking;
    },
  };
}
