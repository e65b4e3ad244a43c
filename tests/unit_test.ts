import { joinPath, parentOf, pathOf } from "../lib/runtime/paths.ts";
import { envelopeText } from "../lib/log/envelope_stream.ts";
import assert from "node:assert/strict";
import { loadConfig } from "../lib/runtime/config.ts";
import { onFirstUse } from "../lib/runtime/first_use.ts";
import { idTime, isId, nextId } from "../lib/store/ids.ts";
import { getEvent } from "../lib/log/events.ts";
import { parseForm } from "../lib/intake/body_types.ts";
import { createBroker } from "../lib/fanout/broker.ts";
import {
  createIngest,
  type IncomingWebhook,
  type IngestResult,
} from "../lib/intake/group_commit.ts";
import { gatherPerTurn } from "../lib/runtime/per_turn.ts";
import { submitRelay } from "../lib/runtime/cluster.ts";
import { quotaState } from "../lib/billing/usage.ts";
import { createRateLimiter } from "../lib/intake/rate_limit.ts";
import { createShares } from "../lib/intake/account_share.ts";
import { userKey } from "../lib/store/kv_keys.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { createDownloadGuard } from "../lib/http/download_guard.ts";
import { waitFor } from "./helpers.ts";
import { heardEventIds, jsonWebhook, userEndpoint } from "./fakes.ts";

Deno.test("[ids] ids are unique, sortable and carry the time", () => {
  const before = Date.now();
  const ids = Array.from({ length: 10_000 }, () => nextId());
  assert.equal(new Set(ids).size, ids.length);
  assert.deepEqual([...ids].sort(), ids);
  assert.ok(ids.every(isId));
  assert.ok(idTime(ids[0]) >= before && idTime(ids[0]) <= Date.now());
});

Deno.test("[ids] an id never sorts at or below the floor, even one from the future", () => {
  const future = nextId().replace(/^.{10}/, "0ZZZZZZZZZ");
  const id = nextId(future);
  assert.ok(id > future, `${id} should sort after ${future}`);
  assert.ok(nextId() > id);
});

Deno.test("[config] defaults need no environment", () => {
  const config = loadConfig({});
  assert.equal(config.port, 8000);
  assert.equal(config.publicUrl, "http://localhost:8000");
  assert.equal(config.maxBodyBytes, 25 * 1024 * 1024);
  assert.equal(config.streamBodyBytes, 1024 * 1024);
  assert.equal(config.retentionMs, 24 * 3600_000);
  assert.equal(config.freeMonthlyLimit, 1000);
});

Deno.test("[config] each bad value is named in the error", () => {
  assert.throws(
    () => loadConfig({ PORT: "eighty", MAX_BODY_BYTES: "-1", PUBLIC_URL: "not a url" }),
    (error: Error) =>
      error.message.includes("PORT") && error.message.includes("MAX_BODY_BYTES") &&
      error.message.includes("PUBLIC_URL"),
  );
});

Deno.test("[config] PUBLIC_URL loses its trailing slash", () => {
  assert.equal(
    loadConfig({ PUBLIC_URL: "https://hooks.example.com/" }).publicUrl,
    "https://hooks.example.com",
  );
});

Deno.test("[events] form bodies become fields, repeated names arrays", () => {
  assert.deepEqual(parseForm("a=1&b=x+y&a=2&c=%E2%9C%93"), { a: ["1", "2"], b: "x y", c: "✓" });
  assert.equal(JSON.stringify(parseForm("__proto__=x&a=1")), '{"__proto__":"x","a":"1"}');
});

Deno.test("[rate-limit] a burst passes, then callers wait, and 0 disables", () => {
  const limiter = createRateLimiter({ perSecond: 1, burst: 3 });
  assert.deepEqual([limiter.take("a"), limiter.take("a"), limiter.take("a")], [0, 0, 0]);
  assert.equal(limiter.take("a"), 1);
  assert.equal(limiter.take("b"), 0);
  const off = createRateLimiter({ perSecond: 0, burst: 1 });
  assert.ok(Array.from({ length: 100 }, () => off.take("a")).every((w) => w === 0));
});

