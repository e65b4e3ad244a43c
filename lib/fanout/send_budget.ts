/**
 * A budget of bytes for large WebSocket messages: a WebSocket message is sent whole, so a large
 * event's envelope must be built in memory for each client it goes to. Builds take their bytes
 * from one budget per isolate, so many clients of large events cost a queue, not the process's
 * memory. One message larger than the whole budget still goes, alone.
 *
 * Fair between accounts: each owner (an account) has at most one take at a time, and waiters are
 * served in arrival order among owners that hold nothing, so one account with many clients cannot
 * keep another's large events waiting behind all of its own.
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
  const owners = new Set<string>();
  const queue: { bytes: number; owner: string; resolve: (release: () => void) => void }[] = [];
  const grant = () => {
    for (let i = 0; i < queue.length; i++) {
      const { bytes, owner, resolve } = queue[i];
      if (owners.has(owner)) continue;
      // The first waiter that does not fit waits for room; later ones must not overtake it,
      // or a large take could wait forever behind a stream of small ones.
      if (held > 0 && held + bytes > maxBytes) return;
      queue.splice(i--, 1);
      held += bytes;
      owners.add(owner);
      let released = false;
      resolve(() => {
        if (released) return;
        released = true;
        held -= bytes;
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
