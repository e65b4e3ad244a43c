/**
 * The API description: the document is valid OpenAPI 3.1, every /api route of the app is in it,
 * /docs/api shows it, and the response check (on in every test server) turns an answer that
 * differs from its declaration into a 500 that fails the test which produced it.
 */
import assert from "node:assert/strict";
import SwaggerParser from "@apidevtools/swagger-parser";
import { z } from "zod";
import { createApp } from "../routes/_app.ts";
import { API_ROUTES, findApiRoute } from "../routes/_api.ts";
import { INGEST_PREFIX } from "../routes/ingest.ts";
import { loadConfig } from "../lib/runtime/config.ts";
import type { Services } from "../lib/runtime/services.ts";
import { checkedResponse, responseProblem } from "../lib/api/response_check.ts";
import type { ApiRoute } from "../lib/api/openapi.ts";
import { wireSchemas } from "../lib/shared/wire.ts";
import { PASSWORD_MIN_LENGTH } from "../lib/accounts/passwords.ts";
import { webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import { openSse, openWs, postWebhook, signUp, startTestServer } from "./helpers.ts";

const wire = wireSchemas();

/** Every method + path the Hono app routes under /api, besides middleware. */
function appApiRoutes(): string[] {
  const config = loadConfig({ PORT: "0", KV_PATH: ":memory:" });
  // Building the app reads only the config; no request is served.
  const app = createApp({ config } as unknown as Services);
  const routes = app.routes
    .filter((route) => route.method !== "ALL" && route.path.startsWith("/api/"))
    .map((route) => `${route.method.toLowerCase()} ${route.path}`);
  return [...new Set(routes)].sort();
}

Deno.test("[openapi] the document at /api/openapi.json is valid OpenAPI 3.1", async () => {
  await using server = await startTestServer();
  const response = await fetch(`${server.url}/api/openapi.json`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("Content-Type") ?? "", /^application\/json/);
  const document = await response.json();
  assert.equal(document.openapi, "3.1.0");
  assert.equal(document.servers[0].url, server.url);
  // validate() dereferences in place: hand it a copy so the checks below see the references.
  await SwaggerParser.validate(structuredClone(document));
  // The envelope and the WebSocket client messages are named schemas.
  for (const name of ["WebhookEnvelope", "WsClientMessage", "Error", "PublicEndpoint"]) {
    assert.ok(document.components.schemas[name], `components.schemas.${name} is missing`);
  }
  const messages = document.components.schemas.WsClientMessage.oneOf ??
    document.components.schemas.WsClientMessage.anyOf;
  assert.deepEqual(
    messages.map((one: { properties: { type: { const: string } } }) => one.properties.type.const)
      .sort(),
    ["ack", "ping", "replay", "response", "subscribe"],
  );
  // Request bodies come from the schemas the routes parse with: the sign-up rules show.
  const signup = document.paths["/api/auth/signup"].post;
  const body = signup.requestBody.content["application/json"].schema;
  assert.deepEqual(body.required.sort(), ["email", "password"]);
  assert.equal(body.properties.password.minLength, PASSWORD_MIN_LENGTH);
  assert.ok(signup.responses["201"] && signup.responses["429"] && signup.responses.default);
  assert.equal(
    signup.responses.default.content["application/json"].schema.$ref,
    "#/components/schemas/Error",
  );
});

Deno.test("[openapi] every /api route of the app is declared, and every declaration is routed", () => {
  const declared = new Set(API_ROUTES.map((route) => `${route.method} ${route.path}`));
  const undocumented = appApiRoutes().filter((route) => !declared.has(route));
  assert.deepEqual(
    undocumented,
    [],
    "these routes have no declaration in routes/_api.ts API_ROUTES (see its header)",
  );
  const routed = new Set(appApiRoutes());
  const stale = API_ROUTES.filter((route) =>
    // Ingest is served before the router, and /ws is the WebSocket upgrade.
    !route.path.startsWith(INGEST_PREFIX) && route.path !== "/ws" &&
    !routed.has(`${route.method} ${route.path}`)
  ).map((route) => `${route.method} ${route.path}`);
  assert.deepEqual(stale, [], "these declarations name no route of the app");
});

Deno.test("[openapi] /docs/api shows every route and the envelope without scripts", async () => {
  await using server = await startTestServer();
  const response = await fetch(`${server.url}/docs/api`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("Content-Type") ?? "", /^text\/html/);
  const html = await response.text();
  assert.doesNotMatch(html, /<script/i);
  for (const route of API_ROUTES) {
    assert.ok(
      html.includes(`${route.method.toUpperCase()} ${route.path.replace(/:(\w+)/g, "{$1}")}`),
      `${route.method} ${route.path} is not on /docs/api`,
    );
  }
  assert.match(html, /id="schema-WebhookEnvelope"/);
  assert.match(html, /id="schema-WsClientMessage"/);
  assert.match(html, /href="\/api\/openapi.json"/);
});

Deno.test("[openapi] an answer that differs from its declaration becomes a 500 naming it", async () => {
  const route: ApiRoute = {
    method: "get",
    path: "/api/example",
    tag: "Test",
    summary: "example",
    auth: "none",
    responses: { 200: { description: "ok", schema: z.object({ count: z.number() }) } },
  };
  const check = (status: number, body: unknown, contentType = "application/json") =>
    responseProblem(route, { status, contentType, body: JSON.stringify(body) }, wire.error);
  assert.equal(check(200, { count: 1 }), null);
  assert.equal(check(404, { error: "Not found" }), null);
  assert.match(check(200, { count: "1" })!, /^count: /);
  assert.match(check(200, { count: 1, extra: 2 })!, /^extra: .*does not declare/);
  assert.match(check(201, { count: 1 })!, /201 is not declared/);
  assert.match(check(400, { message: "x" })!, /^error: /);
  assert.match(check(200, { count: 1 }, "text/plain")!, /content type is text\/plain/);

  // An answer as declared goes on with its status, headers and bytes.
  const passed = await checkedResponse(
    route,
    new Response('{"count": 2}', {
      headers: { "Content-Type": "application/json", "X-Kept": "yes" },
    }),
    wire.error,
  );
  assert.equal(passed.status, 200);
  assert.equal(passed.headers.get("X-Kept"), "yes");
  assert.equal(await passed.text(), '{"count": 2}');

  const errors: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => errors.push(args);
  let checked: Response;
  try {
    checked = await checkedResponse(route, Response.json({ count: "many" }), wire.error);
  } finally {
    console.error = original;
  }
  assert.equal(checked.status, 500);
  assert.match(checked.headers.get("Content-Type") ?? "", /^application\/json/);
  const body = await checked.json();
  assert.match(body.error, /GET \/api\/example answered 200.*count: /);
  assert.equal(errors.length, 1, "the mismatch is logged as a fault");
});

Deno.test("[openapi] the check is on in test servers and off by default", () => {
  assert.equal(loadConfig({}).apiResponseCheck, false);
  assert.equal(loadConfig({ API_RESPONSE_CHECK: "1" }).apiResponseCheck, true);
  // The router's view of paths: static segments win over parameters, ingest takes subpaths.
  assert.equal(findApiRoute("GET", "/api/events/stream")?.path, "/api/events/stream");
  assert.equal(findApiRoute("GET", "/api/events/01ABC")?.path, "/api/events/:id");
  assert.equal(findApiRoute("POST", "/api/in/abc/github/push")?.path, "/api/in/:slug");
  assert.equal(findApiRoute("GET", "/api/nothing"), null);
});

Deno.test("[openapi] a tour of every declared route answers as declared", async () => {
  // Each call goes through the response check: a drift would be a 500 here.
  await using server = await startTestServer();
  const user = await signUp(server);
  const auth = { Authorization: `Bearer ${user.token}` };
  const json = { ...auth, "Content-Type": "application/json" };
  const seen = new Set<string>();
  const call = async (method: string, path: string, body?: unknown, expected = 200) => {
    const response = await fetch(`${server.url}${path}`, {
      method,
      headers: body === undefined ? auth : json,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    assert.equal(response.status, expected, `${method} ${path}: ${text}`);
    const route = findApiRoute(method, path.split("?")[0]);
    if (route) seen.add(`${route.method} ${route.path}`);
    return text ? JSON.parse(text) : null;
  };

  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  assert.equal(sse.response.status, 200);
  seen.add("get /api/events/stream");
  const ws = await openWs(`${server.wsUrl}/ws?token=${user.token}`);
  seen.add("get /ws");
  const posted = await postWebhook(user.webhookUrl, JSON.stringify({ hello: "world" }));
  assert.equal(posted.status, 200);
  // Ingest is served before the router, so its answers are checked here rather than on the way.
  const ingest = findApiRoute("POST", new URL(user.webhookUrl).pathname)!;
  const answer = await posted.text();
  const ingestProblem = (response: Response, body: string) =>
    responseProblem(ingest, {
      status: response.status,
      contentType: response.headers.get("Content-Type"),
      body,
    }, wire.error);
  assert.equal(ingestProblem(posted, answer), null);
  const { id } = JSON.parse(answer);
  const unknown = await postWebhook(`${server.url}/api/in/no-such-slug`, "{}");
  assert.equal(unknown.status, 404);
  assert.equal(ingestProblem(unknown, await unknown.text()), null);
  seen.add("post /api/in/:slug");
  const envelope = JSON.parse((await sse.next()).data);
  webhookEnvelopeSchema.parse(envelope);
  assert.equal((await ws.next()).id, id);
  ws.send({ type: "ack", id, status: 200 });
  const preflight = await fetch(user.webhookUrl, { method: "OPTIONS" });
  assert.equal(preflight.status, 204);
  seen.add("options /api/in/:slug");

  await call("GET", "/api/me");
  await call("GET", "/api/clients");
  const listed = await call("GET", "/api/events?limit=10");
  assert.equal(listed.events[0].id, id);
  await call("GET", `/api/events/${id}`);
  const download = await fetch(`${server.url}/api/events/${id}/body`, { headers: auth });
  assert.equal(download.status, 200);
  assert.equal(await download.text(), JSON.stringify({ hello: "world" }));
  seen.add("get /api/events/:id/body");
  await call("GET", `/api/events/${id}/deliveries`);
  await call("POST", `/api/events/${id}/resend`);
  await call("POST", `/api/events/${id}/redeliver`);
  await call("GET", "/api/groups");
  await call("DELETE", "/api/groups/nothing", undefined, 404);
  await call("POST", "/api/groups/nothing/ack", { connection: "c", id }, 409);

  const created = await call("POST", "/api/tokens", { name: "tour", scopes: ["events:read"] }, 201);
  await call("GET", "/api/tokens");
  await call("DELETE", `/api/tokens/${created.token.id}`);
  const endpoint = (await call("POST", "/api/endpoints", { name: "tour" }, 201)).endpoint;
  await call("GET", "/api/endpoints");
  await call("PATCH", `/api/endpoints/${endpoint.slug}`, { provider: "github", secret: "s3cret" });
  const rotated = (await call("POST", `/api/endpoints/${endpoint.slug}/rotate`)).endpoint;
  await call("DELETE", `/api/endpoints/${rotated.slug}`);

  await call("GET", "/api/billing");
  await call("PUT", "/api/billing/cap", { monthlyCap: 10 });
  await call("GET", "/api/usage");
  await call("GET", "/api/invoices");
  // Stripe is not configured in this server: its routes answer with their declared errors.
  await call("POST", "/api/stripe/webhook", undefined, 404);
  await call("GET", "/api/openapi.json");

  const login = await fetch(`${server.url}/api/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: user.email, password: "correct horse battery" }),
  });
  assert.equal(login.status, 200);
  await login.body?.cancel();
  seen.add("post /api/auth/login");
  seen.add("post /api/auth/signup");
  const logout = await fetch(`${server.url}/api/auth/logout`, {
    method: "POST",
    headers: { Cookie: user.cookie },
  });
  assert.equal(logout.status, 200);
  await logout.body?.cancel();
  seen.add("post /api/auth/logout");

  await call("POST", "/api/auth/forgot", { email: user.email }, 202);
  await call("POST", "/api/auth/reset", { token: "nope", password: "0123456789ab" }, 400);
  await call("POST", "/api/auth/verify", { token: "nope" }, 400);
  await call("POST", "/api/account/verification", undefined, 202);
  await call(
    "POST",
    "/api/account/email",
    { email: `moved-${user.email}`, password: "correct horse battery" },
    202,
  );
  await call("POST", "/api/account/email/confirm", { token: "nope" }, 400);
  await call("POST", "/api/account/password", {
    currentPassword: "correct horse battery",
    newPassword: "correct horse battery staple",
  });
  await call("DELETE", "/api/account", { password: "wrong password" }, 403);
  await call("DELETE", "/api/account", { password: "correct horse battery staple" });

  sse.close();
  await ws.close();
  const billingWithStripe = [
    "post /api/billing/checkout",
    "post /api/billing/portal",
    "post /api/billing/downgrade",
  ];
  const missed = API_ROUTES.map((route) => `${route.method} ${route.path}`)
    .filter((key) => !seen.has(key) && !billingWithStripe.includes(key));
  // The other ingest methods share POST's declaration; Stripe's routes run in stripe_test.ts.
  assert.deepEqual(missed.filter((key) => !key.endsWith(" /api/in/:slug")), []);
});
