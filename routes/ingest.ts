/** POST /api/in/:slug: where senders deliver webhooks. */
import { Hono } from "hono";
import type { Context } from "hono";
import { HttpError } from "../lib/http_error.ts";
import { receiveWebhook } from "../lib/receive.ts";
import { quotaHeaders } from "../lib/usage.ts";
import type { AppEnv } from "./_env.ts";

const PREFIX = "/api/in/";
/** Browsers may post too (the dashboard's test button, a page of the user's own). */
const CORS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Methods": "POST",
  "Access-Control-Allow-Headers": "*",
  "Access-Control-Max-Age": "86400",
};

async function ingest(c: Context<AppEnv>) {
  if (c.req.method === "OPTIONS") return c.body(null, 204, CORS);
  c.header("Access-Control-Allow-Origin", "*");
  if (c.req.method !== "POST") {
    throw new HttpError(405, `Cannot ingest: method ${c.req.method} is not allowed, use POST`, {
      Allow: "POST, OPTIONS",
    });
  }
  const rest = c.req.path.slice(PREFIX.length);
  const slash = rest.indexOf("/");
  const { id, quota } = await receiveWebhook(c.get("services"), {
    request: c.req.raw,
    slug: slash === -1 ? rest : rest.slice(0, slash),
    path: slash === -1 ? "/" : rest.slice(slash),
  });
  return c.json({ ok: true, id }, 200, quotaHeaders(quota));
}

/** /api/in/:slug and /api/in/:slug/<any path> */
export function ingestRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.all("/api/in/:slug", ingest);
  app.all("/api/in/:slug/*", ingest);
  return app;
}
