/** The API tokens pages: the list with its create form, and the revoke confirmation. */
import { Confirm } from "../Confirm.tsx";
import { CreateNamedCard } from "../Form.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import type { Flash } from "../../lib/accounts/flash.ts";
import type { PublicToken } from "../../lib/accounts/tokens.ts";
import { formatUtc } from "../../lib/shared/format.ts";

/** /dashboard/tokens; after a refused name the field keeps it, with the reason. */
export function TokensPage(props: {
  user: LayoutUser;
  tokens: PublicToken[];
  flash: Flash | null;
  name?: string;
  error?: string;
}) {
  const { user, tokens } = props;
  return (
    <Layout title="API tokens: WebSocks" user={user} section="tokens">
      <h1>API tokens</h1>
      <p class="muted">
        Your own clients connect with a token: <code>?token=…</code>{" "}
        on the stream or WebSocket URL, or{" "}
        <code>Authorization: Bearer …</code>. A token's value is shown once, when it is created;
        only its hash is stored.
      </p>
      <Notice flash={props.flash} />
      <CreateNamedCard
        id="new-token-title"
        title="Create a token"
        action="/dashboard/tokens"
        button="Create token"
        hint="What uses it, e.g. “laptop” or “ci”."
        name={props.name}
        error={props.error}
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
    </Layout>
  );
}

/** /dashboard/tokens/:id/revoke: what revoking does, then the button. */
export function RevokeTokenPage(props: { user: LayoutUser; token: PublicToken }) {
  return (
    <Layout title="Revoke token: WebSocks" user={props.user} section="tokens">
      <Confirm
        title={`Revoke token “${props.token.name}”?`}
        action={`/dashboard/tokens/${props.token.id}/revoke`}
        confirmLabel="Revoke token"
        cancelHref="/dashboard/tokens"
      >
        <p>
          Clients using <code>{props.token.prefix}…</code>{" "}
          are disconnected within a second and cannot connect again with it. This cannot be undone;
          create a new token to replace it.
        </p>
      </Confirm>
    </Layout>
  );
}
