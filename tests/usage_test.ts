/** lib/billing/usage.ts on its own: the counter of refused webhooks. */
import assert from "node:assert/strict";
import { createRejectionCounter, dayOf, monthOf } from "../lib/billing/usage.ts";
import { usageRejectedDayKey, usageRejectedMonthKey } from "../lib/store/kv_keys.ts";

Deno.test("[usage] a burst of refusals is one KV write per interval, and every one is counted", async () => {
  using kv = await Deno.openKv(":memory:");
  let commits = 0;
  const counting = new Proxy(kv, {
    get(target, property) {
      if (property !== "atomic") return Reflect.get(target, property, target).bind?.(target);
      return () => {
        const op = target.atomic();
        const commit = op.commit.bind(op);
        op.commit = () => {
          commits++;
          return commit();
        };
        return op;
      };
    },
  });
  const counter = createRejectionCounter(counting, { intervalMs: 60_000 });
  const now = new Date();
  for (let i = 0; i < 1000; i++) counter.count({ userId: "u1", count: 1, now });
  counter.count({ userId: "u2", count: 5, now });
  assert.equal(commits, 0, "nothing is written per refusal");
  await counter.close();
  assert.equal(commits, 1, "one commit for both users");
  const [month, day, other] = await kv.getMany<Deno.KvU64[]>([
    usageRejectedMonthKey("u1", monthOf(now)),
    usageRejectedDayKey("u1", dayOf(now)),
    usageRejectedMonthKey("u2", monthOf(now)),
  ]);
  assert.equal(month.value?.value, 1000n);
  assert.equal(day.value?.value, 1000n);
  assert.equal(other.value?.value, 5n);
});
