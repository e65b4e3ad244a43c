/**
 * Scoped tokens end to end (issue 13): `events:read` and `manage`, tokens limited to endpoints
 * (over SSE, WebSocket, history, one event, resend and clients), tokens stored before scopes,
 * the 400s of a bad request, and the dashboard's token form. A real server on loopback.
 */
import assert from "node:assert/strict";
import {
  openSse,
  openWs,
  postWebhook,
  signUp,
  type SseStream,
  startTestServer,
  type TestServer,
  type TestUser,
  waitFor,
} from "./helpers.ts";
import type { Browser, Page } from "playwright-core";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import { clusterSides, instanceSides, postOn, signUpOn } from "./sides.ts";
import { tokenKey } from "../lib/store/kv_keys.ts";
import type { Token } from "../lib/accounts/tokens.ts";

/** Calls the API with a bearer token (or a session cookie) and a JSON body when given. */
async function api(
  server: TestServer,
  options: { token?: string; cookie?: string; method?: string; path: string; body?: unknown },
): Promise<Response> {
  const headers: Record<string, string> = {};
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  if (options.cookie) {
    headers.Cookie = options.cookie;
    headers.Origin = server.url;
  }
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  return await fetch(`${server.url}${options.path}`, {
    method: options.method ?? "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
}

/** Asserts a JSON answer's status and content type, and returns its body. */
async function expectJson(
  response: Response,
  status: number,
  what: string,
): Promise<Record<string, unknown>> {
  const text = await response.text();
  assert.equal(response.status, status, `${what}: ${text}`);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/, what);
  return JSON.parse(text);
}

/** Creates a token through the API with the user's full token; returns its value and record. */
async function createToken(
  server: TestServer,
  user: TestUser,
  body: { name?: string; scopes?: string[]; endpoints?: string[] },
): Promise<{ value: string; id: string; scopes: string[]; endpoints: string[] | null }> {
  const response = await api(server, {
    token: user.token,
    method: "POST",
    path: "/api/tokens",
    body: { name: "scoped", ...body },
  });
  const { token } = await expectJson(response, 201, "create token") as {
    token: { value: string; id: string; scopes: string[]; endpoints: string[] | null };
  };
  return token;
}

/** Adds an endpoint to the user's account; its slug and webhook URL. */
async function addEndpoint(
  server: TestServer,
  user: TestUser,
  name: string,
): Promise<{ slug: string; url: string }> {
  const response = await api(server, {
    token: user.token,
    method: "POST",
    path: "/api/endpoints",
    body: { name },
  });
  const { endpoint } = await expectJson(response, 201, "create endpoint") as {
    endpoint: { slug: string; url: string };
  };
  return endpoint;
}

/** Posts a webhook and returns its id. */
async function send(url: string, body: unknown): Promise<string> {
  const response = await postWebhook(url, JSON.stringify(body));
  assert.equal(response.status, 200);
  return (await response.json()).id;
}

/** The next webhook of an SSE stream (named notices skipped), parsed. */
async function nextWebhook(stream: SseStream): Promise<Record<string, unknown>> {
  for (;;) {
    const message = await stream.next();
    if (message.event === null) return JSON.parse(message.data);
  }
}

/** A user with two endpoints: the sign-up one (`a`) and `b`. */
async function twoEndpoints(server: TestServer) {
  const user = await signUp(server);
  const b = await addEndpoint(server, user, "second");
  return { user, a: { slug: user.slug, url: user.webhookUrl }, b };
}

const MANAGEMENT_ROUTES = (slug: string, tokenId: string): [string, string, unknown?][] => [
  ["GET", "/api/tokens"],
  ["POST", "/api/tokens", { name: "x" }],
  ["DELETE", `/api/tokens/${tokenId}`],
  ["GET", "/api/endpoints"],
  ["POST", "/api/endpoints", { name: "x" }],
  ["PATCH", `/api/endpoints/${slug}`, { respond: true }],
  ["POST", `/api/endpoints/${slug}/rotate`],
  ["DELETE", `/api/endpoints/${slug}`],
  ["GET", "/api/billing"],
  ["PUT", "/api/billing/cap", { monthlyCap: 100 }],
  ["POST", "/api/billing/checkout"],
  ["POST", "/api/billing/portal"],
  ["POST", "/api/billing/downgrade"],
  ["GET", "/api/usage"],
  ["GET", "/api/invoices"],
];

Deno.test('[scopes] a stream-only token gets 403 naming "manage" on every management route; full tokens and sessions pass', async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const stream = await createToken(server, user, { scopes: ["events:read"] });
  assert.deepEqual(stream.scopes, ["events:read"]);
  assert.equal(stream.endpoints, null);
  for (const [method, path, body] of MANAGEMENT_ROUTES(user.slug, user.tokenId)) {
    const refused = await api(server, { token: stream.value, method, path, body });
    assert.deepEqual(await expectJson(refused, 403, `${method} ${path}`), {
      error: 'Forbidden: this token lacks the "manage" scope',
    });
  }
  // Nothing was changed by the refusals: the full token still works, the endpoint is there.
  const reads = MANAGEMENT_ROUTES(user.slug, user.tokenId).filter(([method]) => method === "GET");
  for (const [method, path] of reads) {
    await expectJson(await api(server, { token: user.token, method, path }), 200, path);
    await expectJson(await api(server, { cookie: user.cookie, method, path }), 200, path);
  }
  const cap = await api(server, {
    token: user.token,
    method: "PUT",
    path: "/api/billing/cap",
    body: { monthlyCap: 100 },
  });
  await expectJson(cap, 200, "PUT /api/billing/cap with a full token");
  // Billing actions need Stripe, which this server lacks: refused for that, never for scope.
  for (const path of ["/api/billing/checkout", "/api/billing/portal"]) {
    const response = await api(server, { token: user.token, method: "POST", path });
    assert.notEqual(response.status, 403, path);
    await response.body?.cancel();
  }
  const made = await api(server, {
    token: user.token,
    method: "POST",
    path: "/api/endpoints",
    body: { name: "made" },
  });
  await expectJson(made, 201, "POST /api/endpoints with a full token");
  const revoked = await api(server, {
    token: user.token,
    method: "DELETE",
    path: `/api/tokens/${stream.id}`,
  });
  await expectJson(revoked, 200, "DELETE /api/tokens/:id with a full token");
});

