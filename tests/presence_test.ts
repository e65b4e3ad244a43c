/**
 * lib/fanout/presence.ts on its own: two isolates' registries (in-memory KV each) joined by two
 * linked brokers, with fake sinks for their connections.
 */
import assert from "node:assert/strict";
import { type Broker, createBroker } from "../lib/fanout/broker.ts";
import { type Connection, type Connections, createConnections } from "../lib/fanout/connections.ts";
import { createPresence, type Presence } from "../lib/fanout/presence.ts";
import { fakeSink, linkedBrokers } from "./fakes.ts";
import { waitFor } from "./helpers.ts";
import { kvTransport } from "../lib/fanout/broker_kv.ts";
import { brokerMessagesPrefix } from "../lib/store/kv_keys.ts";

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

Deno.test("[presence] questions about one account at once are asked once", async () => {
  // Each question reaches every isolate (over shared KV: a commit, and one per answer), and an
  // account can send as many API requests as it likes: a burst must not multiply them.
  using t = await setup();
  t.there.open("ws");
  let asked = 0;
  t.there.broker.subscribe((message) => {
    if (message.kind === "clients_query") asked++;
  });
  const lists = await Promise.all(Array.from({ length: 20 }, () => t.here.presence.list(USER)));
  assert.equal(asked, 1, "twenty lists at once, one question");
  assert.ok(lists.every((list) => list.length === 1), "each list has the client there");
  const anys = await Promise.all(
    Array.from({ length: 20 }, () => t.here.presence.anyConnected(USER)),
  );
  assert.equal(asked, 2, "twenty 'anyone there?' at once, one more question");
  assert.ok(anys.every((any) => any));
  assert.equal((await t.here.presence.list(USER)).length, 1, "a later list asks afresh");
  assert.equal(asked, 3);
});

Deno.test("[presence] a limited token's list keeps only clients within its endpoints", async () => {
  using t = await setup();
  const limited = (ids: string[]) => ({
    spec: { endpoint: [], event: [], method: [], path: [] },
    limit: { ids: new Set(ids), slugs: new Set<string>() },
    endpoints: null,
    event: null,
    methods: null,
    paths: null,
  });
  const open = (side: Side, ids: string[] | null) =>
    side.connections.open({
      userId: USER,
      credential: "token",
      transport: "ws",
      sink: fakeSink(),
      filter: ids ? limited(ids) : null,
    }).id;
  const inside = [open(t.here, ["e1"]), open(t.there, ["e1"])];
  open(t.here, ["e1", "e2"]);
  open(t.there, ["e1", "e2"]);
  open(t.here, null);
  open(t.there, null);
  const listed = await t.here.presence.list(USER, ["e1"]);
  assert.deepEqual(listed.map((c) => c.id).sort(), inside.sort());
  assert.equal((await t.here.presence.list(USER)).length, 6, "unlimited, every client");
  assert.equal((await t.here.presence.list(USER, ["e1", "e2"])).length, 4);
});

Deno.test("[presence] over shared KV, an instance without the user's clients writes no answer", async () => {
  // Its empty answer would tell the asker nothing (it waits its fixed time anyway) and cost a
  // KV commit on every instance for every question.
  const kv = await Deno.openKv(":memory:");
  const sides = ["here", "there"].map((processId) => {
    const broker = createBroker({ transports: [kvTransport(kv, { processId })] });
    const connections = createConnections(kv, {
      broker,
      heartbeatMs: 60_000,
      slowConsumerBytes: 1_000_000,
    });
    return { broker, connections, presence: createPresence({ broker, connections }) };
  });
  try {
    const entries = async () =>
      (await Array.fromAsync(kv.list({ prefix: brokerMessagesPrefix() })))
        .length;
    assert.deepEqual(await sides[0].presence.list(USER), []);
    assert.equal(await entries(), 1, "the question alone");
    sides[1].connections.open({
      userId: USER,
      credential: "token",
      transport: "sse",
      sink: fakeSink(),
    });
    assert.equal((await sides[0].presence.list(USER)).length, 1, "an instance with one answers");
    assert.equal(await entries(), 3, "a question and its one answer");
  } finally {
    for (const side of sides) {
      side.presence.stop();
      side.connections.stop();
      side.broker.close();
    }
    kv.close();
  }
});

Deno.test("[presence] 'anyone there?' beside a list that found no one still waits for a late answer", async () => {
  // A list waits 250 ms for answers over shared KV, "anyone there?" up to 2 s: sharing the
  // list's empty answer would tell a respond-mode sender 503 while a client is connected.
  using t = await setup({ brokers: linkedBrokers({ peers: null, delayMs: 300 }) });
  t.there.open("ws");
  const [listed, any] = await Promise.all([
    t.here.presence.list(USER),
    t.here.presence.anyConnected(USER),
  ]);
  assert.equal(listed.length, 0, "the list gave up before the answer came");
  assert.equal(any, true, "a client connected there");
});

Deno.test("[presence] 'anyone there?' does not take a question asked before a client connected for its answer", async () => {
  // A call joined the question being asked; that question had reached the other instance
  // before the client connected there, so its "no" answered a call made after the client was.
  using t = await setup({ brokers: linkedBrokers({ peers: null, delayMs: 100 }) });
  let asked = 0;
  t.there.broker.subscribe((message) => {
    if (message.kind === "clients_query") asked++;
  });
  const first = t.here.presence.anyConnected(USER);
  await waitFor(() => asked === 1, { what: "the first question there" });
  t.there.open("ws");
  assert.equal(await t.here.presence.anyConnected(USER), true, "a client connected there");
  await first;
});
