/**
 * The broker's transport between instances that share one KV store (Deno Deploy's KV, or a KV
 * server reached with `Deno.openKv(url)`), where no BroadcastChannel spans machines.
 *
 * Events need no message of their own: the ingest commit already moves the user's head key,
 * so an isolate that holds a user's connections watches that key and reads the log after the
 * last id it has. Everything else (revocations, endpoint changes, notices, answers) is written
 * to a short-lived mailbox whose head key every instance watches. A message too large for one
 * KV value (a respond-mode answer of up to a megabyte) is written serialized in parts under
 * its id first, with the same expiry, and its entry names how many there are.
 */
import {
  type BrokerMessage,
  fromWire,
  toWire,
  type Transport,
  type WireMessage,
} from "./broker.ts";
import { CHUNK_BYTES, eventsAfter, getEvent } from "../log/events.ts";
import { idFloor, nextId } from "../store/ids.ts";
import {
  brokerHeadKey,
  brokerMessageKey,
  brokerMessagePartKey,
  brokerMessagePartsPrefix,
  brokerMessagesPrefix,
  eventHeadKey,
} from "../store/kv_keys.ts";
import { log } from "../observe/log.ts";
import { onFirstUse } from "../runtime/first_use.ts";

/** node:v8, for KV's own serialization of messages; most processes never send one. */
const v8 = onFirstUse(() => import("node:v8"));

/** A resent event by reference: its body may exceed a KV value, and the log has it. */
interface ResendRef {
  kind: "resend_ref";
  userId: string;
  id: string;
}

/** A mailbox entry: the message itself, or the number of parts it was written in. */
type MailboxEntry =
  & {
    /** The process that wrote it; its own isolates already heard it over BroadcastChannel. */
    origin: string;
    at: number;
  }
  & ({ message: WireMessage | ResendRef } | { parts: number });

/** How long mailbox entries live, and how far back a reader looks for late commits. */
const MAILBOX_TTL_MS = 60_000;
const MAILBOX_LOOKBACK_MS = 10_000;
/** How long a follow waits for the log head before reading the log from its own millisecond. */
const HEAD_READ_WAIT_MS = 2_000;
/** Serialized messages up to this size go inside their entry, with room for the rest of it. */
const INLINE_MESSAGE_BYTES = 60_000;
/** Parts written per commit, under KV's 800 KiB per-commit limit. */
const PARTS_PER_COMMIT = 12;
/**
 * A larger message is not written (and logged): answers are at most WS_MAX_MESSAGE_BYTES of
 * base64, so only a bug could reach it, and the parts of one message stay bounded.
 */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** What one isolate knows of a followed user's log. */
interface Followed {
  count: number;
  /** The newest id this isolate has heard or read; undefined until the start is known. */
  last: string | null | undefined;
  /** Before the start is known: the lowest `after` of this process's own publishes held. */
  heldFrom?: string;
  refresh: () => void;
  stop: () => void;
}

/**
 * Runs `task` one at a time; a call while it runs schedules exactly one more run. Failures
 * after `stopped()` turns true (KV closing under a read) are expected and not reported.
 */
function serialized(task: () => Promise<void>, stopped: () => boolean): () => void {
  let running = false;
  let again = false;
  const run = () => {
    if (running) {
      again = true;
      return;
    }
    if (stopped()) return;
    running = true;
    task().catch((error) => {
      if (!stopped()) log.error("shared-KV broker read failed", error);
    }).finally(() => {
      running = false;
      if (again) {
        again = false;
        run();
      }
    });
  };
  return run;
}

/** Watches `key` and calls `onValue` with each value until the returned stop is called. */
function watchKey<T>(kv: Deno.Kv, key: Deno.KvKey, onValue: (value: T | null) => void) {
  const reader = kv.watch<[T]>([key]).getReader();
  let stopped = false;
  (async () => {
    while (!stopped) {
      const { value, done } = await reader.read();
      if (done) return;
      onValue(value[0].value);
    }
  })().catch((error) => {
    if (!stopped) log.error("shared-KV broker watch ended", error);
  });
  return () => {
    stopped = true;
    reader.cancel().catch(() => {});
  };
}