Deno.test('[scopes] a stream-only token may use every events route; a manage-only one gets 403 naming "events:read"', async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const stream = await createToken(server, user, { scopes: ["events:read"] });
  const manage = await createToken(server, user, { scopes: ["manage"] });
  const id = await send(user.webhookUrl, { hello: 1 });
  const routes: [string, string, number][] = [
    ["GET", "/api/events", 200],
    ["GET", `/api/events/${id}`, 200],
    ["GET", `/api/events/${id}/body`, 200],
    ["GET", `/api/events/${id}/deliveries`, 200],
    ["POST", `/api/events/${id}/resend`, 200],
    ["POST", `/api/events/${id}/redeliver`, 200],
    ["GET", "/api/clients", 200],
  ];
  for (const [method, path, status] of routes) {
    const allowed = await api(server, { token: stream.value, method, path });
    assert.equal(allowed.status, status, `${method} ${path}: ${await allowed.clone().text()}`);
    await allowed.body?.cancel();
    const refused = await api(server, { token: manage.value, method, path });
    assert.deepEqual(await expectJson(refused, 403, `${method} ${path}`), {
      error: 'Forbidden: this token lacks the "events:read" scope',
    });
  }
  // Streams: SSE and the WebSocket handshake, refused before anything starts.
  const sse = await openSse(`${server.url}/api/events/stream?token=${stream.value}`);
  assert.equal(sse.response.status, 200);
  assert.equal(sse.response.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const live = send(user.webhookUrl, { live: 1 });
  assert.equal((await nextWebhook(sse)).id, await live);
  sse.close();
  const ws = await openWs(`${server.wsUrl}/ws?token=${stream.value}`);
  const sent = await send(user.webhookUrl, { live: 2 });
  const message = await ws.next();
  assert.equal(message.id, sent);
  ws.send({ type: "ack", id: sent, status: 200 });
  await waitFor(async () => {
    const response = await api(server, {
      token: stream.value,
      path: `/api/events/${sent}/deliveries`,
    });
    return ((await response.json()).deliveries as unknown[]).length === 1;
  }, { what: "the stream-only token's ack recorded" });
  await ws.close();
  const refusedSse = await fetch(`${server.url}/api/events/stream?token=${manage.value}`);
  assert.deepEqual(await expectJson(refusedSse, 403, "SSE with a manage-only token"), {
    error: 'Forbidden: this token lacks the "events:read" scope',
  });
  const refusedWs = await fetch(`${server.url}/ws?token=${manage.value}`, {
    headers: {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
    },
  });
  assert.deepEqual(await expectJson(refusedWs, 403, "WebSocket with a manage-only token"), {
    error: 'Forbidden: this token lacks the "events:read" scope',
  });
  // /api/me answers every token (clients check their token there), without usage when it
  // cannot manage.
  const me = await expectJson(
    await api(server, { token: stream.value, path: "/api/me" }),
    200,
    "me",
  );
  assert.equal(me.usage, null);
  assert.deepEqual(me.access, { scopes: ["events:read"], endpoints: null });
  const full = await expectJson(
    await api(server, { token: user.token, path: "/api/me" }),
    200,
    "me",
  );
  assert.equal((full.usage as { used: number }).used, 3);
  assert.deepEqual(full.access, { scopes: ["events:read", "manage"], endpoints: null });
});

