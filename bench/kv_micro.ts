/**
 * What one ingest commit costs in Deno KV on SQLite, and which of its parts cost most: the same
 * shape of atomic operation as lib/ingest.ts (checks, one set per event with expireIn, head,
 * two counters, one enqueue), then the same without each part. Runs in its own process on a
 * fresh KV file in a temp dir, one commit in flight at a time, with a queue listener running as
 * in the server. Prints one `RESULT {json}` line.
 *
 * Usage: deno run -A bench/kv_micro.ts
 */
import { NumberList, summarize, type Summary } from "./stats.ts";

/** One measured variant. */
export interface KvVariantResult {
  variant: string;
  batch: number;
  commit: Summary;
  /** Mean commit time per event, ms. */
  perEventMs: number;
}

const BATCHES = [1, 20, 50];
const ROUNDS = 150;
const WARMUP = 20;

const VARIANTS = {
  "as ingest": { expire: true, enqueue: true, encoded: false },
  "without enqueue": { expire: true, enqueue: false, encoded: false },
  "without expireIn": { expire: false, enqueue: true, encoded: false },
  "record as one Uint8Array": { expire: true, enqueue: true, encoded: true },
} as const;

function record(i: number, body: Uint8Array) {
  return {
    id: `01JBENCH${String(i).padStart(18, "0")}`,
    userId: "3f1c2e9a-bench-user",
    endpointId: "5d2a7b10-bench-endpoint",
    endpoint: "AbCdEfGhIjKlMnOpQrStUv",
    receivedAt: new Date().toISOString(),
    expiresAt: Date.now() + 86_400_000,
    method: "POST",
    path: "/",
    query: {},
    headers: {
      "accept": "*/*",
      "accept-encoding": "gzip, br",
      "content-length": "1024",
      "content-type": "application/json",
      "host": "127.0.0.1:8000",
      "user-agent": "Deno/2.9.6",
    },
    contentType: "application/json",
    kind: "json",
    size: body.byteLength,
    body,
    blobId: null,
    chunks: 0,
  };
}

async function main(): Promise<KvVariantResult[]> {
  const dir = await Deno.makeTempDir({ prefix: "websocks-kv-micro-" });
  const kv = await Deno.openKv(`${dir}/micro.kv`);
  const listening = kv.listenQueue(() => {});
  const body = new TextEncoder().encode(JSON.stringify({ pad: "x".repeat(1000) }));
  const encoder = new TextEncoder();
  const results: KvVariantResult[] = [];
  let n = 0;
  try {
    for (const [variant, shape] of Object.entries(VARIANTS)) {
      for (const batch of BATCHES) {
        const times = new NumberList();
        const user = `user-${variant}-${batch}`;
        for (let round = 0; round < WARMUP + ROUNDS; round++) {
          const [u, used, head] = await kv.getMany([
            ["users", user],
            ["usage", user, "2026-11"],
            ["head", user],
          ]);
          const started = performance.now();
          const op = kv.atomic().check(u, used, head);
          for (let i = 0; i < batch; i++) {
            const value = shape.encoded
              ? encoder.encode(JSON.stringify({ ...record(n, body), body: "x".repeat(1000) }))
              : record(n, body);
            op.set(
              ["events", user, n++],
              value,
              shape.expire ? { expireIn: 86_400_000 } : undefined,
            );
          }
          op.set(["head", user], n)
            .sum(["usage", user, "2026-11"], BigInt(batch))
            .sum(["usage", user, "2026-11-28"], BigInt(batch));
          if (shape.enqueue) op.enqueue({ kind: "deliver", user, n });
          const result = await op.commit();
          if (!result.ok) throw new Error("unexpected conflict");
          if (round >= WARMUP) times.push(performance.now() - started);
        }
        const commit = summarize(times.values());
        const mean = times.values().reduce((a, b) => a + b, 0) / times.length;
        results.push({ variant, batch, commit, perEventMs: mean / batch });
      }
    }
  } finally {
    kv.close();
    await listening.catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return results;
}

if (import.meta.main) {
  console.log(`RESULT ${JSON.stringify(await main())}`);
}
