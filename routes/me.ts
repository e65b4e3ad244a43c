/** GET /api/me: the caller, their endpoints, live clients and this month's usage. */
import { Hono } from "hono";
import { listEndpoints, publicEndpoint } from "../lib/endpoints/endpoints.ts";
import { monthUsage, quotaResetAt } from "../lib/billing/usage.ts";
import { publicUser } from "../lib/accounts/users.ts";
import type { AppEnv } from "./_env.ts";
import { requireAuth } from "./_auth.ts";

/** /api/me */
export function meRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/api/me", requireAuth, async (c) => {
    const { kv, config, presence } = c.get("services");
    const { user } = c.get("auth");
    const [endpoints, used, clients] = await Promise.all([
      listEndpoints(kv, user.id),
      monthUsage(kv, { userId: user.id }),
      presence.list(user.id),
    ]);
    return c.json({
      user: publicUser(user),
      endpoints: endpoints.map((e) => publicEndpoint(config, e)),
      connectedClients: clients.length,
      usage: {
        used,
        limit: user.monthlyLimit,
        resetsAt: quotaResetAt(new Date()).toISOString(),
      },
    });
  });
  return app;
}
