/** The API tokens pages: the list with its create form (access, endpoints), and revoking. */
import { Confirm } from "../Confirm.tsx";
import { Field, FormAlert } from "../Form.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import type { Flash } from "../../lib/accounts/flash.ts";
import type { PublicToken } from "../../lib/accounts/tokens.ts";
import { formatUtc } from "../../lib/shared/format.ts";

/** What the create form offers: stream only (events:read) or full access. */
export type AccessChoice = "stream" | "full";

/** An endpoint as the form lists it. */
export interface EndpointChoice {
  slug: string;
  name: string;
}

/** The create form's state after a refusal: what was entered, and why it was refused. */
export interface TokenForm {
  name?: string;
  access?: AccessChoice;
  /** Slugs checked. */
  endpoints?: string[];
  /** Problems keyed by field: name, access, endpoints. */
  errors?: Record<string, string>;
}

/** /dashboard/tokens; after a refused form its fields keep what was entered, with the reasons. */
export function TokensPage(props: {
  user: LayoutUser;
  tokens: PublicToken[];
  endpoints: EndpointChoice[];
  flash: Flash | null;
  form?: TokenForm;
}) {
  const { user, tokens, endpoints } = props;
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
      <CreateTokenCard endpoints={endpoints} form={props.form ?? {}} />
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
                    <th scope="col">Access</th>
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
                      <td data-label="Access" class="token-access">
                        {accessLabel(token, endpoints)}
                      </td>
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

/** A token's scope in words: full access, stream only, or another set of scopes; and endpoints. */
export function accessLabel(token: PublicToken, endpoints: EndpointChoice[]): string {
  const scopes = token.scopes.join(" ");
  const what = scopes === "events:read manage"
    ? "Full access"
    : scopes === "events:read"
    ? "Stream only"
    : `Scopes: ${token.scopes.join(", ")}`;
  if (token.endpoints === null) return what;
  if (token.endpoints.length === 0) return `${what}, no endpoints left (all were deleted)`;
  const names = token.endpoints.map((slug) =>
    endpoints.find((endpoint) => endpoint.slug === slug)?.name ?? slug
  );
  return `${what}, ${names.length === 1 ? "endpoint" : "endpoints"} ${names.join(", ")}`;
}

/** The create form: a name, stream only (the default) or full access, and endpoint checkboxes. */
function CreateTokenCard(props: { endpoints: EndpointChoice[]; form: TokenForm }) {
  const { endpoints, form } = props;
  const errors = form.errors ?? {};
  const access = form.access ?? "stream";
  const checked = new Set(form.endpoints ?? []);
  return (
    <section class="card" aria-labelledby="new-token-title">
      <h2 id="new-token-title">Create a token</h2>
      <form method="post" action="/dashboard/tokens" class="token-form" novalidate>
        {errors.access || errors.endpoints
          ? <FormAlert>Cannot create token: {errors.access ?? errors.endpoints}.</FormAlert>
          : null}
        <Field
          name="name"
          label="Name"
          value={form.name}
          error={errors.name ? `Cannot create token: ${errors.name}.` : undefined}
          hint="What uses it, e.g. “laptop” or “ci”."
          required
          maxLength={100}
        />
        <fieldset class="choices">
          <legend>Access</legend>
          <label class="check">
            <input type="radio" name="access" value="stream" checked={access === "stream"} />
            <span>
              <strong>Stream only</strong>: receive, acknowledge and answer events, read history,
              resend. Cannot manage tokens, endpoints or billing.
            </span>
          </label>
          <label class="check">
            <input type="radio" name="access" value="full" checked={access === "full"} />
            <span>
              <strong>Full access</strong>: everything you can do here, for scripts that manage the
              account.
            </span>
          </label>
        </fieldset>
        {endpoints.length > 0
          ? (
            <fieldset class="choices" aria-describedby="token-endpoints-hint">
              <legend>Endpoints (stream only)</legend>
              {endpoints.map((endpoint) => (
                <label class="check" key={endpoint.slug}>
                  <input
                    type="checkbox"
                    name="endpoint"
                    value={endpoint.slug}
                    checked={checked.has(endpoint.slug)}
                  />
                  <span>
                    {endpoint.name} <code>{endpoint.slug.slice(0, 6)}…</code>
                  </span>
                </label>
              ))}
              <p id="token-endpoints-hint" class="hint">
                None checked: every endpoint, including ones you add later. Checked: only those
                endpoints' events, even after their URLs are rotated.
              </p>
            </fieldset>
          )
          : null}
        <button type="submit" class="button primary">Create token</button>
      </form>
    </section>
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
