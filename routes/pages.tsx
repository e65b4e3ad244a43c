/** Server-rendered pages. */
import { Hono } from "hono";
import { render } from "preact-render-to-string";
import type { VNode } from "preact";
import { Layout } from "../components/Layout.tsx";
import type { AppEnv } from "./_env.ts";

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

function html(vnode: VNode): Response {
  return new Response("<!doctype html>" + render(vnode), {
    headers: {
      "Content-Type": "text/html; charset=utf-8",
      "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "same-origin",
    },
  });
}

/** Pages and static files. */
export function pageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.get("/static/:name", (c) => {
    const name = c.req.param("name");
    const file = STATIC_FILES.get(name);
    if (!file) return c.json({ error: `Not found: no static file ${name}` }, 404);
    return c.body(file, 200, {
      "Content-Type": STATIC_TYPES[name],
      "Cache-Control": "public, max-age=300",
    });
  });
  app.get("/favicon.ico", (c) => c.redirect("/static/favicon.svg", 301));

  app.get("/", (c) => {
    const base = c.get("services").config.publicUrl;
    return html(
      <Layout title="WebSocks: webhooks, delivered live">
        <section class="hero">
          <h1>Webhooks, delivered live.</h1>
          <p>
            Point any sender at your WebSocks URL. Every request is stored durably and pushed within
            milliseconds to your clients over Server-Sent Events or WebSocket, byte for byte, so
            signatures still verify. Clients that were away catch up when they reconnect.
          </p>
        </section>
        <section>
          <h2>Quick start</h2>
          <ol>
            <li>
              Sign up: <code>POST {base}/api/auth/signup</code> with your email and password.
            </li>
            <li>
              Send a webhook:
              <pre>{`curl -X POST ${base}/api/in/YOUR_SLUG \\
  -H "Content-Type: application/json" \\
  -d '{"event": "user.signup", "email": "test@example.com"}'`}</pre>
            </li>
            <li>
              Receive it:
              <pre>{`const ws = new WebSocket('${base.replace(/^http/, "ws")}?token=YOUR_TOKEN');
ws.onmessage = (event) => console.log(JSON.parse(event.data));`}</pre>
            </li>
          </ol>
        </section>
      </Layout>,
    );
  });

  return app;
}
