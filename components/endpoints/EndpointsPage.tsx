/** The endpoints pages: the list with create and respond-mode forms, and the confirmations. */
import { Confirm } from "../Confirm.tsx";
import { CopyField } from "../Copyable.tsx";
import { CreateNamedCard } from "../Form.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import { type Endpoint, RESPOND_TIMEOUT } from "../../lib/endpoints/endpoints.ts";
import type { Flash } from "../../lib/accounts/flash.ts";
import { formatUtc } from "../../lib/shared/format.ts";

const MAX_TIMEOUT_S = RESPOND_TIMEOUT.maxMs / 1000;

/** A refused respond-mode form, shown again on its endpoint's card. */
export interface RespondError {
  slug: string;
  message: string;
  values: Record<string, string>;
}

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
