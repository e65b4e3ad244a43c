/** The endpoints pages: the list with create and respond-mode forms, and the confirmations. */
import { Confirm } from "../Confirm.tsx";
import { CopyField } from "../Copyable.tsx";
import { CreateNamedCard } from "../Form.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import { type Endpoint, RESPOND_TIMEOUT } from "../../lib/endpoints/endpoints.ts";
import type { Flash } from "../../lib/accounts/flash.ts";
import { formatUtc } from "../../lib/shared/format.ts";
import { PROVIDERS } from "../../lib/intake/signatures.ts";

const MAX_TIMEOUT_S = RESPOND_TIMEOUT.maxMs / 1000;

/** A refused respond-mode form, shown again on its endpoint's card. */
export interface RespondError {
  slug: string;
  message: string;
  values: Record<string, string>;
}

/** A refused provider form, shown again on its endpoint's card; secrets are never echoed. */
export interface ProviderError {
  slug: string;
  /** Messages by field name (provider, secret, verifyToken, enforce). */
  errors: Record<string, string>;
  values: Record<string, string>;
}

/** What each provider's settings are called where the provider shows them. */
const PROVIDER_LABELS: Record<typeof PROVIDERS[number], string> = {
  github: "GitHub (webhook secret)",
  stripe: "Stripe (whsec_ signing secret)",
  slack: "Slack (signing secret)",
  shopify: "Shopify (app client secret)",
  standard: "Standard Webhooks (whsec_ secret)",
  svix: "Svix (whsec_ secret)",
  zoom: "Zoom (secret token)",
  meta: "Meta (app secret; verify token for the URL check)",
  twilio: "Twilio (auth token)",
};

