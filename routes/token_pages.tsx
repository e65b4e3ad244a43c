/**
 * API tokens in the dashboard: create (stream only by default, or full access; all or some
 * endpoints; value shown once), list with each one's access, revoke after confirming.
 */
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Context } from "hono";
import { z } from "zod";
import { RevokeTokenPage, type TokenForm, TokensPage } from "../components/tokens/TokensPage.tsx";
import type { Flash } from "../lib/accounts/flash.ts";
import { HttpError } from "../lib/http/http_error.ts";
import {
  createToken,
  findToken,
  listTokens,
  publicToken,
  requestedAccess,
  revokeToken,
  SCOPES,
} from "../lib/accounts/tokens.ts";
import { listEndpoints } from "../lib/endpoints/endpoints.ts";
import type { AppEnv } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { readForm } from "./_parse.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
  redirect,
  requireViewer,
  sendPage,
  viewerOf,
} from "./_page.tsx";

/** Lists the viewer's tokens and endpoints and renders the page. */
async function tokensPage(
  c: Context<AppEnv>,
  options: { flash: Flash | null; form?: TokenForm; status?: ContentfulStatusCode },
) {
  const { user } = viewerOf(c);
  const { kv } = c.get("services");
  const [tokens, endpoints] = await Promise.all([
    listTokens(kv, user.id),
    listEndpoints(kv, user.id),
  ]);
  return sendPage(
    c,
    <TokensPage
      user={user}
      tokens={tokens.map((token) => publicToken(token, endpoints))}
      endpoints={endpoints.map(({ slug, name }) => ({ slug, name }))}
      flash={options.flash}
      form={options.form}
    />,
    { status: options.status },
  );
}

/** The create form: a name, stream only (the default) or full access, endpoints checked. */
const tokenForm = z.object({
  name: z.string().trim().min(1, "Name is required").max(
    100,
    "Name must be at most 100 characters",
  ),
  access: z.enum(["stream", "full"], "choose stream only or full access").default("stream"),
  endpoint: z.array(z.string().max(100)).max(100),
}).refine(
  (form) => form.access === "stream" || form.endpoint.length === 0,
  {
    path: ["endpoints"],
    message: "full access covers every endpoint; choose stream only to limit a token to some",
  },
);

const idParam = z.uuid();

function tokenId(c: Context<AppEnv>): string {
  const id = c.req.param("id") ?? "";
  if (!idParam.safeParse(id).success) {
    throw new HttpError(404, `Cannot revoke token: no token ${id.slice(0, 40)}`);
  }
  return id;
}

/** /dashboard/tokens */
export function tokenPageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);

  app.get("/dashboard/tokens", loadViewer, requireViewer, async (c) => {
    return await tokensPage(c, { flash: await pageFlash(c) });
  });

  app.post("/dashboard/tokens", requireSameOrigin, loadViewer, requireViewer, async (c) => {
    const form = await readForm(c, tokenForm, { lists: ["endpoint"] });
    if (!form.ok) {
      return await tokensPage(c, {
        flash: null,
        form: {
          name: form.values.name,
          access: form.values.access === "full" ? "full" : "stream",
          endpoints: form.lists.endpoint,
          errors: form.errors,
        },
        status: 400,
      });
    }
    const { kv, config } = c.get("services");
    const viewer = viewerOf(c);
    const userId = viewer.user.id;
    const { name, access, endpoint } = form.data;
    const created = await createToken(kv, {
      userId,
      name,
      creator: viewer,
      maxTokens: config.maxTokensPerAccount,
      // A slug that is no longer the user's (deleted meanwhile) is a 400 page naming it.
      access: requestedAccess(await listEndpoints(kv, userId), {
        scopes: access === "full" ? SCOPES : ["events:read"],
        slugs: endpoint.length ? endpoint : undefined,
        action: "create token",
      }),
    });
    return await redirect(c, "/dashboard/tokens", {
      flash: {
        kind: "success",
        message:
          `Created token “${created.token.name}”. Copy its value now: it is not shown again.`,
        secret: { label: `Token ${created.token.name}`, value: created.value },
      },
    });
  });

  app.get("/dashboard/tokens/:id/revoke", loadViewer, requireViewer, async (c) => {
    const { user } = viewerOf(c);
    const id = tokenId(c);
    const token = await findToken(c.get("services").kv, { userId: user.id, tokenId: id });
    if (!token) throw new HttpError(404, `Cannot revoke token: no token ${id}`);
    return sendPage(c, <RevokeTokenPage user={user} token={publicToken(token)} />);
  });

  app.post(
    "/dashboard/tokens/:id/revoke",
    requireSameOrigin,
    loadViewer,
    requireViewer,
    async (c) => {
      const { kv, broker } = c.get("services");
      const userId = viewerOf(c).user.id;
      const token = await revokeToken(kv, { userId, tokenId: tokenId(c), broker });
      return await redirect(c, "/dashboard/tokens", {
        flash: {
          kind: "info",
          message: `Revoked token “${token.name}”; its clients were disconnected.`,
        },
      });
    },
  );

  return app;
}
