/// <reference lib="dom" />
/**
 * The live event inspector: webhooks listed as they arrive, a detail pane with headers, payload
 * and raw body and the clients that acknowledged it, a filter, resend, "copy as curl", the
 * stream's status and the connected clients. State and networking live in inspector_store.ts.
 */
import { useSignalEffect } from "@preact/signals";
import type { ComponentChildren } from "preact";
import { useEffect, useErrorBoundary, useMemo, useRef } from "preact/hooks";
import { envelopeBytes, type WebhookEnvelope } from "../lib/shared/envelope.ts";
import { formatBytes } from "../lib/shared/format.ts";
import { prettyJson } from "../lib/shared/json_view.ts";
import type { ClientInfo } from "../lib/shared/wire.ts";
import { type Badge, eventBadges } from "./event_badge.ts";
import { createInspector, type EventRow, type Inspector, type Status } from "./inspector_store.ts";

/** Props: the server's public URL (for curl) and the user's endpoints (to name them). */
export interface EventInspectorProps {
  publicUrl: string;
  endpoints: { slug: string; name: string }[];
  /** How often the connected-client count is refreshed. */
  pollMs: number;
}

const STATUS_LABELS: Record<Status, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

/**
 * The page shows this much of a body, and of its payload as text; the rest is in the download
 * (GET /api/events/:id/body), and "copy as curl" still has all of it.
 */
const MAX_SHOWN_BYTES = 256 * 1024;
const MAX_SHOWN_CHARS = MAX_SHOWN_BYTES;
/** The payload is indented this many levels deep; anything deeper is written on one line. */
const MAX_SHOWN_DEPTH = 100;
const NARROW = "(max-width: 52rem)";

function shown(text: string): { text: string; cut: boolean } {
  return text.length > MAX_SHOWN_CHARS
    ? { text: text.slice(0, MAX_SHOWN_CHARS), cut: true }
    : { text, cut: false };
}

/**
 * The first 256 KiB of the body's bytes: as text when the body is text (a character split at the
 * cut is dropped), else as base64 of those bytes.
 */
function shownBody(e: WebhookEnvelope): { text: string; cut: boolean; size: number } {
  const bytes = envelopeBytes(e);
  const size = bytes.byteLength;
  if (size <= MAX_SHOWN_BYTES) return { text: e.bodyBase64 ?? e.body ?? "", cut: false, size };
  const head = bytes.subarray(0, MAX_SHOWN_BYTES);
  const text = e.bodyBase64 !== undefined
    ? btoa(Array.from(head, (b) => String.fromCharCode(b)).join(""))
    : new TextDecoder().decode(head, { stream: true });
  return { text, cut: true, size };
}

/** Where the whole body downloads from (an attachment, never shown by the browser). */
const bodyUrl = (id: string) => `/api/events/${encodeURIComponent(id)}/body`;

function Badges(props: { badges: Badge[] }) {
  if (props.badges.length === 0) return null;
  return (
    <span class="badges">
      {props.badges.map((badge) => (
        <span key={badge.kind} class={`badge badge-${badge.kind}`} data-badge={badge.kind}>
          {badge.text}
        </span>
      ))}
    </span>
  );
}

function timeOf(iso: string): string {
  const date = new Date(iso);
  const time = date.toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  return date.toDateString() === new Date().toDateString()
    ? time
    : `${date.toLocaleDateString()} ${time}`;
}

/** How long ago an ISO time was, for people: "just now", "12 s ago", "3 min ago", "2 h ago". */
function ago(iso: string): string {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 2) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

/** A connection id shortened to its first 8 characters (its full form is in the title). */
const shortClient = (id: string) => id.slice(0, 8);
/** An event id shortened to its last 8 characters: ULIDs of one moment share their start. */
const shortEvent = (id: string) => `…${id.slice(-8)}`;
const TRANSPORTS = { sse: "SSE", ws: "WebSocket" } as const;

