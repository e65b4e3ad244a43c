/**
 * GET /api/openapi.json (the API's OpenAPI 3.1 description) and /docs/api (it, for people).
 * routes/_api.ts is imported at the first request for either: its declarations cost every
 * start ~40 ms to build, which the server's first answers should not wait for.
 */
import { Hono } from "hono";
import { ApiReferencePage } from "../components/docs/ApiReference.tsx";
import type { AppEnv } from "./_env.ts";
import { loadViewer, pageError, sendPage } from "./_page.tsx";
import { onFirstUse } from "../lib/runtime/first_use.ts";

/** /api/openapi.json and /docs/api */
export function apiDocsRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  // Public and the same for everyone: API tools and other sites may fetch it.
  app.get(
    "/api/openapi.json",
    async (c) =>
      c.json(await apiDocument(c.get("services").config.publicUrl), 200, {
        "Access-Control-Allow-Origin": "*",
        "Cache-Control": "no-cache",
      }),
  );

  const pages = new Hono<AppEnv>();
  pages.onError(pageError);
  pages.get("/docs/api", loadViewer, async (c) => {
    const viewer = c.get("viewer");
    const document = await apiDocument(c.get("services").config.publicUrl);
    return sendPage(c, <ApiReferencePage user={viewer?.user} document={document} />);
  });
  app.route("/", pages);
  return app;
}

const api = onFirstUse(() => import("./_api.ts"));

/** The OpenAPI document for `publicUrl`, from routes/_api.ts imported on first use. */
async function apiDocument(publicUrl: string): Promise<Record<string, unknown>> {
  return (await api()).apiDocument(publicUrl);
}
