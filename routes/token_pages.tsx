/** API tokens in the dashboard: create (value shown once), list, revoke after confirming. */
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Context } from "hono";
import { z } from "zod";
import { Confirm } from "../components/Confirm.tsx";
import { CreateNamedCard } from "../components/Form.tsx";
import { Layout } from "../components/Layout.tsx";
import { Notice } from "../components/Notice.tsx";
import type { Flash } from "../lib/accounts/flash.ts";
import { formatUtc } from "../lib/shared/format.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { createToken, findToken, listTokens, revokeToken } from "../lib/accounts/tokens.ts";
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

async function tokensPage(
  c: Context<AppEnv>,
  options: {
    flash: Flash | null;
    name?: string;
    error?: string;
    status?: ContentfulStatusCode;
  },
) {
  const { user } = viewerOf(c);
  const tokens = await listTokens(c.get("services").kv, user.id);
  return sendPage(
    c,
    <Layout title="API tokens: WebSocks" user={user} section="tokens">
      <h1>API tokens</h1>
      <p class="muted">
        Your own clients connect with a token: <code>?token=…</code>{" "}
        on the stream or WebSocket URL, or{" "}
        <code>Authorization: Bearer …</code>. A token's value is shown once, when it is created;
        only its hash is stored.
      </p>
      <Notice flash={options.flash} />
      <CreateNamedCard
        id="new-token-title"
        title="Create a token"
        action="/dashboard/tokens"
        button="Create token"
        hint="What uses it, e.g. “laptop” or “ci”."
        name={options.name}
        error={options.error}
      />
      <section aria-labelledby="tokens-title">
        <h2 id="tokens-title">Your tokens</h2>
        {tokens.length === 0
          ? <p class="muted">No tokens. Create one above to connect a client.</p>
          : (
            <div class="table-wrap">
              <table class="list">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Starts with</th>
                    <th scope="col">Created</th>
                    <th scope="col">Last used</th>
                    <th scope="col">
                      <span class="visually-hidden">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {tokens.map((token) => (
                    <tr key={token.id}>
                      <th scope="row">{token.name}</th>
                      <td data-label="Starts with">
                        <code>{token.prefix}…</code>
                      </td>
                      <td data-label="Created">{formatUtc(token.createdAt)}</td>
                      <td data-label="Last used">{formatUtc(token.lastUsedAt)}</td>
                      <td class="row-actions">
                        <a
                          class="button small danger"
                          href={`/dashboard/tokens/${token.id}/revoke`}
                          aria-label={`Revoke token ${token.name}`}
                        >
                          Revoke…
                        </a>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
      </section>
    </Layout>,
    { status: options.status },
  );
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
    return sendPage(
      c,
      <Layout title="Revoke token: WebSocks" user={user} section="tokens">
        <Confirm
          title={`Revoke token “${token.name}”?`}
          action={`/dashboard/tokens/${token.id}/revoke`}
          confirmLabel="Revoke token"
          cancelHref="/dashboard/tokens"
        >
          <p>
            Clients using <code>{token.prefix}…</code>{" "}
            are disconnected within a second and cannot connect again with it. This cannot be
            undone; create a new token to replace it.
          </p>
        </Confirm>
      </Layout>,
    );
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
