/** Endpoints in the dashboard: create named ones, rotate a slug, delete; both after confirming. */
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Context } from "hono";
import { Confirm } from "../components/Confirm.tsx";
import { CopyField } from "../components/Copyable.tsx";
import { Field } from "../components/Form.tsx";
import { Layout } from "../components/Layout.tsx";
import { Notice } from "../components/Notice.tsx";
import {
  createEndpoint,
  deleteEndpoint,
  type Endpoint,
  findEndpointBySlug,
  listEndpoints,
  rotateEndpoint,
} from "../lib/endpoints.ts";
import type { Flash } from "../lib/flash.ts";
import { formatUtc } from "../lib/format.ts";
import { HttpError } from "../lib/http_error.ts";
import { endpointUrl } from "../lib/urls.ts";
import { type AppEnv, requireSameOrigin } from "./_env.ts";
import {
  loadViewer,
  nameForm,
  pageError,
  pageFlash,
  readForm,
  redirect,
  requireViewer,
  sendPage,
  viewerOf,
} from "./_page.tsx";

async function endpointsPage(
  c: Context<AppEnv>,
  options: {
    flash: Flash | null;
    name?: string;
    error?: string;
    status?: ContentfulStatusCode;
  },
) {
  const { user } = viewerOf(c);
  const { kv, config } = c.get("services");
  const endpoints = await listEndpoints(kv, user.id);
  return sendPage(
    c,
    <Layout title="Endpoints: WebSocks" user={user} section="endpoints">
      <h1>Endpoints</h1>
      <p class="muted">
        Each endpoint is a URL senders post to. Give each sender its own to tell them apart, and
        rotate a URL that leaked: the old one stops working at once.
      </p>
      <Notice flash={options.flash} />
      <section class="card" aria-labelledby="new-endpoint-title">
        <h2 id="new-endpoint-title">Create an endpoint</h2>
        <form method="post" action="/dashboard/endpoints" class="inline-fields" novalidate>
          <Field
            name="name"
            label="Name"
            value={options.name}
            error={options.error}
            hint="Who sends to it, e.g. “github” or “stripe”."
            required
            maxLength={100}
          />
          <button type="submit" class="button primary">Create endpoint</button>
        </form>
      </section>
      <section aria-labelledby="endpoints-title">
        <h2 id="endpoints-title">Your endpoints</h2>
        {endpoints.length === 0
          ? <p class="muted">No endpoints. Create one above to get a webhook URL.</p>
          : (
            <ul class="endpoint-list">
              {endpoints.map((endpoint, i) => (
                <li key={endpoint.id} class="card" data-slug={endpoint.slug}>
                  <div class="endpoint-head">
                    <h3>{endpoint.name}</h3>
                    <span class="muted">created {formatUtc(endpoint.createdAt)}</span>
                  </div>
                  <CopyField
                    id={`endpoint-url-${i}`}
                    label={`${endpoint.name} webhook URL`}
                    value={endpointUrl(config.publicUrl, endpoint.slug)}
                    hideLabel
                  />
                  <p class="actions">
                    <a
                      class="button small"
                      href={`/dashboard/endpoints/${endpoint.slug}/rotate`}
                      aria-label={`Rotate the URL of ${endpoint.name}`}
                    >
                      Rotate URL…
                    </a>
                    <a
                      class="button small danger"
                      href={`/dashboard/endpoints/${endpoint.slug}/delete`}
                      aria-label={`Delete endpoint ${endpoint.name}`}
                    >
                      Delete…
                    </a>
                  </p>
                </li>
              ))}
            </ul>
          )}
      </section>
    </Layout>,
    { status: options.status },
  );
}

/** The viewer's endpoint named in the path; 404 for anyone else's or an unknown slug. */
async function ownEndpoint(c: Context<AppEnv>, action: string): Promise<Endpoint> {
  const slug = c.req.param("slug") ?? "";
  const endpoint = await findEndpointBySlug(c.get("services").kv, slug);
  if (endpoint?.userId !== viewerOf(c).user.id) {
    throw new HttpError(404, `Cannot ${action} endpoint: no endpoint ${slug.slice(0, 40)}`);
  }
  return endpoint;
}

/** /dashboard/endpoints */
export function endpointPageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);
  const guarded = [loadViewer, requireViewer] as const;

  app.get("/dashboard/endpoints", ...guarded, async (c) => {
    return await endpointsPage(c, { flash: await pageFlash(c) });
  });

  app.post("/dashboard/endpoints", requireSameOrigin, ...guarded, async (c) => {
    const form = await readForm(c, nameForm);
    if (!form.ok) {
      return await endpointsPage(c, {
        flash: null,
        name: form.values.name,
        error: `Cannot create endpoint: ${form.errors.name}.`,
        status: 400,
      });
    }
    const endpoint = await createEndpoint(c.get("services").kv, {
      userId: viewerOf(c).user.id,
      name: form.data.name,
    });
    return await redirect(c, "/dashboard/endpoints", {
      flash: { kind: "success", message: `Created endpoint “${endpoint.name}”.` },
    });
  });

  app.get("/dashboard/endpoints/:slug/rotate", ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "rotate");
    const url = endpointUrl(c.get("services").config.publicUrl, endpoint.slug);
    return sendPage(
      c,
      <Layout title="Rotate endpoint URL: WebSocks" user={viewerOf(c).user} section="endpoints">
        <Confirm
          title={`Rotate the URL of “${endpoint.name}”?`}
          action={`/dashboard/endpoints/${endpoint.slug}/rotate`}
          confirmLabel="Rotate URL"
          cancelHref="/dashboard/endpoints"
        >
          <p>
            <strong>The current URL stops working immediately.</strong>{" "}
            Senders still posting to it get 404 until you give them the new one.
          </p>
          <p>
            Current URL: <code class="break">{url}</code>
          </p>
        </Confirm>
      </Layout>,
    );
  });

  app.post("/dashboard/endpoints/:slug/rotate", requireSameOrigin, ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "rotate");
    const { kv, broker } = c.get("services");
    await rotateEndpoint(kv, { userId: endpoint.userId, slug: endpoint.slug, broker });
    return await redirect(c, "/dashboard/endpoints", {
      flash: {
        kind: "success",
        message:
          `Rotated “${endpoint.name}”: the old URL now answers 404. Give senders the new one.`,
      },
    });
  });

  app.get("/dashboard/endpoints/:slug/delete", ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "delete");
    return sendPage(
      c,
      <Layout title="Delete endpoint: WebSocks" user={viewerOf(c).user} section="endpoints">
        <Confirm
          title={`Delete endpoint “${endpoint.name}”?`}
          action={`/dashboard/endpoints/${endpoint.slug}/delete`}
          confirmLabel="Delete endpoint"
          cancelHref="/dashboard/endpoints"
        >
          <p>
            <strong>Its URL stops working immediately</strong>{" "}
            and senders get 404. Events it already received stay in your history until they expire.
          </p>
        </Confirm>
      </Layout>,
    );
  });

  app.post("/dashboard/endpoints/:slug/delete", requireSameOrigin, ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "delete");
    const { kv, broker } = c.get("services");
    await deleteEndpoint(kv, { userId: endpoint.userId, slug: endpoint.slug, broker });
    return await redirect(c, "/dashboard/endpoints", {
      flash: { kind: "info", message: `Deleted endpoint “${endpoint.name}”.` },
    });
  });

  return app;
}
