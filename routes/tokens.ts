/** API tokens: list, create (value shown once, scoped), revoke (closes the token's connections). */
import { Hono } from "hono";
import { z } from "zod";
import {
  createToken,
  listTokens,
  publicToken,
  requestedAccess,
  revokeToken,
  SCOPES,
} from "../lib/accounts/tokens.ts";
import { listEndpoints } from "../lib/endpoints/endpoints.ts";
import type { AppEnv } from "./_env.ts";
import { requireAuth, requireScope } from "./_auth.ts";
import { parseBody } from "./_parse.ts";

const SCOPE_LIST = SCOPES.map((one) => `"${one}"`).join(", ");

export const createTokenBody = z.object({
  name: z.string().trim().min(1, "is required").max(100),
  scopes: z.array(
    z.enum(SCOPES, {
      // The value is the caller's: name a bounded piece of it.
      error: (issue) =>
        `unknown scope ${JSON.stringify(String(issue.input).slice(0, 40))}; ` +
        `the scopes are ${SCOPE_LIST}`,
    }),
  ).min(1, "name at least one scope").max(10, "at most 10 scopes").optional(),
  // An empty list would make a token that sees nothing: leave the field out for every endpoint.
  endpoints: z.array(z.string().min(1, "a slug must not be empty").max(100))
    .min(1, "name at least one endpoint, or leave endpoints out for all of them")
    .max(100, "at most 100 endpoints").optional(),
}).strict();

/** /api/tokens */
export function tokenRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use("/api/tokens", requireAuth, requireScope("manage"));
  app.use("/api/tokens/*", requireAuth, requireScope("manage"));

  app.get("/api/tokens", async (c) => {
    const { kv } = c.get("services");
    const userId = c.get("auth").user.id;
    const [tokens, endpoints] = await Promise.all([
      listTokens(kv, userId),
      listEndpoints(kv, userId),
    ]);
    return c.json({ tokens: tokens.map((token) => publicToken(token, endpoints)) });
  });

  app.post("/api/tokens", async (c) => {
    const body = await parseBody(c, { schema: createTokenBody, action: "create token" });
    const { kv, config } = c.get("services");
    const auth = c.get("auth");
    const userId = auth.user.id;
    const endpoints = await listEndpoints(kv, userId);
    const access = requestedAccess(endpoints, {
      scopes: body.scopes,
      slugs: body.endpoints,
      action: "create token",
    });
    const created = await createToken(kv, {
      userId,
      name: body.name,
      access,
      creator: auth,
      maxTokens: config.maxTokensPerAccount,
    });
    return c.json(
      { token: { ...publicToken(created.token, endpoints), value: created.value } },
      201,
    );
  });

  app.delete("/api/tokens/:id", async (c) => {
    const { kv, broker } = c.get("services");
    const userId = c.get("auth").user.id;
    const token = await revokeToken(kv, { userId, tokenId: c.req.param("id"), broker });
    return c.json({ ok: true, revoked: publicToken(token, await listEndpoints(kv, userId)) });
  });

  return app;
}
