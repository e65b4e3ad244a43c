/** The Hono application: shared middleware, the error mapper, and every route. */
import { Hono } from "hono";
import { HttpError } from "../lib/http_error.ts";
import type { Services } from "../lib/services.ts";
import type { AppEnv } from "./_env.ts";
import { authRoutes } from "./auth.ts";
import { endpointRoutes } from "./endpoints.ts";
import { eventRoutes } from "./events.ts";
import { ingestRoutes } from "./ingest.ts";
import { meRoutes } from "./me.ts";
import { pageRoutes } from "./pages.tsx";
import { tokenRoutes } from "./tokens.ts";
import { socketRoutes } from "./socket.ts";

/** Builds the app for one set of services. */
export function createApp(services: Services): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use(async (c, next) => {
    c.set("services", services);
    await next();
  });
  if (services.config.logRequests) {
    app.use(async (c, next) => {
      const started = performance.now();
      await next();
      console.log(
        `${c.req.method} ${c.req.path} ${c.res.status} ${
          (performance.now() - started).toFixed(1)
        }ms`,
      );
    });
  }
  app.route("/", socketRoutes());
  app.route("/", ingestRoutes());
  app.route("/", authRoutes());
  app.route("/", meRoutes());
  app.route("/", tokenRoutes());
  app.route("/", endpointRoutes());
  app.route("/", eventRoutes());
  app.route("/", pageRoutes());
  app.notFound((c) => c.json({ error: `Not found: ${c.req.method} ${c.req.path}` }, 404));
  app.onError((error, c) => {
    if (error instanceof HttpError) {
      return c.json({ error: error.message, ...error.details }, error.status as 400, error.headers);
    }
    const requestId = crypto.randomUUID();
    console.error(`[${requestId}] ${c.req.method} ${c.req.path} failed:`, error);
    return c.json({ error: `Internal error; reference ${requestId}` }, 500);
  });
  return app;
}
