/**
 * Who is connected, across every isolate and instance: the dashboard's client list, the
 * counts in /api/me, and respond mode's "is anyone there" all ask here. This isolate's own
 * connections answer at once; the others answer a question sent through the broker.
 */
import type { Broker } from "./broker.ts";
import type { ClientInfo } from "../shared/wire.ts";
import type { Connection, Connections } from "./connections.ts";

/** The cluster-wide view of a user's connected clients. */
export interface Presence {
  /**
   * The user's clients; given `within` (a token's endpoint ids), only the connections limited
   * to some of those endpoints, so a limited token never sees a client that could receive
   * other endpoints' events.
   */
  list(userId: string, within?: readonly string[] | null): Promise<ClientInfo[]>;
  /** Whether the user has a client anywhere; answers without asking when one is here. */
  anyConnected(userId: string): Promise<boolean>;
  stop(): void;
}

/** Longest wait for answers when the number of peers is known; a lost peer costs this much. */
const KNOWN_PEERS_WAIT_MS = 500;
/** How long to collect answers when peers are unknown (instances sharing KV). */
const UNKNOWN_PEERS_WAIT_MS = 250;
/**
 * How long "is anyone there" waits for a first answer when peers are unknown. Over shared KV a
 * question and its answer are two commits and two watch wake-ups, which a busy instance or the
 * platform's KV can stretch past 250 ms; a respond-mode sender must not get 503 while a client
 * is connected elsewhere. The wait ends at the first client found, so only the 503 waits it.
 */
const ANY_CONNECTED_UNKNOWN_PEERS_WAIT_MS = 2_000;

/** Whether a connection receives only events of the endpoints `within` (always, when null). */
function isWithin(connection: Connection, within: readonly string[] | null): boolean {
  if (within === null) return true;
  const limit = connection.filter?.limit;
  if (!limit) return false;
  for (const id of limit.ids) if (!within.includes(id)) return false;
  return true;
}

/** This isolate's clients of a user, within endpoint ids when given. */
function localClients(
  connections: Connections,
  userId: string,
  within: readonly string[] | null,
): ClientInfo[] {
  return connections.listFor(userId).filter((c) => isWithin(c, within)).map(info);
}

const info = (connection: Connection): ClientInfo => ({
  id: connection.id,
  transport: connection.transport,
  connectedAt: connection.connectedAt,
  lastSeenAt: connection.lastSeenAt,
  lastEventId: connection.lastSentId,
  ...(connection.group
    ? { group: connection.group.name, inFlight: connection.group.inFlight?.id ?? null }
    : {}),
});

/** Creates the view; it answers other isolates' questions until stopped. */
export function createPresence(
  options: { broker: Broker; connections: Connections; answers?: boolean },
): Presence {
  const { broker, connections } = options;
  const waiting = new Map<string, (clients: ClientInfo[]) => void>();
  const unsubscribe = broker.subscribe((message) => {
    if (message.kind === "clients_query" && message.origin !== broker.origin) {
      if (options.answers === false) return;
      broker.publish({
        kind: "clients_answer",
        queryId: message.queryId,
        origin: broker.origin,
        clients: localClients(connections, message.userId, message.within ?? null),
      });
    } else if (message.kind === "clients_answer") {
      waiting.get(message.queryId)?.(message.clients);
    }
  });

  /**
   * Asks the other isolates. `enough` ends the wait early once the answers so far suffice;
   * `unknownPeersWaitMs` is how long to wait when the broker cannot count its peers.
   */
  async function ask(
    userId: string,
    {
      enough = () => false,
      within = null,
      unknownPeersWaitMs = UNKNOWN_PEERS_WAIT_MS,
    }: {
      enough?: (found: ClientInfo[]) => boolean;
      within?: readonly string[] | null;
      unknownPeersWaitMs?: number;
    } = {},
  ): Promise<ClientInfo[]> {
    const peers = broker.peers();
    if (peers === 0) return [];
    const queryId = crypto.randomUUID();
    const found: ClientInfo[] = [];
    await new Promise<void>((resolve) => {
      let answered = 0;
      const timer = setTimeout(
        finish,
        peers === null ? unknownPeersWaitMs : KNOWN_PEERS_WAIT_MS,
      );
      function finish() {
        clearTimeout(timer);
        waiting.delete(queryId);
        resolve();
      }
      waiting.set(queryId, (clients) => {
        found.push(...clients);
        if ((peers !== null && ++answered >= peers) || enough(found)) finish();
      });
      broker.publish({
        kind: "clients_query",
        queryId,
        userId,
        origin: broker.origin,
        ...(within === null ? {} : { within: [...within] }),
      });
    });
    return found;
  }

  return {
    async list(userId, within = null) {
      const local = localClients(connections, userId, within);
      const remote = await ask(userId, { within });
      return [...local, ...remote].sort((a, b) => a.connectedAt.localeCompare(b.connectedAt));
    },
    async anyConnected(userId) {
      if (connections.countFor(userId) > 0) return true;
      const found = await ask(userId, {
        enough: (found) => found.length > 0,
        unknownPeersWaitMs: ANY_CONNECTED_UNKNOWN_PEERS_WAIT_MS,
      });
      return found.length > 0;
    },
    stop() {
      unsubscribe();
    },
  };
}
