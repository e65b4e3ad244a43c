/** Endpoints: list, create, settings (respond mode, provider and secrets), rotate a slug, delete. */
import { Hono } from "hono";
import { z } from "zod";
import {
  createEndpoint,
  deleteEndpoint,
  listEndpoints,
  publicEndpoint,
  RESPOND_TIMEOUT,
  rotateEndpoint,
  updateEndpointSettings,
} from "../lib/endpoints/endpoints.ts";
import { PROVIDERS } from "../lib/intake/signatures.ts";
import type { AppEnv } from "./_env.ts";
import { requireAuth, requireScope } from "./_auth.ts";
import { parseBody } from "./_parse.ts";

export const createEndpointBody = z.object({
  name: z.string().trim().min(1, "is required").max(100),
});
export const endpointSettingsBody = z.object({
  respond: z.boolean().optional(),
  respondTimeoutSeconds: z.number().int("must be whole seconds").min(1, "must be at least 1")
    .max(RESPOND_TIMEOUT.maxMs / 1000, `must be at most ${RESPOND_TIMEOUT.maxMs / 1000}`)
    .optional(),
  provider: z.enum(PROVIDERS, `must be one of ${PROVIDERS.join(", ")}, or null`).nullable()
    .optional(),
  secret: z.string().min(1, "must not be empty").max(1000, "must be at most 1000 characters")
    .optional(),
  verifyToken: z.string().min(1, "must not be empty").max(1000, "must be at most 1000 characters")
    .nullable().optional(),
  enforce: z.boolean().optional(),
}).strict();

/** /api/endpoints */
export function endpointRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use("/api/endpoints", requireAuth, requireScope("manage"));
  app.use("/api/endpoints/*", requireAuth, requireScope("manage"));

  app.get("/api/endpoints", async (c) => {
    const { kv, config } = c.get("services");
    const endpoints = await listEndpoints(kv, c.get("auth").user.id);
    return c.json({ endpoints: endpoints.map((e) => publicEndpoint(config, e)) });
  });

  app.post("/api/endpoints", async (c) => {
    const { name } = await parseBody(c, { schema: createEndpointBody, action: "create endpoint" });
    const { kv, config } = c.get("services");
    const endpoint = await createEndpoint(kv, { userId: c.get("auth").user.id, name });
    return c.json({ endpoint: publicEndpoint(config, endpoint) }, 201);
  });

  app.patch("/api/endpoints/:slug", async (c) => {
    const body = await parseBody(c, { schema: endpointSettingsBody, action: "update endpoint" });
    const { kv, config, broker, secretsKey } = c.get("services");
    const endpoint = await updateEndpointSettings(kv, {
      userId: c.get("auth").user.id,
      slug: c.req.param("slug"),
      broker,
      key: secretsKey,
      provider: {
        provider: body.provider,
        secret: body.secret,
        verifyToken: body.verifyToken,
        enforce: body.enforce,
      },
      settings: {
        ...(body.respond === undefined ? {} : { respond: body.respond }),
        ...(body.respondTimeoutSeconds === undefined
          ? {}
          : { respondTimeoutMs: body.respondTimeoutSeconds * 1000 }),
      },
    });
    return c.json({ endpoint: publicEndpoint(config, endpoint) });
  });

  app.post("/api/endpoints/:slug/rotate", async (c) => {
    const { kv, config, broker } = c.get("services");
    const rotated = await rotateEndpoint(kv, {
      userId: c.get("auth").user.id,
      slug: c.req.param("slug"),
      broker,
    });
    return c.json({ endpoint: publicEndpoint(config, rotated.endpoint), oldSlug: rotated.oldSlug });
  });

  app.delete("/api/endpoints/:slug", async (c) => {
    const { kv, config, broker } = c.get("services");
    const endpoint = await deleteEndpoint(kv, {
      userId: c.get("auth").user.id,
      slug: c.req.param("slug"),
      broker,
    });
    return c.json({ ok: true, deleted: publicEndpoint(config, endpoint) });
  });

  return app;
}
