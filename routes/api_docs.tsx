/** GET /api/openapi.json (the API's OpenAPI 3.1 description) and /docs/api (it, for people). */
import { Hono } from "hono";
import { ApiReferencePage } from "../components/docs/ApiReference.tsx";
import type { AppEnv } from "./_env.ts";
import { loadViewer, pageError, sendPage } from "./_page.tsx";
import { apiDocument } from "./_api.ts";

/** /api/openapi.json and /docs/api */
export function apiDocsRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  // Public and the same for everyone: API tools and other sites may fetch it.
  app.get("/api/openapi.json", (c) =>
    c.json(apiDocument(c.get("services").config.publicUrl), 200, {
      "Access-Control-Allow-Origin": "*",
      "Cache-Control": "no-cache",
    }));

  const pages = new Hono<AppEnv>();
  pages.onError(pageError);
  pages.get("/docs/api", loadViewer, (c) => {
    const viewer = c.get("viewer");
    return sendPage(
      c,
      <ApiReferencePage
        user={viewer?.user}
        document={apiDocument(c.get("services").config.publicUrl)}
      />,
    );
  });
  app.route("/", pages);
  return app;
}
