/**
 * A wall clock with sub-millisecond resolution that agrees across processes of one machine.
 *
 * `Date.now()` is shared by every process but ticks in whole milliseconds; `performance.now()`
 * ticks in microseconds but counts from each process's own start. Spinning until `Date.now()`
 * turns over pins one to the other. A spin that is descheduled sees the tick late, which only
 * ever makes the offset smaller, so the largest offset of several ticks is the truest. Shared by
 * the driver (bench/run.ts) and the generator (bench/loadgen.ts); the driver, which lives for the
 * whole run, recalibrates before each part.
 */
let offset = 0;

/** Pins `performance.now()` to `Date.now()` again (about 5 ms of spinning). */
export function recalibrate(ticks = 5): void {
  let best = -Infinity;
  for (let i = 0; i < ticks; i++) {
    const start = Date.now();
    const deadline = performance.now() + 5;
    let ms = start;
    while (ms === start && performance.now() < deadline) ms = Date.now();
    const sample = ms - performance.now();
    if (ms !== start && sample > best) best = sample;
  }
  if (Number.isFinite(best)) offset = best;
  else offset = Date.now() - performance.now();
}

recalibrate();

/** Milliseconds since the Unix epoch, with microsecond resolution. */
export function wallClock(): number {
  return offset + performance.now();
}
