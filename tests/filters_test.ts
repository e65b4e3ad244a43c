/**
 * Filtered subscriptions end to end (issue 13): `endpoint`, `event`, `method` and `path` on SSE
 * and WebSocket, on live traffic and on catch-up, the WebSocket `subscribe` message, and the
 * 400s for bad filters. A real server on loopback; typed events as GitHub, Stripe, Slack and
 * Shopify send them.
 */
import assert from "node:assert/strict";
import {
  openSse,
  openWs,
  signUp,
  type SseStream,
  startTestServer,
  type TestUser,
} from "./helpers.ts";
import type { TestServer } from "./helpers.ts";

/** A webhook as one provider would send it: its headers and JSON body. */
interface Sent {
  headers?: Record<string, string>;
  body: unknown;
  method?: string;
  path?: string;
}

const stripe = (type: string): Sent => ({ body: { id: "evt_1", type, data: {} } });
const github = (event: string, action?: string): Sent => ({
  headers: { "X-GitHub-Event": event },
  body: action ? { action } : { ref: "refs/heads/main" },
  path: "/github",
});

/** Posts `sent` to an endpoint and returns the stored id. */
async function send(url: string, sent: Sent): Promise<string> {
  const response = await fetch(`${url}${sent.path ?? ""}`, {
    method: sent.method ?? "POST",
    headers: { "Content-Type": "application/json", ...sent.headers },
    body: JSON.stringify(sent.body),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).id;
}

/** A second endpoint of the user; its webhook URL and slug. */
async function addEndpoint(
  server: TestServer,
  user: TestUser,
): Promise<{ slug: string; url: string }> {
  const response = await fetch(`${server.url}/api/endpoints`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "second" }),
  });
  assert.equal(response.status, 201);
  const { endpoint } = await response.json();
  return { slug: endpoint.slug, url: endpoint.url };
}

/** The next webhook envelope of an SSE stream (notices skipped). */
async function nextSse(stream: SseStream): Promise<Record<string, unknown>> {
  while (true) {
    const message = await stream.next();
    if (message.event === null) return JSON.parse(message.data);
  }
}

/** The next `count` webhook ids of a WebSocket (other messages skipped). */
async function wsIds(
  ws: { next(): Promise<Record<string, unknown>> },
  count: number,
): Promise<string[]> {
  const ids: string[] = [];
  while (ids.length < count) {
    const message = await ws.next();
    if (message.type === "webhook") ids.push(message.id as string);
  }
  return ids;
}

