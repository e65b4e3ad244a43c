/**
 * Event history and the SSE stream, for callers with the `events:read` scope; a token limited
 * to endpoints sees only their events (others answer 404, as if absent).
 */
import { Hono } from "hono";
import { z } from "zod";
import { getEvent, getEventBody, hasEvent, listEventSummaries } from "../lib/log/events.ts";
import { listDeliveries } from "../lib/log/acks.ts";
import { envelopeBody } from "../lib/log/envelope_stream.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { isId } from "../lib/store/ids.ts";
import { openSseStream, sseHeadAnswer } from "../lib/fanout/sse.ts";
import type { AppEnv } from "./_env.ts";
import { authenticateStream, requireAuth, requireScope } from "./_auth.ts";
import { credentialStands, endpointLimit, seesEvent } from "../lib/accounts/auth.ts";
import { resumePoint, streamFilter, streamGroup } from "./_parse.ts";
import { parseWith } from "../lib/http/parse.ts";

export const historyQuery = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().refine(isId, "must be an event id").optional(),
});

/** SSE clients reconnect after this many milliseconds. */
const RETRY_MS = 2000;

/** /api/events, /api/events/stream, /api/events/:id */
export function eventRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const read = [requireAuth, requireScope("events:read")] as const;

  // Pages of other sites may read a stream with a token (`?token=`): the token is the
  // credential, and `*` never lets a browser read an answer sent with the user's cookies. Errors
  // carry it too, so a client can tell a refused token (final) from a network failure.
  app.use("/api/events/stream", async (c, next) => {
    await next();
    c.res.headers.set("Access-Control-Allow-Origin", "*");
    c.res.headers.set("Access-Control-Expose-Headers", "Retry-After");
  });

  app.get("/api/events/stream", async (c) => {
    const auth = await authenticateStream(c);
    const after = resumePoint(c);
    const { connections, kv, groups } = c.get("services");
    const filter = streamFilter(c, await endpointLimit(kv, auth));
    const group = streamGroup(c);
    // HEAD answers the stream's headers before any side effect: it makes no group, and takes no
    // connection's place (routes/_app.ts cancels whatever body a HEAD would have had).
    if (c.req.method === "HEAD") return sseHeadAnswer();
    // The connection limits first, so a refused connection creates no group, and again
    // after: preparing waits for KV, and only opening takes a connection's place.
    connections.admit(auth.user.id, auth.credential);
    if (group) {
      await groups.prepare(auth.user.id, group.name);
      connections.admit(auth.user.id, auth.credential);
    }
    return openSseStream(connections, {
      userId: auth.user.id,
      credential: auth.credential,
      after,
      retryMs: RETRY_MS,
      filter,
      group,
      stands: () => credentialStands(kv, auth),
      seesUsage: auth.scopes.includes("manage"),
    });
  });

  app.get("/api/events", ...read, async (c) => {
    const query = parseWith(c.req.query(), { schema: historyQuery, action: "list events" });
    const page = await listEventSummaries(c.get("services").kv, {
      userId: c.get("auth").user.id,
      cursor: query.cursor ?? null,
      limit: query.limit,
      match: seesEvent(c.get("auth")),
    });
    return c.json(page);
  });

  app.get("/api/events/:id", ...read, async (c) => {
    const id = c.req.param("id");
    if (!isId(id)) throw new HttpError(400, `Cannot read event: "${id}" is not an event id`);
    const auth = c.get("auth");
    const event = await getEvent(c.get("services").kv, {
      userId: auth.user.id,
      id,
      match: seesEvent(auth),
    });
    if (!event) throw new HttpError(404, `Cannot read event: no retained event ${id}`);
    const { kv, downloads } = c.get("services");
    const body = envelopeBody(kv, event);
    return c.body(
      typeof body === "string" ? body : downloads.guard(auth.user.id, body, "read event"),
      200,
      { "Content-Type": "application/json" },
    );
  });

  // The sender chose these bytes and they are served from the dashboard's origin: always a
  // download, never a page (no sniffing, sandboxed, nothing cached), whatever the content type.
  app.get("/api/events/:id/body", ...read, async (c) => {
    const id = c.req.param("id");
    if (!isId(id)) throw new HttpError(400, `Cannot read event body: "${id}" is not an event id`);
    const auth = c.get("auth");
    const event = await getEventBody(c.get("services").kv, {
      userId: auth.user.id,
      id,
      match: seesEvent(auth),
    });
    if (!event) throw new HttpError(404, `Cannot read event body: no retained event ${id}`);
    const body = event.body instanceof ReadableStream
      ? c.get("services").downloads.guard(auth.user.id, event.body, "read event body")
      : event.body;
    return c.body(body, 200, {
      ...downloadHeaders(id, event.contentType),
      "Content-Length": String(event.size),
    });
  });

  app.get("/api/events/:id/deliveries", ...read, async (c) => {
    const id = c.req.param("id");
    if (!isId(id)) throw new HttpError(400, `Cannot list deliveries: "${id}" is not an event id`);
    const auth = c.get("auth");
    const match = seesEvent(auth);
    // Only a limited token asks: everyone else keeps seeing deliveries of expired events too.
    if (match && !(await hasEvent(c.get("services").kv, { userId: auth.user.id, id, match }))) {
      throw new HttpError(404, `Cannot list deliveries: no retained event ${id}`);
    }
    const deliveries = await listDeliveries(c.get("services").kv, {
      userId: c.get("auth").user.id,
      eventId: id,
    });
    return c.json({ id, deliveries });
  });

  app.get("/api/clients", ...read, async (c) => {
    const auth = c.get("auth");
    const clients = await c.get("services").presence.list(auth.user.id, auth.endpointIds);
    return c.json({ clients });
  });

  // Resend: the stored event goes again to every connected client. /redeliver is its first
  // name, kept as an alias for clients written against it; both share the account's rate.
  for (const path of ["/api/events/:id/resend", "/api/events/:id/redeliver"] as const) {
    app.post(path, ...read, async (c) => {
      const id = c.req.param("id");
      if (!isId(id)) throw new HttpError(400, `Cannot resend event: "${id}" is not an event id`);
      const auth = c.get("auth");
      const { clients } = await c.get("services").resender.resend({
        userId: auth.user.id,
        id,
        match: seesEvent(auth),
        within: auth.endpointIds,
      });
      return c.json({ ok: true, id, clients });
    });
  }

  return app;
}

/** The extension a downloaded body gets: `.json` or `.txt` when the sender said so, else `.bin`. */
function bodyFileExtension(contentType: string | null): string {
  const type = (contentType ?? "").split(";")[0].trim().toLowerCase();
  if (type === "application/json" || /^application\/[\w.-]+\+json$/.test(type)) return "json";
  if (type === "text/plain") return "txt";
  return "bin";
}

/** Headers that make a stored body a file to save, never a document the browser renders. */
function downloadHeaders(id: string, contentType: string | null): Record<string, string> {
  return {
    "Content-Type": "application/octet-stream",
    // The id is a ULID (checked above), so the file name needs no quoting beyond the quotes.
    "Content-Disposition": `attachment; filename="${id}.${bodyFileExtension(contentType)}"`,
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, no-store",
  };
}
