/**
 * Who is connected, across every isolate and instance: the dashboard's client list, the
 * counts in /api/me, and respond mode's "is anyone there" all ask here. This isolate's own
 * connections answer at once; the others answer a question sent through the broker.
 *
 * A question reaches every isolate, and over shared KV it is a commit plus one per answer, so
 * what an account's requests may cost is bounded: one question per account and kind is asked
 * at a time (callers meanwhile share its answer), it always asks about all of the account's
 * clients (a limited token's view is filtered here, so tokens cannot multiply questions), and
 * over shared KV an instance with none of the account's clients keeps silent.
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

/** A client and the endpoint ids its token limits it to (null: none; undefined: not told). */
interface Found {
  client: ClientInfo;
  limit: readonly string[] | null | undefined;
}

/**
 * Whether a client limited to `limit` receives only events of the endpoints `within` (always,
 * when `within` is null). An answer that did not say its client's limit counts as unlimited.
 */
function isWithin(
  limit: Iterable<string> | null | undefined,
  within: readonly string[] | null,
): boolean {
  if (within === null) return true;
  if (!limit) return false;
  for (const id of limit) if (!within.includes(id)) return false;
  return true;
}

/** This isolate's clients of a user, within endpoint ids when given. */
function localClients(
  connections: Connections,
  userId: string,
  within: readonly string[] | null,
): Connection[] {
  return connections.listFor(userId).filter((c) => isWithin(c.filter?.limit?.ids, within));
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
  const waiting = new Map<string, (found: Found[]) => void>();
  /** Questions being asked, by kind and account: later callers share their answers. */
  const asking = new Map<string, { answer: Promise<Found[]>; at: number }>();
  const unsubscribe = broker.subscribe((message) => {
    if (message.kind === "clients_query" && message.origin !== broker.origin) {
      if (options.answers === false) return;
      const mine = localClients(connections, message.userId, message.within ?? null);
      // Uncounted peers (instances over shared KV): the asker waits its fixed time whatever
      // comes, so an empty answer would only cost a commit here for every question.
      if (mine.length === 0 && broker.peers() === null) return;
      broker.publish({
        kind: "clients_answer",
        queryId: message.queryId,
        origin: broker.origin,
        clients: mine.map(info),
        limits: mine.map((c) => c.filter?.limit ? [...c.filter.limit.ids] : null),
      });
    } else if (message.kind === "clients_answer") {
      const { clients, limits } = message;
      waiting.get(message.queryId)?.(
        clients.map((client, n) => ({ client, limit: limits ? limits[n] : undefined })),
      );
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
      unknownPeersWaitMs = UNKNOWN_PEERS_WAIT_MS,
    }: {
      enough?: (found: Found[]) => boolean;
      unknownPeersWaitMs?: number;
    } = {},
  ): Promise<Found[]> {
    const peers = broker.peers();
    if (peers === 0) return [];
    const queryId = crypto.randomUUID();
    const found: Found[] = [];
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
      waiting.set(queryId, (answer) => {
        found.push(...answer);
        if ((peers !== null && ++answered >= peers) || enough(found)) finish();
      });
      broker.publish({ kind: "clients_query", queryId, userId, origin: broker.origin });
    });
    return found;
  }

  /** The question of this kind about the account being asked, or a new one. */
  function shared(
    key: string,
    question: () => Promise<Found[]>,
  ): { answer: Promise<Found[]>; at: number } {
    let asked = asking.get(key);
    if (!asked) {
      asked = { answer: question().finally(() => asking.delete(key)), at: Date.now() };
      asking.set(key, asked);
    }
    return asked;
  }

  const listRemote = (userId: string) => shared(`list:${userId}`, () => ask(userId)).answer;

  return {
    async list(userId, within = null) {
      const local = localClients(connections, userId, within).map(info);
      const remote = (await listRemote(userId))
        .filter((found) => isWithin(found.limit, within))
        .map((found) => found.client);
      return [...local, ...remote].sort((a, b) => a.connectedAt.localeCompare(b.connectedAt));
    },
    async anyConnected(userId) {
      if (connections.countFor(userId) > 0) return true;
      // A list being asked answers this when it finds a client; it waits less for one than
      // this does, so finding none it is asked here all the same.
      const since = Date.now();
      const listing = asking.get(`list:${userId}`);
      if (listing && (await listing.answer).length > 0) return true;
      const any = () =>
        shared(`any:${userId}`, () =>
          ask(userId, {
            enough: (found) => found.length > 0,
            unknownPeersWaitMs: ANY_CONNECTED_UNKNOWN_PEERS_WAIT_MS,
          }));
      const joined = any();
      if ((await joined.answer).length > 0) return true;
      // A "no" to a question asked before this call may predate a client that connected since:
      // asked once more (shared by every call in the same case), never more.
      return joined.at < since && (await any().answer).length > 0;
    },
    stop() {
      unsubscribe();
    },
  };
}
