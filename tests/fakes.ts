/**
 * Test doubles for the fan-out and ingest modules' unit tests: a sink that records what a
 * connection was sent, events written straight into the log, two brokers linked as two isolates
 * would be, a user signed up straight in KV, and what a broker's subscribers hear.
 */
import type { Sink } from "../lib/fanout/connections.ts";
import {
  type Broker,
  createBroker,
  fromWire,
  toWire,
  type Transport,
} from "../lib/fanout/broker.ts";
import { type InlineEvent, type LiveEvent, liveEvent } from "../lib/log/envelope_json.ts";
import type { StoredEvent } from "../lib/log/events.ts";
import { encodePack } from "../lib/log/pack_codec.ts";
import type { IncomingWebhook } from "../lib/intake/group_commit.ts";
import { eventKey } from "../lib/store/kv_keys.ts";
import { nextId } from "../lib/store/ids.ts";
import { signUp } from "../lib/accounts/users.ts";

/** A sink that records everything, with a backlog the test sets. */
export interface FakeSink extends Sink {
  /** Ids of the events sent, in order. */
  sent: string[];
  notices: { name: string; json: string }[];
  heartbeats: number;
  /** How often the connection asked for the backlog. */
  backlogReads: number;
  closed: { code: number; reason: string } | null;
  /** The bytes `backlog()` reports. */
  queued: number;
  /** Called after each send, e.g. to publish while a catch-up runs. */
  onSend?: (event: LiveEvent) => void;
}

/** Creates a recording sink with an empty backlog. */
export function fakeSink(): FakeSink {
  const sink: FakeSink = {
    sent: [],
    notices: [],
    heartbeats: 0,
    backlogReads: 0,
    closed: null,
    queued: 0,
    send(event) {
      sink.sent.push(event.id);
      sink.onSend?.(event);
    },
    backlog() {
      sink.backlogReads++;
      return sink.queued;
    },
    heartbeat() {
      sink.heartbeats++;
    },
    notice(name, json) {
      sink.notices.push({ name, json });
    },
    close(code, reason) {
      sink.closed = { code, reason };
    },
  };
  return sink;
}

/** A live event with a fresh id, as ingest would publish it; `respond` marks respond mode. */
export function makeEvent(
  userId: string,
  options: { pad?: number; respond?: boolean; endpoint?: string } = {},
): InlineEvent {
  const id = nextId();
  const pad = "x".repeat(options.pad ?? 0);
  const json = `{"type":"webhook","id":"${id}","body":"${pad}"${
    options.respond ? ',"respond":true' : ""
  }}`;
  const endpoint = options.endpoint ?? "e";
  return liveEvent({ id, userId, json, endpoint, method: "POST", path: "/", eventType: null });
}

/** What a plain JSON POST to an endpoint's root carries, besides its body. */
const JSON_POST = {
  method: "POST",
  path: "/",
  queryJson: "{}",
  headersJson: "{}",
  contentType: "application/json",
  kind: "json",
} as const;

/** A JSON webhook for `endpoint`, as the ingest route hands it to `createIngest`'s submit. */
export function jsonWebhook(endpoint: IncomingWebhook["endpoint"], text: string): IncomingWebhook {
  return {
    endpoint,
    receivedAt: new Date(),
    ...JSON_POST,
    body: new TextEncoder().encode(text),
    text,
  };
}

/** A stored event of `userId` carrying `body`: a plain JSON POST to the root, `extra` over it. */
export function storedEvent(
  userId: string,
  body: Uint8Array | null,
  extra: Partial<StoredEvent> = {},
): StoredEvent {
  return {
    id: nextId(),
    userId,
    endpointId: "endpoint",
    endpoint: "slug",
    receivedAt: new Date().toISOString(),
    expiresAt: Date.now() + 3_600_000,
    ...JSON_POST,
    size: body?.byteLength ?? 0,
    body,
    blobId: null,
    chunks: 0,
    ...extra,
  };
}

/** Writes `count` events into `userId`'s log, `perPack` to a pack; returns their ids in order. */
export async function storeEvents(
  kv: Deno.Kv,
  userId: string,
  options: {
    count: number;
    perPack?: number;
    endpointOf?: (n: number) => string;
    /** Each body this many random bytes (which do not deflate) instead of its number. */
    bodyBytes?: number;
  },
): Promise<string[]> {
  const perPack = options.perPack ?? 1;
  const body = (n: number) =>
    options.bodyBytes
      ? crypto.getRandomValues(new Uint8Array(options.bodyBytes))
      : new TextEncoder().encode(String(n));
  const events = Array.from(
    { length: options.count },
    (_, n) =>
      storedEvent(userId, body(n), {
        endpoint: options.endpointOf?.(n) ?? "slug",
      }),
  );
  for (let i = 0; i < events.length; i += perPack) {
    const pack = events.slice(i, i + perPack);
    await kv.set(eventKey(userId, pack[0].id), await encodePack(pack));
  }
  return events.map((event) => event.id);
}

/**
 * Two brokers joined as two isolates are: each one's publishes reach the other's subscribers
 * (in structured-clone form, asynchronously), and each counts the other as its one peer. With
 * `peers: null` they are instances sharing KV, which do not know their peers; `delayMs` holds
 * each message that long, as a busy shared store does.
 */
export function linkedBrokers(
  options: { peers?: number | null; delayMs?: number } = {},
): [Broker, Broker] {
  const deliverTo: ((message: ReturnType<typeof fromWire>) => void)[] = [];
  const peers = options.peers === undefined ? 1 : options.peers;
  const transport = (side: 0 | 1): Transport => ({
    send(message) {
      const wire = structuredClone(toWire(message));
      const deliver = () => deliverTo[1 - side]?.(fromWire(wire));
      if (options.delayMs) setTimeout(deliver, options.delayMs);
      else queueMicrotask(deliver);
    },
    start(deliver) {
      deliverTo[side] = deliver;
    },
    peers: () => peers,
    close() {
      delete deliverTo[side];
    },
  });
  return [
    createBroker({ transports: [transport(0)] }),
    createBroker({ transports: [transport(1)] }),
  ];
}

/** A user signed up straight in `kv` (`name` keeps its email unique); its first endpoint. */
export async function userEndpoint(
  kv: Deno.Kv,
  name: string,
  monthlyLimit = 1_000_000,
): Promise<IncomingWebhook["endpoint"]> {
  const { endpoint } = await signUp(kv, {
    email: `${name}-${crypto.randomUUID()}@example.com`,
    password: "correct horse battery",
    monthlyLimit,
  });
  return endpoint;
}

/** The ids of the events `broker`'s subscribers hear, in the order they hear them. */
export function heardEventIds(broker: Broker): string[] {
  const heard: string[] = [];
  broker.subscribe((message) => {
    if (message.kind === "events") heard.push(...message.events.map((event) => event.id));
  });
  return heard;
}