Deno.test("[scopes] tokens stored before scopes keep full access; the sign-up token is full", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const kv = server.services.kv;
  const entry = await kv.get<Token>(tokenKey(user.id, user.tokenId));
  assert.deepEqual(entry.value?.scopes, ["events:read", "manage"]);
  assert.equal(entry.value?.endpointIds, null);
  // As a token written before this change: no scopes, no endpoints.
  const { scopes: _scopes, endpointIds: _ids, ...old } = entry.value!;
  await kv.set(entry.key, old);
  const listed = await expectJson(
    await api(server, { token: user.token, path: "/api/tokens" }),
    200,
    "GET /api/tokens with an old token",
  );
  assert.deepEqual(listed.tokens, [{
    id: user.tokenId,
    name: "default",
    prefix: user.token.slice(0, 8),
    createdAt: old.createdAt,
    lastUsedAt: (listed.tokens as { lastUsedAt: string }[])[0].lastUsedAt,
    scopes: ["events:read", "manage"],
    endpoints: null,
  }]);
  await expectJson(await api(server, { token: user.token, path: "/api/billing" }), 200, "billing");
  const made = await api(server, {
    token: user.token,
    method: "POST",
    path: "/api/endpoints",
    body: { name: "x" },
  });
  await expectJson(made, 201, "POST /api/endpoints with an old token");
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  assert.equal(sse.response.status, 200);
  const id = send(user.webhookUrl, { old: true });
  assert.equal((await nextWebhook(sse)).id, await id);
  sse.close();
});

Deno.test("[scopes] POST /api/tokens: defaults, and 400 naming an unknown scope, a foreign endpoint, manage with endpoints", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  const other = await signUp(server);
  const full = await createToken(server, user, { name: "full" });
  assert.deepEqual([full.scopes, full.endpoints], [["events:read", "manage"], null]);
  const limited = await createToken(server, user, { endpoints: [b.slug, a.slug, b.slug] });
  // Endpoints without scopes: stream only (a managing token could lift its own limit).
  assert.deepEqual(limited.scopes, ["events:read"]);
  assert.deepEqual(limited.endpoints, [a.slug, b.slug]);
  const both = await createToken(server, user, { scopes: ["manage", "events:read", "manage"] });
  assert.deepEqual(both.scopes, ["events:read", "manage"]);

  const cases: [unknown, string][] = [
    [
      { name: "x", scopes: ["events:write"] },
      'Cannot create token: scopes.0: unknown scope "events:write"; ' +
      'the scopes are "events:read", "manage"',
    ],
    [
      { name: "x", scopes: ["events:read", "admin"] },
      'Cannot create token: scopes.1: unknown scope "admin"; the scopes are "events:read", "manage"',
    ],
    [{ name: "x", scopes: [] }, "Cannot create token: scopes: name at least one scope"],
    [
      { name: "x", endpoints: [] },
      "Cannot create token: endpoints: name at least one endpoint, or leave endpoints out for all of them",
    ],
    [
      { name: "x", endpoints: [other.slug] },
      `Cannot create token: endpoints: no endpoint ${other.slug} in this account`,
    ],
    [
      { name: "x", endpoints: ["nope"] },
      "Cannot create token: endpoints: no endpoint nope in this account",
    ],
    [
      { name: "x", scopes: ["events:read", "manage"], endpoints: [a.slug] },
      'Cannot create token: a token limited to endpoints cannot have the "manage" scope ' +
      '(it could create an unlimited token); give "scopes": ["events:read"]',
    ],
    [{ name: "x", scope: ["events:read"] }, 'Cannot create token: Unrecognized key: "scope"'],
    [{ name: "x", scopes: "events:read" }, "Cannot create token: scopes: "],
  ];
  for (const [body, error] of cases) {
    const response = await api(server, {
      token: user.token,
      method: "POST",
      path: "/api/tokens",
      body,
    });
    const answer = await expectJson(response, 400, JSON.stringify(body));
    assert.ok(
      String(answer.error).startsWith(error),
      `${JSON.stringify(body)}: ${answer.error}`,
    );
  }
  const revoked = await expectJson(
    await api(server, { token: user.token, method: "DELETE", path: `/api/tokens/${limited.id}` }),
    200,
    "revoke the limited token",
  );
  assert.deepEqual(
    [
      (revoked.revoked as { endpoints: string[] }).endpoints,
      (revoked.revoked as { scopes: string[] }).scopes,
    ],
    [[a.slug, b.slug], ["events:read"]],
  );
  const again = await createToken(server, user, { endpoints: [a.slug, b.slug] });
  assert.deepEqual(again.endpoints, [a.slug, b.slug]);
  const listed = await expectJson(
    await api(server, { token: user.token, path: "/api/tokens" }),
    200,
    "list",
  );
  const byName = (listed.tokens as { name: string; scopes: string[]; endpoints: unknown }[])
    .map(({ name, scopes, endpoints }) => ({ name, scopes, endpoints }));
  assert.deepEqual(byName, [
    { name: "default", scopes: ["events:read", "manage"], endpoints: null },
    { name: "full", scopes: ["events:read", "manage"], endpoints: null },
    { name: "scoped", scopes: ["events:read", "manage"], endpoints: null },
    { name: "scoped", scopes: ["events:read"], endpoints: [a.slug, b.slug] },
  ]);
});

