/**
 * Live client sessions (SSE and WebSocket) and the replay hand-over.
 *
 * A connection subscribes before it reads the log: live events that arrive while the log is
 * being replayed wait in a bounded buffer and are flushed afterwards, skipping every id at or
 * below the last one sent. Ids sort by arrival, so that one comparison rules out both gaps and
 * duplicates, including repeats from the queue's at-least-once fallback.
 */
import type { Broker } from "./broker.ts";
import { eventsAfter, type LiveEvent } from "./events.ts";

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
  closed: boolean;
  sink: Sink;
  replaying: boolean;
  buffer: LiveEvent[];
  chain: Promise<void>;
}

/** Close codes (WebSocket's; SSE streams just end). */
export const CLOSE = {
  shutdown: { code: 1001, reason: "Server is shutting down; reconnect to resume" },
  revoked: { code: 4001, reason: "Token revoked or session ended" },
  slow: { code: 4008, reason: "Client too slow; reconnect with your last event id to resume" },
} as const;

/** The registry of live connections for one process. */
export interface Connections {
  /** Registers a connection; when `after` is given (or `replayAll`) the log is replayed first. */
  open(options: {
    userId: string;
    credential: string;
    transport: "sse" | "ws";
    sink: Sink;
    after?: string | null;
  }): Connection;
  /** Sends the retained events after `after` (all when null), then resumes live delivery. */
  replay(connection: Connection, after: string | null): Promise<number>;
  close(connection: Connection, close: { code: number; reason: string }): void;
  /** Forgets a connection whose transport already ended. */
  remove(connection: Connection): void;
  countFor(userId: string): number;
  /** The user's connected clients in this process. */
  listFor(userId: string): Connection[];
  closeAll(close: { code: number; reason: string }): void;
  /** Stops the heartbeat timer and the broker subscription. */
  stop(): void;
}

/** Live events a connection may hold back while it replays the log. */
const MAX_BUFFERED_WHILE_REPLAYING = 10_000;
const REPLAY_WAIT_MS = 5;

/** Creates the registry; it subscribes to the broker and runs one heartbeat timer for all. */
export function createConnections(
  kv: Deno.Kv,
  options: { broker: Broker; heartbeatMs: number; slowConsumerBytes: number },
): Connections {
  const byUser = new Map<string, Set<Connection>>();
  /** Releases of the broker's per-user follow, held while the user has connections here. */
  const follows = new Map<string, () => void>();

  function deliver(connection: Connection, event: LiveEvent): void {
    if (connection.closed) return;
    if (connection.lastSentId !== null && event.id <= connection.lastSentId) return;
    // Judge before queueing, so one event larger than the limit still reaches a healthy client.
    if (connection.sink.backlog() > options.slowConsumerBytes) return close(connection, CLOSE.slow);
    connection.lastSentId = event.id;
    connection.sink.send(event);
  }

  function close(connection: Connection, reason: { code: number; reason: string }): void {
    if (connection.closed) return;
    connection.closed = true;
    remove(connection);
    connection.sink.close(reason.code, reason.reason);
  }

  function remove(connection: Connection): void {
    connection.closed = true;
    const set = byUser.get(connection.userId);
    if (!set) return;
    set.delete(connection);
    if (set.size === 0) {
      byUser.delete(connection.userId);
      follows.get(connection.userId)?.();
      follows.delete(connection.userId);
    }
  }

  async function runReplay(connection: Connection, after: string | null): Promise<number> {
    connection.replaying = true;
    connection.lastSentId = after;
    let count = 0;
    try {
      for await (const event of eventsAfter(kv, { userId: connection.userId, after })) {
        // Let a slow reader drain instead of piling the whole log into memory.
        while (!connection.closed && connection.sink.backlog() > options.slowConsumerBytes / 2) {
          await new Promise((resolve) => setTimeout(resolve, REPLAY_WAIT_MS));
        }
        if (connection.closed) return count;
        deliver(connection, event);
        count++;
      }
    } finally {
      const buffered = connection.buffer;
      connection.buffer = [];
      connection.replaying = false;
      for (const event of buffered) deliver(connection, event);
    }
    return count;
  }

  const unsubscribe = options.broker.subscribe((message) => {
    if (message.kind === "events") {
      const set = byUser.get(message.userId);
      if (!set) return;
      for (const connection of set) {
        if (connection.replaying) {
          connection.buffer.push(...message.events);
          if (connection.buffer.length > MAX_BUFFERED_WHILE_REPLAYING) {
            close(connection, CLOSE.slow);
          }
          continue;
        }
        for (const event of message.events) deliver(connection, event);
      }
    } else if (message.kind === "notice") {
      for (const connection of byUser.get(message.userId) ?? []) {
        connection.sink.notice(message.name, message.json);
      }
    } else if (message.kind === "redeliver") {
      for (const connection of byUser.get(message.userId) ?? []) {
        if (connection.sink.backlog() > options.slowConsumerBytes) close(connection, CLOSE.slow);
        else connection.sink.send(message.event);
      }
    } else if (message.kind === "credential_revoked") {
      for (const connection of byUser.get(message.userId) ?? []) {
        if (connection.credential === message.credential) close(connection, CLOSE.revoked);
      }
    }
  });

  const heartbeat = setInterval(() => {
    for (const set of byUser.values()) {
      for (const connection of set) connection.sink.heartbeat();
    }
  }, options.heartbeatMs);

  const registry: Connections = {
    open(openOptions) {
      const connection: Connection = {
        id: crypto.randomUUID(),
        userId: openOptions.userId,
        credential: openOptions.credential,
        transport: openOptions.transport,
        connectedAt: new Date().toISOString(),
        lastSeenAt: new Date().toISOString(),
        lastSentId: null,
        closed: false,
        sink: openOptions.sink,
        replaying: false,
        buffer: [],
        chain: Promise.resolve(),
      };
      let set = byUser.get(connection.userId);
      if (!set) {
        byUser.set(connection.userId, set = new Set());
        follows.set(connection.userId, options.broker.follow(connection.userId));
      }
      set.add(connection);
      if (openOptions.after !== undefined) {
        registry.replay(connection, openOptions.after).catch((error) => {
          console.error("replay failed", error);
          close(connection, { code: 1011, reason: "Replay failed; reconnect to retry" });
        });
      }
      return connection;
    },
    replay(connection, after) {
      // Mark as replaying at once so live events published before the read starts are held.
      connection.replaying = true;
      const run = connection.chain.then(() => runReplay(connection, after));
      connection.chain = run.then(() => {}, () => {});
      return run;
    },
    close,
    remove,
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
    stop() {
      clearInterval(heartbeat);
      unsubscribe();
      for (const release of follows.values()) release();
      follows.clear();
    },
  };
  return registry;
}
