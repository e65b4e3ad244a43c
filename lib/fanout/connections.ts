/**
 * Live client sessions (SSE and WebSocket): sending events to them, and the catch-up hand-over.
 *
 * A connection subscribes before it catches up from the log: live events that arrive while it
 * catches up wait in a bounded buffer and are flushed afterwards, skipping every id at or
 * below the last one sent. Ids sort by arrival, so that one comparison rules out both gaps and
 * duplicates, including repeats from the queue's at-least-once fallback.
 *
 * A connection's filter (filters.ts) is asked wherever an event would go to it: live sends,
 * the held-back buffer, resends and catch-up, where it is asked of the stored record before any
 * body is read. It is asked when the event is handed to the transport: changing it (the
 * WebSocket `subscribe` message) applies to what is sent from then on, not to what is queued.
 *
 * A connection that joined a consumer group (`group`) takes no part in any of this: the group's
 * dispatcher (groups.ts) hands it events one at a time through `deliver`, and the broadcast,
 * catch-up and resends skip it.
 *
 * A catch-up reads the log a few packs at a time and only while its client keeps up, so what it
 * holds in memory is bounded by `catchUpBytes` plus one event, whatever the log's size.
 */
import type { Broker } from "./broker.ts";
import { createReadBudget } from "./read_budget.ts";
import { eventsAfter } from "../log/events.ts";
import { heldChars, type LargeEvent, type LiveEvent, wantsAnswer } from "../log/envelope_json.ts";
import { envelopePieces } from "../log/envelope_stream.ts";
import { HttpError } from "../http/http_error.ts";
import { type Filter, matches } from "./filters.ts";
import { countConnected, counters } from "../observe/metrics.ts";
import { log } from "../observe/log.ts";

/** The transport side of a connection: SSE stream or WebSocket. */
export interface Sink {
  /** Queues one event for the client. */
  send(event: LiveEvent): void;
  /** Bytes queued for the client but not yet written. */
  backlog(): number;
  heartbeat(): void;
  /** Sends a notice (`{"type": name, …}`): a named SSE event, or a WebSocket message when asked. */
  notice(name: string, json: string): void;
  /** Ends the transport; `code` follows WebSocket close codes. */
  close(code: number, reason: string): void;
}

/** A connected client. */
export interface Connection {
  id: string;
  userId: string;
  /** What authenticated it (a token id, or a session's credential); revoking it closes us. */
  credential: string;
  transport: "sse" | "ws";
  connectedAt: string;
  /** The last time the client sent anything (WebSocket messages); liveness for the dashboard. */
  lastSeenAt: string;
  lastSentId: string | null;
  /** Which events it receives; null: all of them. */
  filter: Filter | null;
  /** Whether it gets the account's usage notices (its credential has `manage`). */
  seesUsage: boolean;
  closed: boolean;
  sink: Sink;
  /** Reading the log after `lastSentId`: live events wait in `buffer` meanwhile. */
  catchingUp: boolean;
  buffer: LiveEvent[];
  /** Bytes of the envelopes in `buffer`. */
  bufferBytes: number;
  chain: Promise<void>;
  /**
   * WebSocket only: ids sent and not yet acked and answered, with what the client did so far
   * (bits of SENT_FLAGS). Created at the first send, so idle connections pay nothing; holds at
   * most `maxUnacked` ids, forgetting the oldest.
   */
  sent: Map<string, number> | null;
  /**
   * A cursor over `sent` that stays at its oldest id: evicting through one live iterator skips
   * each forgotten entry once, where `sent.keys().next()` per eviction walked every deleted slot
   * before the oldest live one again (~1.5 µs a send at 1000 remembered, issue 15).
   */
  sentOldest: Iterator<string> | null;
  /** The consumer group it is a member of (groups.ts), or null: it gets the broadcast. */
  group: GroupMembership | null;
}

/** A connection's part in a consumer group. */
export interface GroupMembership {
  name: string;
  /** An event not acked this long after it was sent goes to another member. */
  ackTimeoutMs: number;
  /** The one event sent to it and not yet acked, and which delivery attempt it was. */
  inFlight: { id: string; attempt: number } | null;
}

