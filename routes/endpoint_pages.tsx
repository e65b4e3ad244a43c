/**
 * Endpoints in the dashboard: create named ones, switch respond mode and its timeout, rotate a
 * slug, delete; the last two after confirming.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Context } from "hono";
import {
  DeleteEndpointPage,
  EndpointsPage,
  type ProviderError,
  type RespondError,
  RotateEndpointPage,
} from "../components/endpoints/EndpointsPage.tsx";
import {
  createEndpoint,
  deleteEndpoint,
  type Endpoint,
  listEndpoints,
  ownedEndpoint,
  RESPOND_TIMEOUT,
  rotateEndpoint,
  updateEndpointSettings,
} from "../lib/endpoints/endpoints.ts";
import type { Flash } from "../lib/accounts/flash.ts";
import { PROVIDERS } from "../lib/intake/signatures.ts";
import { endpointUrl } from "../lib/endpoints/urls.ts";
import type { AppEnv } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { nameForm, readForm } from "./_parse.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
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

const TOO_LONG = "must be at most 1000 characters";

/** The provider form: "" picks no provider; blank secret and token keep the stored ones. */
const providerForm = z.object({
  provider: z.union([z.literal(""), z.enum(PROVIDERS)], "Pick a provider from the list")
    .default(""),
  secret: z.string().max(1000, `Secret ${TOO_LONG}`).default(""),
  verifyToken: z.string().max(1000, `Verify token ${TOO_LONG}`).default(""),
  enforce: z.literal("on", "Enforcement must be on or off").optional(),
});

/** Lists the viewer's endpoints and renders the page. */
async function endpointsPage(
  c: Context<AppEnv>,
  options: {
    flash: Flash | null;
    name?: string;
    error?: string;
    respondError?: RespondError;
    providerError?: ProviderError;
    status?: ContentfulStatusCode;
  },
) {
  const { user } = viewerOf(c);
  const { kv, config } = c.get("services");
  const endpoints = await listEndpoints(kv, user.id);
  const urls = Object.fromEntries(endpoints.map((e) => [e.slug, endpointUrl(config, e.slug)]));
  return sendPage(
    c,
    <EndpointsPage user={user} endpoints={endpoints} urls={urls} {...options} />,
    { status: options.status },
  );
}

/** The viewer's endpoint named in the path; 404 for anyone else's or an unknown slug. */
function ownEndpoint(c: Context<AppEnv>, action: string): Promise<Endpoint> {
  return ownedEndpoint(c.get("services").kv, {
    userId: viewerOf(c).user.id,
    slug: c.req.param("slug") ?? "",
    action: `${action} endpoint`,
  });
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

  app.post("/dashboard/endpoints/:slug/provider", requireSameOrigin, ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "update");
    const form = await readForm(c, providerForm);
    const errors: Record<string, string> = form.ok ? {} : { ...form.errors };
    if (form.ok) {
      const { provider, secret, enforce } = form.data;
      if (enforce === "on" && provider === "") {
        errors.enforce = "Pick a provider to enforce its signatures";
      } else if (enforce === "on" && !secret && !(endpoint.secret && endpoint.provider)) {
        errors.secret = "Enter the signing secret: enforcing with none would refuse every webhook";
      }
    }
    if (!form.ok || Object.keys(errors).length > 0) {
      // The secrets typed are not sent back into the page.
      const { provider = "", enforce = "" } = form.values;
      return await endpointsPage(c, {
        flash: null,
        providerError: { slug: endpoint.slug, errors, values: { provider, enforce } },
        status: 400,
      });
    }
    const { provider, secret, verifyToken, enforce } = form.data!;
    const { kv, broker, secretsKey } = c.get("services");
    const updated = await updateEndpointSettings(kv, {
      userId: endpoint.userId,
      slug: endpoint.slug,
      broker,
      settings: {},
      key: secretsKey,
      provider: provider === "" ? { provider: null } : {
        provider,
        enforce: enforce === "on",
        ...(secret ? { secret } : {}),
        ...(verifyToken ? { verifyToken } : {}),
      },
    });
    return await redirect(c, "/dashboard/endpoints", {
      flash: {
        kind: "success",
        message: updated.provider
          ? `“${updated.name}” checks ${updated.provider} signatures${
            updated.enforce ? " and refuses those that fail (401)" : " and marks each verdict"
          }.`
          : `“${updated.name}” checks no signatures.`,
      },
    });
  });

  app.get("/dashboard/endpoints/:slug/rotate", ...guarded, async (c) => {
    const endpoint = await ownEndpoint(c, "rotate");
    const url = endpointUrl(c.get("services").config, endpoint.slug);
    return sendPage(
      c,
      <RotateEndpointPage user={viewerOf(c).user} endpoint={endpoint} url={url} />,
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
    return sendPage(c, <DeleteEndpointPage user={viewerOf(c).user} endpoint={endpoint} />);
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
