/** The landing page, static files and the islands' client bundles. */
import { Hono } from "hono";
import { CodeBlock } from "../components/Copyable.tsx";
import { Layout } from "../components/Layout.tsx";
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

const FEATURES = [
  {
    title: "Byte-exact",
    text: "The original body is kept and delivered as received, so X-Hub-Signature-256, " +
      "Stripe-Signature and friends still verify on your side.",
  },
  {
    title: "Nothing lost, nothing twice",
    text: "Events live in a durable log. A client that reconnects with its last event id gets " +
      "everything it missed, in order, then live events.",
  },
  {
    title: "Honest liveness",
    text: "Streams carry heartbeats and WebSockets are pinged, so a dead connection is found " +
      "and closed instead of looking connected.",
  },
  {
    title: "Honest answers",
    text: "Senders get a real status: 200 with the event id once it is durable, 402 over " +
      "quota, 413 over the body limit, 429 when flooding.",
  },
];

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
    const base = c.get("services").config.publicUrl;
    const viewer = c.get("viewer");
    return sendPage(
      c,
      <Layout title="WebSocks: webhooks, delivered live" user={viewer?.user} section="home">
        <section class="hero">
          <h1>Webhooks, delivered live.</h1>
          <p class="lead">
            Point any sender at your WebSocks URL. Every request is stored durably and pushed within
            milliseconds to your clients over Server-Sent Events or WebSocket, byte for byte, so
            signatures still verify. Clients that were away catch up when they reconnect.
          </p>
          <p class="actions">
            {viewer ? <a class="button primary large" href="/dashboard">Open your dashboard</a> : (
              <>
                <a class="button primary large" href="/signup">Sign up free</a>
                <a class="button large" href="/login">Log in</a>
              </>
            )}
          </p>
        </section>
        <section aria-labelledby="steps-title">
          <h2 id="steps-title">From sign-up to a webhook on screen in a minute</h2>
          <ol class="steps">
            <li>
              <strong>Sign up</strong>
              <span>An email and a password. Your webhook URL is ready at once.</span>
            </li>
            <li>
              <strong>Copy your URL</strong>
              <span>
                Paste it into GitHub, Stripe, Slack or any sender, or press "Send a test".
              </span>
            </li>
            <li>
              <strong>Watch it arrive</strong>
              <span>
                The dashboard lists each request live: headers, payload, raw body, resend.
              </span>
            </li>
          </ol>
        </section>
        <section aria-labelledby="features-title">
          <h2 id="features-title">Built for production traffic</h2>
          <ul class="features">
            {FEATURES.map((feature) => (
              <li key={feature.title}>
                <h3>{feature.title}</h3>
                <p>{feature.text}</p>
              </li>
            ))}
          </ul>
        </section>
        <section aria-labelledby="quick-title">
          <h2 id="quick-title">Quick start</h2>
          <CodeBlock
            title="Send a webhook"
            code={`curl -X POST ${endpointUrl(c.get("services").config, "YOUR_SLUG")} \\
  -H "Content-Type: application/json" \\
  -d '{"event": "user.signup", "email": "test@example.com"}'`}
          />
          <CodeBlock
            title="Receive it in your app"
            code={`const ws = new WebSocket("${websocketUrl(base)}?token=YOUR_TOKEN");
ws.onmessage = (event) => console.log(JSON.parse(event.data));`}
          />
          <p>
            More clients (EventSource, Python, Go) and every API call are in the{" "}
            <a href="/docs">docs</a>.
          </p>
        </section>
      </Layout>,
    );
  });

  return app;
}
