/**
 * lib/fanout/connections.ts on its own: in-memory KV for the log, a broker with no transports,
 * and fake sinks that record what each connection was sent.
 */
import assert from "node:assert/strict";
import { createReadBudget } from "../lib/fanout/read_budget.ts";
import { createBroker } from "../lib/fanout/broker.ts";
import {
  CLOSE,
  type Connections,
  createConnections,
  replyDue,
  takeReply,
  wasSent,
} from "../lib/fanout/connections.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { compileFilter } from "../lib/fanout/filters.ts";
import { fakeSink, makeEvent, storeEvents } from "./fakes.ts";
import { waitFor } from "./helpers.ts";

const USER = "user-1";

/** A registry over fresh in-memory KV; disposing it stops the registry and closes KV. */
async function setup(options: Partial<Parameters<typeof createConnections>[1]> = {}) {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  const connections: Connections = createConnections(kv, {
    broker,
    heartbeatMs: 60_000,
    slowConsumerBytes: 1_000_000,
    ...options,
  });
  return {
    kv,
    broker,
    connections,
    open(
      sink = fakeSink(),
      more: { credential?: string; transport?: "sse" | "ws"; seesUsage?: boolean } = {},
    ) {
      const connection = connections.open({
        userId: USER,
        credential: more.credential ?? "token-1",
        transport: more.transport ?? "sse",
        sink,
        seesUsage: more.seesUsage ?? true,
      });
      return { connection, sink };
    },
    publish(...events: ReturnType<typeof makeEvent>[]) {
      broker.publish({ kind: "events", userId: USER, events });
    },
    [Symbol.dispose]() {
      connections.stop();
      broker.close();
      kv.close();
    },
  };
}

Deno.test("[connections] live events are sent in order as they are published", async () => {
  using t = await setup();
  const { sink } = t.open();
  const events = [makeEvent(USER), makeEvent(USER), makeEvent(USER)];
  t.publish(events[0]);
  t.publish(events[1], events[2]);
  assert.deepEqual(sink.sent, events.map((e) => e.id));
});

Deno.test("[connections] a catch-up sends the log after the given id, then live events, with no gap or duplicate", async () => {
  using t = await setup();
  const logged = await storeEvents(t.kv, USER, { count: 6, perPack: 2 });
  const { connection, sink } = t.open();
  const live = [makeEvent(USER), makeEvent(USER)];
  // Published while the catch-up runs: the last two log events again (the queue's
  // at-least-once fallback), then two new ones; one more lands in the middle of the read.
  const replayed = await (async () => {
    const running = t.connections.catchUp(connection, logged[1]);
    assert.equal(connection.catchingUp, true);
    t.broker.publish({
      kind: "events",
      userId: USER,
      events: [
        { ...live[0], id: logged[4] },
        { ...live[0], id: logged[5] },
        live[0],
      ],
    });
    sink.onSend = (event) => {
      if (event.id === logged[3]) t.publish(live[1]);
    };
    return await running;
  })();
  assert.equal(replayed, 4);
  assert.equal(connection.catchingUp, false);
  assert.deepEqual(sink.sent, [...logged.slice(2), live[0].id, live[1].id]);
  assert.equal(connection.buffer.length, 0);
  assert.equal(connection.bufferBytes, 0);
  // Afterwards live events flow straight through again, and old ones are still filtered.
  const later = makeEvent(USER);
  t.publish(later, { ...later, id: logged[0] });
  assert.deepEqual(sink.sent.slice(-1), [later.id]);
  assert.equal(sink.sent.length, 7);
});

Deno.test("[connections] opening with after: null catches up on the whole log first", async () => {
  using t = await setup();
  const logged = await storeEvents(t.kv, USER, { count: 3 });
  const sink = fakeSink();
  t.connections.open({ userId: USER, credential: "token-1", transport: "sse", sink, after: null });
  const live = makeEvent(USER);
  t.publish(live);
  await waitFor(() => sink.sent.length === 4, { what: "the log and the live event sent" });
  assert.deepEqual(sink.sent, [...logged, live.id]);
});