Deno.test("[filters] SSE: endpoint and event filters on live traffic across endpoints", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const second = await addEndpoint(server, user);
  const base = `${server.url}/api/events/stream?token=${user.token}`;
  const filtered = await openSse(
    `${base}&endpoint=${second.slug}&event=invoice.*&event=issues.opened`,
  );
  const all = await openSse(base);
  try {
    assert.equal(filtered.response.status, 200);
    assert.equal(filtered.response.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const sent = [
      await send(user.webhookUrl, stripe("invoice.paid")), // other endpoint
      await send(second.url, stripe("invoice.paid")),
      await send(second.url, stripe("customer.created")),
      await send(second.url, github("issues", "closed")),
      await send(second.url, github("issues", "opened")),
      await send(second.url, github("push")),
      await send(second.url, { body: { hello: "untyped" } }),
      await send(second.url, stripe("invoice.finalized")),
    ];
    // In order, and nothing between: the next envelope after each match is the next match.
    const got = [await nextSse(filtered), await nextSse(filtered), await nextSse(filtered)];
    assert.deepEqual(got.map((e) => e.id), [sent[1], sent[4], sent[7]]);
    assert.deepEqual(got.map((e) => e.eventType), [
      "invoice.paid",
      "issues.opened",
      "invoice.finalized",
    ]);
    assert.ok(got.every((e) => e.endpoint === second.slug));
    // The unfiltered stream gets everything, each with its type (or null).
    const everything = [];
    for (let i = 0; i < sent.length; i++) everything.push(await nextSse(all));
    assert.deepEqual(everything.map((e) => e.id), sent);
    assert.deepEqual(everything.map((e) => e.eventType), [
      "invoice.paid",
      "invoice.paid",
      "customer.created",
      "issues.closed",
      "issues.opened",
      "push",
      null,
      "invoice.finalized",
    ]);
    // And the history rows show it.
    const history = await fetch(`${server.url}/api/events?limit=2`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assert.equal(history.status, 200);
    const rows = (await history.json()).events;
    assert.deepEqual(rows.map((r: { eventType: string | null }) => r.eventType), [
      "invoice.finalized",
      null,
    ]);
  } finally {
    filtered.close();
    all.close();
  }
});

Deno.test("[filters] WebSocket: method and path prefix, and event wildcards for typed events", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const byRoute = await openWs(`${server.wsUrl}/ws?token=${user.token}&method=put&path=/github`);
  const byType = await openWs(
    `${server.wsUrl}/?token=${user.token}&event=*.created&event=push&event=channel_*`,
  );
  try {
    const sent = [
      await send(user.webhookUrl, { ...github("push"), method: "PUT" }),
      await send(user.webhookUrl, { ...github("push") }), // POST
      await send(user.webhookUrl, { ...stripe("customer.created"), method: "PUT" }), // path /
      await send(user.webhookUrl, {
        headers: { "X-Shopify-Topic": "orders/create" },
        body: { id: 1 },
        method: "PUT",
        path: "/github/shopify",
      }),
      await send(user.webhookUrl, {
        body: { type: "event_callback", event: { type: "channel_created" } },
      }),
      await send(user.webhookUrl, { ...stripe("invoice.created"), method: "PUT", path: "/github" }),
    ];
    assert.deepEqual(await wsIds(byRoute, 3), [sent[0], sent[3], sent[5]]);
    assert.deepEqual(await wsIds(byType, 5), [sent[0], sent[1], sent[2], sent[4], sent[5]]);
  } finally {
    await byRoute.close();
    await byType.close();
  }
});

