import assert from "node:assert/strict";
import { idTime } from "../lib/store/ids.ts";
import { openSse, openWs, postWebhook, signUp, startTestServer, waitFor } from "./helpers.ts";

async function post(url: string, value: unknown): Promise<string> {
  const response = await postWebhook(url, JSON.stringify(value));
  assert.equal(response.status, 200);
  return (await response.json()).id;
}

Deno.test("[sse] a missing or bad token gets 401 JSON, not a stream", async () => {
  await using server = await startTestServer();
  for (const query of ["", "?token=wsk_nope", "?token="]) {
    const response = await fetch(`${server.url}/api/events/stream${query}`);
    assert.equal(response.status, 401);
    assert.match(response.headers.get("content-type")!, /^application\/json/);
    assert.match((await response.json()).error, /^Unauthorized/);
  }
});

Deno.test("[sse] webhooks arrive as unnamed events with ids, after a retry hint", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const response = await fetch(`${server.url}/api/events/stream?token=${user.token}`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^text\/event-stream/);
  assert.equal(response.headers.get("cache-control"), "no-cache, no-transform");
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const first = (await reader.read()).value!;
  assert.match(first, /^retry: \d+\n/);
  // A pretty-printed JSON body: its line breaks must not split the SSE data field.
  const id = await post(user.webhookUrl, { multi: "line" });
  const pretty = await postWebhook(user.webhookUrl, '{\n  "pretty": true\n}');
  const prettyId = (await pretty.json()).id;
  let text = "";
  while (!text.includes(prettyId + "\ndata:") || !text.endsWith("\n\n")) {
    text += (await reader.read()).value;
  }
  const frames = text.split("\n\n").filter((f) => f.startsWith("id: "));
  assert.equal(frames.length, 2);
  const [idLine, dataLine] = frames[0].split("\n");
  assert.equal(idLine, `id: ${id}`);
  assert.ok(!frames[0].includes("event:"));
  const envelope = JSON.parse(dataLine.slice("data: ".length));
  assert.equal(envelope.type, "webhook");
  assert.deepEqual(envelope.payload, { multi: "line" });
  const prettyFrame = frames[1].split("\n");
  assert.equal(prettyFrame.length, 2);
  const prettyEnvelope = JSON.parse(prettyFrame[1].slice("data: ".length));
  assert.deepEqual(prettyEnvelope.payload, { pretty: true });
  assert.equal(prettyEnvelope.body, '{\n  "pretty": true\n}');
  await reader.cancel();
});

Deno.test("[sse] reconnecting with Last-Event-ID replays what was missed: none lost, none twice", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const streamUrl = `${server.url}/api/events/stream?token=${user.token}`;
  const first = await openSse(streamUrl);
  const a = await post(user.webhookUrl, 1);
  assert.equal((await first.next()).id, a);
  first.close();
  // Posted while away:
  const away = [];
  for (let i = 0; i < 5; i++) away.push(await post(user.webhookUrl, { away: i }));
  const second = await openSse(streamUrl, { "Last-Event-ID": a });
  // Posted during the replay hand-over:
  const during = await Promise.all([post(user.webhookUrl, "x"), post(user.webhookUrl, "y")]);
  const received = [];
  for (let i = 0; i < away.length + during.length; i++) received.push((await second.next()).id!);
  assert.deepEqual(received.slice(0, 5), away);
  assert.deepEqual(received.slice(5).sort(), during.sort());
  assert.deepEqual([...received].sort(), received, "in order");
  // Nothing more came in between: the next message is one posted now.
  const marker = await post(user.webhookUrl, "marker");
  assert.equal((await second.next()).id, marker, "no duplicate before the next event");
  second.close();

  // The query form works too, and a malformed id is refused.
  const third = await openSse(`${streamUrl}&lastEventId=${away[3]}`);
  assert.equal((await third.next()).id, away[4]);
  third.close();
  const bad = await fetch(`${streamUrl}&lastEventId=garbage`);
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /not an event id/);
});

Deno.test("[ws] / and /ws deliver; bad tokens are refused before the upgrade", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const root = await openWs(`${server.wsUrl}?token=${user.token}`);
  const ws = await openWs(`${server.wsUrl}/ws?token=${user.token}`);
  const id = await post(user.webhookUrl, { to: "both" });
  assert.equal((await root.next()).id, id);
  assert.equal((await ws.next()).id, id);
  await root.close();
  await ws.close();

  const refused = await fetch(`${server.url}/ws?token=wsk_bad`, {
    headers: {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
    },
  });
  assert.equal(refused.status, 401);
  assert.match((await refused.json()).error, /unknown or revoked/);
  await assert.rejects(() => openWs(`${server.wsUrl}?token=wsk_bad`), /failed/);
  const plain = await fetch(`${server.url}/ws`);
  assert.equal(plain.status, 426);
  await plain.body?.cancel();
});