Deno.test("[connections] a catch-up pauses while the client has a budget's worth unread", async () => {
  using t = await setup({ slowConsumerBytes: 1000, catchUpBytes: 100 });
  const logged = await storeEvents(t.kv, USER, { count: 4 });
  const { connection, sink } = t.open();
  sink.onSend = () => sink.queued = 500; // the client stops reading after the first event
  const running = t.connections.catchUp(connection, null);
  const readsBefore = sink.backlogReads;
  await waitFor(() => sink.backlogReads > readsBefore + 3, {
    what: "the catch-up checking the stalled client again",
  });
  assert.deepEqual(sink.sent, [logged[0]]);
  sink.onSend = undefined;
  sink.queued = 0; // it reads again
  assert.equal(await running, 4);
  assert.deepEqual(sink.sent, logged);
  assert.equal(sink.closed, null);
});

Deno.test("[connections] a catch-up stops reading when its connection closes", async () => {
  using t = await setup({ slowConsumerBytes: 1000, catchUpBytes: 100 });
  await storeEvents(t.kv, USER, { count: 4 });
  const { connection, sink } = t.open();
  sink.onSend = () => sink.queued = 500;
  const running = t.connections.catchUp(connection, null);
  await waitFor(() => sink.sent.length === 1, { what: "the first event sent" });
  t.connections.close(connection, CLOSE.shutdown);
  assert.equal(await running, 1);
  assert.deepEqual(sink.closed, CLOSE.shutdown);
});

Deno.test("[connections] live events held during a catch-up beyond the byte bound close it as slow", async () => {
  using t = await setup({ slowConsumerBytes: 1000 });
  await storeEvents(t.kv, USER, { count: 2 });
  const { connection, sink } = t.open();
  const running = t.connections.catchUp(connection, null);
  t.publish(makeEvent(USER, { pad: 400 }));
  assert.equal(sink.closed, null, "400 bytes held: within the bound");
  t.publish(makeEvent(USER, { pad: 700 }));
  assert.deepEqual(sink.closed, CLOSE.slow);
  assert.equal(connection.closed, true);
  assert.equal(t.connections.countFor(USER), 0);
  assert.equal(await running, 0);
  assert.deepEqual(sink.sent, []);
});

Deno.test("[connections] the held events' bytes count with the client's backlog", async () => {
  using t = await setup({ slowConsumerBytes: 1000 });
  const { connection, sink } = t.open();
  const running = t.connections.catchUp(connection, null);
  sink.queued = 900;
  t.publish(makeEvent(USER, { pad: 150 }));
  assert.deepEqual(sink.closed, CLOSE.slow);
  await running;
});

Deno.test("[connections] more than 10,000 held events close the catch-up as slow", async () => {
  using t = await setup({ slowConsumerBytes: 100_000_000 });
  const { connection, sink } = t.open();
  const running = t.connections.catchUp(connection, null);
  const events = Array.from({ length: 10_000 }, () => makeEvent(USER));
  t.publish(...events);
  assert.equal(sink.closed, null, "10,000 held: at the bound");
  t.publish(makeEvent(USER));
  assert.deepEqual(sink.closed, CLOSE.slow);
  await running;
});

Deno.test("[connections] a client whose backlog is over the limit is closed as slow, not sent more", async () => {
  using t = await setup({ slowConsumerBytes: 1000 });
  const { sink } = t.open();
  const other = t.open().sink;
  // One event larger than the limit still reaches a healthy client.
  const big = makeEvent(USER, { pad: 5000 });
  t.publish(big);
  assert.deepEqual(sink.sent, [big.id]);
  sink.queued = 1001;
  t.publish(makeEvent(USER));
  assert.deepEqual(sink.sent, [big.id]);
  assert.deepEqual(sink.closed, CLOSE.slow);
  assert.match(sink.closed!.reason, /last event id/);
  assert.equal(other.sent.length, 2, "the other connection is unaffected");
  assert.equal(other.closed, null);
  assert.equal(t.connections.countFor(USER), 1);
});

Deno.test("[connections] a revoked credential closes only its own connections", async () => {
  using t = await setup();
  const a = t.open(fakeSink(), { credential: "token-a" });
  const a2 = t.open(fakeSink(), { credential: "token-a" });
  const b = t.open(fakeSink(), { credential: "token-b" });
  t.broker.publish({ kind: "credential_revoked", userId: USER, credential: "token-a" });
  assert.deepEqual(a.sink.closed, CLOSE.revoked);
  assert.deepEqual(a2.sink.closed, CLOSE.revoked);
  assert.equal(b.sink.closed, null);
  assert.deepEqual(t.connections.listFor(USER).map((c) => c.credential), ["token-b"]);
  // Another user's credential of the same name is not this user's.
  t.broker.publish({ kind: "credential_revoked", userId: "user-2", credential: "token-b" });
  assert.equal(b.sink.closed, null);
});

