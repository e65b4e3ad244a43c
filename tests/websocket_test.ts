/**
 * lib/fanout/websocket.ts on its own: `openWebSocket` behind a bare Deno.serve on loopback (the
 * upgrade needs a real socket), over a connection registry with in-memory KV, a broker with no
 * transports, and replies recorded in memory.
 */
import assert from "node:assert/strict";
import { createSendBudget } from "../lib/fanout/send_budget.ts";
import { createBroker } from "../lib/fanout/broker.ts";
import { createConnections } from "../lib/fanout/connections.ts";
import { createResponses } from "../lib/fanout/respond_waiters.ts";
import { type ClientLimits, openWebSocket } from "../lib/fanout/websocket.ts";
import { createRateLimiter } from "../lib/intake/rate_limit.ts";
import { makeEvent, storeEvents } from "./fakes.ts";
import { openWs, waitFor } from "./helpers.ts";

const USER = "user-1";

async function setup(
  options: {
    limits?: Partial<ClientLimits>;
    wantsNotices?: boolean;
    /** Log reads wait for this first, to hold a catch-up open. */
    readGate?: Promise<void>;
  } = {},
) {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  const gate = options.readGate;
  const reads = !gate ? kv : new Proxy(kv, {
    get(target, property) {
      if (property !== "list") return Reflect.get(target, property, target).bind?.(target);
      return async function* (...args: Parameters<Deno.Kv["list"]>) {
        await gate;
        yield* target.list(...args);
      };
    },
  });
  const connections = createConnections(reads, {
    broker,
    heartbeatMs: 60_000,
    slowConsumerBytes: 1_000_000,
  });
  const responses = createResponses();
  const acks: { eventId: string; status: number | null }[] = [];
  const limits: ClientLimits = {
    messagesPerSecond: 100,
    messagesBurst: 100,
    maxMessageBytes: 64 * 1024,
    acksPerSecond: 100,
    acks: createRateLimiter({ perSecond: 100, burst: 100 }),
    largeSends: createSendBudget(64 * 2 ** 20),
    ...options.limits,
  };
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request) =>
      openWebSocket(request, connections, {
        userId: USER,
        credential: "token-1",
        after: new URL(request.url).searchParams.get("after"),
        idleTimeoutSeconds: 60,
        wantsNotices: options.wantsNotices ?? false,
        seesUsage: true,
        replies: {
          ack({ eventId, status }) {
            acks.push({ eventId, status });
            return Promise.resolve();
          },
          responses,
        },
        limits,
      }),
  );
  const url = `ws://127.0.0.1:${server.addr.port}/`;
  return {
    kv,
    broker,
    connections,
    responses,
    acks,
    url,
    publish(...events: ReturnType<typeof makeEvent>[]) {
      broker.publish({ kind: "events", userId: USER, events });
    },
    async [Symbol.asyncDispose]() {
      connections.closeAll({ code: 1001, reason: "test over" });
      await server.shutdown();
      connections.stop();
      responses.stop();
      broker.close();
      kv.close();
    },
  };
}

Deno.test("[websocket] a ping gets a pong, and marks the client as seen", async () => {
  await using t = await setup();
  const ws = await openWs(t.url);
  const connection = t.connections.listFor(USER)[0];
  const seen = connection.lastSeenAt;
  await waitFor(() => new Date().toISOString() > seen, { what: "the clock to move on" });
  ws.send({ type: "ping" });
  assert.deepEqual(await ws.next(), { type: "pong" });
  assert.ok(connection.lastSeenAt > seen);
  await ws.close();
  await waitFor(() => t.connections.countFor(USER) === 0, { what: "the connection forgotten" });
});

Deno.test("[websocket] events are sent as their envelope, one message each", async () => {
  await using t = await setup();
  const ws = await openWs(t.url);
  const events = [makeEvent(USER), makeEvent(USER)];
  t.publish(...events);
  assert.deepEqual(await ws.next(), JSON.parse(events[0].json));
  assert.deepEqual(await ws.next(), JSON.parse(events[1].json));
  await ws.close();
});

Deno.test("[websocket] malformed messages get an error naming the fault, and the socket stays open", async () => {
  await using t = await setup();
  const ws = await openWs(t.url);
  const errorFor = async (message: unknown) => {
    ws.send(message);
    const reply = await ws.next();
    assert.equal(reply.type, "error");
    return reply.message as string;
  };
  assert.match(await errorFor("not json"), /^Cannot read message: it is not valid JSON$/);
  assert.match(await errorFor({ type: "replay", lastEventID: null }), /unknown key "lastEventID"/);
  assert.match(await errorFor({ type: "dance" }), /^Cannot read message \(type\): .*expected/);
  assert.match(await errorFor({ type: "ack", id: "nope" }), /\(id\): must be an event id/);
  ws.socket.send(new Uint8Array([1, 2, 3]));
  assert.equal((await ws.next()).message, "Cannot read message: send JSON text, not binary");
  ws.send({ type: "ping" });
  assert.deepEqual(await ws.next(), { type: "pong" });
  await ws.close();
});

