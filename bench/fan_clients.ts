/**
 * Fan-out clients in their own process, for part "fanrate": `count` lean WebSockets (raw TCP,
 * bench/clients.ts) that read the `seq` and send time of every webhook, count repeats, and keep
 * per `seq` the arrival at the last of them. Prints `READY <opened> <failed>` once connected,
 * `PROGRESS <deliveries>` four times a second, and on SIGTERM one `RESULT {json}` line, then exits.
 *
 * Usage: deno run -A bench/fan_clients.ts '{"port":…,"path":"/?token=…","count":500,"bucketMs":100}'
 */
import { leanWs, openMany } from "./clients.ts";
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
  /** Their bytes: what the floor's message is sized by (bench/ws_send_floor.ts). */
  messageBytes: number;
  repeats: number;
  /** Per client, distinct webhooks received. */
  distinctPerClient: number[];
  /** seq → [send time, arrival at the last client of this process]. */
  last: Record<number, [number, number]>;
  /** Arrivals per bucket: bucket start (wall clock, ms) → count. */
  buckets: Record<number, number>;
}

/** Reads the decimal number (digits, an optional fraction) at `at`; returns it and where it ends. */
function numberAt(bytes: Uint8Array, at: number): [number, number] {
  let whole = 0;
  while (bytes[at] >= 0x30 && bytes[at] <= 0x39) whole = whole * 10 + bytes[at++] - 0x30;
  if (bytes[at] !== 0x2e) return [whole, at];
  let fraction = 0;
  let scale = 1;
  for (at++; bytes[at] >= 0x30 && bytes[at] <= 0x39; at++) {
    fraction = fraction * 10 + bytes[at] - 0x30;
    scale *= 10;
  }
  return [whole + fraction / scale, at];
}

/**
 * The stamp of an envelope read from its bytes, neither decoded nor copied: the body
 * `{"t":<t>,"w":<w>,"seq":<seq>,` is the only `{` followed by `"t":` (the envelope starts
 * `{"type"`). No decode and no string per message: the clients share the two cores with the
 * server.
 */
function stampOf(message: Uint8Array): { t: number; w: number; seq: number } | null {
  for (let at = message.indexOf(0x7b); at !== -1; at = message.indexOf(0x7b, at + 1)) {
    if (
      message[at + 1] === 0x22 && message[at + 2] === 0x74 && message[at + 3] === 0x22 &&
      message[at + 4] === 0x3a
    ) {
      const [t, tEnd] = numberAt(message, at + 5);
      // `,"w":1,"seq":`
      const w = message[tEnd + 5] - 0x30;
      const [seq] = numberAt(message, tEnd + 13);
      return { t, w, seq };
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
  let messageBytes = 0;
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
          messageBytes += payload?.byteLength ?? 0;
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
      messageBytes,
      repeats,
      distinctPerClient: seen.filter(Boolean).map((set) => set.size),
      last: Object.fromEntries(last),
      buckets: Object.fromEntries(buckets),
    };
    console.log(`RESULT ${JSON.stringify(result)}`);
    Deno.exit(0);
  });
}