Deno.test("[connections] notices reach the user's connections that see usage; resends skip the duplicate filter", async () => {
  using t = await setup();
  const { sink } = t.open();
  // A token without `manage` (GET /api/me shows it no usage) gets no usage notice either.
  const { sink: reader } = t.open(fakeSink(), { credential: "token-2", seesUsage: false });
  const event = makeEvent(USER);
  t.publish(event);
  t.broker.publish({ kind: "notice", userId: USER, name: "quota", json: '{"type":"quota"}' });
  t.broker.publish({ kind: "notice", userId: "user-2", name: "quota", json: "{}" });
  assert.deepEqual(sink.notices, [{ name: "quota", json: '{"type":"quota"}' }]);
  assert.deepEqual(reader.notices, []);
  t.broker.publish({ kind: "resend", userId: USER, event });
  assert.deepEqual(sink.sent, [event.id, event.id]);
  sink.queued = 2_000_000;
  t.broker.publish({ kind: "resend", userId: USER, event });
  assert.deepEqual(sink.closed, CLOSE.slow);
});

Deno.test("[connections] the heartbeat timer beats every open connection", async () => {
  using t = await setup({ heartbeatMs: 5 });
  const one = t.open().sink;
  const two = t.open().sink;
  await waitFor(() => one.heartbeats > 0 && two.heartbeats > 0, { what: "a heartbeat on both" });
});

Deno.test("[connections] admit refuses past the per-user and per-credential limits with 429", async () => {
  using t = await setup({ maxPerUser: 3, maxPerCredential: 2 });
  t.connections.admit(USER, "token-a");
  t.open(fakeSink(), { credential: "token-a" });
  t.open(fakeSink(), { credential: "token-a" });
  assert.throws(
    () => t.connections.admit(USER, "token-a"),
    (error) =>
      error instanceof HttpError && error.status === 429 && /this token/.test(error.message),
  );
  t.connections.admit(USER, "token-b");
  t.open(fakeSink(), { credential: "token-b" });
  assert.throws(
    () => t.connections.admit(USER, "token-c"),
    (error) =>
      error instanceof HttpError && error.status === 429 && /this account/.test(error.message),
  );
  t.connections.admit("user-2", "token-a");
});

Deno.test("[connections] the broker follow is held while the user has a connection here", async () => {
  using t = await setup();
  const follows: string[] = [];
  const released: string[] = [];
  t.broker.follow = (userId) => {
    follows.push(userId);
    return () => released.push(userId);
  };
  const first = t.open();
  const second = t.open();
  assert.deepEqual(follows, [USER]);
  t.connections.remove(first.connection);
  assert.deepEqual(released, []);
  t.connections.close(second.connection, CLOSE.shutdown);
  assert.deepEqual(released, [USER]);
  assert.equal(t.connections.countFor(USER), 0);
  assert.equal(first.sink.closed, null, "remove: the transport had already ended");
});

Deno.test("[connections] wasSent and takeReply: an ack and, in respond mode, an answer each once", async () => {
  using t = await setup();
  const { connection } = t.open(fakeSink(), { transport: "ws" });
  const plain = makeEvent(USER);
  const respond = makeEvent(USER, { respond: true });
  t.publish(plain, respond);
  assert.equal(wasSent(connection, plain.id), true);
  assert.equal(wasSent(connection, "never-sent"), false);
  assert.equal(takeReply(connection, "never-sent", "ack"), false);

  assert.equal(replyDue(connection, plain.id, "ack"), true);
  assert.equal(takeReply(connection, plain.id, "ack"), true);
  assert.equal(takeReply(connection, plain.id, "ack"), false, "acked already");
  assert.equal(wasSent(connection, plain.id), false, "forgotten once acked");

  assert.equal(takeReply(connection, respond.id, "ack"), true);
  assert.equal(wasSent(connection, respond.id), true, "still waits for its answer");
  assert.equal(replyDue(connection, respond.id, "ack"), false);
  assert.equal(replyDue(connection, respond.id, "answer"), true);
  assert.equal(takeReply(connection, respond.id, "answer"), true);
  assert.equal(wasSent(connection, respond.id), false);
  assert.equal(connection.sent!.size, 0);
});