/** The inspector island. */
export default function EventInspector(props: EventInspectorProps) {
  const names = useMemo(
    () => Object.fromEntries(props.endpoints.map((e) => [e.slug, e.name])),
    [props.endpoints],
  );
  const inspector = useMemo(
    () =>
      createInspector({ publicUrl: props.publicUrl, pollMs: props.pollMs, endpointNames: names }),
    [],
  );
  const listRef = useRef<HTMLUListElement>(null);
  const detailRef = useRef<HTMLDivElement>(null);
  useEffect(() => inspector.start(), []);
  useSignalEffect(() => {
    if (inspector.filter.value.trim()) inspector.loadBodiesForSearch();
  });

  const open = (id: string, options: { reveal: boolean }) => {
    inspector.select(id);
    // On a phone the pane sits below the list: bring it into view.
    if (options.reveal && matchMedia(NARROW).matches) detailRef.current?.scrollIntoView();
  };

  const onListKey = (event: KeyboardEvent) => {
    const keys = ["ArrowDown", "ArrowUp", "Home", "End"];
    if (!keys.includes(event.key) || !listRef.current) return;
    const buttons = [...listRef.current.querySelectorAll<HTMLButtonElement>("button[data-id]")];
    const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
    const next = event.key === "Home"
      ? 0
      : event.key === "End"
      ? buttons.length - 1
      : Math.min(buttons.length - 1, Math.max(0, at + (event.key === "ArrowDown" ? 1 : -1)));
    const target = buttons[next];
    if (!target) return;
    event.preventDefault();
    target.focus();
    open(target.dataset.id!, { reveal: false });
  };

  const rows = inspector.visible.value;
  const total = inspector.rows.value.length;
  const status = inspector.status.value;
  const clients = inspector.clients.value;
  const query = inspector.filter.value.trim();

  return (
    <section class="inspector needs-js" aria-labelledby="inspector-title">
      <div class="inspector-bar">
        <h2 id="inspector-title">Live events</h2>
        <p class="status" data-status={status} role="status">
          <span class="dot" aria-hidden="true" />
          {STATUS_LABELS[status]}
          {inspector.statusNote.value ? `: ${inspector.statusNote.value}` : ""}
          {status === "offline" ? <a href="/login?next=/dashboard">Log in</a> : null}
        </p>
        <details class="clients" data-testid="clients">
          <summary title="Open SSE and WebSocket connections of your account, this page included">
            <strong data-testid="client-count">{clients === null ? "–" : clients}</strong>{" "}
            connected client{clients === 1 ? "" : "s"}
          </summary>
          <ClientList clients={inspector.clientList.value} />
        </details>
        <div class="filter">
          <label for="event-filter">Filter</label>
          <input
            id="event-filter"
            type="search"
            placeholder="path, header, body…"
            value={inspector.filter.value}
            onInput={(event) => inspector.filter.value = (event.target as HTMLInputElement).value}
          />
        </div>
      </div>
      <div class="inspector-body">
        <div class="event-list-pane">
          {total === 0
            ? (
              <p class="empty">
                Waiting for webhooks. Send one with the button above, or POST to your URL.
              </p>
            )
            : rows.length === 0
            ? <p class="empty">No event matches “{query}”.</p>
            : (
              <ul
                class="event-list"
                aria-label="Events, newest first"
                ref={listRef}
                onKeyDown={onListKey}
              >
                {rows.map((row) => (
                  <li key={row.id}>
                    <EventRowButton
                      row={row}
                      name={names[row.endpoint]}
                      selected={row.id === inspector.selectedId.value}
                      onOpen={() => open(row.id, { reveal: true })}
                    />
                  </li>
                ))}
              </ul>
            )}
          {inspector.hasOlder.value && !query
            ? (
              <button
                type="button"
                class="button small"
                disabled={inspector.loadingOlder.value}
                onClick={() => inspector.loadOlder()}
              >
                {inspector.loadingOlder.value ? "Loading…" : "Load older events"}
              </button>
            )
            : null}
        </div>
        <div class="event-detail" ref={detailRef} tabIndex={-1}>
          <Guard
            key={inspector.selectedId.value ?? ""}
            fallback={(error) => (
              <p class="error-text">Cannot show this event: {errorText(error)}</p>
            )}
          >
            <EventDetail inspector={inspector} name={(slug) => names[slug]} />
          </Guard>
        </div>
      </div>
      <p class="visually-hidden" aria-live="polite">{inspector.announcement.value}</p>
    </section>
  );
}