Deno.test("[scopes] an endpoint-limited token over SSE: live and catch-up see only its endpoints; endpoint= intersects, outside is 403", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  const onlyA = await createToken(server, user, { endpoints: [a.slug] });
  const a0 = await send(a.url, { n: "a0" });
  await send(b.url, { n: "b1" });
  const a1 = await send(a.url, { n: "a1" });
  await send(b.url, { n: "b2" });
  const sse = await openSse(`${server.url}/api/events/stream?token=${onlyA.value}`, {
    "Last-Event-ID": a0,
  });
  assert.equal(sse.response.status, 200);
  assert.equal((await nextWebhook(sse)).id, a1);
  await send(b.url, { n: "b3" });
  const a2 = await send(a.url, { n: "a2" });
  const next = await nextWebhook(sse);
  assert.deepEqual([next.id, next.endpoint], [a2, a.slug]);
  sse.close();

  // Asking for its own endpoint is fine; for another, 403 before the stream starts.
  const own = await openSse(
    `${server.url}/api/events/stream?token=${onlyA.value}&endpoint=${a.slug}`,
    { "Last-Event-ID": a1 },
  );
  assert.equal(own.response.status, 200);
  assert.equal((await nextWebhook(own)).id, a2);
  own.close();
  for (const query of [`endpoint=${b.slug}`, `endpoint=${a.slug}&endpoint=${b.slug}`]) {
    const refused = await fetch(`${server.url}/api/events/stream?token=${onlyA.value}&${query}`);
    assert.deepEqual(await expectJson(refused, 403, query), {
      error: `Forbidden: endpoint ${b.slug} is not one of this token's endpoints`,
    });
  }
  // The same limit, filtered further by event type: nothing of b even when it matches.
  const typed = await openSse(
    `${server.url}/api/events/stream?token=${onlyA.value}&event=invoice.*`,
  );
  await send(b.url, { type: "invoice.paid" });
  await send(a.url, { type: "customer.created" });
  const paid = await send(a.url, { type: "invoice.paid" });
  assert.equal((await nextWebhook(typed)).id, paid);
  typed.close();
});

Deno.test("[scopes] an endpoint-limited token over WebSocket: live, replay and subscribe keep the limit", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  const onlyB = await createToken(server, user, { endpoints: [b.slug] });
  const b0 = await send(b.url, { n: "b0" });
  await send(a.url, { n: "a1" });
  const b1 = await send(b.url, { n: "b1" });
  const ws = await openWs(`${server.wsUrl}/ws?token=${onlyB.value}&lastEventId=${b0}`);
  assert.equal((await ws.next()).id, b1);
  await send(a.url, { n: "a2" });
  const b2 = await send(b.url, { n: "b2" });
  assert.equal((await ws.next()).id, b2);

  ws.send({ type: "subscribe", endpoint: [a.slug] });
  assert.deepEqual(await ws.next(), {
    type: "error",
    message: `Cannot subscribe: endpoint ${a.slug} is not one of this token's endpoints; ` +
      "the filters are unchanged",
  });
  // Dropping every filter keeps the token's limit.
  ws.send({ type: "subscribe" });
  assert.deepEqual(await ws.next(), {
    type: "subscribed",
    endpoint: [],
    event: [],
    method: [],
    path: [],
  });
  await send(a.url, { n: "a3" });
  const b3 = await send(b.url, { n: "b3" });
  assert.equal((await ws.next()).id, b3);
  ws.send({ type: "replay", after: b0 });
  const replayed = [(await ws.next()).id, (await ws.next()).id, (await ws.next()).id];
  assert.deepEqual(replayed, [b1, b2, b3]);
  assert.deepEqual(await ws.next(), { type: "replayed", after: b0, count: 3 });
  await ws.close();

  const refused = await fetch(`${server.url}/ws?token=${onlyB.value}&endpoint=${a.slug}`, {
    headers: {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
    },
  });
  assert.deepEqual(await expectJson(refused, 403, "WebSocket asking for another endpoint"), {
    error: `Forbidden: endpoint ${a.slug} is not one of this token's endpoints`,
  });
});

