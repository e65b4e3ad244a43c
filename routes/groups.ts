/** Consumer groups: their state, and acks from members that have no back channel (SSE). */
import { Hono } from "hono";
import { z } from "zod";
import { isId } from "../lib/store/ids.ts";
import { seesEvent } from "../lib/accounts/auth.ts";
import type { AppEnv } from "./_env.ts";
import { requireAuth, requireScope } from "./_auth.ts";
import { parseBody } from "./_parse.ts";

export const ackBody = z.strictObject({
  connection: z.string().min(1).max(100),
  id: z.string().refine(isId, "must be an event id"),
});

/** GET /api/groups, POST /api/groups/:name/ack, DELETE /api/groups/:name */
export function groupRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const read = [requireAuth, requireScope("events:read")] as const;

  app.get("/api/groups", ...read, async (c) => {
    const { presence, groups } = c.get("services");
    const auth = c.get("auth");
    const userId = auth.user.id;
    // Members as /api/clients shows them: a limited token sees those limited within its own.
    const members = () => presence.list(userId, auth.endpointIds);
    return c.json({ groups: await groups.describe(userId, members) });
  });

  app.delete("/api/groups/:name", requireAuth, requireScope("manage"), async (c) => {
    const { presence, groups } = c.get("services");
    const userId = c.get("auth").user.id;
    const name = c.req.param("name");
    await groups.remove(userId, name, () => presence.list(userId));
    return c.json({ ok: true, group: name });
  });

  app.post("/api/groups/:name/ack", ...read, async (c) => {
    const name = c.req.param("name");
    const body = await parseBody(c, { schema: ackBody, action: "ack" });
    // Not held to ACKS_PER_SECOND: only the member holding the event's claim can settle it, and
    // the claims are bounded by the deliveries (see websocket.ts).
    const { groups } = c.get("services");
    const auth = c.get("auth");
    await groups.ack({
      userId: auth.user.id,
      name,
      connectionId: body.connection,
      eventId: body.id,
      sees: seesEvent(auth),
    });
    return c.json({ ok: true, group: name, connection: body.connection, id: body.id });
  });

  return app;
}
