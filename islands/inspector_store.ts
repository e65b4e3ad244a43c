/// <reference lib="dom" />
/**
 * The live inspector's state and its connection to the server, as signals.
 *
 * History comes first from GET /api/events; the stream then opens, through the client library
 * (client/websocks.js, over SSE), with `lastEventId` set to the newest event seen, so the server
 * catches up with whatever arrived in between: no gap, and duplicates are merged by id. The
 * library reconnects with backoff and resumes after the last event it handed over, so a server
 * restart loses nothing and repeats nothing. The session cookie authenticates every request, the
 * stream included.
 */
import { batch, computed, signal } from "@preact/signals";
import { type Notice, subscribe, type Subscription } from "../client/websocks.js";
import { curlCommand } from "../lib/shared/curl.ts";
import { envelopeBytes, type WebhookEnvelope } from "../lib/shared/envelope.ts";
import type { ClientInfo, Delivery, EventSummary } from "../lib/shared/wire.ts";
import { copyText } from "./clipboard.ts";
import { isHandshake } from "./event_badge.ts";
import { applyQuotaNotice, countArrival } from "./month_usage.ts";

/** One event in the list; `envelope` is loaded when the event is opened (live ones have it). */
export interface EventRow extends EventSummary {
  envelope: WebhookEnvelope | null;
  /** How often the server resent this event while the page was open. */
  resent: number;
}

/** Where the stream stands. */
export type Status = "connecting" | "live" | "reconnecting" | "offline";

/** What the detail pane says about the selected event's envelope. */
export type DetailState = { kind: "ready" } | { kind: "loading" } | {
  kind: "error";
  message: string;
};

/** What the detail pane's "Deliveries" section shows for the selected event. */
export type DeliveriesState =
  | { kind: "loading" }
  | { kind: "ready"; deliveries: Delivery[] }
  | { kind: "error"; message: string };

/** The largest list kept in the page; older rows drop off and can be loaded again. */
const MAX_ROWS = 500;
const HISTORY_PAGE = 50;
const PARALLEL_LOADS = 4;
/** Arrivals within this many milliseconds open only the newest of them. */
const FOLLOW_MS = 100;

class RequestError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