Deno.test("[ingest] it commits and publishes with no job in the KV queue", async () => {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  const published = heardEventIds(broker);
  const endpoint = await userEndpoint(kv, "noqueue", 10);
  const ingest = createIngest(kv, { broker, retentionMs: 60_000 });
  const result = await ingest.submit(jsonWebhook(endpoint, '{"ok":true}'));
  assert.equal(result.accepted, true);
  assert.deepEqual(published, [result.accepted ? result.id : ""]);
  const stored = await getEvent(kv, { userId: endpoint.userId, id: published[0] });
  assert.equal(JSON.parse(await envelopeText(kv, stored!)).body, '{"ok":true}');
  // Nothing was enqueued: a listener started now finds no job ahead of a marker sent after.
  const jobs: unknown[] = [];
  const listening = kv.listenQueue((job) => {
    jobs.push(job);
  });
  await kv.enqueue("marker");
  await waitFor(() => jobs.includes("marker"), { what: "the marker job" });
  assert.deepEqual(jobs, ["marker"]);
  kv.close();
  await listening;
});

Deno.test("[ingest] webhooks received in one turn of the event loop share one commit", async () => {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  // One "events" publish per commit and user: the commits, as the clients see them.
  const commits: number[] = [];
  broker.subscribe((message) => {
    if (message.kind === "events") commits.push(message.events.length);
  });
  const endpoint = await userEndpoint(kv, "oneturn", 100);
  const ingest = createIngest(kv, { broker, retentionMs: 60_000 });
  // Submitted back to back, as requests read in one turn are: the first must not commit alone.
  const results = await Promise.all(
    Array.from({ length: 5 }, (_, n) => ingest.submit(jsonWebhook(endpoint, `{"n":${n}}`))),
  );
  assert.ok(results.every((result) => result.accepted));
  assert.deepEqual(commits, [5]);
  kv.close();
});

Deno.test("[ingest] one account's flood does not hold another account's webhook behind it", async () => {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  // The users of the commits in order: one "events" publish per commit and user.
  const published: string[] = [];
  broker.subscribe((message) => {
    if (message.kind === "events") published.push(message.userId);
  });
  const flooder = await userEndpoint(kv, "flooder", 10_000);
  const victim = await userEndpoint(kv, "victim", 10);
  const ingest = createIngest(kv, { broker, retentionMs: 60_000 });
  // Four commits' worth (500 events each) queued before the victim's one webhook.
  const flood = Array.from(
    { length: 2_000 },
    (_, n) => ingest.submit(jsonWebhook(flooder, `{"n":${n}}`)),
  );
  const result = await ingest.submit(jsonWebhook(victim, '{"mine":true}'));
  assert.equal(result.accepted, true);
  // Served in the next commit, not after every commit the flood fills.
  const before = published.indexOf(victim.userId);
  assert.ok(before >= 0 && before <= 1, `the victim's commit came after ${before} of the flood's`);
  assert.ok((await Promise.all(flood)).every((r) => r.accepted));
  kv.close();
});

Deno.test("[ingest] a large body for an account over its quota is refused before it is written", async () => {
  const kv = await Deno.openKv(":memory:");
  const spent = await userEndpoint(kv, "spent", 0);
  // Refusals are still counted for the dashboard (the server batches those writes).
  let refusals = 0;
  const ingest = createIngest(kv, {
    broker: createBroker(),
    retentionMs: 60_000,
    rejections: { count: (entry) => void (refusals += entry.count) },
  });
  // Every write the ingest makes goes through an atomic operation: count their commits.
  let commits = 0;
  const atomic = kv.atomic.bind(kv);
  kv.atomic = () => {
    const op = atomic();
    const commit = op.commit.bind(op);
    op.commit = () => {
      commits++;
      return commit();
    };
    return op;
  };
  // Over INLINE_BODY_BYTES: without the check it would be staged in chunks, then deleted.
  const body = JSON.stringify({ pad: "x".repeat(100_000) });
  const results = await Promise.all(
    Array.from({ length: 5 }, () => ingest.submit(jsonWebhook(spent, body))),
  );
  assert.deepEqual(results.map((result) => result.accepted ? "accepted" : result.reason), [
    "quota",
    "quota",
    "quota",
    "quota",
    "quota",
  ]);
  assert.equal(commits, 0);
  assert.equal(refusals, 5);
  kv.close();
});