/** The shared-KV transport; `processId` names this process in the mailbox. */
export function kvTransport(kv: Deno.Kv, options: { processId: string }): Transport {
  const startedAt = Date.now();
  const seen = new Map<string, number>();
  const followed = new Map<string, Followed>();
  const stops: (() => void)[] = [];
  let hear: (message: BrokerMessage) => void = () => {};
  let closed = false;
  const stopped = () => closed;

  const readMailbox = serialized(async () => {
    const start = brokerMessageKey(idFloor(Date.now() - MAILBOX_LOOKBACK_MS));
    for await (const entry of kv.list<MailboxEntry>({ prefix: brokerMessagesPrefix(), start })) {
      const id = entry.key[1] as string;
      if (seen.has(id)) continue;
      const { origin, at } = entry.value;
      seen.set(id, at);
      if (origin === options.processId || at < startedAt) continue;
      const message = "parts" in entry.value
        ? await readParts(id, entry.value.parts)
        : entry.value.message;
      if (!message) continue;
      if (message.kind === "resend_ref") {
        const { userId } = message;
        const event = await getEvent(kv, { userId, id: message.id });
        if (event) hear({ kind: "resend", userId, event });
      } else {
        hear(fromWire(message));
      }
    }
    const forgetBefore = Date.now() - MAILBOX_TTL_MS;
    for (const [id, at] of seen) if (at < forgetBefore) seen.delete(id);
  }, stopped);

  /** A large message joined from its parts; null when some expired or were never written. */
  async function readParts(id: string, parts: number): Promise<WireMessage | null> {
    const chunks: Uint8Array[] = [];
    for await (const part of kv.list<Uint8Array>({ prefix: brokerMessagePartsPrefix(id) })) {
      if (part.key[2] !== chunks.length) break;
      chunks.push(part.value);
    }
    if (chunks.length !== parts) return null;
    const joined = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.byteLength, 0));
    let offset = 0;
    for (const chunk of chunks) {
      joined.set(chunk, offset);
      offset += chunk.byteLength;
    }
    return (await v8()).deserialize(joined) as WireMessage;
  }

  /** Commits the entry (after its parts, when it has some) and moves the head. */
  async function commit(message: WireMessage | ResendRef): Promise<void> {
    const id = nextId();
    const head = { origin: options.processId, at: Date.now() };
    let entry: MailboxEntry = { ...head, message };
    // Measured as KV will store it (the same V8 serialization), copied out of Node's Buffer pool.
    const serialized = new Uint8Array((await v8()).serialize(message));
    if (serialized.byteLength > INLINE_MESSAGE_BYTES) {
      if (serialized.byteLength > MAX_MESSAGE_BYTES) {
        throw new Error(`${serialized.byteLength} bytes is over ${MAX_MESSAGE_BYTES}`);
      }
      const parts = Math.ceil(serialized.byteLength / CHUNK_BYTES);
      for (let first = 0; first < parts; first += PARTS_PER_COMMIT) {
        const op = kv.atomic();
        for (let n = first; n < Math.min(parts, first + PARTS_PER_COMMIT); n++) {
          const part = serialized.subarray(n * CHUNK_BYTES, (n + 1) * CHUNK_BYTES);
          op.set(brokerMessagePartKey(id, n), part, { expireIn: MAILBOX_TTL_MS });
        }
        await op.commit();
      }
      entry = { ...head, parts };
    }
    await kv.atomic()
      .set(brokerMessageKey(id), entry, { expireIn: MAILBOX_TTL_MS })
      .set(brokerHeadKey(), id)
      .commit();
  }

  function write(message: WireMessage | ResendRef): void {
    commit(message).catch((error) => {
      if (!closed) log.error(`shared-KV broker: writing ${message.kind} failed`, error);
    });
  }

  return {
    send(message) {
      if (message.kind === "events") return;
      if (message.kind === "resend") {
        write({ kind: "resend_ref", userId: message.userId, id: message.event.id });
      } else {
        write(toWire(message));
      }
    },
    start(receive) {
      hear = receive;
      stops.push(watchKey(kv, brokerHeadKey(), () => readMailbox()));
    },
    observe(message) {
      if (message.kind !== "events") return false;
      const state = followed.get(message.userId);
      if (!state || !message.after) return false;
      if (state.last === undefined) {
        // Where the follow starts is not known yet, and another instance may have committed
        // events before these: sent now, these would pass them for good (a connection never
        // goes back to a lower id). Held; the first read delivers both, in order.
        if (state.heldFrom === undefined || message.after < state.heldFrom) {
          state.heldFrom = message.after;
        }
        return true;
      }
      // Our own process published these: when they follow what we had, skip reading them back.
      if (message.after === state.last) {
        const last = message.events.at(-1)?.id;
        if (last) state.last = last;
        return false;
      }
      // Another instance committed events before these that this one has not read yet: its
      // watch lags our own publish. Sent now, these would pass them, and a connection never
      // goes back to a lower id, so they would be lost to it. Hold these; the log read hears
      // both, in order (these are committed already).
      if (state.last === null || message.after > state.last) {
        state.refresh();
        return true;
      }
      return false;
    },
    follow(userId) {
      let state = followed.get(userId);
      if (!state) {
        const created: Followed = {
          count: 0,
          last: undefined,
          refresh: serialized(async () => {
            const events = [];
            for await (const event of eventsAfter(kv, { userId, after: created.last ?? null })) {
              events.push(event);
            }
            if (events.length === 0) return;
            const last = events.at(-1)!.id;
            if (!created.last || last > created.last) created.last = last;
            hear({ kind: "events", userId, events });
          }, stopped),
          stop: () => {},
        };
        // Where the follow starts: the log head read as it begins, or the follow's millisecond
        // (ids carry their commit's) when that is earlier. Not the watch's first value, which a
        // busy process got seconds later: commits made meanwhile, after the client connected,
        // were never heard. The head read alone leaves the time of a read, and this clock alone
        // loses what an instance whose clock runs behind commits meanwhile. Not earlier than
        // both: a client that connects without a last id gets only what comes after.
        const floor = idFloor(Date.now());
        /** Sets the start once: no later than our own publishes held meanwhile, either. */
        const start = (head: string | null) => {
          if (created.last !== undefined) return;
          const at = head !== null && head > floor ? floor : head;
          const from = created.heldFrom;
          created.last = from !== undefined && (at === null || from < at) ? from : at;
          created.refresh();
        };
        kv.get<string>(eventHeadKey(userId)).then((entry) => start(entry.value), (error) => {
          if (!closed) log.error("shared-KV broker: reading a log head failed", error);
        });
        const stopWatch = watchKey<string>(kv, eventHeadKey(userId), (head) => {
          if (created.last === undefined) return;
          if (head !== null && (created.last === null || head > created.last)) {
            created.refresh();
          }
        });
        // A store that does not answer must not hold our own publishes for good: past this wait
        // the log is read from the floor.
        const late = setTimeout(() => start(floor), HEAD_READ_WAIT_MS);
        created.stop = () => {
          clearTimeout(late);
          stopWatch();
        };
        followed.set(userId, state = created);
      }
      state.count++;
      const held = state;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        if (--held.count === 0) {
          held.stop();
          followed.delete(userId);
        }
      };
    },
    peers: () => null,
    close() {
      closed = true;
      for (const stop of stops) stop();
      for (const state of followed.values()) state.stop();
      followed.clear();
    },
  };
}
