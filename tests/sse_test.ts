/**
 * lib/fanout/sse.ts on its own: the stream `openSseStream` returns, read frame by frame, over a
 * connection registry with in-memory KV and a broker with no transports.
 */
import assert from "node:assert/strict";
import { createBroker } from "../lib/fanout/broker.ts";
import { CLOSE, createConnections } from "../lib/fanout/connections.ts";
import { openSseStream } from "../lib/fanout/sse.ts";
import { makeEvent, storeEvents } from "./fakes.ts";

const USER = "user-1";

async function setup(options: { heartbeatMs?: number } = {}) {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  const connections = createConnections(kv, {
    broker,
    heartbeatMs: options.heartbeatMs ?? 60_000,
    slowConsumerBytes: 1_000_000,
  });
  const open = (after: string | null = null) =>
    openSseStream(connections, {
      userId: USER,
      credential: "token-1",
      after,
      retryMs: 2500,
      seesUsage: true,
    });
  return {
    kv,
    broker,
    connections,
    open,
    [Symbol.dispose]() {
      connections.stop();
      broker.close();
      kv.close();
    },
  };
}

/** Reads the stream's text one chunk (one frame) at a time. */
function frames(response: Response) {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  return {
    async next(): Promise<string | null> {
      const { value, done } = await reader.read();
      return done ? null : value;
    },
    cancel: () => reader.cancel(),
  };
}

Deno.test("[sse] the response is an unbuffered event stream that opens with the retry time", async () => {
  using t = await setup();
  const response = t.open();
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
  assert.equal(response.headers.get("cache-control"), "no-cache, no-transform");
  assert.equal(response.headers.get("x-accel-buffering"), "no");
  const stream = frames(response);
  assert.equal(await stream.next(), "retry: 2500\n: connected\n\n");
  assert.equal(t.connections.countFor(USER), 1);
  assert.equal(t.connections.listFor(USER)[0].transport, "sse");
  await stream.cancel();
});

Deno.test("[sse] an event is one frame: its id, then its envelope on one data line", async () => {
  using t = await setup();
  const stream = frames(t.open());
  await stream.next();
  const event = makeEvent(USER);
  t.broker.publish({ kind: "events", userId: USER, events: [event] });
  assert.equal(await stream.next(), `id: ${event.id}\ndata: ${event.json}\n\n`);
  await stream.cancel();
});

Deno.test("[sse] opening after an id catches up on the log first", async () => {
  using t = await setup();
  const ids = await storeEvents(t.kv, USER, { count: 3 });
  const stream = frames(t.open(ids[0]));
  await stream.next();
  const got = [(await stream.next())!, (await stream.next())!];
  assert.deepEqual(got.map((frame) => /^id: (\S+)\n/.exec(frame)?.[1]), ids.slice(1));
  await stream.cancel();
});

Deno.test("[sse] heartbeats are comments, which EventSource ignores", async () => {
  using t = await setup({ heartbeatMs: 5 });
  const stream = frames(t.open());
  await stream.next();
  assert.equal(await stream.next(), ": heartbeat\n\n");
  await stream.cancel();
});

Deno.test("[sse] notices are named events, so onmessage handlers see only webhooks", async () => {
  using t = await setup();
  const stream = frames(t.open());
  await stream.next();
  t.broker.publish({ kind: "notice", userId: USER, name: "quota", json: '{"type":"quota"}' });
  assert.equal(await stream.next(), 'event: quota\ndata: {"type":"quota"}\n\n');
  await stream.cancel();
});

Deno.test("[sse] a close sends a named close event with the reason, then ends the stream", async () => {
  using t = await setup();
  const stream = frames(t.open());
  await stream.next();
  t.broker.publish({ kind: "credential_revoked", userId: USER, credential: "token-1" });
  assert.equal(
    await stream.next(),
    `event: close\ndata: ${JSON.stringify({ reason: CLOSE.revoked.reason })}\n\n`,
  );
  assert.equal(await stream.next(), null);
  assert.equal(t.connections.countFor(USER), 0);
});

Deno.test("[sse] the backlog is the bytes queued and not yet read", async () => {
  using t = await setup();
  const response = t.open();
  const connection = t.connections.listFor(USER)[0];
  const opening = "retry: 2500\n: connected\n\n".length;
  assert.equal(connection.sink.backlog(), opening);
  const event = makeEvent(USER, { pad: 100 });
  t.broker.publish({ kind: "events", userId: USER, events: [event] });
  assert.equal(connection.sink.backlog(), opening + event.sse().byteLength);
  const reader = response.body!.getReader();
  await reader.read();
  await reader.read();
  assert.ok(connection.sink.backlog() === 0, "all read"); // -0 from the negation
  await reader.cancel();
});

Deno.test("[sse] a client that goes away is forgotten, and nothing more is queued for it", async () => {
  using t = await setup();
  const response = t.open();
  const connection = t.connections.listFor(USER)[0];
  await response.body!.cancel();
  assert.equal(t.connections.countFor(USER), 0);
  assert.equal(connection.closed, true);
  // Writes after the end are dropped, not errors.
  connection.sink.send(makeEvent(USER));
  connection.sink.heartbeat();
  connection.sink.close(1001, "bye");
});
