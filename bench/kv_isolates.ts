/**
 * How Deno KV behaves with several handles on one SQLite file inside one process, which decides
 * the multi-isolate design: commit throughput of 1 and 2 Workers (own keys and one shared hot
 * key), whether `watch` and the queue notice writes made through another handle, and how fast.
 * Prints one `RESULT {json}` line.
 *
 * Usage: deno run -A bench/kv_isolates.ts
 */

/** What the script prints after `RESULT `. */
export interface KvIsolatesResult {
  commits: {
    workers: number;
    hot: boolean;
    commitsPerSecond: number;
    conflicts: number;
    locked: number;
  }[];
  watch: NoticeResult;
  queue: NoticeResult;
}

/** How fast a write through one handle is noticed through another. */
export interface NoticeResult {
  task: "watch" | "queue";
  rounds: number;
  missed: number;
  p50ms: number | null;
  maxms: number | null;
}

const WORKER = `
const post = (m) => self.postMessage(m);
self.onmessage = async ({ data }) => {
  const kv = await Deno.openKv(data.path);
  if (data.task === "commit") {
    const body = new Uint8Array(1024);
    const ends = Date.now() + data.ms;
    let commits = 0, conflicts = 0, locked = 0;
    const key = data.hot ? ["hot"] : ["own", data.name];
    while (Date.now() < ends) {
      const entry = await kv.get(key);
      try {
        const r = await kv.atomic().check(entry).set(key, (entry.value ?? 0) + 1)
          .set(["ev", data.name, commits], body).commit();
        if (r.ok) commits++; else conflicts++;
      } catch (e) {
        if (/locked/.test(String(e))) locked++; else throw e;
      }
    }
    post({ commits, conflicts, locked });
  } else if (data.task === "watch") {
    const stream = kv.watch([["watched"]]);
    post({ ready: true });
    for await (const [entry] of stream) {
      if (entry.value) post({ seen: entry.value, at: performance.timeOrigin + performance.now() });
    }
  } else if (data.task === "queue") {
    kv.listenQueue((m) => post({ seen: m, at: performance.timeOrigin + performance.now() }));
    post({ ready: true });
  }
};
`;

function spawn(): Worker {
  const url = URL.createObjectURL(new Blob([WORKER], { type: "text/javascript" }));
  return new Worker(url, { type: "module" });
}

function once(worker: Worker, test: (d: Record<string, unknown>) => boolean = () => true) {
  return new Promise<Record<string, unknown>>((resolve) => {
    const on = ({ data }: MessageEvent) => {
      if (test(data)) {
        worker.removeEventListener("message", on);
        resolve(data);
      }
    };
    worker.addEventListener("message", on);
  });
}

async function commits(path: string, workers: number, hot: boolean) {
  const ws = Array.from({ length: workers }, spawn);
  const ms = 3000;
  const done = ws.map((w, i) => {
    const p = once(w);
    w.postMessage({ task: "commit", path, name: `w${i}`, hot, ms });
    return p;
  });
  const results = await Promise.all(done);
  ws.forEach((w) => w.terminate());
  const total = results.reduce((s, r) => s + (r.commits as number), 0);
  return {
    workers,
    hot,
    commitsPerSecond: Math.round(total / (ms / 1000)),
    conflicts: results.reduce((s, r) => s + (r.conflicts as number), 0),
    locked: results.reduce((s, r) => s + (r.locked as number), 0),
  };
}

async function notice(
  path: string,
  task: "watch" | "queue",
  rounds = 20,
): Promise<NoticeResult> {
  const w = spawn();
  const ready = once(w, (d) => d.ready === true);
  w.postMessage({ task, path });
  await ready;
  const kv = await Deno.openKv(path);
  await new Promise((r) => setTimeout(r, 200));
  const delays: number[] = [];
  let missed = 0;
  for (let i = 1; i <= rounds; i++) {
    const seen = once(w, (d) => d.seen === i);
    const sent = performance.timeOrigin + performance.now();
    if (task === "watch") await kv.set(["watched"], i);
    else await kv.enqueue(i);
    const got = await Promise.race([seen, new Promise((r) => setTimeout(() => r(null), 3000))]) as
      | Record<string, unknown>
      | null;
    if (got) delays.push((got.at as number) - sent);
    else missed++;
  }
  w.terminate();
  kv.close();
  delays.sort((a, b) => a - b);
  return {
    task,
    rounds,
    missed,
    p50ms: delays.length ? +delays[Math.floor(delays.length / 2)].toFixed(2) : null,
    maxms: delays.length ? +delays[delays.length - 1].toFixed(2) : null,
  };
}

if (import.meta.main) await main();

async function main(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "websocks-kv-isolates-" });
  const result: KvIsolatesResult = {
    commits: [
      await commits(`${dir}/a.kv`, 1, false),
      await commits(`${dir}/b.kv`, 2, false),
      await commits(`${dir}/c.kv`, 1, true),
      await commits(`${dir}/d.kv`, 2, true),
    ],
    watch: await notice(`${dir}/w.kv`, "watch"),
    queue: await notice(`${dir}/q.kv`, "queue"),
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
  await Deno.remove(dir, { recursive: true });
  Deno.exit(0);
}
