/**
 * Large events (bodies streamed into chunks at ingest) on the way out: lib/log/envelope_stream.ts
 * builds the same envelope as envelope_json.ts, piece by piece from KV; the SSE transport streams
 * it as one frame, the WebSocket transport sends it as one message within the isolate's budget
 * (lib/fanout/send_budget.ts), and what follows waits behind it.
 */
import assert from "node:assert/strict";
import { createBroker } from "../lib/fanout/broker.ts";
import { createConnections } from "../lib/fanout/connections.ts";
import { openSseStream } from "../lib/fanout/sse.ts";
import { openWebSocket } from "../lib/fanout/websocket.ts";
import { createSendBudget } from "../lib/fanout/send_budget.ts";
import { createResponses } from "../lib/fanout/respond_waiters.ts";
import { createRateLimiter } from "../lib/intake/rate_limit.ts";
import { type LargeEvent, toLargeEvent, toLiveEvent } from "../lib/log/envelope_json.ts";
import { envelopeChars, envelopePieces, envelopeText } from "../lib/log/envelope_stream.ts";
import { eventsAfter, getEventBody, stageBody, type StoredEvent } from "../lib/log/events.ts";
import { encodePack } from "../lib/log/pack_codec.ts";
import { decodeText } from "../lib/intake/body_types.ts";
import { webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import { eventKey } from "../lib/store/kv_keys.ts";
import { makeEvent, storedEvent } from "./fakes.ts";
import { randomBytes, waitFor } from "./helpers.ts";

const USER = "user-1";
const encoder = new TextEncoder();

/** Stages `body` as ingest does for a large body and returns its record and live event. */
async function largeEvent(
  kv: Deno.Kv,
  body: Uint8Array,
  options: { contentType?: string; kind?: StoredEvent["kind"]; respond?: boolean } = {},
): Promise<{ record: StoredEvent; event: LargeEvent }> {
  const staged = await stageBody(kv, { userId: USER, body, expireIn: 3_600_000 });
  const text = decodeText(body);
  const utf8 = text !== null;
  // As ingest measures a large text body on its way in (lib/intake/large_body.ts).
  const facts = text === null ? { utf8 } : {
    utf8,
    chars: text.length,
    escapedChars: JSON.stringify(text).length - 2,
    wide: /[\u0100-\uffff]/.test(text),
  };
  const record = storedEvent(USER, null, {
    endpointId: "endpoint-1",
    endpoint: "Slug_22characters_0001",
    path: "/hooks",
    queryJson: '{"a":"1"}',
    headersJson: '{"content-type":"application/json"}',
    contentType: options.contentType ?? "application/json",
    kind: options.kind ?? "json",
    size: body.byteLength,
    blobId: staged.blobId,
    chunks: staged.chunks,
    large: facts,
    ...(options.respond ? { respond: true } : {}),
  });
  return { record, event: toLargeEvent(record, facts) };
}

/** JSON text of about `bytes` bytes with line breaks, quotes, escapes and multi-byte characters. */
function awkwardJson(bytes: number): Uint8Array {
  const row = '{"note":"say \\"hi\\" → ünïcödé 🎉\\n","n":12345678901234567890}';
  const rows: string[] = [];
  let size = 2;
  while (size < bytes) {
    rows.push(row);
    size += encoder.encode(row).byteLength + 3;
  }
  return encoder.encode(`[\r\n${rows.join(",\r\n ")}\n]`);
}

Deno.test("[envelope-stream] a large event's pieces make exactly the envelope built whole", async () => {
  await using kv = await Deno.openKv(":memory:");
  const cases: { name: string; body: Uint8Array; contentType: string; kind: "json" | "other" }[] = [
    // 60,000-byte chunks split the multi-byte characters somewhere in 300 kB of them.
    { name: "JSON", body: awkwardJson(300_000), contentType: "application/json", kind: "json" },
    // Lengths that are not whole base64 triples, across chunk boundaries.
    ...[120_001, 120_002, 180_000].map((n) => ({
      name: `binary ${n}`,
      body: randomBytes(n),
      contentType: "application/octet-stream",
      kind: "other" as const,
    })),
    {
      name: "text",
      body: encoder.encode('line\r\n"quoted"\t\u0001 ∑ '.repeat(10_000)),
      contentType: "text/plain",
      kind: "other",
    },
  ];
  for (const { name, body, contentType, kind } of cases) {
    const { record, event } = await largeEvent(kv, body, { contentType, kind });
    const whole = toLiveEvent(record, body).json;
    const streamed = await envelopeText(kv, event);
    assert.equal(streamed.length, whole.length, name);
    assert.ok(streamed === whole, `${name}: the streamed envelope differs`);
    assert.ok(!/[\r\n]/.test(streamed), `${name}: one line, as SSE's data field needs`);
    const parsed = webhookEnvelopeSchema.parse(JSON.parse(streamed));
    const bytes = parsed.bodyBase64 !== undefined
      ? Uint8Array.fromBase64(parsed.bodyBase64)
      : encoder.encode(parsed.body!);
    assert.deepEqual(bytes, body, name);
    // What a WebSocket send reserves is never below what it builds.
    assert.ok(envelopeChars(event) >= streamed.length, `${name}: estimate`);
    const unmeasured = toLargeEvent(record, { utf8: record.large!.utf8 });
    assert.ok(envelopeChars(unmeasured) >= streamed.length, `${name}: worst case`);
  }
});

Deno.test("[envelope-stream] a large form's payload is null: its fields are in body", async () => {
  await using kv = await Deno.openKv(":memory:");
  const body = encoder.encode("a=1&b=" + "x".repeat(200_000));
  const { event } = await largeEvent(kv, body, {
    contentType: "application/x-www-form-urlencoded",
    kind: "form",
  });
  const envelope = JSON.parse(await envelopeText(kv, event));
  assert.equal(envelope.payload, null);
  assert.equal(envelope.body, new TextDecoder().decode(body));
});

Deno.test("[envelope-stream] a body missing a chunk fails the read and names the event", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { record, event } = await largeEvent(kv, randomBytes(200_000), {
    contentType: "application/octet-stream",
    kind: "other",
  });
  for await (const entry of kv.list({ prefix: ["event_bodies", USER, record.blobId!] })) {
    await kv.delete(entry.key);
    break;
  }
  await assert.rejects(
    () => envelopeText(kv, event),
    new RegExp(`Cannot read event ${record.id}: its body has 140000 of 200000 bytes`),
  );
});