/** What the consumer groups (groups.ts) hear of the registry: members coming and going. */
export interface GroupHooks {
  join(connection: Connection): void;
  leave(connection: Connection): void;
}

const SENT_FLAGS = { acked: 1, answered: 2, wantsAnswer: 4 } as const;

/** Whether `id` was sent to this connection and it has not yet both acked and answered it. */
export function wasSent(connection: Connection, id: string): boolean {
  return connection.sent?.has(id) ?? false;
}

/** Whether the client may still ack (or answer) `id`: it was sent here and not yet given. */
export function replyDue(connection: Connection, id: string, kind: "ack" | "answer"): boolean {
  const flags = connection.sent?.get(id);
  if (flags === undefined) return false;
  return !(flags & (kind === "ack" ? SENT_FLAGS.acked : SENT_FLAGS.answered));
}

/**
 * Records the client's ack or answer of `id`: true the first time for an event sent to this
 * connection, false when it never was (another user's, made up, long forgotten) or this one was
 * already given. An event is forgotten once acked, and answered when it asked for an answer.
 */
export function takeReply(connection: Connection, id: string, kind: "ack" | "answer"): boolean {
  if (!replyDue(connection, id, kind)) return false;
  const now = connection.sent!.get(id)! | (kind === "ack" ? SENT_FLAGS.acked : SENT_FLAGS.answered);
  const done = (now & SENT_FLAGS.acked) &&
    (!(now & SENT_FLAGS.wantsAnswer) || (now & SENT_FLAGS.answered));
  if (done) connection.sent!.delete(id);
  else connection.sent!.set(id, now);
  return true;
}

/**
 * What a large event waiting to be sent counts for in a client's backlog, besides its head and
 * tail: its body is not in memory yet, but a client with dozens of them waiting is not keeping up,
 * and without a weight a catch-up would queue every large event in the log behind the first.
 */
const QUEUED_LARGE_BYTES = 64 * 1024;

/** What a large event waiting behind others counts for in its client's backlog (see above). */
export function queuedLargeBytes(event: LargeEvent): number {
  return heldChars(event) + QUEUED_LARGE_BYTES;
}

/** Close codes (WebSocket's; SSE streams just end). */
export const CLOSE = {
  shutdown: { code: 1001, reason: "Server is shutting down; reconnect to resume" },
  revoked: { code: 4001, reason: "Token revoked or session ended" },
  /** The same code as a revoked credential: a client must not reconnect with it either. */
  deleted: { code: 4001, reason: "Account deleted" },
  slow: { code: 4008, reason: "Client too slow; reconnect with your last event id to resume" },
  /** Its group was deleted while it joined, and the account has no room to make it again. */
  groupDeleted: {
    code: 4004,
    reason: "Consumer group deleted, and the account has its most groups; join another",
  },
} as const;

/** The registry of live connections for one process. */
export interface Connections {
  /**
   * Throws a 429 HttpError when the user, or this token or session, already holds its limit of
   * connections in this isolate. Call it right before `open`, with no await in between.
   */
  admit(userId: string, credential: string): void;
  /** Registers a connection; when `after` is given (null: all) it catches up from the log first. */
  open(options: {
    userId: string;
    credential: string;
    transport: "sse" | "ws";
    sink: Sink;
    after?: string | null;
    filter?: Filter | null;
    /** Joins a consumer group: `after` is then ignored (the group keeps the progress). */
    group?: { name: string; ackTimeoutMs: number } | null;
    /** Whether the credential may see the account's usage (`manage`): quota notices. */
    seesUsage?: boolean;
    /**
     * Whether the credential still stands, read again once the connection is registered: a
     * revocation broadcast between the stream's check and its registration found nothing to
     * close. False closes it as revoked.
     */
    stands?: () => Promise<boolean>;
  }): Connection;
  /**
   * Sends one event to a group member, past the broadcast's ordering check: false when the
   * connection is closed, or was just closed as too slow.
   */
  deliver(connection: Connection, event: LiveEvent): boolean;
  /** Where group members are announced as they open and close (set once, by groups.ts). */
  attachGroups(hooks: GroupHooks): void;
  /** Catches up: sends the retained events after `after` (all when null), then live ones. */
  catchUp(connection: Connection, after: string | null): Promise<number>;
  /**
   * Waits until the account may read `bytes` more of its log. Catch-ups, replays and consumer
   * groups' scans and counts share one budget per account and isolate (read_budget.ts).
   */
  paceRead(userId: string, bytes: number): Promise<void>;
  close(connection: Connection, close: { code: number; reason: string }): void;
  /** Forgets a connection whose transport already ended. */
  remove(connection: Connection): void;
  countFor(userId: string): number;
  /** The user's connected clients in this process. */
  listFor(userId: string): Connection[];
  closeAll(close: { code: number; reason: string }): void;
  /** A large event's envelope in pieces, read from the log as a transport sends it. */
  envelopePieces(event: LargeEvent): AsyncGenerator<string>;
  /** Stops the heartbeat timer and the broker subscription. */
  stop(): void;
}

