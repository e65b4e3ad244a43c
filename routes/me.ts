/**
 * GET /api/me: the caller, their endpoints, live clients and this month's usage, and what the
 * token may do. Any token may ask (a client checks its token here), and sees only what it may:
 * a token limited to endpoints gets those endpoints and their clients, one without `manage` no
 * usage (billing is managing).
 */
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
    const { user, scopes, endpointIds } = c.get("auth");
    const manages = scopes.includes("manage");
    const [endpoints, used, clients] = await Promise.all([
      listEndpoints(kv, user.id),
      manages ? monthUsage(kv, { userId: user.id }) : null,
      presence.list(user.id, endpointIds),
    ]);
    const visible = endpointIds === null
      ? endpoints
      : endpoints.filter((endpoint) => endpointIds.includes(endpoint.id));
    return c.json({
      user: publicUser(user),
      endpoints: visible.map((e) => publicEndpoint(config, e)),
      connectedClients: clients.length,
      usage: used === null ? null : {
        used,
        limit: user.monthlyLimit,
        resetsAt: quotaResetAt(new Date()).toISOString(),
      },
      access: {
        scopes,
        endpoints: endpointIds === null ? null : visible.map((endpoint) => endpoint.slug),
      },
    });
  });
  return app;
}