Deno.test("[events] catch-up and the body download take a large event by reference", async () => {
  await using kv = await Deno.openKv(":memory:");
  const body = randomBytes(150_000);
  const { record } = await largeEvent(kv, body, {
    contentType: "application/octet-stream",
    kind: "other",
  });
  await kv.set(eventKey(USER, record.id), await encodePack([record]));
  const events = [];
  for await (const event of eventsAfter(kv, { userId: USER })) events.push(event);
  assert.equal(events.length, 1);
  assert.ok(events[0].large, "a large event is yielded by reference, its body unread");
  const download = await getEventBody(kv, { userId: USER, id: record.id });
  assert.ok(download);
  assert.equal(download.size, 150_000);
  assert.ok(download.body instanceof ReadableStream, "a large body is streamed");
  assert.deepEqual(new Uint8Array(await new Response(download.body).arrayBuffer()), body);
});

Deno.test("[events] a reader's pace is charged for bodies kept in chunks, twice for large JSON", async () => {
  // The pace saw a pack's bytes, and an event whose body is in chunks is a few hundred bytes
  // there: catch-ups of large events read ten times CATCH_UP_READ_MB_PER_SECOND.
  await using kv = await Deno.openKv(":memory:");
  const binary = await largeEvent(kv, randomBytes(150_000), {
    contentType: "application/octet-stream",
    kind: "other",
  });
  const json = await largeEvent(kv, awkwardJson(150_000));
  await kv.set(eventKey(USER, binary.record.id), await encodePack([binary.record]));
  await kv.set(eventKey(USER, json.record.id), await encodePack([json.record]));
  let charged = 0;
  const events = [];
  for await (
    const event of eventsAfter(kv, { userId: USER, pace: (bytes) => void (charged += bytes) })
  ) events.push(event);
  assert.equal(events.length, 2);
  const least = binary.record.size + 2 * json.record.size;
  assert.ok(charged >= least, `charged ${charged} bytes, read at least ${least}`);
});

