import assert from "node:assert/strict";
import { openWs, postWebhook, signUp, startTestServer, type TestServer } from "./helpers.ts";

async function respondMode(
  server: TestServer,
  options: { token: string; slug: string; body: string },
): Promise<Response> {
  return await fetch(`${server.url}/api/endpoints/${options.slug}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${options.token}`, "Content-Type": "application/json" },
    body: options.body,
  });
}

Deno.test("[respond] the sender gets the first client's status, headers and body", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const set = await respondMode(server, { ...user, body: '{"respond": true}' });
  assert.equal(set.status, 200);
  assert.equal((await set.json()).endpoint.respond, true);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const late = await openWs(`${server.wsUrl}?token=${user.token}`);
  const sending = postWebhook(`${user.webhookUrl}/slack?command=/deploy`, "token=x&text=hi", {
    "Content-Type": "application/x-www-form-urlencoded",
  });
  const event = await ws.next();
  assert.equal(event.type, "webhook");
  ws.send({
    type: "response",
    id: event.id,
    status: 201,
    headers: { "Content-Type": "application/json", "X-Answer": "yes" },
    body: '{"text":"deploying"}',
  });
  const response = await sending;
  assert.equal(response.status, 201);
  assert.equal(response.headers.get("content-type"), "application/json");
  assert.equal(response.headers.get("x-answer"), "yes");
  assert.equal(await response.text(), '{"text":"deploying"}');
  // A second answer for the same event finds nobody waiting.
  assert.equal((await late.next()).id, event.id);
  late.send({ type: "response", id: event.id, status: 200, body: "too late" });
  assert.match((await late.next()).message as string, /no sender is waiting/);
  // The event was stored and counted like any other.
  const stored = await fetch(`${server.url}/api/events/${event.id}`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(stored.status, 200);
  assert.equal((await stored.json()).path, "/slack");
  await ws.close();
  await late.close();
});

Deno.test("[respond] no client connected gives 503 at once; no answer gives 504", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await (await respondMode(server, {
    ...user,
    body: '{"respond": true, "respondTimeoutSeconds": 1}',
  }))
    .body?.cancel();
  const alone = await postWebhook(user.webhookUrl, '{"challenge":"abc"}');
  assert.equal(alone.status, 503);
  assert.match((await alone.json()).error, /no client is connected; the webhook was stored as/);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const silent = await postWebhook(user.webhookUrl, '{"challenge":"def"}');
  assert.equal(silent.status, 504);
  assert.match((await silent.json()).error, /no client answered within 1 s/);
  const me = await (await fetch(`${server.url}/api/me`, {
    headers: { Authorization: `Bearer ${user.token}` },
  })).json();
  assert.equal(me.usage.used, 2);
  const bad = await respondMode(server, { ...user, body: '{"respondTimeoutSeconds": 31}' });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /respondTimeoutSeconds: must be at most 30/);
  await ws.close();
});

Deno.test("[acks] acknowledgements show up in the event's delivery record; clients are listed", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const response = await postWebhook(user.webhookUrl, "{}");
  const { id } = await response.json();
  assert.equal((await ws.next()).id, id);
  ws.send({ type: "ack", id, status: 200 });
  ws.send({ type: "ack", id: "nope" });
  assert.match((await ws.next()).message as string, /\(id\): must be an event id/);
  const auth = { Authorization: `Bearer ${user.token}` };
  const deliveries = await fetch(`${server.url}/api/events/${id}/deliveries`, { headers: auth });
  assert.equal(deliveries.status, 200);
  const body = await deliveries.json();
  assert.equal(body.deliveries.length, 1);
  assert.equal(body.deliveries[0].status, 200);
  assert.equal(body.deliveries[0].transport, "ws");
  const clients = await (await fetch(`${server.url}/api/clients`, { headers: auth })).json();
  assert.equal(clients.clients.length, 1);
  assert.equal(clients.clients[0].id, body.deliveries[0].connectionId);
  assert.equal(clients.clients[0].lastEventId, id);
  assert.ok(
    Date.parse(clients.clients[0].lastSeenAt) >= Date.parse(clients.clients[0].connectedAt),
  );
  await ws.close();
});