async function requestJson<T>(url: string, init?: RequestInit): Promise<T> {
  const response = await fetch(url, { ...init, headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new RequestError(
      response.status,
      body.error ?? `${response.status} ${response.statusText}`,
    );
  }
  return body as T;
}

function rowOf(envelope: WebhookEnvelope): EventRow {
  return {
    id: envelope.id,
    endpoint: envelope.endpoint,
    receivedAt: envelope.receivedAt,
    method: envelope.method,
    path: envelope.path,
    contentType: envelope.contentType,
    eventType: envelope.eventType ?? null,
    size: envelopeBytes(envelope).byteLength,
    envelope,
    resent: 0,
  };
}

const byIdDescending = (a: EventRow, b: EventRow) => a.id < b.id ? 1 : a.id > b.id ? -1 : 0;

/** Creates the inspector's state; nothing touches the network until `start`. */
export function createInspector(options: {
  publicUrl: string;
  pollMs: number;
  endpointNames: Record<string, string>;
}) {
  const rows = signal<EventRow[]>([]);
  const selectedId = signal<string | null>(null);
  const detail = signal<DetailState>({ kind: "ready" });
  const filter = signal("");
  const status = signal<Status>("connecting");
  const statusNote = signal("");
  const clientList = signal<ClientInfo[] | null>(null);
  const clients = computed(() => clientList.value?.length ?? null);
  const deliveries = signal<DeliveriesState>({ kind: "loading" });
  const hasOlder = signal(false);
  const loadingOlder = signal(false);
  const notice = signal("");
  const announcement = signal("");
  const curlText = signal("");

  // Rows are replaced, never mutated, so their search text can be cached by identity.
  const searchText = new WeakMap<EventRow, string>();
  const haystack = (row: EventRow) => {
    let text = searchText.get(row);
    if (text === undefined) {
      const e = row.envelope;
      text = [
        row.id,
        row.method,
        row.path,
        row.endpoint,
        options.endpointNames[row.endpoint] ?? "",
        row.contentType ?? "",
        e ? JSON.stringify(e.headers) : "",
        e?.body ?? "",
      ].join("\n").toLowerCase();
      searchText.set(row, text);
    }
    return text;
  };
  const visible = computed(() => {
    const query = filter.value.trim().toLowerCase();
    return query ? rows.value.filter((row) => haystack(row).includes(query)) : rows.value;
  });
  const selected = computed(() => rows.value.find((row) => row.id === selectedId.value) ?? null);
  /** True until the user opens an event: arrivals then open themselves. */
  let following = true;

  function merge(incoming: EventRow[]): void {
    const byId = new Map(rows.value.map((row) => [row.id, row]));
    for (const row of incoming) {
      const old = byId.get(row.id);
      // Handshakes are not counted against the quota, so not in the month's count either.
      if (!old && !isHandshake(row.envelope ?? row)) countArrival(row);
      byId.set(row.id, old ? { ...old, ...row, envelope: row.envelope ?? old.envelope } : row);
    }
    const sorted = [...byId.values()].sort(byIdDescending);
    if (sorted.length > MAX_ROWS) hasOlder.value = true;
    rows.value = sorted.slice(0, MAX_ROWS);
  }

  /**
   * Shows one event from the stream. `resent`: the library had handed it over already, so the
   * server sent it again on request; an event only listed from history is new to the stream.
   */
  function receive(envelope: WebhookEnvelope, resent: boolean): void {
    const old = rows.value.find((row) => row.id === envelope.id);
    const row = rowOf(envelope);
    if (old) row.resent = old.resent + (resent ? 1 : 0);
    const what = resent ? "Resent" : "New";
    batch(() => {
      merge([row]);
      announcement.value = `${what} webhook: ${envelope.method} ${envelope.path}`;
    });
    // Until the user picks an event, the newest arrival opens (resends are not arrivals), as
    // long as the filter shows it.
    if (!old && following && visible.value.some((r) => r.id === envelope.id)) {
      follow(envelope.id);
    }
  }

  // A burst (a catch-up after reconnecting) opens only its newest, at most every FOLLOW_MS.
  let newest: string | null = null;
  let followTimer: ReturnType<typeof setTimeout> | undefined;
  function follow(id: string): void {
    if (newest === null || id > newest) newest = id;
    followTimer ??= setTimeout(() => {
      followTimer = undefined;
      const id = newest;
      newest = null;
      if (following && id !== null && id !== selectedId.value) openEvent(id);
    }, FOLLOW_MS);
  }

  async function loadHistory(cursor: string | null): Promise<void> {
    const query = `limit=${HISTORY_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const page = await requestJson<{
      events: Omit<EventRow, "envelope" | "resent">[];
      nextCursor: string | null;
    }>(`/api/events?${query}`);
    batch(() => {
      merge(page.events.map((e) => ({ ...e, envelope: null, resent: 0 })));
      if (cursor !== null || rows.value.length <= page.events.length) {
        hasOlder.value = page.nextCursor !== null;
      }
    });
  }

  async function refreshClients(): Promise<void> {
    try {
      clientList.value = (await requestJson<{ clients: ClientInfo[] }>("/api/clients")).clients;
    } catch (error) {
      if (error instanceof RequestError && error.status === 401) endSession();
    }
  }

  function endSession(): void {
    stop();
    status.value = "offline";
    statusNote.value = "your session has ended; log in again";
  }

  let subscription: Subscription | null = null;
  let poll: ReturnType<typeof setInterval> | undefined;
  let stopped = false;

  function onNotice(notice: Notice): void {
    if (notice.type === "quota") applyQuotaNotice(notice);
    else if (notice.type === "close") {
      statusNote.value = typeof notice.reason === "string" ? notice.reason : "";
    }
  }

  function connect(): void {
    let everLive = false;
    const current = subscribe({
      // Same origin and no token: the session cookie authenticates the stream.
      url: location.origin,
      transport: "sse",
      lastEventId: rows.value[0]?.id ?? null,
      onWebhook: (envelope) => receive(envelope as WebhookEnvelope, false),
      onRepeat: (envelope) => receive(envelope as WebhookEnvelope, true),
      onNotice,
      onError: () => {
        // What matters reaches the page through onState: its status line says it.
      },
      onState: (state, info) => {
        if (stopped || subscription !== current) return;
        if (state === "live") {
          status.value = "live";
          statusNote.value = "";
          refreshClients();
          // Without a resume point, something may have arrived between the history read and now.
          if (current.lastEventId === null) loadHistory(null).catch(() => {});
          everLive = true;
        } else if (state === "connecting") {
          status.value = everLive ? "reconnecting" : "connecting";
        } else if (state === "backing-off") {
          status.value = "reconnecting";
        } else if (info.error && "status" in info.error && info.error.status === 401) {
          endSession();
        } else {
          status.value = "offline";
          statusNote.value = info.error?.message ?? "";
        }
      },
    });
    subscription = current;
  }

  /** Loads history, opens the stream and starts polling the client count; returns `stop`. */
  function start(): () => void {
    stopped = false;
    loadHistory(null)
      .catch((error) => {
        if (error instanceof RequestError && error.status === 401) return endSession();
        notice.value = `Cannot load recent events: ${error.message}`;
      })
      .finally(() => {
        if (!stopped) connect();
      });
    poll = setInterval(() => {
      if (document.visibilityState === "visible") refreshClients();
    }, options.pollMs);
    document.addEventListener("visibilitychange", onVisible);
    return stop;
  }

  function onVisible(): void {
    if (document.visibilityState === "visible" && !stopped) refreshClients();
  }

  function stop(): void {
    stopped = true;
    subscription?.close();
    clearInterval(poll);
    clearTimeout(followTimer);
    followTimer = undefined;
    document.removeEventListener("visibilitychange", onVisible);
  }

  async function envelopeOf(id: string): Promise<WebhookEnvelope> {
    const known = rows.value.find((row) => row.id === id)?.envelope;
    if (known) return known;
    try {
      const envelope = await requestJson<WebhookEnvelope>(`/api/events/${encodeURIComponent(id)}`);
      merge([rowOf(envelope)]);
      return envelope;
    } catch (error) {
      if (error instanceof RequestError && error.status === 404) {
        throw new Error("this event is no longer retained, so its body cannot be shown");
      }
      throw error;
    }
  }

  /** Loads which clients acknowledged an event; a stale answer (another event open) is dropped. */
  async function loadDeliveries(id: string): Promise<void> {
    deliveries.value = { kind: "loading" };
    try {
      const answer = await requestJson<{ deliveries: Delivery[] }>(
        `/api/events/${encodeURIComponent(id)}/deliveries`,
      );
      if (selectedId.value === id) {
        deliveries.value = { kind: "ready", deliveries: answer.deliveries };
      }
    } catch (error) {
      if (selectedId.value === id) {
        deliveries.value = {
          kind: "error",
          message: `Cannot load deliveries: ${(error as Error).message}`,
        };
      }
    }
  }

  /** The user opens an event: it stays open as others arrive. */
  function select(id: string): Promise<void> {
    following = false;
    return openEvent(id);
  }

  /** Opens an event in the detail pane, loading its envelope when needed and its deliveries. */
  async function openEvent(id: string): Promise<void> {
    batch(() => {
      selectedId.value = id;
      notice.value = "";
      curlText.value = "";
    });
    loadDeliveries(id);
    if (rows.value.find((row) => row.id === id)?.envelope) {
      detail.value = { kind: "ready" };
      return;
    }
    detail.value = { kind: "loading" };
    try {
      await envelopeOf(id);
      if (selectedId.value === id) detail.value = { kind: "ready" };
    } catch (error) {
      if (selectedId.value === id) {
        detail.value = { kind: "error", message: `Cannot open event: ${(error as Error).message}` };
      }
    }
  }

  /** Asks the server to resend an event to every connected client. */
  async function resend(id: string): Promise<void> {
    following = false; // acting on the open event picks it
    notice.value = "Resending…";
    try {
      const answer = await requestJson<{ clients: number }>(
        `/api/events/${encodeURIComponent(id)}/resend`,
        { method: "POST" },
      );
      const n = answer.clients;
      notice.value = `Resent to ${n} connected client${n === 1 ? "" : "s"} (this page included).`;
    } catch (error) {
      notice.value = `Cannot resend: ${(error as Error).message}`;
    }
  }

  /** Copies the event as a curl command; the command is also shown, in case copying fails. */
  async function copyCurl(id: string): Promise<void> {
    following = false; // acting on the open event picks it
    try {
      const command = curlCommand(await envelopeOf(id), { publicUrl: options.publicUrl });
      curlText.value = command;
      notice.value = await copyText(command)
        ? "Copied a curl command that sends this request again."
        : "Copying was refused; the command is below.";
    } catch (error) {
      notice.value = `Cannot build the curl command: ${(error as Error).message}`;
    }
  }

  /** Loads the next page of older events. */
  async function loadOlder(): Promise<void> {
    const oldest = rows.value[rows.value.length - 1]?.id ?? null;
    loadingOlder.value = true;
    try {
      await loadHistory(oldest);
    } catch (error) {
      notice.value = `Cannot load older events: ${(error as Error).message}`;
    } finally {
      loadingOlder.value = false;
    }
  }

  let loadingBodies = false;
  /** Loads the envelopes the filter needs to search bodies, a few at a time. */
  async function loadBodiesForSearch(): Promise<void> {
    if (loadingBodies) return;
    loadingBodies = true;
    try {
      const missing = rows.value.filter((row) => !row.envelope).map((row) => row.id);
      const worker = async () => {
        for (let id = missing.shift(); id !== undefined; id = missing.shift()) {
          await envelopeOf(id).catch(() => {});
        }
      };
      await Promise.all(Array.from({ length: PARALLEL_LOADS }, worker));
    } finally {
      loadingBodies = false;
    }
  }

  return {
    rows,
    visible,
    selected,
    selectedId,
    detail,
    filter,
    status,
    statusNote,
    clients,
    clientList,
    deliveries,
    hasOlder,
    loadingOlder,
    notice,
    announcement,
    curlText,
    start,
    select,
    refreshDeliveries: loadDeliveries,
    resend,
    copyCurl,
    loadOlder,
    loadBodiesForSearch,
  };
}

/** The inspector's state and actions. */
export type Inspector = ReturnType<typeof createInspector>;
