/**
 * Downloads of large events over plain HTTP (`GET /api/events/:id` and its `/body`), which stream
 * a body of up to 25 MiB from its chunks in KV. Each one holds its read-ahead (a batch of chunks,
 * the piece being encoded, the response's buffers: about 1 MiB) for as long as its client leaves
 * it unread, and the load guard has released its request by then. So each account may run a few
 * at once, the isolate a bounded number, one its client stops reading ends after a while, and
 * what they read is charged to the account's read budget, which its catch-ups share.
 */
import { HttpError } from "./http_error.ts";
import { createShares, type Shares } from "../intake/account_share.ts";

/** Limits on downloads of large bodies, per isolate. */
export interface DownloadLimits {
  /** Downloads one account may run at once; 0: no limit. */
  perAccount: number;
  /** Downloads the isolate runs at once; 0: no limit. */
  total: number;
  /** A download its client leaves unread this long is ended. */
  stallMs: number;
  /** Waits until the account may read `bytes` more of its log (its catch-ups' read budget). */
  pace?: (userId: string, bytes: number) => Promise<void>;
}

/** Takes a slot for each large download, held until its body ends. */
export interface DownloadGuard {
  /**
   * Wraps `body` so that it holds one of the account's slots until it is read to its end,
   * cancelled, or left unread for `stallMs` (then it fails, and the connection closes short).
   * 429 when the account or the isolate has no slot free; `action` names the refusal.
   */
  guard(
    userId: string,
    body: ReadableStream<Uint8Array>,
    action: string,
  ): ReadableStream<Uint8Array>;
}

/** Creates the guard of one isolate. */
export function createDownloadGuard(limits: DownloadLimits): DownloadGuard {
  const perAccount = createShares(limits.perAccount || Infinity, (limit) =>
    new HttpError(
      429,
      `this account has ${limit} downloads of large events in progress ` +
        "(MAX_DOWNLOADS_PER_ACCOUNT); finish one first",
      { "Retry-After": "5" },
    ));
  const all = createShares(limits.total || Infinity, (limit) =>
    new HttpError(
      503,
      `the server has ${limit} downloads of large events in progress (MAX_DOWNLOADS); ` +
        "retry shortly",
      { "Retry-After": "5" },
    ));
  return {
    guard(userId, body, action) {
      const releaseAccount = take(perAccount, userId, body, action);
      let releaseAll: () => void;
      try {
        releaseAll = take(all, "", body, action);
      } catch (error) {
        releaseAccount();
        throw error;
      }
      return slotted(userId, body, () => {
        releaseAccount();
        releaseAll();
      });
    },
  };

  /** One of `shares`' slots for `key`; refused, `body` is cancelled and the refusal names `action`. */
  function take(
    shares: Shares,
    key: string,
    body: ReadableStream<Uint8Array>,
    action: string,
  ): () => void {
    try {
      return shares.take(key);
    } catch (error) {
      body.cancel().catch(() => {});
      const refusal = error as HttpError;
      throw new HttpError(refusal.status, `Cannot ${action}: ${refusal.message}`, refusal.headers);
    }
  }

  /** `body`, read one piece per pull, giving the slot back when it ends, however it ends. */
  function slotted(
    userId: string,
    body: ReadableStream<Uint8Array>,
    giveBack: () => void,
  ): ReadableStream<Uint8Array> {
    const release = () => {
      clearTimeout(stall);
      giveBack();
    };
    const reader = body.getReader();
    let stall: ReturnType<typeof setTimeout> | undefined;
    // Pulled one piece at a time (no queue of our own): the client's reading sets the pace,
    // and a pull that does not come in time ends the download.
    return new ReadableStream<Uint8Array>({
      start(controller) {
        stall = setTimeout(() => stalled(controller), limits.stallMs);
      },
      async pull(controller) {
        clearTimeout(stall);
        try {
          const { value, done } = await reader.read();
          if (done) {
            release();
            controller.close();
            return;
          }
          // Each piece read is charged as it goes: the same budget as the account's catch-ups.
          if (limits.pace) await limits.pace(userId, value.byteLength);
          controller.enqueue(value);
          stall = setTimeout(() => stalled(controller), limits.stallMs);
        } catch (error) {
          release();
          controller.error(error);
        }
      },
      cancel(reason) {
        release();
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });

    function stalled(controller: ReadableStreamDefaultController<Uint8Array>): void {
      release();
      const reason = new Error(`download left unread for ${limits.stallMs / 1000} s`);
      reader.cancel(reason).catch(() => {});
      controller.error(reason);
    }
  }
}