Deno.test("[scopes] an endpoint-limited token: history, one event, body, deliveries and resend of others are 404", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  const onlyA = await createToken(server, user, { endpoints: [a.slug] });
  const a1 = await send(a.url, { n: 1 });
  const b1 = await send(b.url, { n: 2 });
  const ids = { a1, b1, a2: await send(a.url, { n: 3 }) };

  const history = await expectJson(
    await api(server, { token: onlyA.value, path: "/api/events?limit=1" }),
    200,
    "history",
  );
  assert.deepEqual((history.events as { id: string }[]).map((e) => e.id), [ids.a2]);
  const page2 = await expectJson(
    await api(server, { token: onlyA.value, path: `/api/events?cursor=${history.nextCursor}` }),
    200,
    "history page 2",
  );
  assert.deepEqual((page2.events as { id: string }[]).map((e) => e.id), [ids.a1]);
  assert.equal(page2.nextCursor, null);
  const all = await expectJson(
    await api(server, { token: user.token, path: "/api/events" }),
    200,
    "all",
  );
  assert.equal((all.events as unknown[]).length, 3);

  const refusals: [string, string, string][] = [
    ["GET", `/api/events/${ids.b1}`, `Cannot read event: no retained event ${ids.b1}`],
    ["GET", `/api/events/${ids.b1}/body`, `Cannot read event body: no retained event ${ids.b1}`],
    [
      "GET",
      `/api/events/${ids.b1}/deliveries`,
      `Cannot list deliveries: no retained event ${ids.b1}`,
    ],
    ["POST", `/api/events/${ids.b1}/resend`, `Cannot resend event: no retained event ${ids.b1}`],
  ];
  for (const [method, path, error] of refusals) {
    const refused = await api(server, { token: onlyA.value, method, path });
    assert.deepEqual(await expectJson(refused, 404, `${method} ${path}`), { error });
    const allowed = await api(server, { token: user.token, method, path });
    assert.equal(allowed.status, 200, `${method} ${path} with the full token`);
    await allowed.body?.cancel();
  }
  const one = await expectJson(
    await api(server, { token: onlyA.value, path: `/api/events/${ids.a1}` }),
    200,
    "one event",
  );
  assert.deepEqual([one.id, one.endpoint, one.payload], [ids.a1, a.slug, { n: 1 }]);
  const body = await api(server, { token: onlyA.value, path: `/api/events/${ids.a1}/body` });
  assert.equal(body.status, 200);
  assert.equal(body.headers.get("content-type"), "application/octet-stream");
  assert.equal(await body.text(), '{"n":1}');
  await expectJson(
    await api(server, { token: onlyA.value, path: `/api/events/${ids.a1}/deliveries` }),
    200,
    "deliveries",
  );

  // A resend of its own event reaches its stream; the full token's resend of b's does not.
  const sse = await openSse(`${server.url}/api/events/stream?token=${onlyA.value}`);
  assert.equal(sse.response.status, 200);
  await waitFor(async () => {
    const clients = await api(server, { token: onlyA.value, path: "/api/clients" });
    return ((await clients.json()).clients as unknown[]).length === 1;
  }, { what: "the stream is listed" });
  const resentB = await api(server, {
    token: user.token,
    method: "POST",
    path: `/api/events/${ids.b1}/resend`,
  });
  await expectJson(resentB, 200, "resend of b with the full token");
  const resentA = await api(server, {
    token: onlyA.value,
    method: "POST",
    path: `/api/events/${ids.a1}/resend`,
  });
  assert.deepEqual(await expectJson(resentA, 200, "resend of a"), {
    ok: true,
    id: ids.a1,
    clients: 1,
  });
  assert.equal((await nextWebhook(sse)).id, ids.a1);
  sse.close();
});

Deno.test("[scopes] GET /api/clients: an endpoint-limited token sees only clients limited within its endpoints", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  const onlyA = await createToken(server, user, { endpoints: [a.slug] });
  const onlyB = await createToken(server, user, { endpoints: [b.slug] });
  const both = await createToken(server, user, { endpoints: [a.slug, b.slug] });
  const streams = [
    await openSse(`${server.url}/api/events/stream?token=${user.token}`),
    await openSse(`${server.url}/api/events/stream?token=${onlyA.value}`),
  ];
  const sockets = [await openWs(`${server.wsUrl}/ws?token=${onlyB.value}`)];
  const count = async (token: string) => {
    const response = await api(server, { token, path: "/api/clients" });
    return ((await expectJson(response, 200, "clients")).clients as unknown[]).length;
  };
  await waitFor(async () => (await count(user.token)) === 3, { what: "three clients" });
  assert.equal(await count(onlyA.value), 1);
  assert.equal(await count(onlyB.value), 1);
  assert.equal(await count(both.value), 2);
  const clients = await expectJson(
    await api(server, { token: onlyB.value, path: "/api/clients" }),
    200,
    "clients of b",
  );
  assert.equal((clients.clients as { transport: string }[])[0].transport, "ws");
  const me = await expectJson(
    await api(server, { token: onlyA.value, path: "/api/me" }),
    200,
    "me",
  );
  assert.equal(me.connectedClients, 1);
  assert.deepEqual((me.endpoints as { slug: string }[]).map((e) => e.slug), [a.slug]);
  assert.deepEqual(me.access, { scopes: ["events:read"], endpoints: [a.slug] });
  for (const stream of streams) stream.close();
  for (const socket of sockets) await socket.close();
});

