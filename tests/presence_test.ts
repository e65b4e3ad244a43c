/**
 * lib/fanout/presence.ts on its own: two isolates' registries (in-memory KV each) joined by two
 * linked brokers, with fake sinks for their connections.
 */
import assert from "node:assert/strict";
import { type Broker, createBroker } from "../lib/fanout/broker.ts";
import { type Connection, type Connections, createConnections } from "../lib/fanout/connections.ts";
import { createPresence, type Presence } from "../lib/fanout/presence.ts";
import { fakeSink, linkedBrokers } from "./fakes.ts";

const USER = "user-1";

interface Side {
  broker: Broker;
  connections: Connections;
  presence: Presence;
  open(transport?: "sse" | "ws", userId?: string): Connection;
}

/** Two isolates; `answers: false` makes the second one keep silent. */
async function setup(options: { answers?: boolean; brokers?: [Broker, Broker] } = {}) {
  const kv = await Deno.openKv(":memory:");
  const brokers = options.brokers ?? linkedBrokers();
  const sides: Side[] = brokers.map((broker, n) => {
    const connections = createConnections(kv, {
      broker,
      heartbeatMs: 60_000,
      slowConsumerBytes: 1_000_000,
    });
    return {
      broker,
      connections,
      presence: createPresence({
        broker,
        connections,
        answers: n === 1 ? options.answers : undefined,
      }),
      open(transport = "ws", userId = USER) {
        return connections.open({ userId, credential: "token", transport, sink: fakeSink() });
      },
    };
  });
  return {
    here: sides[0],
    there: sides[1],
    [Symbol.dispose]() {
      for (const side of sides) {
        side.presence.stop();
        side.connections.stop();
        side.broker.close();
      }
      kv.close();
    },
  };
}

Deno.test("[presence] list joins this isolate's clients and the other's, oldest first", async () => {
  using t = await setup();
  // The other isolate's client connected first, so it is listed before this one's.
  t.there.open("sse").connectedAt = "2026-01-01T00:00:00.000Z";
  t.here.open("ws").connectedAt = "2026-01-01T00:00:01.000Z";
  t.there.open("ws", "user-2");
  const listed = await t.here.presence.list(USER);
  assert.deepEqual(listed.map((c) => c.transport), ["sse", "ws"]);
  assert.deepEqual(Object.keys(listed[0]).sort(), [
    "connectedAt",
    "id",
    "lastEventId",
    "lastSeenAt",
    "transport",
  ]);
  assert.deepEqual(
    (await t.there.presence.list(USER)).map((c) => c.id),
    listed.map((c) => c.id),
    "both isolates see the same clients",
  );
  assert.deepEqual(await t.here.presence.list("user-3"), []);
});

Deno.test("[presence] anyConnected: here, there, or nowhere", async () => {
  using t = await setup();
  assert.equal(await t.here.presence.anyConnected(USER), false);
  t.there.open();
  assert.equal(await t.here.presence.anyConnected(USER), true);
  t.here.open("sse", "user-2");
  let asked = 0;
  t.there.broker.subscribe((message) => {
    if (message.kind === "clients_query") asked++;
  });
  assert.equal(await t.here.presence.anyConnected("user-2"), true);
  assert.equal(asked, 0, "a client here answers without asking the other isolate");
});

Deno.test("[presence] anyConnected over shared KV waits for a late answer", async () => {
  // Instances sharing KV do not know their peers, and each message is a commit and a watch.
  using t = await setup({ brokers: linkedBrokers({ peers: null, delayMs: 300 }) });
  t.there.open("ws");
  assert.equal(await t.here.presence.anyConnected(USER), true, "a client connected there");
});

Deno.test("[presence] a silent peer costs the wait, not the answer", async () => {
  using t = await setup({ answers: false });
  t.here.open("sse");
  t.there.open("ws");
  const listed = await t.here.presence.list(USER);
  assert.deepEqual(listed.map((c) => c.transport), ["sse"]);
  assert.equal(await t.there.presence.anyConnected(USER), true, "the silent side still asks");
});

Deno.test("[presence] with no peers it answers from this isolate alone", async () => {
  const broker = createBroker();
  const kv = await Deno.openKv(":memory:");
  const connections = createConnections(kv, {
    broker,
    heartbeatMs: 60_000,
    slowConsumerBytes: 1_000_000,
  });
  const presence = createPresence({ broker, connections });
  let asked = 0;
  broker.subscribe((message) => {
    if (message.kind === "clients_query") asked++;
  });
  assert.equal(await presence.anyConnected(USER), false);
  connections.open({ userId: USER, credential: "token", transport: "sse", sink: fakeSink() });
  assert.equal((await presence.list(USER)).length, 1);
  assert.equal(asked, 0);
  presence.stop();
  connections.stop();
  broker.close();
  kv.close();
});
