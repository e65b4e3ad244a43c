/**
 * Gathering what one turn of the event loop produces into one call: the isolates of a cluster
 * (cluster.ts, cluster_worker.ts) send each other one message per turn, not one per item.
 */

/**
 * Returns `add`: items added in one turn of the event loop reach `send` together, in the order
 * added, once the turn's other work is done (a `setImmediate`, which waits for no timer).
 */
export function gatherPerTurn<T>(send: (items: T[]) => void): (item: T) => void {
  let items: T[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const gathered = items;
    items = [];
    send(gathered);
  };
  return (item) => {
    items.push(item);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}