Deno.test("[scopes] a rotated endpoint keeps its tokens (live too); a deleted one leaves them nothing new", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  const onlyA = await createToken(server, user, { endpoints: [a.slug] });
  const onlyB = await createToken(server, user, { endpoints: [b.slug] });
  const before = await send(a.url, { n: "before" });
  const sse = await openSse(`${server.url}/api/events/stream?token=${onlyA.value}`);
  assert.equal(sse.response.status, 200);
  const rotated = await expectJson(
    await api(server, {
      token: user.token,
      method: "POST",
      path: `/api/endpoints/${a.slug}/rotate`,
    }),
    200,
    "rotate",
  ) as { endpoint: { slug: string; url: string } };
  const after = await send(rotated.endpoint.url, { n: "after" });
  const live = await nextWebhook(sse);
  assert.deepEqual([live.id, live.endpoint], [after, rotated.endpoint.slug]);
  sse.close();
  const history = await expectJson(
    await api(server, { token: onlyA.value, path: "/api/events" }),
    200,
    "history after rotation",
  );
  // Events under the old slug stay its own: the limit is by endpoint id.
  assert.deepEqual((history.events as { id: string }[]).map((e) => e.id), [after, before]);
  const asked = await openSse(
    `${server.url}/api/events/stream?token=${onlyA.value}&endpoint=${rotated.endpoint.slug}`,
  );
  assert.equal(asked.response.status, 200);
  asked.close();

  const b1 = await send(b.url, { n: "b1" });
  await expectJson(
    await api(server, { token: user.token, method: "DELETE", path: `/api/endpoints/${b.slug}` }),
    200,
    "delete b",
  );
  const tokens = await expectJson(
    await api(server, { token: user.token, path: "/api/tokens" }),
    200,
    "list",
  );
  const views = tokens.tokens as { id: string; endpoints: string[] | null }[];
  assert.deepEqual(views.find((t) => t.id === onlyA.id)?.endpoints, [rotated.endpoint.slug]);
  // Limited to nothing that exists: it sees nothing new, never everything.
  assert.deepEqual(views.find((t) => t.id === onlyB.id)?.endpoints, []);
  const stream = await openSse(`${server.url}/api/events/stream?token=${onlyB.value}`);
  assert.equal(stream.response.status, 200);
  await send(rotated.endpoint.url, { n: "not for b" });
  const left = await expectJson(
    await api(server, { token: onlyB.value, path: "/api/events" }),
    200,
    "b",
  );
  // What b received before it was deleted stays readable until retention ends.
  assert.deepEqual((left.events as { id: string }[]).map((e) => e.id), [b1]);
  const a3 = await send(rotated.endpoint.url, { n: "a3" });
  const catchUp = await openSse(`${server.url}/api/events/stream?token=${onlyB.value}`, {
    "Last-Event-ID": before,
  });
  assert.equal((await nextWebhook(catchUp)).id, b1);
  catchUp.close();
  stream.close();
  const full = await expectJson(
    await api(server, { token: user.token, path: "/api/events" }),
    200,
    "all",
  );
  assert.equal((full.events as { id: string }[])[0].id, a3);
});

/** POSTs the token form as our own page would, with repeated fields, not following redirects. */
async function postTokenForm(
  server: TestServer,
  user: TestUser,
  fields: [string, string][],
): Promise<Response> {
  return await fetch(`${server.url}/dashboard/tokens`, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Origin: server.url,
      Cookie: user.cookie,
    },
    body: new URLSearchParams(fields),
    redirect: "manual",
  });
}

/** The tokens page as HTML, asserting status and content type. */
async function tokensPage(server: TestServer, user: TestUser): Promise<string> {
  const response = await fetch(`${server.url}/dashboard/tokens`, {
    headers: { Cookie: user.cookie },
  });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  return await response.text();
}