Deno.test("[ws] ping, replay and malformed messages; the socket stays open", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ids = [
    await post(user.webhookUrl, 1),
    await post(user.webhookUrl, 2),
    await post(user.webhookUrl, 3),
  ];
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  ws.send({ type: "ping" });
  assert.deepEqual(await ws.next(), { type: "pong" });
  ws.send("not json");
  assert.deepEqual(await ws.next(), {
    type: "error",
    message: "Cannot read message: it is not valid JSON",
  });
  ws.send({ type: "dance" });
  const unknown = await ws.next();
  assert.equal(unknown.type, "error");
  assert.match(unknown.message as string, /expected \{"type":"ping"\}/);
  ws.send({ type: "replay", after: "nope" });
  assert.match((await ws.next()).message as string, /after.*must be an event id/);
  ws.send({ type: "replay", after: ids[0] });
  assert.equal((await ws.next()).id, ids[1]);
  assert.equal((await ws.next()).id, ids[2]);
  assert.deepEqual(await ws.next(), { type: "replayed", after: ids[0], count: 2 });
  const live = await post(user.webhookUrl, 4);
  assert.equal((await ws.next()).id, live);
  await ws.close();

  // Connecting with lastEventId resumes the same way.
  const resumed = await openWs(`${server.wsUrl}?token=${user.token}&lastEventId=${ids[1]}`);
  assert.equal((await resumed.next()).id, ids[2]);
  assert.equal((await resumed.next()).id, live);
  await resumed.close();
});

Deno.test("[isolation] a token only ever receives its owner's events", async () => {
  await using server = await startTestServer();
  const alice = await signUp(server);
  const bob = await signUp(server);
  const aliceWs = await openWs(`${server.wsUrl}?token=${alice.token}`);
  const bobSse = await openSse(`${server.url}/api/events/stream?token=${bob.token}`);
  const forBob = await post(bob.webhookUrl, "bob");
  const forAlice = await post(alice.webhookUrl, "alice");
  assert.equal((await aliceWs.next()).id, forAlice);
  assert.equal((await bobSse.next()).id, forBob);
  // Nothing else arrived: the next message is the answer to a ping, or bob's next event.
  aliceWs.send({ type: "ping" });
  assert.deepEqual(await aliceWs.next(), { type: "pong" });
  const replay = await openSse(
    `${server.url}/api/events/stream?token=${bob.token}&lastEventId=${"0".repeat(26)}`,
  );
  assert.equal((await replay.next()).id, forBob);
  const laterForBob = await post(bob.webhookUrl, "bob again");
  assert.equal((await bobSse.next()).id, laterForBob);
  assert.equal((await replay.next()).id, laterForBob);
  await aliceWs.close();
  bobSse.close();
  replay.close();
});

Deno.test("[fanout] 100 concurrent subscribers each receive every event once, in order", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const sockets = await Promise.all(
    Array.from({ length: 50 }, () => openWs(`${server.wsUrl}?token=${user.token}`)),
  );
  const streams = await Promise.all(
    Array.from(
      { length: 50 },
      () => openSse(`${server.url}/api/events/stream?token=${user.token}`),
    ),
  );
  const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => post(user.webhookUrl, { i })));
  ids.sort();
  for (const ws of sockets) {
    const got = [];
    for (let i = 0; i < ids.length; i++) got.push((await ws.next()).id);
    assert.deepEqual(got, ids);
  }
  for (const sse of streams) {
    const got = [];
    for (let i = 0; i < ids.length; i++) got.push((await sse.next()).id);
    assert.deepEqual(got, ids);
  }
  await Promise.all(sockets.map((ws) => ws.close()));
  streams.forEach((s) => s.close());
});

Deno.test("[retention] expired events are never served", async () => {
  // 0.0005 h = 1.8 s of retention.
  await using server = await startTestServer({ RETENTION_HOURS: "0.0005" });
  const user = await signUp(server);
  const old = await post(user.webhookUrl, "old");
  // Retention elapsing is the behaviour under test: wait until it has, for the old event.
  await waitFor(() => Date.now() > idTime(old) + server.config.retentionMs, {
    what: "the old event's retention to pass",
    timeoutMs: 5000,
  });
  const fresh = await post(user.webhookUrl, "fresh");
  const auth = { Authorization: `Bearer ${user.token}` };
  const history = await (await fetch(`${server.url}/api/events`, { headers: auth })).json();
  assert.deepEqual(history.events.map((e: { id: string }) => e.id), [fresh]);
  const one = await fetch(`${server.url}/api/events/${old}`, { headers: auth });
  assert.equal(one.status, 404);
  await one.body?.cancel();
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  ws.send({ type: "replay" });
  assert.equal((await ws.next()).id, fresh);
  assert.deepEqual(await ws.next(), { type: "replayed", after: null, count: 1 });
  await ws.close();
});