/** An idle connection's chain and held-back buffer, shared until it needs its own. */
const SETTLED: Promise<void> = Promise.resolve();
const NO_EVENTS: LiveEvent[] = [];

/** Live events a connection may hold back while it catches up (their bytes count too). */
const MAX_BUFFERED_WHILE_CATCHING_UP = 10_000;
/** Log packs (≤ 60 KB each) a catch-up reads from KV at a time. */
const CATCH_UP_BATCH_PACKS = 2;
/** A stalled catch-up checks its client again after this long, doubling up to the maximum. */
const CATCH_UP_WAIT_MS = 5;
const CATCH_UP_MAX_WAIT_MS = 200;

/** Creates the registry; it subscribes to the broker and runs one heartbeat timer for all. */
export function createConnections(
  kv: Deno.Kv,
  options: {
    broker: Broker;
    heartbeatMs: number;
    slowConsumerBytes: number;
    /** See Config.catchUpBytes; defaults to half of `slowConsumerBytes`. */
    catchUpBytes?: number;
    /** See Config.catchUpReadBytesPerSecond; 0 or absent for no limit. */
    catchUpReadBytesPerSecond?: number;
    /** Per token (credential) and per user, in this isolate; 0 or absent for no limit. */
    maxPerCredential?: number;
    maxPerUser?: number;
    /** Ids a WebSocket connection remembers as sent (see `wasSent`). */
    maxUnacked?: number;
  },
): Connections {
  const catchUpBytes = Math.min(
    options.catchUpBytes ?? Infinity,
    Math.floor(options.slowConsumerBytes / 2),
  );
  const maxUnacked = options.maxUnacked ?? 1000;

  const byUser = new Map<string, Set<Connection>>();
  /** Releases of the broker's per-user follow, held while the user has connections here. */
  const follows = new Map<string, () => void>();

  let groups: GroupHooks | null = null;

  /** Sends `event` to one connection: once, in id order, unless the client has fallen behind. */
  function send(connection: Connection, event: LiveEvent): void {
    if (connection.closed || connection.group !== null) return;
    if (connection.lastSentId !== null && event.id <= connection.lastSentId) return;
    if (connection.filter !== null && !matches(connection.filter, event)) return;
    // Judge before queueing, so one event larger than the limit still reaches a healthy client.
    if (connection.sink.backlog() > options.slowConsumerBytes) return close(connection, CLOSE.slow);
    connection.lastSentId = event.id;
    connection.sink.send(event);
    counters.deliveries++;
    remember(connection, event);
  }

  /** Notes a WebSocket send, so the client's ack or answer can be checked against it. */
  function remember(connection: Connection, event: LiveEvent): void {
    if (connection.transport !== "ws") return;
    const sent = connection.sent ??= new Map();
    if (sent.size >= maxUnacked && !sent.has(event.id)) {
      let oldest = (connection.sentOldest ??= sent.keys()).next();
      // An iterator that once reached the end stays there: start a fresh one.
      if (oldest.done) oldest = (connection.sentOldest = sent.keys()).next();
      if (!oldest.done) sent.delete(oldest.value);
    }
    sent.set(event.id, wantsAnswer(event) ? SENT_FLAGS.wantsAnswer : 0);
  }

  function close(connection: Connection, reason: { code: number; reason: string }): void {
    if (connection.closed) return;
    if (reason === CLOSE.slow) counters.slowConsumerCloses++;
    connection.closed = true;
    remove(connection);
    connection.sink.close(reason.code, reason.reason);
  }

  function remove(connection: Connection): void {
    connection.closed = true;
    const set = byUser.get(connection.userId);
    if (!set?.has(connection)) return;
    set.delete(connection);
    countConnected(connection.transport, -1);
    if (connection.group !== null) groups?.leave(connection);
    if (set.size === 0) {
      byUser.delete(connection.userId);
      follows.get(connection.userId)?.();
      follows.delete(connection.userId);
    }
  }

  const readBudget = createReadBudget({ bytesPerSecond: options.catchUpReadBytesPerSecond ?? 0 });

  /** Waits until the account may read `bytes` more of its log (read_budget.ts). */
  async function paceRead(userId: string, bytes: number): Promise<void> {
    let wait: number;
    while ((wait = readBudget.take(userId, bytes)) > 0) {
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  async function runCatchUp(connection: Connection, after: string | null): Promise<number> {
    connection.catchingUp = true;
    connection.lastSentId = after;
    counters.catchUpReads++;
    let count = 0;
    try {
      const events = eventsAfter(kv, {
        userId: connection.userId,
        after,
        batchSize: CATCH_UP_BATCH_PACKS,
        pace: (bytes) => paceRead(connection.userId, bytes),
        // Asked per event, so a filter changed mid-way applies to the rest of the read.
        match: (event) => matches(connection.filter, event),
      });
      for await (const event of events) {
        // Read no further while the client has a budget's worth unread: a client that stops
        // reading then holds `catchUpBytes` and one batch, not the log.
        let wait = CATCH_UP_WAIT_MS;
        while (!connection.closed && connection.sink.backlog() > catchUpBytes) {
          await new Promise((resolve) => setTimeout(resolve, wait));
          wait = Math.min(wait * 2, CATCH_UP_MAX_WAIT_MS);
        }
        if (connection.closed) return count;
        send(connection, event);
        count++;
      }
    } finally {
      const buffered = connection.buffer;
      connection.buffer = NO_EVENTS;
      connection.bufferBytes = 0;
      connection.catchingUp = false;
      for (const event of buffered) send(connection, event);
    }
    return count;
  }

  const unsubscribe = options.broker.subscribe((message) => {
    if (message.kind === "events") {
      const set = byUser.get(message.userId);
      if (!set) return;
      for (const connection of set) {
        if (connection.group !== null) continue;
        if (connection.catchingUp) {
          for (const event of message.events) {
            // Held back only if it would be sent: a narrow filter holds little.
            if (connection.filter !== null && !matches(connection.filter, event)) continue;
            if (connection.buffer === NO_EVENTS) connection.buffer = [];
            connection.buffer.push(event);
            connection.bufferBytes += heldChars(event);
          }
          // Held-back events are queued for the client as much as its backlog is.
          if (
            connection.buffer.length > MAX_BUFFERED_WHILE_CATCHING_UP ||
            connection.bufferBytes + connection.sink.backlog() > options.slowConsumerBytes
          ) {
            close(connection, CLOSE.slow);
          }
          continue;
        }
        for (const event of message.events) send(connection, event);
      }
    } else if (message.kind === "notice") {
      // Notices are about usage, which only `manage` may read (as GET /api/me shows it).
      for (const connection of byUser.get(message.userId) ?? []) {
        if (connection.seesUsage) connection.sink.notice(message.name, message.json);
      }
    } else if (message.kind === "resend") {
      for (const connection of byUser.get(message.userId) ?? []) {
        if (connection.group !== null || !matches(connection.filter, message.event)) continue;
        if (connection.sink.backlog() > options.slowConsumerBytes) close(connection, CLOSE.slow);
        else {
          connection.sink.send(message.event);
          counters.deliveries++;
          remember(connection, message.event);
        }
      }
    } else if (message.kind === "credential_revoked") {
      for (const connection of byUser.get(message.userId) ?? []) {
        if (connection.credential === message.credential) close(connection, CLOSE.revoked);
      }
    } else if (message.kind === "user_deleted") {
      for (const connection of [...(byUser.get(message.userId) ?? [])]) {
        close(connection, CLOSE.deleted);
      }
    }
  });

  const heartbeat = setInterval(() => {
    for (const set of byUser.values()) {
      for (const connection of set) connection.sink.heartbeat();
    }
  }, options.heartbeatMs);

  const registry: Connections = {
    admit(userId, credential) {
      const set = byUser.get(userId);
      if (!set) return;
      const perUser = options.maxPerUser ?? 0;
      if (perUser > 0 && set.size >= perUser) {
        throw new HttpError(
          429,
          `Cannot connect: this account already has ${perUser} open connections ` +
            "(MAX_CONNECTIONS_PER_USER); close one first",
        );
      }
      const perCredential = options.maxPerCredential ?? 0;
      if (perCredential > 0 && set.size >= perCredential) {
        let count = 0;
        for (const connection of set) if (connection.credential === credential) count++;
        if (count >= perCredential) {
          throw new HttpError(
            429,
            `Cannot connect: this token already has ${perCredential} open connections ` +
              "(MAX_CONNECTIONS_PER_TOKEN); close one first",
          );
        }
      }
    },
    open(openOptions) {
      const now = new Date().toISOString();
      const connection: Connection = {
        id: crypto.randomUUID(),
        userId: openOptions.userId,
        credential: openOptions.credential,
        transport: openOptions.transport,
        connectedAt: now,
        lastSeenAt: now,
        lastSentId: null,
        filter: openOptions.filter ?? null,
        seesUsage: openOptions.seesUsage ?? false,
        closed: false,
        sink: openOptions.sink,
        catchingUp: false,
        buffer: NO_EVENTS,
        bufferBytes: 0,
        chain: SETTLED,
        sent: null,
        sentOldest: null,
        group: openOptions.group ? { ...openOptions.group, inFlight: null } : null,
      };
      let set = byUser.get(connection.userId);
      if (!set) {
        byUser.set(connection.userId, set = new Set());
        follows.set(connection.userId, options.broker.follow(connection.userId));
      }
      set.add(connection);
      countConnected(connection.transport, 1);
      openOptions.stands?.().then((stands) => {
        if (!stands) close(connection, CLOSE.revoked);
      }, (error) => {
        log.error("checking a stream's credential failed", error, { userId: connection.userId });
        close(connection, { code: 1011, reason: "Checking the credential failed; reconnect" });
      });
      if (connection.group !== null) groups?.join(connection);
      else if (openOptions.after !== undefined) {
        registry.catchUp(connection, openOptions.after).catch((error) => {
          log.error("catching up failed", error, { userId: connection.userId });
          close(connection, { code: 1011, reason: "Catching up failed; reconnect to retry" });
        });
      }
      return connection;
    },
    catchUp(connection, after) {
      // Mark as catching up at once so live events published before the read starts are held.
      connection.catchingUp = true;
      const run = connection.chain.then(() => runCatchUp(connection, after));
      connection.chain = run.then(() => {}, () => {});
      return run;
    },
    close,
    remove,
    deliver(connection, event) {
      if (connection.closed) return false;
      if (connection.sink.backlog() > options.slowConsumerBytes) {
        close(connection, CLOSE.slow);
        return false;
      }
      if (connection.lastSentId === null || event.id > connection.lastSentId) {
        connection.lastSentId = event.id;
      }
      connection.sink.send(event);
      counters.deliveries++;
      remember(connection, event);
      return true;
    },
    paceRead,
    attachGroups(hooks) {
      groups = hooks;
    },
    countFor(userId) {
      return byUser.get(userId)?.size ?? 0;
    },
    listFor(userId) {
      return [...(byUser.get(userId) ?? [])];
    },
    closeAll(reason) {
      for (const set of [...byUser.values()]) {
        for (const connection of [...set]) close(connection, reason);
      }
    },
    envelopePieces: (event) => envelopePieces(kv, event),
    stop() {
      clearInterval(heartbeat);
      unsubscribe();
      for (const release of follows.values()) release();
      follows.clear();
    },
  };
  return registry;
}
