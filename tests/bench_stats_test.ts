import assert from "node:assert/strict";
import { median, summarize } from "../bench/stats.ts";

Deno.test("[bench stats] median takes the middle value, or the mean of the two middle ones", () => {
  assert.equal(median([1.36, 1.26, 1.45]), 1.36);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([7]), 7);
  assert.ok(Number.isNaN(median([])));
});

Deno.test("[bench stats] summarize gives p50, p90, p99 and max of the sample", () => {
  const values = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.deepEqual(summarize(values), { n: 100, p50: 50, p90: 90, p99: 99, max: 100 });
});