Deno.test("[websocket] only events sent to this connection may be acked, once each", async () => {
  await using t = await setup();
  const ws = await openWs(t.url);
  const stranger = makeEvent(USER);
  ws.send({ type: "ack", id: stranger.id, status: 200 });
  assert.match(
    (await ws.next()).message as string,
    new RegExp(`^Cannot ack ${stranger.id}: this connection was not sent that event`),
  );
  const event = makeEvent(USER);
  t.publish(event);
  assert.equal((await ws.next()).id, event.id);
  ws.send({ type: "ack", id: event.id, status: 204 });
  await waitFor(() => t.acks.length === 1, { what: "the ack recorded" });
  assert.deepEqual(t.acks, [{ eventId: event.id, status: 204 }]);
  ws.send({ type: "ack", id: event.id });
  assert.match((await ws.next()).message as string, /or acked it already/);
  assert.equal(t.acks.length, 1);
  await ws.close();
});

Deno.test("[websocket] acks over the account's rate are refused and not recorded", async () => {
  await using t = await setup({
    limits: { acksPerSecond: 1, acks: createRateLimiter({ perSecond: 0.001, burst: 1 }) },
  });
  const ws = await openWs(t.url);
  const events = [makeEvent(USER), makeEvent(USER)];
  t.publish(...events);
  await ws.next();
  await ws.next();
  ws.send({ type: "ack", id: events[0].id });
  ws.send({ type: "ack", id: events[1].id });
  assert.match((await ws.next()).message as string, /more than 1 acks a second.*not recorded/);
  assert.deepEqual(t.acks.map((a) => a.eventId), [events[0].id]);
  await ws.close();
});

Deno.test("[websocket] an answer to a respond-mode event reaches the waiting sender", async () => {
  await using t = await setup();
  const ws = await openWs(t.url);
  const event = makeEvent(USER, { respond: true });
  const waiting = t.responses.wait(event.id, USER, 10_000);
  t.publish(event);
  assert.equal((await ws.next()).respond, true);
  ws.send({
    type: "response",
    id: event.id,
    status: 201,
    headers: { "Content-Type": "text/plain", "Set-Cookie": "a=b" },
    body: "made",
  });
  const answer = await waiting;
  assert.equal(answer?.status, 201);
  assert.deepEqual(answer?.headers, { "content-type": "text/plain" });
  assert.equal(new TextDecoder().decode(answer?.body), "made");
  ws.send({ type: "response", id: event.id, status: 200 });
  assert.match((await ws.next()).message as string, /or answered it already/);
  await ws.close();
});

Deno.test("[websocket] a refused answer can be corrected", async () => {
  await using t = await setup();
  const ws = await openWs(t.url);
  const event = makeEvent(USER, { respond: true });
  const waiting = t.responses.wait(event.id, USER, 10_000);
  t.publish(event);
  await ws.next();
  ws.send({ type: "response", id: event.id, status: 200, headers: { "Bad Name": "x" } });
  assert.match((await ws.next()).message as string, /is not a valid header name/);
  ws.send({ type: "response", id: event.id, status: 200, bodyBase64: "%%%" });
  assert.match((await ws.next()).message as string, /bodyBase64 is not base64/);
  ws.send({ type: "response", id: event.id, status: 202, bodyBase64: "aGk=" });
  const answer = await waiting;
  assert.equal(answer?.status, 202);
  assert.equal(new TextDecoder().decode(answer?.body), "hi");
  await ws.close();
});

Deno.test("[websocket] a replay message after an id, or lastEventId, sends the rest of the log then replayed", async () => {
  await using t = await setup();
  const ids = await storeEvents(t.kv, USER, { count: 4, perPack: 3 });
  const ws = await openWs(t.url);
  ws.send({ type: "replay", after: ids[1] });
  assert.equal((await ws.next()).id, ids[2]);
  assert.equal((await ws.next()).id, ids[3]);
  assert.deepEqual(await ws.next(), { type: "replayed", after: ids[1], count: 2 });
  ws.send({ type: "replay", lastEventId: ids[0] });
  for (const id of ids.slice(1)) assert.equal((await ws.next()).id, id);
  assert.deepEqual(await ws.next(), { type: "replayed", after: ids[0], count: 3 });
  ws.send({ type: "replay" });
  for (const id of ids) assert.equal((await ws.next()).id, id);
  assert.deepEqual(await ws.next(), { type: "replayed", after: null, count: 4 });
  ws.send({ type: "replay", after: ids[0], lastEventId: ids[1] });
  assert.equal(
    (await ws.next()).message,
    "Cannot catch up: give after or lastEventId, not both",
  );
  await ws.close();
});