async function fanout(
  options: { slowConsumerBytes?: number; budget?: number; heartbeatMs?: number } = {},
) {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  const connections = createConnections(kv, {
    broker,
    heartbeatMs: options.heartbeatMs ?? 60_000,
    slowConsumerBytes: options.slowConsumerBytes ?? 1_000_000,
  });
  const budget = createSendBudget(options.budget ?? 64 * 2 ** 20);
  const responses = createResponses();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request) =>
      openWebSocket(request, connections, {
        userId: USER,
        credential: "token-1",
        after: null,
        idleTimeoutSeconds: 60,
        wantsNotices: false,
        replies: { ack: () => Promise.resolve(), responses },
        limits: {
          messagesPerSecond: 100,
          messagesBurst: 100,
          maxMessageBytes: 64 * 1024,
          acksPerSecond: 100,
          acks: createRateLimiter({ perSecond: 100, burst: 100 }),
          largeSends: budget,
        },
      }),
  );
  return {
    kv,
    broker,
    connections,
    budget,
    wsUrl: `ws://127.0.0.1:${server.addr.port}/`,
    publish(...events: (LargeEvent | ReturnType<typeof makeEvent>)[]) {
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

Deno.test("[sse] a large event is one frame, streamed as read, with what follows after it", async () => {
  await using t = await fanout({ slowConsumerBytes: 200_000 });
  const body = randomBytes(1_000_000);
  const { event } = await largeEvent(t.kv, body, {
    contentType: "application/octet-stream",
    kind: "other",
  });
  const response = openSseStream(t.connections, {
    userId: USER,
    credential: "token-1",
    after: null,
    retryMs: 2000,
    seesUsage: true,
  });
  const reader = response.body!.getReader();
  await reader.read(); // retry and comment
  const small = makeEvent(USER);
  t.publish(event, small);
  t.broker.publish({ kind: "notice", userId: USER, name: "quota", json: '{"type":"quota"}' });
  const connection = t.connections.listFor(USER)[0];
  // The frame is 1.3 MB, over the 200 kB slow-consumer limit: only what is held counts.
  assert.ok(connection.sink.backlog() < 200_000, `backlog ${connection.sink.backlog()}`);
  const chunks: Uint8Array[] = [];
  let text = "";
  while (!text.includes("event: quota")) {
    const { value } = await reader.read();
    chunks.push(value!);
    text += new TextDecoder().decode(value!, { stream: true });
    assert.ok(connection.sink.backlog() < 200_000, `backlog ${connection.sink.backlog()}`);
  }
  assert.ok(chunks.length > 10, "the frame came in pieces, not whole");
  const frames = text.split("\n\n").filter(Boolean);
  assert.equal(frames.length, 3);
  assert.equal(frames[0], `id: ${event.id}\ndata: ${await envelopeText(t.kv, event)}`);
  assert.equal(frames[1], `id: ${small.id}\ndata: ${small.json}`);
  assert.equal(frames[2], `event: quota\ndata: {"type":"quota"}`);
  assert.equal(connection.closed, false);
  await reader.cancel();
});

Deno.test("[sse] a client that stops reading behind a large frame is closed as slow", async () => {
  await using t = await fanout({ slowConsumerBytes: 50_000 });
  const { event } = await largeEvent(t.kv, randomBytes(500_000), {
    contentType: "application/octet-stream",
    kind: "other",
  });
  const response = openSseStream(t.connections, {
    userId: USER,
    credential: "token-1",
    after: null,
    retryMs: 2000,
  });
  const reader = response.body!.getReader();
  await reader.read();
  t.publish(event);
  const connection = t.connections.listFor(USER)[0];
  // Never read again: what follows piles up behind the frame until the limit closes it.
  for (let n = 0; n < 100 && !connection.closed; n++) t.publish(makeEvent(USER, { pad: 1000 }));
  assert.equal(connection.closed, true);
  assert.equal(t.connections.countFor(USER), 0);
  await reader.cancel();
});

Deno.test("[sse] a client that stops reading inside a large frame is closed on a heartbeat", async () => {
  await using t = await fanout({ heartbeatMs: 200 });
  const { event } = await largeEvent(t.kv, randomBytes(2_000_000), {
    contentType: "application/octet-stream",
    kind: "other",
  });
  const response = openSseStream(t.connections, {
    userId: USER,
    credential: "token-1",
    after: null,
    retryMs: 2000,
  });
  const reader = response.body!.getReader();
  await reader.read();
  t.publish(event);
  await reader.read(); // the frame has begun; nothing more is read
  const connection = t.connections.listFor(USER)[0];
  // Heartbeats cannot go inside a frame and the backlog holds one piece: only time tells.
  await waitFor(() => connection.closed, { what: "the close", timeoutMs: 30_000 });
  assert.equal(t.connections.countFor(USER), 0);
  await reader.cancel();
});

/** A WebSocket client that collects text messages. */
async function openClient(url: string) {
  const socket = new WebSocket(url);
  const messages: string[] = [];
  let closed: { code: number; reason: string } | null = null;
  socket.onmessage = (message) => messages.push(message.data);
  socket.onclose = (close) => closed = { code: close.code, reason: close.reason };
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  return {
    socket,
    messages,
    closed: () => closed,
    close: async () => {
      if (socket.readyState === WebSocket.CLOSED) return;
      const done = new Promise((resolve) => socket.addEventListener("close", resolve));
      socket.close();
      await done;
    },
  };
}

Deno.test("[websocket] a large event is one message, in order with what follows", async () => {
  await using t = await fanout();
  const client = await openClient(t.wsUrl);
  await waitFor(() => t.connections.countFor(USER) === 1, { what: "the connection" });
  const body = awkwardJson(2_000_000);
  // Ids sort by arrival, and connections drop what is not newer than what they sent.
  const before = makeEvent(USER);
  const { event } = await largeEvent(t.kv, body);
  const after = makeEvent(USER);
  t.publish(before, event, after);
  await waitFor(() => client.messages.length === 3 || client.closed() !== null, {
    what: "three messages",
  }).catch((e) => {
    throw new Error(`${e.message}; got ${client.messages.map((m) => m.length)}`);
  });
  assert.equal(
    client.closed(),
    null,
    `got ${client.messages.length}: ${client.messages.map((m) => m.length)}`,
  );
  assert.equal(client.messages[0], before.json);
  assert.equal(client.messages[1], await envelopeText(t.kv, event));
  assert.equal(JSON.parse(client.messages[1]).body, new TextDecoder().decode(body));
  assert.equal(client.messages[2], after.json);
  await waitFor(() => t.budget.held() === 0, { what: "the budget to be given back" });
  await client.close();
});

Deno.test("[websocket] large sends beyond the budget wait their turn; each still arrives", async () => {
  // The budget fits one of these envelopes at a time: four clients queue for it.
  const body = randomBytes(600_000);
  await using t = await fanout({ budget: 3 * 900_000 });
  const clients = await Promise.all([0, 1, 2, 3].map(() => openClient(t.wsUrl)));
  await waitFor(() => t.connections.countFor(USER) === 4, { what: "four connections" });
  const { event } = await largeEvent(t.kv, body, {
    contentType: "application/octet-stream",
    kind: "other",
  });
  let most = 0;
  const watch = setInterval(() => most = Math.max(most, t.budget.held()), 1);
  t.publish(event);
  await waitFor(() => clients.every((c) => c.messages.length === 1), { what: "every client" });
  clearInterval(watch);
  for (const client of clients) {
    assert.deepEqual(Uint8Array.fromBase64(JSON.parse(client.messages[0]).bodyBase64), body);
  }
  assert.ok(most <= envelopeChars(event) * 3, `at most one build at a time (held ${most})`);
  await waitFor(() => t.budget.held() === 0, { what: "the budget to be given back" });
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("[websocket] an unreadable large event closes only that client with 1011", async () => {
  await using t = await fanout();
  const client = await openClient(t.wsUrl);
  await waitFor(() => t.connections.countFor(USER) === 1, { what: "the connection" });
  const { record, event } = await largeEvent(t.kv, randomBytes(200_000), {
    contentType: "application/octet-stream",
    kind: "other",
  });
  for await (const entry of t.kv.list({ prefix: ["event_bodies", USER, record.blobId!] })) {
    await t.kv.delete(entry.key);
  }
  const quiet = console.error;
  console.error = () => {};
  try {
    t.publish(event);
    await waitFor(() => client.closed() !== null, { what: "the close" });
  } finally {
    console.error = quiet;
  }
  assert.equal(client.closed()!.code, 1011);
  assert.equal(t.budget.held(), 0);
});

Deno.test("[send-budget] takes wait in order; one take over the whole budget goes alone", async () => {
  const budget = createSendBudget(100);
  const order: string[] = [];
  const first = await budget.take(60, "a");
  const second = budget.take(60, "b").then((release) => (order.push("second"), release));
  const huge = budget.take(500, "c").then((release) => (order.push("huge"), release));
  assert.equal(budget.held(), 60);
  first();
  (await second)();
  (await huge)();
  assert.deepEqual(order, ["second", "huge"]);
  assert.equal(budget.held(), 0);
});

Deno.test("[send-budget] one account holds one take at a time: others are not queued behind it", async () => {
  const budget = createSendBudget(1000);
  const order: string[] = [];
  const a1 = await budget.take(10, "attacker");
  // The attacker's many sockets ask first; another account's send still goes next.
  const more = [1, 2, 3].map((n) =>
    budget.take(10, "attacker").then((release) => (order.push(`attacker ${n}`), release))
  );
  const victim = await budget.take(10, "victim");
  order.push("victim");
  assert.deepEqual(order, ["victim"]);
  victim();
  a1();
  for (const next of more) (await next)();
  assert.deepEqual(order, ["victim", "attacker 1", "attacker 2", "attacker 3"]);
  assert.equal(budget.held(), 0);
});

Deno.test("[websocket] large events waiting count in the backlog: a client far behind is closed 4008", async () => {
  await using t = await fanout({ slowConsumerBytes: 200_000 });
  const client = await openClient(t.wsUrl);
  await waitFor(() => t.connections.countFor(USER) === 1, { what: "the connection" });
  const events: LargeEvent[] = [];
  for (let n = 0; n < 10; n++) {
    events.push(
      (await largeEvent(t.kv, randomBytes(70_000), {
        contentType: "application/octet-stream",
        kind: "other",
      })).event,
    );
  }
  t.publish(...events);
  await waitFor(() => client.closed() !== null, { what: "the close" });
  assert.equal(client.closed()!.code, 4008);
});

Deno.test("[sse] a catch-up over large events stops while they wait unread", async () => {
  await using t = await fanout({ slowConsumerBytes: 1_000_000 });
  const ids: string[] = [];
  for (let n = 0; n < 40; n++) {
    const { record } = await largeEvent(t.kv, randomBytes(100), {
      contentType: "application/octet-stream",
      kind: "other",
    });
    await t.kv.set(eventKey(USER, record.id), await encodePack([record]));
    ids.push(record.id);
  }
  const response = openSseStream(t.connections, {
    userId: USER,
    credential: "token-1",
    after: "0".repeat(26),
    retryMs: 2000,
  });
  const connection = t.connections.listFor(USER)[0];
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  // Unread, the catch-up fills its budget (half the slow limit) and waits, well short of 40.
  await waitFor(() => connection.sink.backlog() >= 500_000 || !connection.catchingUp, {
    what: "the catch-up to fill its budget",
  });
  assert.equal(connection.catchingUp, true, "the catch-up queued every large event at once");
  // Then it goes on as the client reads, never far past its budget.
  let text = "";
  let most = 0;
  while (ids.some((id) => !text.includes(`id: ${id}\n`))) {
    await waitFor(
      () =>
        connection.sink.backlog() >= 500_000 || ids.every((id) => text.includes(id)) ||
        !connection.catchingUp,
      { what: "the catch-up to fill its budget" },
    );
    most = Math.max(most, connection.sink.backlog());
    text += (await reader.read()).value;
  }
  assert.ok(most < 700_000, `the backlog reached ${most}: the catch-up did not stop`);
  assert.equal(connection.closed, false);
  await reader.cancel();
});

Deno.test("[envelope-stream] pieces are produced as they are read, not all at once", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { event } = await largeEvent(kv, randomBytes(600_000), {
    contentType: "application/octet-stream",
    kind: "other",
  });
  const pieces = envelopePieces(kv, event);
  const first = await pieces.next();
  assert.equal(first.value, event.large.head);
  const second = await pieces.next();
  assert.equal(second.value, "null");
  await pieces.return(undefined);
});

Deno.test("[send-budget] beside a take over the whole budget, other accounts share a quarter", async () => {
  // One account's giant message, read at the slowest rate allowed, held the whole budget: every
  // other account's large events waited up to a minute behind it.
  const budget = createSendBudget(100);
  const order: string[] = [];
  const giant = await budget.take(500, "attacker");
  const small = await budget.take(20, "victim");
  assert.equal(budget.held(), 520);
  // Past the quarter: waits for room beside the giant.
  const next = budget.take(10, "third").then((release) => (order.push("third"), release));
  // Another take over the budget waits for the first to end, and holds no one back meanwhile.
  const second = budget.take(300, "other").then((release) => (order.push("second giant"), release));
  small();
  (await next)();
  assert.deepEqual(order, ["third"]);
  giant();
  (await second)();
  assert.deepEqual(order, ["third", "second giant"]);
  assert.equal(budget.held(), 0);
});
