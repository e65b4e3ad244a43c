/** /docs: the API reference and client examples, filled in with the reader's own URL. */
import { Hono } from "hono";
import { DocsPage } from "../components/docs/DocsPage.tsx";
import { listEndpoints } from "../lib/endpoints/endpoints.ts";
import { fillSnippets } from "../lib/web/snippets.ts";
import { endpointUrl, websocketUrl } from "../lib/endpoints/urls.ts";
import type { AppEnv } from "./_env.ts";
import { loadViewer, pageError, sendPage } from "./_page.tsx";

/** /docs */
export function docsPageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);

  app.get("/docs", loadViewer, async (c) => {
    const { kv, config } = c.get("services");
    const viewer = c.get("viewer");
    const endpoints = viewer ? await listEndpoints(kv, viewer.user.id) : [];
    const slug = endpoints[0]?.slug ?? null;
    return sendPage(
      c,
      <DocsPage
        user={viewer?.user}
        slug={slug}
        webhookUrl={endpointUrl(config, slug ?? "YOUR_SLUG")}
        base={config.publicUrl}
        websocketUrl={websocketUrl(config.publicUrl)}
        snippets={fillSnippets({ publicUrl: config.publicUrl, ingestUrl: config.ingestUrl, slug })}
        limits={{
          wsMessagesPerSecond: config.wsMessagesPerSecond,
          wsMessagesBurst: config.wsMessagesBurst,
          maxConnectionsPerToken: config.maxConnectionsPerToken,
        }}
      />,
    );
  });

  return app;
}
