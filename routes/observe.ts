/**
 * GET /healthz, GET /readyz and GET /metrics: what a platform, a load balancer and Prometheus
 * ask (lib/observe/ owns the checks and the metrics).
 */
import { Hono } from "hono";
import { checkReadiness } from "../lib/observe/health.ts";
import { METRICS_CONTENT_TYPE, metricsText, metricsTokenMatches } from "../lib/observe/metrics.ts";
import { bearerToken } from "../lib/accounts/auth.ts";
import { HttpError } from "../lib/http/http_error.ts";
import type { AppEnv } from "./_env.ts";

/** Probes are never cached by a proxy: each answer is the state now. */
const NO_STORE = { "Cache-Control": "no-store" };

/** /healthz, /readyz, /metrics */
export function observeRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/healthz", (c) => c.json({ status: "ok" }, 200, NO_STORE));
  app.get("/readyz", async (c) => {
    const { kv, readiness } = c.get("services");
    const report = await checkReadiness(kv, readiness);
    return c.json(report, report.failing.length === 0 ? 200 : 503, NO_STORE);
  });
  app.get("/metrics", async (c) => {
    const expected = c.get("services").config.metricsToken;
    if (expected !== null) {
      const presented = bearerToken(c.req.header("Authorization"));
      if (presented === null || !(await metricsTokenMatches(presented, expected))) {
        throw new HttpError(
          401,
          "Unauthorized: /metrics needs Authorization: Bearer <METRICS_TOKEN>",
          { "WWW-Authenticate": 'Bearer realm="metrics"' },
        );
      }
    }
    return c.body(await metricsText(), 200, {
      "Content-Type": METRICS_CONTENT_TYPE,
      ...NO_STORE,
    });
  });
  return app;
}
