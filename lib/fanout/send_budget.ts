/**
 * A budget of bytes for large WebSocket messages: a WebSocket message is sent whole, so a large
 * event's envelope must be built in memory for each client it goes to. Builds take their bytes
 * from one budget per isolate, first come first served, so many clients of large events cost a
 * queue, not the process's memory. One message larger than the whole budget still goes, alone.
 */

/** Bytes lent to large sends in one isolate. */
export interface SendBudget {
  /** Waits until `bytes` fit, takes them, and resolves to the function that gives them back. */
  take(bytes: number): Promise<() => void>;
  /** Bytes taken now. */
  held(): number;
}

/** Creates a budget of `maxBytes`. */
export function createSendBudget(maxBytes: number): SendBudget {
  let held = 0;
  const queue: { bytes: number; resolve: (release: () => void) => void }[] = [];
  const grant = () => {
    while (queue.length > 0 && (held === 0 || held + queue[0].bytes <= maxBytes)) {
      const { bytes, resolve } = queue.shift()!;
      held += bytes;
      let released = false;
      resolve(() => {
        if (released) return;
        released = true;
        held -= bytes;
        grant();
      });
    }
  };
  return {
    take(bytes) {
      return new Promise((resolve) => {
        queue.push({ bytes, resolve });
        grant();
      });
    },
    held: () => held,
  };
}
