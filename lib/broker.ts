/**
 * Publish/subscribe between whoever accepts a webhook and whoever holds the user's connections.
 *
 * Today the transport is in-process: a publish reaches subscribers synchronously, so live
 * delivery costs microseconds. Everything that fans out goes through this module, so the
 * transport can become BroadcastChannel (Workers) or a shared-KV watch (instances) in one place.
 */
import type { LiveEvent } from "./events.ts";

/** What travels through the broker. */
export type BrokerMessage =
  | { kind: "events"; userId: string; events: LiveEvent[] }
  /** One stored event sent again on request, past the connections' duplicate filter. */
  | { kind: "redeliver"; userId: string; event: LiveEvent }
  /** A token was revoked or a session ended: close the connections it authenticated. */
  | { kind: "credential_revoked"; userId: string; credential: string }
  | { kind: "endpoint_changed"; slug: string }
  /** A notice for the user's clients: SSE gets a named event, WebSocket clients that asked. */
  | { kind: "notice"; userId: string; name: string; json: string };

/** A publish/subscribe hub. */
export interface Broker {
  publish(message: BrokerMessage): void;
  /** Registers a listener and returns the function that removes it. */
  subscribe(listener: (message: BrokerMessage) => void): () => void;
}

/** Creates the in-process broker. */
export function createBroker(): Broker {
  const listeners = new Set<(message: BrokerMessage) => void>();
  return {
    publish(message) {
      for (const listener of listeners) {
        try {
          listener(message);
        } catch (error) {
          console.error("broker listener failed", error);
        }
      }
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
