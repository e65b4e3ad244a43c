/** API tokens: list, create (value shown once), revoke (closes the token's connections). */
import { Hono } from "hono";
import { z } from "zod";
import { createToken, listTokens, publicToken, revokeToken } from "../lib/accounts/tokens.ts";
import type { AppEnv } from "./_env.ts";
import { requireAuth } from "./_auth.ts";
import { parseBody } from "./_parse.ts";

const createBody = z.object({ name: z.string().trim().min(1, "is required").max(100) });

/** /api/tokens */
export function tokenRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use("/api/tokens", requireAuth);
  app.use("/api/tokens/*", requireAuth);

  app.get("/api/tokens", async (c) => {
    const tokens = await listTokens(c.get("services").kv, c.get("auth").user.id);
    return c.json({ tokens: tokens.map(publicToken) });
  });

  app.post("/api/tokens", async (c) => {
    const { name } = await parseBody(c, { schema: createBody, action: "create token" });
    const created = await createToken(c.get("services").kv, {
      userId: c.get("auth").user.id,
      name,
    });
    return c.json({ token: { ...publicToken(created.token), value: created.value } }, 201);
  });

  app.delete("/api/tokens/:id", async (c) => {
    const { kv, broker } = c.get("services");
    const userId = c.get("auth").user.id;
    const token = await revokeToken(kv, { userId, tokenId: c.req.param("id"), broker });
    return c.json({ ok: true, revoked: publicToken(token) });
  });

  return app;
}
