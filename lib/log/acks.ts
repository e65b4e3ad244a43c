/** What clients acknowledged: per event, which client got it and what its target answered. */
import { listAll } from "../store/kv.ts";
import { deliveriesOfEventPrefix, deliveryKey } from "../store/kv_keys.ts";
import type { Delivery } from "../shared/wire.ts";

/** Records an acknowledgement; it expires with the event it is about. */
export async function recordAck(
  kv: Deno.Kv,
  options: { userId: string; eventId: string; delivery: Delivery; retentionMs: number },
): Promise<void> {
  await kv.set(
    deliveryKey(options.userId, options.eventId, options.delivery.connectionId),
    options.delivery,
    { expireIn: options.retentionMs },
  );
}

/** The acknowledgements of one event, oldest first. */
export async function listDeliveries(
  kv: Deno.Kv,
  options: { userId: string; eventId: string },
): Promise<Delivery[]> {
  const entries = await listAll<Delivery>(kv, {
    prefix: deliveriesOfEventPrefix(options.userId, options.eventId),
  });
  return entries.map((e) => e.value).sort((a, b) => a.at.localeCompare(b.at));
}
