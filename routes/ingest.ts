/** POST /api/in/:slug: where senders deliver webhooks. */
import { Hono } from "hono";
import type { Context } from "hono";
import { HttpError } from "../lib/http_error.ts";
import { quotaHeaders } from "../lib/usage.ts";
import { readWebhook } from "../lib/webhook_request.ts";
import type { AppEnv } from "./_env.ts";

const PREFIX = "/api/in/";
const CORS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Methods": "POST",
  "Access-Control-Allow-Headers": "*",
  "Access-Control-Max-Age": "86400",
};

async function ingest(c: Context<AppEnv>) {
  const { endpoints, ingest, ingestLimiter, config } = c.get("services");
  const rest = c.req.path.slice(PREFIX.length);
  const slash = rest.indexOf("/");
  const slug = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? "/" : rest.slice(slash);
  if (c.req.method === "OPTIONS") return c.body(null, 204, CORS);
  if (c.req.method !== "POST") {
    throw new HttpError(405, `Cannot ingest: method ${c.req.method} is not allowed, use POST`, {
      Allow: "POST, OPTIONS",
    });
  }
  const endpoint = await endpoints.get(slug);
  if (!endpoint) throw new HttpError(404, `Cannot ingest: no endpoint with slug "${slug}"`);
  const wait = ingestLimiter.take(endpoint.id);
  if (wait > 0) {
    throw new HttpError(429, "Cannot ingest: too many requests to this endpoint, slow down", {
      "Retry-After": String(wait),
    });
  }
  const webhook = await readWebhook(c.req.raw, {
    endpoint,
    path,
    maxBodyBytes: config.maxBodyBytes,
  });
  const result = await ingest.submit(webhook);
  if (result.accepted) {
    return c.json({ ok: true, id: result.id }, 200, {
      ...quotaHeaders(result.quota),
      "Access-Control-Allow-Origin": "*",
    });
  }
  if (result.reason === "no_account") {
    throw new HttpError(404, `Cannot ingest: no endpoint with slug "${slug}"`);
  }
  const { limit, used, resetAt } = result.quota;
  throw new HttpError(
    402,
    `Monthly quota exceeded: ${used} of ${limit} webhooks used; resets ${resetAt.toISOString()}. ` +
      "Raise your monthly limit or upgrade to Pro in the dashboard.",
    { ...quotaHeaders(result.quota), "Access-Control-Allow-Origin": "*" },
    { used, limit, resetsAt: resetAt.toISOString() },
  );
}

/** /api/in/:slug and /api/in/:slug/<any path> */
export function ingestRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.all("/api/in/:slug", ingest);
  app.all("/api/in/:slug/*", ingest);
  return app;
}