Deno.test("[websocket] one catch-up at a time", async () => {
  const { promise: readGate, resolve: openGate } = Promise.withResolvers<void>();
  await using t = await setup({ readGate });
  const ids = await storeEvents(t.kv, USER, { count: 2 });
  const ws = await openWs(t.url);
  ws.send({ type: "replay" });
  ws.send({ type: "replay" });
  assert.deepEqual(await ws.next(), {
    type: "error",
    message: 'Cannot catch up: a catch-up is running; wait for its "replayed" message',
  });
  openGate();
  for (const id of ids) assert.equal((await ws.next()).id, id);
  assert.deepEqual(await ws.next(), { type: "replayed", after: null, count: 2 });
  await ws.close();
});

Deno.test("[websocket] connecting with after catches up before live events", async () => {
  await using t = await setup();
  const ids = await storeEvents(t.kv, USER, { count: 3 });
  const ws = await openWs(`${t.url}?after=${ids[0]}`);
  const live = makeEvent(USER);
  t.publish(live);
  const got = [await ws.next(), await ws.next(), await ws.next()].map((m) => m.id);
  assert.deepEqual(got, [ids[1], ids[2], live.id]);
  await ws.close();
});

Deno.test("[websocket] too many messages: one warning, then close 1008", async () => {
  await using t = await setup({ limits: { messagesPerSecond: 0.001, messagesBurst: 2 } });
  const ws = await openWs(t.url);
  for (let i = 0; i < 2; i++) {
    ws.send({ type: "ping" });
    assert.deepEqual(await ws.next(), { type: "pong" });
  }
  ws.send({ type: "ping" });
  const warning = await ws.next();
  assert.equal(warning.type, "error");
  assert.match(warning.message as string, /^Too many messages: over 0.001 a second/);
  assert.match(warning.message as string, /the next one over the limit closes the connection$/);
  ws.send({ type: "ping" });
  const closed = await ws.closed;
  assert.equal(closed.code, 1008);
  assert.match(closed.reason, /^Too many messages/);
  await waitFor(() => t.connections.countFor(USER) === 0, { what: "the connection forgotten" });
});

Deno.test("[websocket] the first ack of an event sent is free of the message limit", async () => {
  await using t = await setup({ limits: { messagesPerSecond: 0.001, messagesBurst: 1 } });
  const ws = await openWs(t.url);
  const events = Array.from({ length: 5 }, () => makeEvent(USER));
  t.publish(...events);
  for (const event of events) assert.equal((await ws.next()).id, event.id);
  for (const event of events) ws.send({ type: "ack", id: event.id });
  await waitFor(() => t.acks.length === 5, { what: "five acks recorded" });
  ws.send({ type: "ping" });
  assert.deepEqual(await ws.next(), { type: "pong" }, "the bucket's one token is still there");
  await ws.close();
});

Deno.test("[websocket] a message over the size limit closes with 1009", async () => {
  await using t = await setup({ limits: { maxMessageBytes: 100 } });
  const ws = await openWs(t.url);
  ws.send({ type: "ping", pad: "x".repeat(50) });
  assert.match((await ws.next()).message as string, /unknown key "pad"/);
  ws.send({ type: "ping", pad: "é".repeat(60) }); // 60 characters, 120 bytes
  const closed = await ws.closed;
  assert.equal(closed.code, 1009);
  assert.equal(closed.reason, "Message too large: larger than 100 bytes (WS_MAX_MESSAGE_BYTES)");
});

Deno.test("[websocket] notices go only to clients that asked for them", async () => {
  await using quiet = await setup();
  const ws = await openWs(quiet.url);
  quiet.broker.publish({ kind: "notice", userId: USER, name: "quota", json: '{"type":"quota"}' });
  ws.send({ type: "ping" });
  assert.deepEqual(await ws.next(), { type: "pong" }, "no notice before the pong");
  await ws.close();

  await using told = await setup({ wantsNotices: true });
  const listener = await openWs(told.url);
  told.broker.publish({ kind: "notice", userId: USER, name: "quota", json: '{"type":"quota"}' });
  assert.deepEqual(await listener.next(), { type: "quota" });
  await listener.close();
});
