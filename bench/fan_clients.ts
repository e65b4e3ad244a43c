/**
 * Fan-out clients in their own process, for part "fanrate": `count` lean WebSockets (raw TCP,
 * bench/clients.ts) that read the `seq` and send time of every webhook, count repeats, and keep
 * per `seq` the arrival at the last of them. Prints `READY <opened> <failed>` once connected,
 * `PROGRESS <deliveries>` four times a second, and on SIGTERM one `RESULT {json}` line, then exits.
 *
 * Usage: deno run -A bench/fan_clients.ts '{"port":…,"path":"/?token=…","count":500,"bucketMs":100}'
 */
import { leanWs, openMany, readStamp } from "./clients.ts";
import { wallClock } from "./clock.ts";

/** What the driver asks of this process. */
export interface FanClientsOptions {
  port: number;
  path: string;
  count: number;
  /** Width of the buckets that count arrivals over time, ms. */
  bucketMs: number;
}

/** What this process reports. */
export interface FanClientsResult {
  opened: number;
  failed: number;
  firstError?: string;
  /** Messages that carried a stamp, repeats included. */
  deliveries: number;
  repeats: number;
  /** Per client, distinct webhooks received. */
  distinctPerClient: number[];
  /** seq → [send time, arrival at the last client of this process]. */
  last: Record<number, [number, number]>;
  /** Arrivals per bucket: bucket start (wall clock, ms) → count. */
  buckets: Record<number, number>;
}

const decoder = new TextDecoder();
const STAMP = '{"t":';

/**
 * The stamp of an envelope without decoding all of it: the body `{"t":` is the only `{` followed
 * by `"t":` (the envelope starts `{"type"`), and the stamp fits in the 64 bytes after it.
 */
function stampOf(message: Uint8Array): ReturnType<typeof readStamp> {
  for (let at = message.indexOf(0x7b); at !== -1; at = message.indexOf(0x7b, at + 1)) {
    if (
      message[at + 1] === 0x22 && message[at + 2] === 0x74 && message[at + 3] === 0x22 &&
      message[at + 4] === 0x3a
    ) {
      return readStamp(decoder.decode(message.subarray(at, at + 64)), STAMP);
    }
  }
  return null;
}

if (import.meta.main) {
  const options = JSON.parse(Deno.args[0]) as FanClientsOptions;
  const last = new Map<number, [number, number]>();
  const buckets = new Map<number, number>();
  const seen: Set<number>[] = [];
  let deliveries = 0;
  let repeats = 0;
  const opened = await openMany(options.count, {
    parallel: 50,
    deadline: Date.now() + 60_000,
    open: (i) => {
      const mine = new Set<number>();
      seen[i] = mine;
      return leanWs({
        port: options.port,
        path: options.path,
        keepPayload: true,
        onMessage(payload) {
          const now = wallClock();
          const stamp = payload ? stampOf(payload) : null;
          if (!stamp) return;
          deliveries++;
          if (mine.has(stamp.seq)) repeats++;
          else mine.add(stamp.seq);
          const entry = last.get(stamp.seq);
          if (!entry) last.set(stamp.seq, [stamp.t, now]);
          else if (now > entry[1]) entry[1] = now;
          const bucket = Math.floor(now / options.bucketMs) * options.bucketMs;
          buckets.set(bucket, (buckets.get(bucket) ?? 0) + 1);
        },
      });
    },
  });
  console.log(`READY ${opened.opened.length} ${opened.failed}`);
  // So the driver can wait until every delivery has arrived before it asks for the result.
  setInterval(() => console.log(`PROGRESS ${deliveries}`), 250);
  Deno.addSignalListener("SIGTERM", () => {
    for (const client of opened.opened) client.close();
    const result: FanClientsResult = {
      opened: opened.opened.length,
      failed: opened.failed,
      firstError: opened.firstError,
      deliveries,
      repeats,
      distinctPerClient: seen.filter(Boolean).map((set) => set.size),
      last: Object.fromEntries(last),
      buckets: Object.fromEntries(buckets),
    };
    console.log(`RESULT ${JSON.stringify(result)}`);
    Deno.exit(0);
  });
}
