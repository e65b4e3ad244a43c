/** The Hono application: shared middleware, the error mapper, and every route. */
import { Hono } from "hono";
import { TrieRouter } from "hono/router/trie-router";
import type { Services } from "../lib/runtime/services.ts";
import type { AppEnv } from "./_env.ts";
import { authRoutes } from "./auth.ts";
import { billingRoutes } from "./billing.ts";
import { stripeRoutes } from "./stripe.ts";
import { billingActionRoutes } from "./billing_actions.ts";
import { endpointRoutes } from "./endpoints.ts";
import { eventRoutes } from "./events.ts";
import { groupRoutes } from "./groups.ts";
import { handleIngest, INGEST_PREFIX } from "./ingest.ts";
import { errorResponse } from "../lib/http/error_response.ts";
import { HttpError } from "../lib/http/http_error.ts";
import type { Handler } from "../lib/http/server.ts";
import { onFirstUse } from "../lib/runtime/first_use.ts";
import { meRoutes } from "./me.ts";
import { pageRoutes } from "./pages.tsx";
import { tokenRoutes } from "./tokens.ts";
import { socketRoutes } from "./socket.ts";
import { accountPageRoutes } from "./account_pages.tsx";
import { dashboardPageRoutes } from "./dashboard_pages.tsx";
import { docsPageRoutes } from "./docs_page.tsx";
import { endpointPageRoutes } from "./endpoint_pages.tsx";
import { tokenPageRoutes } from "./token_pages.tsx";
import { usagePageRoutes } from "./usage_pages.tsx";
import { observeRoutes } from "./observe.ts";
import { accountSettingsRoutes } from "./account_settings.tsx";
import { apiDocsRoutes } from "./api_docs.tsx";
import { mailRoutes } from "./mail.ts";
import { mailPageRoutes } from "./mail_pages.tsx";

/** Builds the app for one set of services. */
export function createApp(services: Services): Hono<AppEnv> {
  // Hono's default router tries its RegExpRouter first, at the first request, and falls back
  // to the trie for these routes (`/api/events/stream` beside `/api/events/:id`): building both
  // cost the first answer ~3 ms. The trie is what answered every request either way.
  const app = new Hono<AppEnv>({ router: new TrieRouter() });
  app.use(async (c, next) => {
    c.set("services", services);
    await next();
    // Hono answers HEAD with the GET handler and drops its body without cancelling it: a
    // stream made for it (a download holding its slot, read-ahead from KV) lived on unread.
    if (c.req.method === "HEAD" && c.res.body) {
      await c.res.body.cancel();
      c.res = new Response(null, c.res);
    }
    // API answers may hold what a cookie lets read (events, tokens): never stored by a cache,
    // never sniffed into something else. Streams set their own caching; 101 is immutable.
    if (c.res.status === 101) return;
    const headers = c.res.headers;
    if (!headers.has("X-Content-Type-Options")) headers.set("X-Content-Type-Options", "nosniff");
    if (c.req.path.startsWith("/api/") && !headers.has("Cache-Control")) {
      headers.set("Cache-Control", "no-store");
    }
  });
  // LOG_REQUESTS: lib/observe/requests.ts logs every request, ingest included, with its id.
  app.route("/", observeRoutes());
  app.route("/", socketRoutes());
  app.route("/", authRoutes());
  app.route("/", meRoutes());
  app.route("/", tokenRoutes());
  app.route("/", billingRoutes());
  app.route("/", stripeRoutes());
  app.route("/", billingActionRoutes());
  app.route("/", endpointRoutes());
  app.route("/", eventRoutes());
  app.route("/", groupRoutes());
  app.route("/", pageRoutes(services.config));
  app.route("/", accountPageRoutes());
  app.route("/", dashboardPageRoutes());
  app.route("/", tokenPageRoutes());
  app.route("/", endpointPageRoutes());
  app.route("/", usagePageRoutes());
  app.route("/", docsPageRoutes());
  app.route("/", accountSettingsRoutes());
  app.route("/", apiDocsRoutes());
  app.route("/", mailRoutes());
  app.route("/", mailPageRoutes());
  app.notFound((c) => c.json({ error: `Not found: ${c.req.method} ${c.req.path}` }, 404));
  app.onError((error, c) =>
    errorResponse(error, { method: c.req.method, path: c.req.path, request: c.req.raw })
  );
  return app;
}

/** A host as compared: lower case, without the scheme's default port. */
const normalHost = (host: string) => host.toLowerCase().replace(/:(80|443)$/, "");
let ingestHost = { url: "", host: "" };

/**
 * With INGEST_URL set, ingest and the app are two hosts of one server: answers written by
 * clients never share an origin with the dashboard. Returns the refusal for a request on the
 * wrong host, or null. The host is the Host header (X-Forwarded-Host behind a trusted proxy).
 */
function wrongHost(
  services: Services,
  request: Request,
  options: { host: string; ingestPath: boolean },
): Response | null {
  const { ingestUrl, publicUrl, trustProxy } = services.config;
  if (ingestUrl === null) return null;
  if (ingestHost.url !== ingestUrl) {
    ingestHost = { url: ingestUrl, host: normalHost(new URL(ingestUrl).host) };
  }
  const forwarded = trustProxy ? request.headers.get("X-Forwarded-Host") : null;
  const onIngestHost = normalHost(forwarded ?? options.host) === ingestHost.host;
  if (onIngestHost === options.ingestPath) return null;
  const message = options.ingestPath
    ? `Not found: webhooks are received at ${ingestUrl}${INGEST_PREFIX}…, not on this host`
    : `Not found: this host only receives webhooks (POST ${ingestUrl}${INGEST_PREFIX}<slug>); ` +
      `the app is at ${publicUrl}`;
  const path = new URL(request.url).pathname;
  return errorResponse(new HttpError(404, message), { method: request.method, path });
}

/**
 * `withResponseCheck` of routes/_api.ts, imported at the first request: the API's declarations
 * cost every start ~40 ms to build, and only API_RESPONSE_CHECK (the tests) needs them.
 */
function withLazyResponseCheck(handler: Handler): Handler {
  const checked = onFirstUse(() =>
    import("./_api.ts").then((api) => api.withResponseCheck(handler))
  );
  return async (request, info) => await (await checked())(request, info);
}

/** The server's request handler: the ingest hot path first, everything else through Hono. */
export function createHandler(services: Services): Handler {
  const app = createApp(services);
  const routed: Handler = (request, info) => app.fetch(request, info);
  const serve = services.config.apiResponseCheck ? withLazyResponseCheck(routed) : routed;
  return (request, info) => {
    const url = request.url;
    const hostStart = url.indexOf("//") + 2;
    const pathStart = url.indexOf("/", hostStart);
    const ingestPath = url.startsWith(INGEST_PREFIX, pathStart);
    if (services.config.ingestUrl !== null) {
      const refused = wrongHost(services, request, {
        host: url.slice(hostStart, pathStart),
        ingestPath,
      });
      if (refused) return refused;
    }
    if (ingestPath) {
      const queryStart = url.indexOf("?", pathStart);
      return handleIngest(
        services,
        request,
        url.slice(pathStart, queryStart === -1 ? undefined : queryStart),
      );
    }
    return serve(request, info);
  };
}