Deno.test("[scopes] the dashboard's token form: stream only by default, full access, endpoint checkboxes, the list shows each scope", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  const page = await tokensPage(server, user);
  assert.match(page, /<input type="radio" name="access" value="stream" checked\/>/);
  assert.match(page, /<input type="radio" name="access" value="full"\/>/);
  assert.ok(page.includes(`<input type="checkbox" name="endpoint" value="${a.slug}"/>`));
  assert.ok(page.includes(`<input type="checkbox" name="endpoint" value="${b.slug}"/>`));
  assert.match(page, /<td data-label="Access" class="token-access">Full access<\/td>/);

  const posts: [string, [string, string][]][] = [
    ["plain", [["name", "plain"]]],
    ["stream", [["name", "stream"], ["access", "stream"]]],
    ["full", [["name", "full"], ["access", "full"]]],
    ["two", [["name", "two"], ["access", "stream"], ["endpoint", a.slug], [
      "endpoint",
      b.slug,
    ]]],
  ];
  for (const [what, fields] of posts) {
    const response = await postTokenForm(server, user, fields);
    assert.equal(response.status, 303, what);
    assert.equal(response.headers.get("location"), "/dashboard/tokens");
    await response.body?.cancel();
  }
  const listed = await expectJson(
    await api(server, { token: user.token, path: "/api/tokens" }),
    200,
    "list",
  );
  assert.deepEqual(
    (listed.tokens as { name: string; scopes: string[]; endpoints: unknown }[])
      .map(({ name, scopes, endpoints }) => [name, scopes, endpoints]),
    [
      ["default", ["events:read", "manage"], null],
      ["plain", ["events:read"], null],
      ["stream", ["events:read"], null],
      ["full", ["events:read", "manage"], null],
      ["two", ["events:read"], [a.slug, b.slug]],
    ],
  );
  const after = await tokensPage(server, user);
  const access = [...after.matchAll(/<td data-label="Access" class="token-access">([^<]*)</g)]
    .map((match) => match[1]);
  assert.deepEqual(access, [
    "Full access",
    "Stream only",
    "Stream only",
    "Full access",
    "Stream only, endpoints default, second",
  ]);

  // Full access with endpoints is refused, keeping what was chosen.
  const mixed = await postTokenForm(server, user, [
    ["name", "mixed"],
    ["access", "full"],
    ["endpoint", b.slug],
  ]);
  assert.equal(mixed.status, 400);
  assert.equal(mixed.headers.get("content-type"), "text/html; charset=utf-8");
  const refused = await mixed.text();
  assert.match(
    refused,
    /role="alert">Cannot create token: full access covers every endpoint; choose stream only to limit a token to some.</,
  );
  assert.match(refused, /<input type="radio" name="access" value="full" checked\/>/);
  assert.ok(refused.includes(`<input type="checkbox" name="endpoint" value="${b.slug}" checked/>`));
  assert.ok(refused.includes(`value="mixed"`));
  const bogus = await postTokenForm(server, user, [["name", "x"], ["access", "admin"]]);
  assert.equal(bogus.status, 400);
  assert.match(await bogus.text(), /Cannot create token: choose stream only or full access./);
  const foreign = await postTokenForm(server, user, [["name", "x"], ["endpoint", "nope"]]);
  assert.equal(foreign.status, 400);
  assert.match(await foreign.text(), /Cannot create token: endpoints: no endpoint nope/);
});

for (const [kind, start] of [["cluster", clusterSides], ["instances", instanceSides]] as const) {
  Deno.test(`[scopes] ${kind}: an endpoint-limited token's clients on either side get only its endpoints' events`, async () => {
    const sides = await start();
    try {
      const user = await signUpOn(sides);
      const json = { ...user.auth, "Content-Type": "application/json" };
      const second = await sides.fetch(0, "/api/endpoints", {
        method: "POST",
        headers: json,
        body: JSON.stringify({ name: "second" }),
      });
      const b = (await expectJson(second, 201, "create endpoint")).endpoint as { slug: string };
      const created = await sides.fetch(1, "/api/tokens", {
        method: "POST",
        headers: json,
        body: JSON.stringify({ name: "only a", endpoints: [user.slug] }),
      });
      const onlyA = (await expectJson(created, 201, "create token")).token as { value: string };
      const sse = await sides.openSse(1, `/api/events/stream?token=${onlyA.value}`);
      const ws = await sides.openWs(0, `/ws?token=${onlyA.value}`);
      const sent: string[] = [];
      for (const side of [0, 1] as const) {
        assert.equal((await postOn(sides, { side, slug: b.slug, body: "{}" })).status, 200);
        const posted = await postOn(sides, { side, slug: user.slug, body: "{}" });
        assert.equal(posted.status, 200);
        sent.push(posted.id!);
      }
      assert.deepEqual([(await nextWebhook(sse)).id, (await nextWebhook(sse)).id], sent);
      assert.deepEqual([(await ws.next()).id, (await ws.next()).id], sent);
      sse.close();
      await ws.close();
    } finally {
      await sides.close();
    }
  });
}