Deno.test("[shutdown] streams are closed so clients reconnect elsewhere", async () => {
  const server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  await server.shutdown();
  assert.equal((await ws.closed).code, 1001);
  assert.equal((await sse.next(1000)).event, "close");
  await assert.rejects(() => sse.next(1000), /ended/);
});

Deno.test("[events] resend sends a stored event again to every connected client", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  const id = await post(user.webhookUrl, { once: "more" });
  assert.equal((await ws.next()).id, id);
  assert.equal((await sse.next()).id, id);
  const auth = { Authorization: `Bearer ${user.token}` };
  const response = await fetch(`${server.url}/api/events/${id}/resend`, {
    method: "POST",
    headers: auth,
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await response.json(), { ok: true, id, clients: 2 });
  const again = await ws.next();
  assert.equal(again.id, id);
  assert.deepEqual(again.payload, { once: "more" });
  assert.equal((await sse.next()).id, id);
  const missing = await fetch(`${server.url}/api/events/${"0".repeat(26)}/resend`, {
    method: "POST",
    headers: auth,
  });
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  await ws.close();
  sse.close();
});

Deno.test("[events] POST /api/events/:id/redeliver, resend's first name, still resends", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const id = await post(user.webhookUrl, { first: "name" });
  assert.equal((await ws.next()).id, id);
  const auth = { Authorization: `Bearer ${user.token}` };
  const response = await fetch(`${server.url}/api/events/${id}/redeliver`, {
    method: "POST",
    headers: auth,
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await response.json(), { ok: true, id, clients: 1 });
  const again = await ws.next();
  assert.equal(again.id, id);
  assert.deepEqual(again.payload, { first: "name" });
  const bad = await fetch(`${server.url}/api/events/nope/redeliver`, {
    method: "POST",
    headers: auth,
  });
  assert.equal(bad.status, 400);
  assert.match(bad.headers.get("content-type")!, /^application\/json/);
  assert.match((await bad.json()).error, /not an event id/);
  const anonymous = await fetch(`${server.url}/api/events/${id}/redeliver`, { method: "POST" });
  assert.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
  await ws.close();
});

Deno.test("[events] replay, history and lookup work inside packs of concurrent events", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  // Submitted together, they commit in two batches (the first alone, then the other 39), so
  // most share one stored pack whatever the machine's load; HTTP could trickle them in.
  const endpoint = (await server.services.endpoints.get(user.slug))!;
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => {
    const body = new TextEncoder().encode(JSON.stringify({ i }));
    return server.services.ingest.submit({
      endpoint,
      receivedAt: new Date(),
      method: "POST",
      path: "/",
      queryJson: "{}",
      headersJson: '{"content-type":"application/json"}',
      contentType: "application/json",
      kind: "json",
      body,
      text: new TextDecoder().decode(body),
    });
  }));
  assert.ok(results.every((r) => r.accepted));
  const ids = results.map((r) => (r.accepted ? r.id : "")).sort();
  const middle = ids[17];
  let packs = 0;
  for await (const _ of server.services.kv.list({ prefix: ["events", user.id] })) packs++;
  assert.ok(packs < ids.length, `expected shared packs, got ${packs} for ${ids.length} events`);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}&lastEventId=${middle}`);
  const replayed = [];
  for (let i = 18; i < ids.length; i++) replayed.push((await ws.next()).id);
  assert.deepEqual(replayed, ids.slice(18));
  ws.send({ type: "ping" });
  assert.deepEqual(await ws.next(), { type: "pong" }, "nothing more was replayed");
  await ws.close();

  const auth = { Authorization: `Bearer ${user.token}` };
  const seen: string[] = [];
  let cursor = "";
  do {
    const page = await (await fetch(`${server.url}/api/events?limit=7${cursor}`, { headers: auth }))
      .json();
    seen.push(...page.events.map((e: { id: string }) => e.id));
    cursor = page.nextCursor ? `&cursor=${page.nextCursor}` : "";
  } while (cursor);
  assert.deepEqual(seen, [...ids].reverse());

  for (const id of [ids[0], middle, ids[39]]) {
    const one = await fetch(`${server.url}/api/events/${id}`, { headers: auth });
    assert.equal(one.status, 200);
    assert.equal((await one.json()).id, id);
  }
});
