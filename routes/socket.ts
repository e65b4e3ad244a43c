/** The WebSocket endpoint, at `/` (as in the docs) and `/ws`. */
import { Hono } from "hono";
import type { Context, Next } from "hono";
import { openWebSocket } from "../lib/fanout/websocket.ts";
import { HttpError } from "../lib/http/http_error.ts";
import type { AppEnv } from "./_env.ts";
import { authenticateStream } from "./_auth.ts";
import { credentialStands, endpointLimit } from "../lib/accounts/auth.ts";
import { resumePoint, streamFilter, streamGroup } from "./_parse.ts";

async function upgrade(c: Context<AppEnv>, next: Next) {
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    return c.req.path === "/ws"
      ? c.json({ error: "Upgrade required: connect with a WebSocket client" }, 426, {
        Upgrade: "websocket",
      })
      : await next();
  }
  if (c.req.method !== "GET") {
    // Hono serves HEAD with GET's handlers; a WebSocket opens with GET only (RFC 6455).
    throw new HttpError(405, `Cannot open a WebSocket with ${c.req.method}: use GET`, {
      Allow: "GET",
    });
  }
  const auth = await authenticateStream(c);
  const after = resumePoint(c);
  const { connections, config, kv, groups } = c.get("services");
  const filter = streamFilter(c, await endpointLimit(kv, auth));
  const group = streamGroup(c);
  // The connection limits first, so a refused connection creates no group, and again
  // after: preparing waits for KV, and only opening takes a connection's place.
  connections.admit(auth.user.id, auth.credential);
  if (group) {
    await groups.prepare(auth.user.id, group.name);
    connections.admit(auth.user.id, auth.credential);
  }
  return openWebSocket(c.req.raw, connections, {
    userId: auth.user.id,
    credential: auth.credential,
    after,
    idleTimeoutSeconds: Math.ceil(config.heartbeatMs / 1000),
    wantsNotices: c.req.query("notices") === "1",
    replies: c.get("services").clientReplies,
    limits: c.get("services").clientLimits,
    filter,
    group,
    stands: () => credentialStands(kv, auth),
    seesUsage: auth.scopes.includes("manage"),
  });
}

/** GET / and GET /ws with `Upgrade: websocket`. */
export function socketRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/", upgrade);
  app.get("/ws", upgrade);
  return app;
}
