/**
 * Endpoints in the dashboard: create named ones, switch respond mode and its timeout, rotate a
 * slug, delete; the last two after confirming.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Context } from "hono";
import { Confirm } from "../components/Confirm.tsx";
import { CopyField } from "../components/Copyable.tsx";
import { CreateNamedCard } from "../components/Form.tsx";
import { Layout } from "../components/Layout.tsx";
import { Notice } from "../components/Notice.tsx";
import {
  createEndpoint,
  deleteEndpoint,
  type Endpoint,
  findEndpointBySlug,
  listEndpoints,
  RESPOND_TIMEOUT,
  rotateEndpoint,
  updateEndpointSettings,
} from "../lib/endpoints/endpoints.ts";
import type { Flash } from "../lib/accounts/flash.ts";
import { formatUtc } from "../lib/shared/format.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { endpointUrl } from "../lib/endpoints/urls.ts";
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

const MAX_TIMEOUT_S = RESPOND_TIMEOUT.maxMs / 1000;
const TIMEOUT_RANGE = `Timeout must be whole seconds from 1 to ${MAX_TIMEOUT_S}`;

/** The respond-mode form: an unticked checkbox is absent, so absent means off. */
const respondForm = z.object({
  respond: z.literal("on", "Respond mode must be on or off").optional(),
  timeout: z.string().trim().regex(/^\d{1,3}$/, TIMEOUT_RANGE).transform(Number)
    .pipe(z.number().min(1, TIMEOUT_RANGE).max(MAX_TIMEOUT_S, TIMEOUT_RANGE)),
});

/** A refused respond-mode form, shown again on its endpoint's card. */
interface RespondError {
  slug: string;
  message: string;
  values: Record<string, string>;
}

async function endpointsPage(
  c: Context<AppEnv>,
  options: {
    flash: Flash | null;
    name?: string;
    error?: string;
    respondError?: RespondError;
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
        rotate a URL that leaked: the old one stops working at once. In respond mode the sender
        waits for a connected client's answer and gets its status, headers and body (503 when no
        client is connected, 504 when none answers within the timeout).
      </p>
      <Notice flash={options.flash} />
      <CreateNamedCard
        id="new-endpoint-title"
        title="Create an endpoint"
        action="/dashboard/endpoints"
        button="Create endpoint"
        hint="Who sends to it, e.g. “github” or “stripe”."
        name={options.name}
        error={options.error}
      />
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
                    value={endpointUrl(config, endpoint.slug)}
                    hideLabel
                  />
                  <RespondForm
                    endpoint={endpoint}
                    index={i}
                    error={options.respondError?.slug === endpoint.slug
                      ? options.respondError
                      : undefined}
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

/** An endpoint card's respond-mode state and the no-JS form that changes it. */
function RespondForm(props: { endpoint: Endpoint; index: number; error?: RespondError }) {
  const { endpoint, index, error } = props;
  const on = error ? error.values.respond === "on" : endpoint.respond === true;
  const seconds = (endpoint.respondTimeoutMs ?? RESPOND_TIMEOUT.defaultMs) / 1000;
  const timeout = error ? (error.values.timeout ?? "") : String(seconds);
  const id = `respond-${index}`;
  return (
    <form
      method="post"
      action={`/dashboard/endpoints/${endpoint.slug}/respond`}
      class="respond-form"
      novalidate
    >
      <p class="respond-state" data-respond={endpoint.respond ? "on" : "off"}>
        Respond mode:{" "}
        <strong>
          {endpoint.respond
            ? `on, senders wait up to ${seconds} s`
            : "off, senders get 200 at once"}
        </strong>
      </p>
      <div class="inline-fields">
        <label class="check" for={`${id}-on`}>
          <input id={`${id}-on`} type="checkbox" name="respond" value="on" checked={on} />
          Wait for a client's answer
        </label>
        <div class={`field${error ? " invalid" : ""}`}>
          <label for={`${id}-timeout`}>Timeout (seconds)</label>
          <input
            id={`${id}-timeout`}
            name="timeout"
            type="number"
            inputMode="numeric"
            min={1}
            max={MAX_TIMEOUT_S}
            step={1}
            value={timeout}
            required
            aria-invalid={error ? "true" : undefined}
            aria-describedby={error ? `${id}-error` : `${id}-hint`}
          />
          {error
            ? <p id={`${id}-error`} class="field-error">{error.message}</p>
            : <p id={`${id}-hint`} class="hint">1 to {MAX_TIMEOUT_S}; then the sender gets 504.</p>}
        </div>
        <button
          type="submit"
          class="button small"
          aria-label={`Save respond mode of ${endpoint.name}`}
        >
          Save
        </button>
      </div>
    </form>
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

  app.post("/dashboard/endpoints/:slug/respond", requireSameOrigin, ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "update");
    const form = await readForm(c, respondForm);
    if (!form.ok) {
      return await endpointsPage(c, {
        flash: null,
        respondError: {
          slug: endpoint.slug,
          message: `Cannot update respond mode: ${form.errors.timeout ?? form.errors.respond}.`,
          values: form.values,
        },
        status: 400,
      });
    }
    const { kv, broker } = c.get("services");
    const updated = await updateEndpointSettings(kv, {
      userId: endpoint.userId,
      slug: endpoint.slug,
      broker,
      settings: { respond: form.data.respond === "on", respondTimeoutMs: form.data.timeout * 1000 },
    });
    return await redirect(c, "/dashboard/endpoints", {
      flash: {
        kind: "success",
        message: `Respond mode is ${updated.respond ? "on" : "off"} for “${updated.name}”: ${
          updated.respond
            ? `senders wait up to ${form.data.timeout} s for a client's answer.`
            : "senders get 200 at once."
        }`,
      },
    });
  });

  app.get("/dashboard/endpoints/:slug/rotate", ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "rotate");
    const url = endpointUrl(c.get("services").config, endpoint.slug);
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
