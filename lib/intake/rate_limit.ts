/** Token-bucket rate limiting in memory, per key (an endpoint, an address). */

/** A limiter that answers how long to wait, 0 when the request may go ahead. */
export interface RateLimiter {
  /** Takes one token for `key`; returns 0, or the seconds until one is available. */
  take(key: string): number;
}

/** Creates a limiter of `perSecond` sustained with bursts of `burst`; 0 per second disables it. */
export function createRateLimiter(options: { perSecond: number; burst: number }): RateLimiter {
  if (options.perSecond <= 0) return { take: () => 0 };
  const buckets = new Map<string, { tokens: number; at: number }>();
  let sweepAt = Date.now();
  return {
    take(key) {
      const now = Date.now();
      if (now - sweepAt > 60_000) {
        // Full buckets carry no state worth keeping; drop them so memory follows active keys.
        for (const [k, b] of buckets) {
          if (b.tokens + ((now - b.at) / 1000) * options.perSecond >= options.burst) {
            buckets.delete(k);
          }
        }
        sweepAt = now;
      }
      const bucket = buckets.get(key) ?? { tokens: options.burst, at: now };
      bucket.tokens = Math.min(
        options.burst,
        bucket.tokens + ((now - bucket.at) / 1000) * options.perSecond,
      );
      bucket.at = now;
      buckets.set(key, bucket);
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return 0;
      }
      return Math.ceil((1 - bucket.tokens) / options.perSecond);
    },
  };
}
