/** The landing page, static files and the islands' client bundles. */
import { Hono } from "hono";
import { HomePage } from "../components/home/HomePage.tsx";
import { BUNDLE_PREFIX, islandBundles } from "../lib/web/bundles.ts";
import { ISLAND_MODULES } from "../islands/_registry.ts";
import type { Config } from "../lib/runtime/config.ts";
import { endpointUrl, websocketUrl } from "../lib/endpoints/urls.ts";
import type { AppEnv } from "./_env.ts";
import { loadViewer, pageError, sendPage } from "./_page.tsx";

const STATIC_TYPES: Record<string, string> = {
  "style.css": "text/css; charset=utf-8",
  "favicon.svg": "image/svg+xml",
};
const STATIC_FILES = new Map(
  await Promise.all(
    Object.keys(STATIC_TYPES).map(async (name) =>
      [name, await Deno.readFile(new URL(`../static/${name}`, import.meta.url))] as const
    ),
  ),
);

/** The client library (client/), served so pages and scripts can import it from the relay. */
const CLIENT_TYPES: Record<string, string> = {
  "websocks.js": "text/javascript; charset=utf-8",
  "websocks.d.ts": "text/plain; charset=utf-8",
};
const CLIENT_FILES = new Map(
  await Promise.all(
    Object.keys(CLIENT_TYPES).map(async (name) =>
      [name, await Deno.readFile(new URL(`../client/${name}`, import.meta.url))] as const
    ),
  ),
);

/** Pages and files that need no account; the bundles are built here, at server start. */
export function pageRoutes(config: Config): Hono<AppEnv> {
  const bundles = islandBundles(config, ISLAND_MODULES);
  const app = new Hono<AppEnv>();
  app.onError(pageError);

  app.get("/static/:name", (c) => {
    const name = c.req.param("name");
    const file = STATIC_FILES.get(name);
    if (!file) return c.json({ error: `Not found: no static file ${name}` }, 404);
    return c.body(file, 200, {
      "Content-Type": STATIC_TYPES[name],
      "Cache-Control": "public, max-age=300",
      "X-Content-Type-Options": "nosniff",
    });
  });
  app.get("/favicon.ico", (c) => c.redirect("/static/favicon.svg", 301));
  app.get("/client/:name", (c) => {
    const name = c.req.param("name");
    const file = CLIENT_FILES.get(name);
    if (!file) return c.json({ error: `Not found: no client file ${name}` }, 404);
    return c.body(file, 200, {
      "Content-Type": CLIENT_TYPES[name],
      // A module script of another site's page is fetched with CORS.
      "Access-Control-Allow-Origin": "*",
      "Cache-Control": "public, max-age=300",
      "X-Content-Type-Options": "nosniff",
    });
  });

  app.get(`${BUNDLE_PREFIX}:file`, (c) => {
    const name = c.req.param("file");
    const file = bundles.file(name);
    if (!file) return c.json({ error: `Not found: no island bundle ${name}` }, 404);
    // The name carries a content hash, so this URL's content never changes.
    return c.body(file, 200, {
      "Content-Type": "text/javascript; charset=utf-8",
      "Cache-Control": "public, max-age=31536000, immutable",
      "X-Content-Type-Options": "nosniff",
    });
  });

  app.get("/", loadViewer, (c) => {
    const { config } = c.get("services");
    return sendPage(
      c,
      <HomePage
        user={c.get("viewer")?.user}
        sendUrl={endpointUrl(config, "YOUR_SLUG")}
        websocketUrl={websocketUrl(config.publicUrl)}
      />,
    );
  });

  return app;
}