/** /dashboard/endpoints; after a refused form its card or field shows why. */
export function EndpointsPage(props: {
  user: LayoutUser;
  endpoints: Endpoint[];
  /** Each endpoint's webhook URL, by slug. */
  urls: Record<string, string>;
  flash: Flash | null;
  name?: string;
  error?: string;
  respondError?: RespondError;
  providerError?: ProviderError;
}) {
  const { user, endpoints } = props;
  return (
    <Layout title="Endpoints: WebSocks" user={user} section="endpoints">
      <h1>Endpoints</h1>
      <p class="muted">
        Each endpoint is a URL senders post to. Give each sender its own to tell them apart, and
        rotate a URL that leaked: the old one stops working at once. In respond mode the sender
        waits for a connected client's answer and gets its status, headers and body (503 when no
        client is connected, 504 when none answers within the timeout).
      </p>
      <Notice flash={props.flash} />
      <CreateNamedCard
        id="new-endpoint-title"
        title="Create an endpoint"
        action="/dashboard/endpoints"
        button="Create endpoint"
        hint="Who sends to it, e.g. “github” or “stripe”."
        name={props.name}
        error={props.error}
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
                    value={props.urls[endpoint.slug]}
                    hideLabel
                  />
                  <RespondForm
                    endpoint={endpoint}
                    index={i}
                    error={props.respondError?.slug === endpoint.slug
                      ? props.respondError
                      : undefined}
                  />
                  <ProviderForm
                    endpoint={endpoint}
                    index={i}
                    error={props.providerError?.slug === endpoint.slug
                      ? props.providerError
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
    </Layout>
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

/**
 * An endpoint card's provider settings and the no-JS form that changes them: the secret and the
 * verify token are write-only (blank keeps the stored one), only the secret's last 4 are shown.
 */
function ProviderForm(props: { endpoint: Endpoint; index: number; error?: ProviderError }) {
  const { endpoint, index, error } = props;
  const id = `provider-${index}`;
  const provider = error ? (error.values.provider ?? "") : (endpoint.provider ?? "");
  const enforce = error ? error.values.enforce === "on" : endpoint.enforce === true;
  const fieldError = (name: string) =>
    error?.errors[name]
      ? <p id={`${id}-${name}-error`} class="field-error">{error.errors[name]}</p>
      : null;
  const invalid = (name: string) => error?.errors[name] ? " invalid" : "";
  const describedBy = (name: string, hint: boolean) =>
    error?.errors[name] ? `${id}-${name}-error` : hint ? `${id}-${name}-hint` : undefined;
  return (
    <form
      method="post"
      action={`/dashboard/endpoints/${endpoint.slug}/provider`}
      class="provider-form"
      novalidate
    >
      <p class="provider-state" data-provider={endpoint.provider ?? "none"}>
        Signatures:{" "}
        <strong>
          {endpoint.provider
            ? `${endpoint.provider}, ${
              endpoint.secretLast4 ? `secret ending in ${endpoint.secretLast4}` : "no secret set"
            }${endpoint.enforce ? ", failures refused (401)" : ", failures marked"}`
            : "not checked"}
        </strong>
      </p>
      <div class={`field${invalid("provider")}`}>
        <label for={`${id}-provider`}>Provider</label>
        <select
          id={`${id}-provider`}
          name="provider"
          aria-invalid={error?.errors.provider ? "true" : undefined}
          aria-describedby={describedBy("provider", false)}
        >
          <option value="" selected={provider === ""}>None: no signature check</option>
          {PROVIDERS.map((name) => (
            <option key={name} value={name} selected={provider === name}>
              {PROVIDER_LABELS[name]}
            </option>
          ))}
        </select>
        {fieldError("provider")}
      </div>
      <div class={`field${invalid("secret")}`}>
        <label for={`${id}-secret`}>Signing secret</label>
        <input
          id={`${id}-secret`}
          name="secret"
          type="password"
          autocomplete="off"
          maxLength={1000}
          aria-invalid={error?.errors.secret ? "true" : undefined}
          aria-describedby={describedBy("secret", true)}
        />
        {fieldError("secret") ?? (
          <p id={`${id}-secret-hint`} class="hint">
            {endpoint.secretLast4
              ? `Set, ending in ${endpoint.secretLast4}. Blank keeps it; a new one replaces it ` +
                "and the old one stays valid for 24 hours."
              : "Not set. It is stored encrypted and never shown again."}
          </p>
        )}
      </div>
      <div class={`field${invalid("verifyToken")}`}>
        <label for={`${id}-verify-token`}>Verify token</label>
        <input
          id={`${id}-verify-token`}
          name="verifyToken"
          type="password"
          autocomplete="off"
          maxLength={1000}
          aria-invalid={error?.errors.verifyToken ? "true" : undefined}
          aria-describedby={describedBy("verifyToken", true)}
        />
        {fieldError("verifyToken") ?? (
          <p id={`${id}-verifyToken-hint`} class="hint">
            {endpoint.verifyToken
              ? "Set. Blank keeps it."
              : "Meta's URL check only: the hub.verify_token you enter there."}
          </p>
        )}
      </div>
      <div class={`field${invalid("enforce")}`}>
        <label class="check" for={`${id}-enforce`}>
          <input
            id={`${id}-enforce`}
            type="checkbox"
            name="enforce"
            value="on"
            checked={enforce}
            aria-describedby={describedBy("enforce", false)}
          />
          Refuse webhooks whose signature does not verify (401, not stored)
        </label>
        {fieldError("enforce")}
      </div>
      <button
        type="submit"
        class="button small"
        aria-label={`Save signature settings of ${endpoint.name}`}
      >
        Save
      </button>
    </form>
  );
}

/** /dashboard/endpoints/:slug/rotate: what rotating does, then the button. */
export function RotateEndpointPage(props: { user: LayoutUser; endpoint: Endpoint; url: string }) {
  return (
    <Layout title="Rotate endpoint URL: WebSocks" user={props.user} section="endpoints">
      <Confirm
        title={`Rotate the URL of “${props.endpoint.name}”?`}
        action={`/dashboard/endpoints/${props.endpoint.slug}/rotate`}
        confirmLabel="Rotate URL"
        cancelHref="/dashboard/endpoints"
      >
        <p>
          <strong>The current URL stops working immediately.</strong>{" "}
          Senders still posting to it get 404 until you give them the new one.
        </p>
        <p>
          Current URL: <code class="break">{props.url}</code>
        </p>
      </Confirm>
    </Layout>
  );
}

/** /dashboard/endpoints/:slug/delete: what deleting does, then the button. */
export function DeleteEndpointPage(props: { user: LayoutUser; endpoint: Endpoint }) {
  return (
    <Layout title="Delete endpoint: WebSocks" user={props.user} section="endpoints">
      <Confirm
        title={`Delete endpoint “${props.endpoint.name}”?`}
        action={`/dashboard/endpoints/${props.endpoint.slug}/delete`}
        confirmLabel="Delete endpoint"
        cancelHref="/dashboard/endpoints"
      >
        <p>
          <strong>Its URL stops working immediately</strong>{" "}
          and senders get 404. Events it already received stay in your history until they expire.
        </p>
      </Confirm>
    </Layout>
  );
}