Deno.test("[ingest] a quota notice that cannot be published fails no webhook of the commit", async () => {
  const kv = await Deno.openKv(":memory:");
  // A transport that fails on notices only (another isolate gone, a full channel).
  const broker = createBroker({
    transports: [{
      send(message) {
        if (message.kind === "notice") throw new Error("the channel is closed");
      },
      start() {},
      peers: () => 0,
      close() {},
    }],
  });
  const nearly = await userEndpoint(kv, "nearly", 5);
  const other = await userEndpoint(kv, "other", 100);
  const ingest = createIngest(kv, { broker, retentionMs: 60_000 });
  // One commit: four of five takes "nearly" past 80 % of its month, a notice.
  const results = await Promise.all([
    ...Array.from({ length: 4 }, (_, n) => ingest.submit(jsonWebhook(nearly, `{"n":${n}}`))),
    ingest.submit(jsonWebhook(other, '{"other":true}')),
  ]);
  assert.deepEqual(results.map((result) => result.accepted), [true, true, true, true, true]);
  kv.close();
});

Deno.test("[runtime] gatherPerTurn sends what one turn of the event loop added, together and in order", async () => {
  const sent: number[][] = [];
  const add = gatherPerTurn<number>((items) => sent.push(items));
  add(1);
  add(2);
  add(3);
  assert.deepEqual(sent, []);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(sent, [[1, 2, 3]]);
  add(4);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(sent, [[1, 2, 3], [4]]);
});

Deno.test("[cluster] a Worker's webhook is answered once committed, not after the rest of its hand-over", async () => {
  const kv = await Deno.openKv(":memory:");
  const flooder = await userEndpoint(kv, "handover-flooder", 10_000);
  const victim = await userEndpoint(kv, "handover-victim", 10);
  // The flood's commits are held back until released; the victim's goes through at once.
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const ingest = {
    async submit(webhook: IncomingWebhook): Promise<IngestResult> {
      if (webhook.endpoint.userId === flooder.userId) await held;
      return { accepted: true, id: nextId(), quota: quotaState(null, 0, new Date()) };
    },
  };
  const answered: number[] = [];
  const relay = submitRelay(ingest, (message) => {
    if (message.type === "submitted") answered.push(...message.outcomes.map((o) => o.seq));
  });
  // One hand-over (one turn of a Worker): three of the flood's, then the victim's.
  relay([
    ...[1, 2, 3].map((seq) => ({ seq, webhook: jsonWebhook(flooder, `{"n":${seq}}`) })),
    { seq: 4, webhook: jsonWebhook(victim, '{"mine":true}') },
  ]);
  await waitFor(() => answered.includes(4), { what: "the victim's answer" });
  assert.deepEqual(answered, [4]);
  release();
  await waitFor(() => answered.length === 4, { what: "the flood's answers" });
  assert.deepEqual(answered, [4, 1, 2, 3]);
  kv.close();
});

Deno.test("[paths] file URLs become paths, and paths their folders, as node:path would", () => {
  assert.equal(
    pathOf(new URL("file:///srv/web%20socks/dist/islands")),
    "/srv/web socks/dist/islands",
  );
  assert.equal(pathOf("file:///srv/data/websocks.kv"), "/srv/data/websocks.kv");
  assert.throws(() => pathOf("https://example.com/x"), /Not a file URL/);
  assert.equal(parentOf("./data/websocks.kv"), "./data");
  assert.equal(parentOf("/srv/data/"), "/srv");
  assert.equal(parentOf("/websocks.kv"), "/");
  assert.equal(parentOf("websocks.kv"), ".");
  assert.equal(joinPath("./data", "secrets.key"), "./data/secrets.key");
  assert.equal(joinPath("/srv/", "secrets.key"), "/srv/secrets.key");
});

