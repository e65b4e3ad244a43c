/**
 * The JSON shapes of the API besides the envelope (see envelope.ts): one definition each, used
 * by the server that sends them and the islands that read them. Types only, so browser-safe.
 */
import type { Verified } from "./envelope.ts";

/** A connected client, as GET /api/clients lists it and the dashboard shows it. */
export interface ClientInfo {
  id: string;
  transport: "sse" | "ws";
  connectedAt: string;
  lastSeenAt: string;
  lastEventId: string | null;
  /** The consumer group it is a member of; absent for broadcast clients. */
  group?: string;
  /** A group member's event sent and not yet acked, or null. */
  inFlight?: string | null;
}

/** One client's acknowledgement of one event, as GET /api/events/:id/deliveries lists it. */
export interface Delivery {
  connectionId: string;
  transport: "sse" | "ws";
  /** The status the client reports (e.g. its local target's HTTP status), or null. */
  status: number | null;
  at: string;
}

/** A retained event in history lists, as GET /api/events pages them. */
export interface EventSummary {
  id: string;
  endpoint: string;
  receivedAt: string;
  method: string;
  path: string;
  contentType: string | null;
  size: number;
  /** The provider's name for the event (e.g. `invoice.paid`, `issues.opened`), or null. */
  eventType: string | null;
  /** The provider check's verdict, when the endpoint names a provider. */
  verified?: Verified;
  /** A provider's URL handshake, answered by the relay itself. */
  handshake?: boolean;
}

/**
 * An endpoint as every API response shows it (see publicEndpoint): `id` stays the same when
 * the slug is rotated; the owner's id is not included.
 */
export interface PublicEndpoint {
  id: string;
  slug: string;
  name: string;
  createdAt: string;
  /** Where senders post. */
  url: string;
  respond: boolean;
  /** How long a sender waits in respond mode before 504. */
  respondTimeoutSeconds: number;
  /** Whose signatures webhooks are checked against (lib/intake/signatures.ts), or null. */
  provider: string | null;
  /** The signing secret's last 4 characters; the secret itself is never shown after it is set. */
  secretLast4: string | null;
  /** A verify token (Meta's URL handshake) is set; never shown. */
  verifyTokenSet: boolean;
  /** A webhook whose signature does not verify is refused with 401 rather than marked. */
  enforce: boolean;
}
