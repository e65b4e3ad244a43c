/**
 * A budget of bytes for large WebSocket messages: a WebSocket message is sent whole, so a large
 * event's envelope must be built in memory for each client it goes to. Builds take their bytes
 * from one budget per isolate, so many clients of large events cost a queue, not the process's
 * memory. One message larger than the whole budget still goes, once nothing else is held.
 *
 * Fair between accounts: each owner (an account) has at most one take at a time, and waiters are
 * served in arrival order among owners that hold nothing, so one account with many clients cannot
 * keep another's large events waiting behind all of its own. While a take over the whole budget
 * is held, the other owners' takes of up to a quarter of the budget go beside it: a client
 * reading its giant message at the slowest rate allowed would otherwise hold every account's
 * large events back for as long as a minute. Larger takes still wait for it (they would take
 * memory to the giant plus the whole budget); smaller ones queued after them go first meanwhile.
 * Memory then peaks at that message plus the quarter.
 */

/** Bytes lent to large sends in one isolate. */
export interface SendBudget {
  /**
   * Waits until `bytes` fit and `owner` holds nothing else, takes them, and resolves to the
   * function that gives them back.
   */
  take(bytes: number, owner: string): Promise<() => void>;
  /** Bytes taken now. */
  held(): number;
}

/** Creates a budget of `maxBytes`. */
export function createSendBudget(maxBytes: number): SendBudget {
  let held = 0;
  /** Bytes of the take over the whole budget being held, if one is. */
  let oversized = 0;
  const beside = maxBytes / 4;
  const owners = new Set<string>();
  const queue: { bytes: number; owner: string; resolve: (release: () => void) => void }[] = [];
  const grant = () => {
    for (let i = 0; i < queue.length; i++) {
      const { bytes, owner, resolve } = queue[i];
      if (owners.has(owner)) continue;
      if (oversized > 0) {
        // Beside the one over the budget: others within the quarter, in order among those.
        if (bytes > beside) continue;
        if (held - oversized + bytes > beside) return;
      } else if (held > 0 && held + bytes > maxBytes) {
        // The first waiter that does not fit waits for room; later ones must not overtake it,
        // or a large take could wait forever behind a stream of small ones.
        return;
      }
      queue.splice(i--, 1);
      held += bytes;
      if (bytes > maxBytes) oversized = bytes;
      owners.add(owner);
      let released = false;
      resolve(() => {
        if (released) return;
        released = true;
        held -= bytes;
        if (bytes > maxBytes) oversized = 0;
        owners.delete(owner);
        grant();
      });
    }
  };
  return {
    take(bytes, owner) {
      return new Promise((resolve) => {
        queue.push({ bytes, owner, resolve });
        grant();
      });
    },
    held: () => held,
  };
}