Deno.test("[load] open descriptors are counted as the process holds them", async () => {
  // In a process of its own: test files run in parallel in this one and open and close
  // descriptors all the while (a shared count once rose by 42 while 50 were opened).
  const module = (path: string) => JSON.stringify(new URL(path, import.meta.url).href);
  const script = `
    import { createLoadGuard } from ${module("../lib/http/load_guard.ts")};
    import { loadConfig } from ${module("../lib/runtime/config.ts")};
    const listed = () => [...Deno.readDirSync("/proc/self/fd")].length - 1; // less its own
    const count = () => {
      const guard = createLoadGuard(loadConfig({}));
      try {
        return guard.stats().openFiles;
      } finally {
        guard.close();
      }
    };
    const before = [count(), listed()];
    const path = Deno.makeTempFileSync();
    const files = Array.from({ length: 50 }, () => Deno.openSync(path));
    const after = [count(), listed()];
    for (const file of files) file.close();
    Deno.removeSync(path);
    console.log(JSON.stringify({ before, after }));
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const { before, after } = JSON.parse(new TextDecoder().decode(output.stdout));
  assert.ok(before[0] !== null && Math.abs(before[0] - before[1]) <= 1, `${before}`);
  assert.ok(after[0] !== null && Math.abs(after[0] - after[1]) <= 1, `${after}`);
  assert.ok(after[0] - before[0] >= 50, `${before[0]} → ${after[0]} with 50 more open`);
});

Deno.test("[runtime] a first use whose load failed is tried again at the next call", async () => {
  let calls = 0;
  const load = onFirstUse(() => {
    calls++;
    return calls === 1 ? Promise.reject(new Error("not yet")) : Promise.resolve("module");
  });
  await assert.rejects(load(), /not yet/);
  assert.equal(await load(), "module");
  assert.equal(await load(), "module");
  assert.equal(calls, 2, "loaded once after the failure, then kept");
});

Deno.test("[account_share] a key's share is refused when all taken and given back once", () => {
  const shares = createShares(2, (limit) => new HttpError(429, `limit ${limit}`));
  const first = shares.take("a");
  shares.take("a");
  assert.throws(
    () => shares.take("a"),
    (error) => error instanceof HttpError && error.status === 429 && error.message === "limit 2",
  );
  // Another key has its own share.
  shares.take("b");
  assert.equal(shares.held("b"), 1);
  first();
  first(); // a second call gives nothing more back
  assert.equal(shares.held("a"), 1);
  shares.take("a");
  assert.equal(shares.held("a"), 2);
});

Deno.test("[ingest] an account whose record keeps changing commits apart; the others commit together", async () => {
  const kv = await Deno.openKv(":memory:");
  const broker = createBroker();
  const attacker = await userEndpoint(kv, "rewriter", 100);
  const victims = [
    await userEndpoint(kv, "steady-1", 100),
    await userEndpoint(kv, "steady-2", 100),
  ];
  const attackerKey = userKey(attacker.userId);
  // The attacker rewrites its own record (a cap, a downgrade) just before each of the first three
  // commits that check it, as a loop of API calls would.
  let rewrites = 3;
  const committed: string[][] = [];
  const spied = new Proxy(kv, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (name !== "atomic") return typeof value === "function" ? value.bind(target) : value;
      return () => {
        const op = target.atomic();
        const checked: Deno.KvKey[] = [];
        const proxy: Deno.AtomicOperation = new Proxy(op, {
          get(real, prop) {
            if (prop === "check") {
              return (...checks: Deno.AtomicCheck[]) => {
                checked.push(...checks.map((check) => check.key));
                real.check(...checks);
                return proxy;
              };
            }
            if (prop === "commit") {
              return async () => {
                const mine = checked.some((key) => String(key) === String(attackerKey));
                if (mine && rewrites > 0) {
                  rewrites--;
                  const record = await target.get(attackerKey);
                  await target.set(attackerKey, record.value);
                }
                const result = await real.commit();
                if (result.ok) {
                  committed.push(
                    checked.filter((key) => key.length === 2 && key[0] === attackerKey[0]).map(
                      (key) => String(key[1]),
                    ).sort(),
                  );
                }
                return result;
              };
            }
            const value = Reflect.get(real, prop, real);
            if (typeof value !== "function") return value;
            return (...args: unknown[]) => {
              const out = value.apply(real, args);
              return out === real ? proxy : out;
            };
          },
        });
        return proxy;
      };
    },
  });
  const ingest = createIngest(spied, { broker, retentionMs: 60_000 });
  // Submitted in one turn: all three accounts share the first commit.
  const results = await Promise.all(
    [attacker, ...victims].map((endpoint) => ingest.submit(jsonWebhook(endpoint, "{}"))),
  );
  assert.ok(results.every((result) => result.accepted));
  // The two steady accounts were committed in one operation, not split apart.
  const both = [victims[0].userId, victims[1].userId].sort();
  assert.ok(
    committed.some((users) => users.length === 2 && users[0] === both[0] && users[1] === both[1]),
    `commits: ${JSON.stringify(committed)}`,
  );
  assert.equal(rewrites, 0);
  kv.close();
});

Deno.test("[downloads] slots per account and per isolate; a body read, cancelled or failed gives its slot back", async () => {
  const guard = createDownloadGuard({ perAccount: 2, total: 3, stallMs: 60_000 });
  const body = (chunks: number, fail = false) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (let n = 0; n < chunks; n++) controller.enqueue(new Uint8Array([n]));
        if (fail) controller.error(new Error("a chunk is missing"));
        else controller.close();
      },
    });
  const refusal = (run: () => unknown) => {
    try {
      run();
    } catch (error) {
      assert.ok(error instanceof HttpError);
      return error.status;
    }
    return null;
  };
  const a1 = guard.guard("a", body(3), "read event");
  const a2 = guard.guard("a", body(1, true), "read event");
  assert.equal(refusal(() => guard.guard("a", body(1), "read event")), 429);
  const b1 = guard.guard("b", body(1), "read event");
  assert.equal(refusal(() => guard.guard("c", body(1), "read event")), 503, "the isolate's 3");
  // Read to its end: the bytes pass unchanged, and the slot comes back.
  assert.deepEqual(new Uint8Array(await new Response(a1).arrayBuffer()), new Uint8Array([0, 1, 2]));
  const c1 = guard.guard("c", body(1), "read event");
  // Failed, and cancelled: both give theirs back.
  await assert.rejects(new Response(a2).arrayBuffer(), /a chunk is missing/);
  await b1.cancel();
  await c1.cancel();
  const again = [guard.guard("a", body(1), "read event"), guard.guard("a", body(1), "read event")];
  assert.equal(refusal(() => guard.guard("a", body(1), "read event")), 429);
  for (const one of again) await one.cancel();
});

Deno.test("[downloads] a download left unread past its stall time fails and gives its slot back", async () => {
  const guard = createDownloadGuard({ perAccount: 1, total: 0, stallMs: 50 });
  let cancelled = false;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new Uint8Array(1024));
    },
    cancel() {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
  const download = guard.guard("a", source, "read event");
  const reader = download.getReader();
  assert.equal((await reader.read()).value?.byteLength, 1024);
  // Not read again: the stall timer ends it and cancels what it read from.
  await waitFor(() => cancelled, { what: "the source cancelled" });
  await assert.rejects(reader.read(), /left unread/);
  guard.guard("a", new ReadableStream(), "read event").cancel();
});

Deno.test("[downloads] what a download reads is charged to its account's pace", async () => {
  const charged: [string, number][] = [];
  const guard = createDownloadGuard({
    perAccount: 0,
    total: 0,
    stallMs: 60_000,
    pace: (userId, bytes) => Promise.resolve(void charged.push([userId, bytes])),
  });
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(100));
      controller.enqueue(new Uint8Array(50));
      controller.close();
    },
  });
  assert.equal(
    (await new Response(guard.guard("a", source, "read event")).arrayBuffer()).byteLength,
    150,
  );
  assert.deepEqual(charged, [["a", 100], ["a", 50]]);
});