Deno.test("[scopes] in Chromium, the token form makes a stream-only token for one endpoint, and refuses full access with endpoints", async () => {
  await using server = await startTestServer();
  const { user, a, b } = await twoEndpoints(server);
  let browser: Browser | null = null;
  let page: Page | null = null;
  const problems: string[] = [];
  try {
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(15_000);
    const [name, value] = user.cookie.split("=");
    await context.addCookies([{ name, value, url: server.url }]);
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      // A refused form answers 400, which Chromium logs; anything else (a CSP refusal) counts.
      if (message.type() === "error" && !/status of 4\d\d/.test(message.text())) {
        problems.push(`console error: ${message.text()}`);
      }
    });
    await page.goto(`${server.url}/dashboard/tokens`);
    assert.equal(await page.getByRole("radio", { name: /^Stream only/ }).isChecked(), true);
    assert.equal(await page.getByRole("radio", { name: /^Full access/ }).isChecked(), false);

    await page.getByLabel("Name").fill("browser");
    await page.getByRole("checkbox", { name: /^second/ }).check();
    await page.getByRole("button", { name: "Create token" }).click();
    await page.getByText("Copy its value now").waitFor();
    const token = await page.locator("input[value^=wsk_]").inputValue();
    const row = page.locator("tr", { has: page.getByRole("rowheader", { name: "browser" }) });
    assert.equal(
      await row.locator("td.token-access").textContent(),
      "Stream only, endpoint second",
    );

    // What the browser made: a stream-only token that sees b alone.
    const refused = await api(server, { token, path: "/api/tokens" });
    assert.equal(refused.status, 403);
    await refused.body?.cancel();
    const stream = await openSse(`${server.url}/api/events/stream?token=${token}`);
    assert.equal(stream.response.status, 200);
    await send(a.url, { n: "a" });
    const sent = await send(b.url, { n: "b" });
    assert.equal((await nextWebhook(stream)).id, sent);
    stream.close();

    await page.getByLabel("Name").fill("wrong");
    await page.getByRole("radio", { name: /^Full access/ }).check();
    await page.getByRole("checkbox", { name: /^default/ }).check();
    await page.getByRole("button", { name: "Create token" }).click();
    await page.getByRole("alert").filter({ hasText: "full access covers every endpoint" })
      .waitFor();
    assert.equal(await page.getByRole("radio", { name: /^Full access/ }).isChecked(), true);
    assert.equal(await page.getByRole("checkbox", { name: /^default/ }).isChecked(), true);
    assert.equal(await page.getByLabel("Name").inputValue(), "wrong");
    assert.deepEqual(problems, [], "the page reported errors");
  } catch (error) {
    if (page) await saveScreenshot(page, "token form");
    if (problems.length) console.error(problems.join("\n"));
    throw error;
  } finally {
    await browser?.close();
  }
});

Deno.test("[scopes] an endpoint-limited token neither sees nor acks a group member's event of another endpoint", async () => {
  await using server = await startTestServer({ ACKS_PER_SECOND: "0" });
  const { user, b } = await twoEndpoints(server);
  const onlyA = await createToken(server, user, { endpoints: [user.slug] });
  // A full-token member of group "g" is sent an event of endpoint b and holds it.
  const member = await openWs(`${server.wsUrl}/ws?token=${user.token}&group=g`);
  const id = await send(b.url, { secret: "of b" });
  const event = await member.next();
  assert.equal(event.id, id);
  const groupsOf = async (token: string) =>
    (await expectJson(await api(server, { token, path: "/api/groups" }), 200, "groups"))
      .groups as { name: string; members: { id: string; inFlight: unknown }[] }[];
  const [full] = await groupsOf(user.token);
  assert.equal(full.members.length, 1);
  const connection = full.members[0].id;
  // The limited token is not shown the member, its connection id or the event in flight.
  const [limited] = await groupsOf(onlyA.value);
  assert.equal(limited.name, "g");
  assert.deepEqual(limited.members, []);
  // Nor may it settle that event in the member's place (before: 200, and the member's own
  // ack was then refused as acked already).
  const acked = await api(server, {
    token: onlyA.value,
    method: "POST",
    path: "/api/groups/g/ack",
    body: { connection, id },
  });
  assert.deepEqual(await expectJson(acked, 404, "ack by the limited token"), {
    error: `Cannot ack ${id} in group "g": no such event for this token`,
  });
  const own = await api(server, {
    token: user.token,
    method: "POST",
    path: "/api/groups/g/ack",
    body: { connection, id },
  });
  assert.equal((await expectJson(own, 200, "the member's own ack")).ok, true);
  await member.close();
});
