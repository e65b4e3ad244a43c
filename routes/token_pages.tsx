/** API tokens in the dashboard: create (value shown once), list, revoke after confirming. */
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Context } from "hono";
import { z } from "zod";
import { RevokeTokenPage, TokensPage } from "../components/tokens/TokensPage.tsx";
import type { Flash } from "../lib/accounts/flash.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { createToken, findToken, listTokens, revokeToken } from "../lib/accounts/tokens.ts";
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

/** Lists the viewer's tokens and renders the page. */
async function tokensPage(
  c: Context<AppEnv>,
  options: { flash: Flash | null; name?: string; error?: string; status?: ContentfulStatusCode },
) {
  const { user } = viewerOf(c);
  const tokens = await listTokens(c.get("services").kv, user.id);
  return sendPage(c, <TokensPage user={user} tokens={tokens} {...options} />, {
    status: options.status,
  });
}

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
    const form = await readForm(c, nameForm);
    if (!form.ok) {
      return await tokensPage(c, {
        flash: null,
        name: form.values.name,
        error: `Cannot create token: ${form.errors.name}.`,
        status: 400,
      });
    }
    const created = await createToken(c.get("services").kv, {
      userId: viewerOf(c).user.id,
      name: form.data.name,
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
    return sendPage(c, <RevokeTokenPage user={user} token={token} />);
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
