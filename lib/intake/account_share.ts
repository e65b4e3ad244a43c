/**
 * What one account's webhooks may hold of an isolate at once, from the moment their whole body
 * is here until they are answered. Anyone on the internet can post to any account's endpoints,
 * and every free account is a possible attacker of the others: without a share per account, one
 * account's webhooks could fill the ingest queue's memory and the isolate's request slots
 * (MAX_REQUESTS), or, in respond mode, hold slots for up to a respond timeout each. Bodies still
 * arriving take no share: they are the load guard's to bound per client address, so a stranger
 * stalling bodies to an account's URL cannot use up that account's shares. Counted per isolate,
 * like the load guard's limits.
 */
import { HttpError } from "../http/http_error.ts";

/** Counts what each key holds, up to a limit per key. */
export interface Shares {
  /**
   * Takes one of `key`'s share, or throws the refusal when it is all taken. The returned
   * function gives it back (once, however often it is called).
   */
  take(key: string): () => void;
  /** What `key` holds now. */
  held(key: string): number;
}

/** A share of `limit` per key; `refuse(limit)` is the error over it. */
export function createShares(limit: number, refuse: (limit: number) => HttpError): Shares {
  const holding = new Map<string, number>();
  return {
    take(key) {
      const mine = holding.get(key) ?? 0;
      if (mine >= limit) throw refuse(limit);
      holding.set(key, mine + 1);
      let given = false;
      return () => {
        if (given) return;
        given = true;
        const left = holding.get(key)! - 1;
        if (left === 0) holding.delete(key);
        else holding.set(key, left);
      };
    },
    held: (key) => holding.get(key) ?? 0,
  };
}

/** An account's shares of one isolate: its webhooks in progress, and those awaiting an answer. */
export interface AccountShares {
  /** Webhooks read in full and not yet answered (MAX_REQUESTS_PER_ACCOUNT). */
  requests: Shares;
  /** Respond-mode webhooks waiting for a client's answer (MAX_RESPOND_WAITS_PER_ACCOUNT). */
  respondWaits: Shares;
}

/** The two shares, refusing with 429 and Retry-After as the per-address limit does. */
export function createAccountShares(
  config: { maxRequestsPerAccount: number; maxRespondWaitsPerAccount: number },
): AccountShares {
  return {
    requests: createShares(config.maxRequestsPerAccount, (limit) =>
      new HttpError(
        429,
        `Cannot ingest: ${limit} webhooks to this account's endpoints are in progress ` +
          `(limit ${limit}); wait for some to finish`,
        { "Retry-After": "1" },
      )),
    respondWaits: createShares(config.maxRespondWaitsPerAccount, (limit) =>
      new HttpError(
        429,
        `Cannot ingest: ${limit} webhooks of this account are waiting for a client's answer ` +
          `(limit ${limit}); wait for some to be answered`,
        { "Retry-After": "1" },
      )),
  };
}