Deno.test("[connections] sent ids are bounded, forgetting the oldest; SSE keeps none", async () => {
  using t = await setup({ maxUnacked: 3 });
  const ws = t.open(fakeSink(), { transport: "ws" }).connection;
  const sse = t.open(fakeSink(), { transport: "sse" }).connection;
  const events = Array.from({ length: 5 }, () => makeEvent(USER));
  t.publish(...events);
  assert.deepEqual(events.map((e) => wasSent(ws, e.id)), [false, false, true, true, true]);
  assert.equal(ws.sent!.size, 3);
  assert.equal(sse.sent, null);
  assert.equal(takeReply(sse, events[4].id, "ack"), false);
});

Deno.test("[connections] a filter applies to catch-up, the held-back buffer and resends alike", async () => {
  using t = await setup();
  const logged = await storeEvents(t.kv, USER, {
    count: 6,
    perPack: 2,
    endpointOf: (n) => n % 2 ? "b" : "a",
  });
  const { connection, sink } = t.open();
  connection.filter = compileFilter({ endpoint: ["b"], event: [], method: [], path: [] });
  const running = t.connections.catchUp(connection, null);
  const live = [makeEvent(USER, { endpoint: "a" }), makeEvent(USER, { endpoint: "b" })];
  t.publish(...live);
  // Only what would be sent is held back.
  assert.deepEqual(connection.buffer.map((event) => event.id), [live[1].id]);
  assert.equal(await running, 3);
  assert.deepEqual(sink.sent, [logged[1], logged[3], logged[5], live[1].id]);
  // Resends skip the duplicate filter, not the subscription's.
  t.broker.publish({ kind: "resend", userId: USER, event: live[0] });
  t.broker.publish({ kind: "resend", userId: USER, event: live[1] });
  assert.deepEqual(sink.sent.slice(4), [live[1].id]);
  // A filter removed lets everything through from then on.
  connection.filter = null;
  const later = makeEvent(USER, { endpoint: "a" });
  t.publish(later);
  assert.deepEqual(sink.sent.slice(-1), [later.id]);
});

Deno.test("[connections] catch-ups of one account read the log within its byte rate; another's have their own", () => {
  // A replay whose filter matches nothing reads the whole log and sends nothing, so no client's
  // reading slowed it: 200 connections of one account replaying 20 times a second read the
  // log as fast as the isolate could.
  let now = 0;
  const budget = createReadBudget({ bytesPerSecond: 100_000, now: () => now });
  assert.equal(budget.take("a", 60_000), 0);
  assert.equal(budget.take("a", 40_000), 0);
  // A second's worth is spent: the next 50 KB wait half a second.
  assert.equal(budget.take("a", 50_000), 500);
  assert.equal(budget.take("b", 100_000), 0, "another account reads on");
  now += 500;
  assert.equal(budget.take("a", 50_000), 0);
  // A pack over a second's worth goes once the budget is full, and leaves it short.
  now += 10_000;
  assert.equal(budget.take("a", 250_000), 0);
  assert.equal(budget.take("a", 1), 1501);
  // No rate: no waiting.
  assert.equal(createReadBudget({ bytesPerSecond: 0 }).take("a", 1e9), 0);
});

Deno.test("[connections] a read over a second's worth is not starved by the account's small reads", () => {
  // It waited for a full budget, and another reader of the account taking 64 KB at a time
  // kept it from ever filling: a catch-up stopped at a large event for as long as they ran.
  let now = 0;
  const budget = createReadBudget({ bytesPerSecond: 100_000, now: () => now });
  assert.equal(budget.take("a", 60_000), 0);
  assert.equal(budget.take("a", 250_000), 0, "goes while the budget has any left");
  const wait = budget.take("a", 60_000);
  assert.ok(wait >= 2_700, `the small reads pay for it after: ${wait} ms`);
  now += wait;
  assert.equal(budget.take("a", 60_000), 0);
});