Deno.test("[filters] catch-up: Last-Event-ID, lastEventId and replay send exactly the matching missed events, in order", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const second = await addEndpoint(server, user);
  const first = await send(user.webhookUrl, stripe("invoice.paid"));
  const missed = [
    await send(user.webhookUrl, stripe("invoice.paid")),
    await send(second.url, stripe("invoice.paid")),
    await send(user.webhookUrl, stripe("charge.failed")),
    await send(user.webhookUrl, github("issues", "opened")),
    await send(user.webhookUrl, stripe("invoice.voided")),
    await send(second.url, stripe("invoice.created")),
  ];
  const query = `endpoint=${user.slug}&event=invoice.*`;
  const expected = [missed[0], missed[4]];

  // SSE with Last-Event-ID: the missed matches, then live ones, nothing else.
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}&${query}`, {
    "Last-Event-ID": first,
  });
  // WebSocket with lastEventId in the URL.
  const ws = await openWs(`${server.wsUrl}/ws?token=${user.token}&${query}&lastEventId=${first}`);
  // WebSocket catching up by message.
  const replay = await openWs(`${server.wsUrl}/ws?token=${user.token}&${query}`);
  try {
    assert.equal(sse.response.status, 200);
    assert.deepEqual([(await nextSse(sse)).id, (await nextSse(sse)).id], expected);
    assert.deepEqual(await wsIds(ws, 2), expected);
    replay.send({ type: "replay", after: first });
    const replayed = [];
    let done: Record<string, unknown> | null = null;
    while (!done) {
      const message = await replay.next();
      if (message.type === "webhook") replayed.push(message.id);
      else if (message.type === "replayed") done = message;
    }
    assert.deepEqual(replayed, expected);
    assert.deepEqual(done, { type: "replayed", after: first, count: 2 });

    const live = [
      await send(user.webhookUrl, stripe("customer.created")),
      await send(user.webhookUrl, stripe("invoice.upcoming")),
    ];
    assert.equal((await nextSse(sse)).id, live[1]);
    assert.deepEqual(await wsIds(ws, 1), [live[1]]);
    assert.deepEqual(await wsIds(replay, 1), [live[1]]);
  } finally {
    sse.close();
    await ws.close();
    await replay.close();
  }
});

Deno.test("[filters] subscribe replaces a live WebSocket's filters; an empty one lets all through", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}/ws?token=${user.token}&event=nothing.matches`);
  try {
    ws.send({ type: "subscribe", event: ["invoice.*"], method: "post", path: "/" });
    assert.deepEqual(await ws.next(), {
      type: "subscribed",
      endpoint: [],
      event: ["invoice.*"],
      method: ["post"],
      path: ["/"],
    });
    const a = [
      await send(user.webhookUrl, stripe("customer.created")),
      await send(user.webhookUrl, stripe("invoice.paid")),
    ];
    assert.deepEqual(await wsIds(ws, 1), [a[1]]);

    ws.send({ type: "subscribe" });
    assert.deepEqual(await ws.next(), {
      type: "subscribed",
      endpoint: [],
      event: [],
      method: [],
      path: [],
    });
    const b = [
      await send(user.webhookUrl, stripe("customer.created")),
      await send(user.webhookUrl, { body: {} }),
    ];
    assert.deepEqual(await wsIds(ws, 2), b);

    // A bad subscribe is an error reply; the connection and its filters stay.
    ws.send({ type: "subscribe", event: ["x".repeat(201)] });
    const error = await ws.next();
    assert.equal(error.type, "error");
    assert.match(error.message as string, /event: a value must be at most 200 characters/);
    ws.send({ type: "subscribe", events: ["typo"] });
    assert.match((await ws.next()).message as string, /unknown key "events"/);
    const c = await send(user.webhookUrl, stripe("charge.failed"));
    assert.deepEqual(await wsIds(ws, 1), [c]);
  } finally {
    await ws.close();
  }
});

/** The WebSocket upgrade request as a plain fetch, to see a refusal's status and body. */
function upgrade(url: string): Promise<Response> {
  return fetch(url, {
    headers: {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
    },
  });
}

Deno.test("[filters] a bad filter is refused with 400 naming the parameter", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const cases: [string, RegExp][] = [
    ["event=", /event: a value must not be empty/],
    [`event=${"x".repeat(201)}`, /event: a value must be at most 200 characters/],
    [Array.from({ length: 21 }, (_, i) => `endpoint=e${i}`).join("&"), /endpoint: at most 20/],
    ["method=P%20ST", /method: must be an HTTP method name/],
    ["path=github", /path: must start with "\/"/],
  ];
  for (const [query, message] of cases) {
    const sse = await fetch(`${server.url}/api/events/stream?token=${user.token}&${query}`);
    assert.equal(sse.status, 400, query);
    assert.match(sse.headers.get("content-type") ?? "", /^application\/json/);
    const body = await sse.json();
    assert.match(body.error, /^Cannot subscribe: /);
    assert.match(body.error, message);
    const ws = await upgrade(
      `${server.wsUrl.replace(/^ws/, "http")}/ws?token=${user.token}&${query}`,
    );
    assert.equal(ws.status, 400, query);
    assert.match(ws.headers.get("content-type") ?? "", /^application\/json/);
    assert.match((await ws.json()).error, message);
  }
  // Twenty values of 200 characters each are fine.
  const most = Array.from({ length: 20 }, (_, i) => `event=${String(i).padEnd(200, "*")}`).join(
    "&",
  );
  const ok = await openSse(`${server.url}/api/events/stream?token=${user.token}&${most}`);
  assert.equal(ok.response.status, 200);
  ok.close();
});
