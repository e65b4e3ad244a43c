/**
 * Publish/subscribe between whoever accepts a webhook and whoever holds the user's connections.
 *
 * Subscribers in this isolate hear a publish synchronously, so a live send costs microseconds.
 * Transports carry each message further: `broadcastTransport` to the other isolates of this
 * process over a BroadcastChannel, the KV writer's Worker ports (cluster.ts) for committed
 * events, and `kvTransport` (broker_kv.ts) to other instances through the shared KV store.
 * Which transports run is decided once at start, from `WORKERS` and `BROKER`.
 */
import { type LiveEvent, liveEvent } from "../log/envelope_json.ts";
import type { ClientInfo } from "../shared/wire.ts";
import { log } from "../observe/log.ts";

/**
 * What a client answers for the sender in respond mode (respond_waiters.ts). Defined here
 * because the broker carries it between isolates, and respond_waiters.ts uses the broker.
 */
export interface ClientResponse {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
}

/** What travels through the broker. */
export type BrokerMessage =
  /** Events just committed; `after` is the user's newest id before them (null: not known). */
  | { kind: "events"; userId: string; events: LiveEvent[]; after?: string | null }
  /** One stored event resent on request, past the connections' duplicate filter. */
  | { kind: "resend"; userId: string; event: LiveEvent }
  /** A token was revoked or a session ended: close the connections it authenticated. */
  | { kind: "credential_revoked"; userId: string; credential: string }
  /** The account was deleted: close every connection it holds, whatever opened it. */
  | { kind: "user_deleted"; userId: string }
  | { kind: "endpoint_changed"; slug: string }
  /** A notice for the user's clients: SSE gets a named event, WebSocket clients that asked. */
  | { kind: "notice"; userId: string; name: string; json: string }
  /**
   * A client's answer in respond mode, for whichever isolate holds the waiting sender; `userId`
   * is the user whose connection answered, which must be the event's owner.
   */
  | { kind: "response"; id: string; userId: string; response: ClientResponse }
  /** A consumer group's member acked `id` (groups.ts): its isolate sends it the next event. */
  | { kind: "group_ack"; userId: string; name: string; connectionId: string; id: string }
  /** Who is connected for `userId`? Every isolate holding connections answers `origin`. */
  | {
    kind: "clients_query";
    queryId: string;
    userId: string;
    origin: string;
    /**
     * Only clients limited to these endpoint ids; absent: all. Askers no longer send it (they
     * filter the answers); instances still answer it during a rolling deploy.
     */
    within?: string[];
  }
  | {
    kind: "clients_answer";
    queryId: string;
    origin: string;
    clients: ClientInfo[];
    /**
     * Beside each client, the endpoint ids it is limited to (null: none), so the asker keeps
     * what a limited token may see. Absent in answers of instances from before it.
     */
    limits?: (string[] | null)[];
  };

/** A publish/subscribe hub. */
export interface Broker {
  /** This isolate's id; questions name it so answers find their way back. */
  readonly origin: string;
  /** This isolate's subscribers hear it first, then every transport carries it further. */
  publish(message: BrokerMessage): void;
  /** Registers a listener and returns the function that removes it. */
  subscribe(listener: (message: BrokerMessage) => void): () => void;
  /** How many other isolates or instances answer questions; null when it cannot be known. */
  peers(): number | null;
  /** Asks transports that carry events per user to follow `userId`; returns the release. */
  follow(userId: string): () => void;
  /** Stops the transports. */
  close(): void;
}

/** One way messages leave and enter this isolate. */
export interface Transport {
  send(message: BrokerMessage): void;
  /** Starts receiving; `hear` hands a message to this isolate's subscribers only. */
  start(hear: (message: BrokerMessage) => void): void;
  /**
   * Sees every message this isolate's subscribers hear, whichever way it came, before they do.
   * True holds it back: the transport will deliver its content itself, in order.
   */
  observe?(message: BrokerMessage): boolean;
  follow?(userId: string): () => void;
  peers(): number | null;
  close(): void;
}

/** Creates a broker; with no transports it is in-process only. */
export function createBroker(options: { transports?: Transport[] } = {}): Broker {
  const transports = options.transports ?? [];
  const listeners = new Set<(message: BrokerMessage) => void>();
  const hear = (message: BrokerMessage) => {
    let held = false;
    for (const transport of transports) held = transport.observe?.(message) === true || held;
    if (held) return;
    for (const listener of listeners) {
      try {
        listener(message);
      } catch (error) {
        log.error("broker listener failed", error);
      }
    }
  };
  for (const transport of transports) transport.start(hear);
  return {
    origin: crypto.randomUUID(),
    publish(message) {
      hear(message);
      for (const transport of transports) transport.send(message);
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    peers() {
      let total = 0;
      for (const transport of transports) {
        const peers = transport.peers();
        if (peers === null) return null;
        total += peers;
      }
      return total;
    },
    follow(userId) {
      const releases = transports.map((transport) => transport.follow?.(userId));
      return () => releases.forEach((release) => release?.());
    },
    close() {
      for (const transport of transports) transport.close();
      listeners.clear();
    },
  };
}

/** A message in structured-clone form: live events lose their cached SSE frame function. */
export type WireMessage = Record<string, unknown> & { kind: BrokerMessage["kind"] };

/** A live event as plain data: a large one is plain already (it refers to its chunks). */
const wireEvent = (event: LiveEvent) => {
  if (event.large) return event;
  const { id, userId, json, endpoint, endpointId, method, path, eventType } = event;
  return { id, userId, json, endpoint, endpointId, method, path, eventType };
};
const fromWireEvent = (event: LiveEvent) => event.large ? event : liveEvent(event);

/** Turns a message into plain data for postMessage or KV. */
export function toWire(message: BrokerMessage): WireMessage {
  if (message.kind === "events") return { ...message, events: message.events.map(wireEvent) };
  if (message.kind === "resend") return { ...message, event: wireEvent(message.event) };
  return message;
}

/** The inverse of `toWire`. */
export function fromWire(wire: WireMessage): BrokerMessage {
  const message = wire as unknown as BrokerMessage;
  if (message.kind === "events") return { ...message, events: message.events.map(fromWireEvent) };
  if (message.kind === "resend") return { ...message, event: fromWireEvent(message.event) };
  return message;
}

/**
 * The isolates of one process, over a BroadcastChannel (which never echoes to its sender).
 * `peers` is the number of other isolates that hold connections and answer questions;
 * `receiveOnly` listens without sending, for an isolate that reaches the others another way.
 */
export function broadcastTransport(
  options: { channel: string; peers: number; receiveOnly?: boolean },
): Transport {
  const channel = new BroadcastChannel(options.channel);
  return {
    send(message) {
      if (!options.receiveOnly) channel.postMessage(toWire(message));
    },
    start(hear) {
      channel.onmessage = (event: MessageEvent<WireMessage>) => hear(fromWire(event.data));
    },
    peers: () => options.peers,
    close() {
      channel.close();
    },
  };
}