function ClientList(props: { clients: ClientInfo[] | null }) {
  const { clients } = props;
  if (clients === null) return <p class="muted">Loading connected clients…</p>;
  if (clients.length === 0) return <p class="muted">No client is connected.</p>;
  return (
    <div class="table-wrap">
      <table class="client-list" aria-label="Connected clients">
        <thead>
          <tr>
            <th scope="col">Client</th>
            <th scope="col">Transport</th>
            <th scope="col">Connected since</th>
            <th scope="col">Last seen</th>
            <th scope="col">Last event</th>
          </tr>
        </thead>
        <tbody>
          {clients.map((client) => (
            <tr key={client.id} data-client={client.id}>
              <td>
                <code title={client.id}>{shortClient(client.id)}</code>
              </td>
              <td>{TRANSPORTS[client.transport] ?? client.transport}</td>
              <td>
                <time dateTime={client.connectedAt}>{timeOf(client.connectedAt)}</time>
              </td>
              <td>
                <time dateTime={client.lastSeenAt} title={client.lastSeenAt}>
                  {ago(client.lastSeenAt)}
                </time>
              </td>
              <td>
                {client.lastEventId
                  ? <code title={client.lastEventId}>{shortEvent(client.lastEventId)}</code>
                  : <span class="muted">none yet</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Deliveries(props: { inspector: Inspector; id: string }) {
  const { inspector } = props;
  const state = inspector.deliveries.value;
  return (
    <section class="deliveries" aria-labelledby="deliveries-title" data-testid="deliveries">
      <div class="section-head">
        <h4 id="deliveries-title">Deliveries</h4>
        <button
          type="button"
          class="button small"
          disabled={state.kind === "loading"}
          onClick={() => inspector.refreshDeliveries(props.id)}
        >
          Refresh
        </button>
      </div>
      {state.kind === "loading"
        ? <p class="muted">Loading acknowledgements…</p>
        : state.kind === "error"
        ? <p class="error-text">{state.message}</p>
        : state.deliveries.length === 0
        ? <p class="muted">No client acknowledged this event.</p>
        : (
          <div class="table-wrap">
            <table class="delivery-list">
              <thead>
                <tr>
                  <th scope="col">Client</th>
                  <th scope="col">Transport</th>
                  <th scope="col">Status</th>
                  <th scope="col">Acknowledged</th>
                </tr>
              </thead>
              <tbody>
                {state.deliveries.map((d) => (
                  <tr key={d.connectionId}>
                    <td>
                      <code title={d.connectionId}>{shortClient(d.connectionId)}</code>
                    </td>
                    <td>{TRANSPORTS[d.transport] ?? d.transport}</td>
                    <td>
                      {d.status === null ? <span class="muted">none reported</span> : d.status}
                    </td>
                    <td>
                      <time dateTime={d.at}>{timeOf(d.at)}</time>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
    </section>
  );
}

function EventRowButton(
  props: { row: EventRow; name: string | undefined; selected: boolean; onOpen: () => void },
) {
  const { row } = props;
  return (
    <button
      type="button"
      class={`event-row${row.resent ? " resent" : ""}`}
      data-id={row.id}
      aria-pressed={props.selected}
      onClick={props.onOpen}
    >
      <span class="method">{row.method}</span>
      <span class="path">{row.path}</span>
      <span class="endpoint">
        {props.name ?? row.endpoint.slice(0, 8)}{" "}
        <Badges badges={eventBadges(row.envelope ?? row)} />
      </span>
      <time dateTime={row.receivedAt}>{timeOf(row.receivedAt)}</time>
      <span class="size">{formatBytes(row.size)}</span>
    </button>
  );
}

function EventDetail(props: { inspector: Inspector; name: (slug: string) => string | undefined }) {
  const { inspector } = props;
  const row = inspector.selected.value;
  if (!row) {
    return <p class="empty">Select an event to see its headers, payload and raw body.</p>;
  }
  const state = inspector.detail.value;
  return (
    <article aria-labelledby="event-title">
      <h3 id="event-title">
        <span class="method">{row.method}</span> {row.path}
      </h3>
      <Badges badges={eventBadges(row.envelope ?? row)} />
      <p class="muted">
        {props.name(row.endpoint) ?? row.endpoint} · {new Date(row.receivedAt).toLocaleString()} ·
        {" "}
        {formatBytes(row.size)}
      </p>
      <div class="actions">
        <button type="button" class="button" onClick={() => inspector.resend(row.id)}>
          Resend
        </button>
        <button type="button" class="button" onClick={() => inspector.copyCurl(row.id)}>
          Copy as curl
        </button>
      </div>
      <p class="notice-line" role="status">{inspector.notice.value}</p>
      {inspector.curlText.value
        ? (
          <details open>
            <summary>curl command</summary>
            <pre class="code wrap">{inspector.curlText.value}</pre>
          </details>
        )
        : null}
      <Deliveries inspector={inspector} id={row.id} />
      {state.kind === "loading" ? <p class="muted">Loading the event…</p> : null}
      {state.kind === "error" ? <p class="error-text">{state.message}</p> : null}
      {row.envelope
        ? (
          <Guard
            key={row.id}
            fallback={(error) => <RawFallback envelope={row.envelope!} error={error} />}
          >
            <EnvelopeView envelope={row.envelope} />
          </Guard>
        )
        : null}
    </article>
  );
}

const errorText = (error: unknown) => error instanceof Error ? error.message : String(error);

/**
 * Shows `fallback` instead of its children once rendering them throws, so one event that cannot
 * be shown breaks only its own pane and the list keeps working. Keyed by event, it starts over.
 */
function Guard(
  props: { children: ComponentChildren; fallback: (error: unknown) => ComponentChildren },
) {
  const [error] = useErrorBoundary();
  return <>{error ? props.fallback(error) : props.children}</>;
}

/** The raw body alone, for an envelope whose full view failed. */
function RawFallback(props: { envelope: WebhookEnvelope; error: unknown }) {
  const e = props.envelope;
  const raw = typeof e.bodyBase64 === "string"
    ? e.bodyBase64
    : typeof e.body === "string"
    ? e.body
    : "";
  const { text, cut } = shown(raw);
  return (
    <>
      <p class="error-text">
        Cannot show this event's details: {errorText(props.error)}. Its raw body is below.
      </p>
      {text ? <pre class="code wrap" data-testid="raw-body">{text}</pre> : null}
      {cut ? <p class="muted">Cut at {MAX_SHOWN_CHARS} characters.</p> : null}
    </>
  );
}

/** The payload as indented JSON, or why it cannot be written (any failure falls back to raw). */
function payloadView(payload: unknown) {
  try {
    return prettyJson(payload, { maxDepth: MAX_SHOWN_DEPTH, maxChars: MAX_SHOWN_CHARS });
  } catch (error) {
    return { failed: errorText(error) };
  }
}

function EnvelopeView(props: { envelope: WebhookEnvelope }) {
  const e = props.envelope;
  const headers = Object.entries(e.headers);
  const query = Object.entries(e.query);
  // Written without recursion: a sender may nest the payload far deeper than the stack allows.
  const payload = e.payload === null || e.payload === undefined ? null : payloadView(e.payload);
  const raw = shownBody(e);
  return (
    <>
      <dl class="facts">
        <dt>Event id</dt>
        <dd>
          <code>{e.id}</code>
        </dd>
        <dt>Endpoint</dt>
        <dd>
          <code>{e.endpoint}</code>
        </dd>
        <dt>Content type</dt>
        <dd>{e.contentType ?? "none"}</dd>
        <dt>Received</dt>
        <dd>
          <time dateTime={e.receivedAt}>{e.receivedAt}</time>
        </dd>
        {query.length
          ? (
            <>
              <dt>Query</dt>
              <dd>
                <code>{query.map(([k, v]) => `${k}=${v}`).join("&")}</code>
              </dd>
            </>
          )
          : null}
      </dl>
      <h4>Headers</h4>
      <div class="table-wrap">
        <table class="headers">
          <tbody>
            {headers.map(([name, value]) => (
              <tr key={name}>
                <th scope="row">{name}</th>
                <td>{value}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h4>Payload</h4>
      {payload && "failed" in payload
        ? (
          <p class="muted">
            The payload cannot be shown as JSON ({payload.failed}). The raw body is below.
          </p>
        )
        : payload
        ? (
          <>
            <pre class="code" data-testid="payload">{payload.text}</pre>
            {payload.deep
              ? (
                <p class="muted">
                  Values nested deeper than {MAX_SHOWN_DEPTH} levels are shown on one line.
                </p>
              )
              : null}
            {payload.cut
              ? (
                <p class="muted">
                  Cut at {MAX_SHOWN_CHARS / 1024} KiB of text:{" "}
                  <a href={bodyUrl(e.id)} download>download the whole body</a>.
                </p>
              )
              : null}
          </>
        )
        : (
          <p class="muted">
            {e.body === "" || e.bodyBase64 === ""
              ? "Empty body, so no payload."
              : "No parsed payload: the content type is neither JSON nor a form. The raw body is below."}
          </p>
        )}
      <h4>Raw body</h4>
      {e.bodyBase64 !== undefined
        ? (
          <p class="note">
            This body is not UTF-8 text, so it is shown as base64 (the envelope's{" "}
            <code>bodyBase64</code>). Decode it to get the exact bytes.
          </p>
        )
        : null}
      {raw.cut
        ? (
          <p class="note" data-testid="body-cut">
            This body is {formatBytes(raw.size)}: the first {MAX_SHOWN_BYTES / 1024} KiB are shown.
            {" "}
            <a href={bodyUrl(e.id)} download>Download the whole body</a>.
          </p>
        )
        : null}
      {raw.text
        ? <pre class="code wrap" data-testid="raw-body">{raw.text}</pre>
        : <p class="muted">Empty body.</p>}
      {raw.text && !raw.cut
        ? (
          <p class="muted">
            <a href={bodyUrl(e.id)} download>Download the body</a> (its exact bytes).
          </p>
        )
        : null}
    </>
  );
}
