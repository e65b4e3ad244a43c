/**
 * Issue 10, findings 4 and 13: one tenant's bad request can only fail itself, and a full or
 * failing store is an answer (503 with Retry-After), never a crash or a false ack.
 */
import assert from "node:assert/strict";
import { serialize } from "node:v8";
import { statfs, type StatsFs } from "node:fs";
import { fileURLToPath as fromFileUrl } from "node:url";
import { createBroker } from "../lib/fanout/broker.ts";
import { eventsAfter, type StoredEvent, toPacks } from "../lib/log/events.ts";
import { decodePack } from "../lib/log/pack_codec.ts";
import { eventKey } from "../lib/store/kv_keys.ts";
import { HttpError } from "../lib/http/http_error.ts";
import {
  createIngest,
  type IncomingWebhook,
  type IngestResult,
} from "../lib/intake/group_commit.ts";
import { startStorageGuard, type StorageGuard } from "../lib/store/storage_guard.ts";
import {
  openWs,
  postWebhook,
  respondMode,
  signUp,
  startTestServer,
  type TestServer,
} from "./helpers.ts";
import { userEndpoint } from "./fakes.ts";
import { createEndpointCache } from "../lib/endpoints/endpoints.ts";

Deno.test("[ingest] a 65,000-character path fails alone while another tenant's concurrent webhooks all succeed", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "100000" });
  const attacker = await signUp(server);
  const victim = await signUp(server);
  const longPath = `${attacker.webhookUrl}/${"a".repeat(65_000)}`;
  const victims: Promise<Response>[] = [];
  const attacks: Promise<Response>[] = [];
  for (let i = 0; i < 200; i++) {
    // Interleaved, so attacks land in the same group commits as the victim's webhooks.
    if (i % 40 === 20) attacks.push(postWebhook(longPath, "{}"));
    victims.push(postWebhook(victim.webhookUrl, JSON.stringify({ n: i })));
  }
  for (const response of await Promise.all(attacks)) {
    assert.equal(response.status, 414);
    assert.match(response.headers.get("content-type")!, /^application\/json/);
    assert.match(
      (await response.json()).error,
      /^Cannot ingest: path, headers and query take \d+ bytes, over the limit of 16384$/,
    );
  }
  const statuses = await Promise.all(
    victims.map(async (pending) => {
      const response = await pending;
      await response.body?.cancel();
      return response.status;
    }),
  );
  assert.deepEqual(statuses.filter((s) => s !== 200), []);
  assert.equal(await historyCount(server, victim.token), 200);
  assert.equal(await historyCount(server, attacker.token), 0);
});

Deno.test("[ingest] headers over the metadata limit get 431; MAX_METADATA_BYTES raises it", async () => {
  await using server = await startTestServer({ MAX_METADATA_BYTES: "20000" });
  const user = await signUp(server);
  const fits = await postWebhook(user.webhookUrl, "{}", {
    "Content-Type": "application/json",
    "X-Padding": "p".repeat(17_000),
  });
  assert.equal(fits.status, 200);
  await fits.body?.cancel();
  const tooBig = await postWebhook(user.webhookUrl, "{}", {
    "Content-Type": "application/json",
    "X-Padding": "p".repeat(20_000),
  });
  assert.equal(tooBig.status, 431);
  assert.match(tooBig.headers.get("content-type")!, /^application\/json/);
  assert.match(
    (await tooBig.json()).error,
    /^Cannot ingest: path, headers and query take \d+ bytes, over the limit of 20000$/,
  );
});

Deno.test("[ingest] a pack never serializes larger than its measured size, whatever the text", () => {
  const texts = ["a", "é", "€", "😀", "\u{10FFFF}", "\u0000", '"\\'];
  const random = seeded(10);
  for (let round = 0; round < 200; round++) {
    const pick = (n: number) =>
      Array.from({ length: n }, () => texts[Math.floor(random() * texts.length)]).join("");
    const events = Array.from({ length: 1 + Math.floor(random() * 8) }, (_, i) =>
      storedEvent({
        id: `01K${String(round).padStart(5, "0")}${String(i).padStart(18, "0")}`,
        path: "/" + pick(Math.floor(random() * 4000)),
        headersJson: JSON.stringify({ h: pick(Math.floor(random() * 4000)) }),
        queryJson: JSON.stringify({ q: pick(Math.floor(random() * 2000)) }),
        contentType: pick(Math.floor(random() * 100)),
        body: random() < 0.5 ? null : new Uint8Array(Math.floor(random() * 30_000)),
      }));
    for (const pack of toPacks(events)) {
      // node:v8 writes what Deno KV stores (V8's serializer) plus a few header bytes.
      assert.ok(serialize(pack).byteLength <= 65_536 - 2048, `a pack of ${pack.length} fits`);
    }
  }
});

Deno.test("[ingest] a record too large for KV is refused before it joins the shared commit", async () => {
  const kv = await Deno.openKv(":memory:");
  const ingest = createIngest(kv, { broker: createBroker(), retentionMs: 60_000 });
  const [a, b] = await Promise.all(["a", "b"].map((name) => userEndpoint(kv, name)));
  const outcomes = await Promise.allSettled([
    ...Array.from({ length: 50 }, (_, i) => ingest.submit(webhook(a, `/a${i}`))),
    // Past receive.ts's metadata limit only by a bug: ingest itself must still keep it out.
    ingest.submit(webhook(b, "/" + "€".repeat(40_000))),
    ...Array.from({ length: 50 }, (_, i) => ingest.submit(webhook(b, `/b${i}`))),
  ]);
  const bad = outcomes.splice(50, 1)[0];
  assert.equal(bad.status, "rejected");
  assert.ok(bad.reason instanceof HttpError, String(bad.reason));
  assert.equal(bad.reason.status, 413);
  assert.match(bad.reason.message, /^Cannot ingest: /);
  assert.deepEqual(outcomes.filter((o) => !accepted(o)), []);
  kv.close();
});

Deno.test("[ingest] nothing is written before the storage guard's first reading, which can refuse it", async () => {
  // A fresh start reads free space when the first write asks (storage_guard.ts), not before
  // listening: ingest must wait for that reading, and a full disk found then refuses the write.
  const kv = await Deno.openKv(":memory:");
  let asked = 0;
  let release!: () => void;
  const reading = new Promise<void>((resolve) => release = resolve);
  let known = false;
  let down: string | null = null;
  const storage = {
    firstCheck() {
      if (known) return null;
      asked++;
      return reading;
    },
    unavailable: () => down,
    report() {},
  };
  const ingest = createIngest(kv, { broker: createBroker(), retentionMs: 60_000, storage });
  const endpoint = await userEndpoint(kv, "a");
  const first = ingest.submit(webhook(endpoint, "/first"));
  await waitFor("ingest to ask for the first reading", () => asked === 1);
  const written: string[] = [];
  for await (const event of eventsAfter(kv, { userId: endpoint.userId })) written.push(event.id);
  assert.deepEqual(written, []);

  down = "disk full";
  known = true;
  release();
  await assert.rejects(first, /disk is full/);
  assert.equal(asked, 1);

  down = null;
  const second = await ingest.submit(webhook(endpoint, "/second"));
  assert.ok(second.accepted);
  const stored: string[] = [];
  for await (const event of eventsAfter(kv, { userId: endpoint.userId })) stored.push(event.id);
  assert.deepEqual(stored, [second.id]);
  kv.close();
});

Deno.test("[ingest] a shared commit that fails is split so only the offending webhook fails", async () => {
  const kv = await Deno.openKv(":memory:");
  let failedCommits = 0;
  // A store that refuses any commit holding the poisoned event, as KV refuses a value too large.
  const poisoned = new Proxy(kv, {
    get(target, property) {
      if (property !== "atomic") {
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      }
      return () => {
        const op = target.atomic();
        const packs: unknown[] = [];
        const set = op.set.bind(op);
        op.set = (key, value, options) => {
          if (key[0] === eventKey("", "")[0]) packs.push(value);
          return set(key, value, options);
        };
        const commit = op.commit.bind(op);
        op.commit = async () => {
          for (const pack of packs) {
            if ((await decodePack<StoredEvent>(pack)).some((e) => e.path === "/poison")) {
              failedCommits++;
              throw new TypeError("Value too large (max 65536 bytes)");
            }
          }
          return await commit();
        };
        return op;
      };
    },
  });
  const ingest = createIngest(poisoned, { broker: createBroker(), retentionMs: 60_000 });
  const [a, b] = await Promise.all(["a", "b"].map((name) => userEndpoint(kv, name)));
  const outcomes = await Promise.allSettled([
    ...Array.from({ length: 60 }, (_, i) => ingest.submit(webhook(a, `/a${i}`))),
    ingest.submit(webhook(b, "/poison")),
    ...Array.from({ length: 60 }, (_, i) => ingest.submit(webhook(b, `/b${i}`))),
  ]);
  const bad = outcomes.splice(60, 1)[0];
  assert.equal(bad.status, "rejected");
  assert.ok(bad.reason instanceof HttpError, String(bad.reason));
  assert.equal(bad.reason.status, 413);
  assert.match(bad.reason.message, /^Cannot ingest: .*Value too large/);
  assert.deepEqual(outcomes.filter((o) => !accepted(o)), []);
  assert.ok(failedCommits >= 2, "the shared commit failed, then the split found the culprit");
  kv.close();
});

/** Bytes free to an unprivileged writer on the file system holding `path`. */
async function freeBytes(path: string): Promise<number> {
  const stats = await new Promise<StatsFs>((resolve, reject) =>
    statfs(path, (error, result) => error ? reject(error) : resolve(result))
  );
  return stats.bavail * stats.bsize;
}

/** Whether this process may mount a tmpfs (root or CAP_SYS_ADMIN); decided once, up front. */
function canMountTmpfs(): boolean {
  if (Deno.build.os !== "linux") return false;
  const dir = Deno.makeTempDirSync({ prefix: "websocks-mount-probe-" });
  try {
    const mounted = new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
    if (mounted) new Deno.Command("umount", { args: [dir] }).outputSync();
    return mounted;
  } catch {
    return false;
  } finally {
    Deno.removeSync(dir);
  }
}

const MOUNTABLE = canMountTmpfs();

/** A fresh tmpfs of `size` (e.g. "48m") on a new temp folder; `unmount` also removes the folder. */
async function mountTmpfs(
  prefix: string,
  size: string,
): Promise<{ dir: string; unmount(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix });
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir],
  }).output();
  assert.ok(mount.success, new TextDecoder().decode(mount.stderr));
  return {
    dir,
    async unmount() {
      await new Deno.Command("umount", { args: ["-l", dir] }).output();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
if (!MOUNTABLE) {
  console.warn(
    "[ingest] full-disk test skipped: mounting a tmpfs is not allowed here (needs root or " +
      "CAP_SYS_ADMIN on Linux)",
  );
}

Deno.test({
  name: "[ingest] a full disk answers 503 with Retry-After, keeps serving, and recovers alone",
  ignore: !MOUNTABLE,
  async fn() {
    const { dir, unmount } = await mountTmpfs("websocks-full-disk-", "48m");
    const filler = `${dir}/filler`;
    const port = freePort();
    const url = `http://127.0.0.1:${port}`;
    const kvPath = `${dir}/websocks.kv`;
    let server: ServerProcess | null = null;
    try {
      // Keys that expire while the disk is full: Deno's KV thread deletes them on its own clock
      // and, when it cannot, ends the process. Written before the server opens the file, so
      // its first expiry run is due when they expire (its next is 60 s away otherwise).
      const expiringAt = Date.now() + EXPIRING_KEYS_MS;
      const seeding = await Deno.openKv(kvPath);
      for (let i = 0; i < 200; i += 10) {
        const op = seeding.atomic();
        for (let n = i; n < i + 10; n++) {
          op.set(["test_expiring", n], "e".repeat(2000), { expireIn: EXPIRING_KEYS_MS });
        }
        await op.commit();
      }
      seeding.close();
      server = await spawnServer({
        PORT: String(port),
        HOST: "127.0.0.1",
        PUBLIC_URL: url,
        KV_PATH: kvPath,
        WORKERS: "1",
        FREE_MONTHLY_LIMIT: "1000000",
        // A quarter of the disk, the most the guard takes: room for SQLite to delete expired keys
        // even when a burst of commits just before the disk filled left it a large WAL. (With 6
        // MiB of 24, one CI run of hundreds saw the expiry fail for space; locally the expiry
        // takes ~0.1 MiB and a 2 MiB WAL stands.)
        STORAGE_RESERVE_BYTES: String(12 * 1024 * 1024),
      });
      const user = await signUp({ url } as TestServer);

      // Senders post all along; each answer is either a 200 whose id must be stored, or a 503
      // with Retry-After and the reason. Anything else is a failure, and so is no answer,
      // except while the server restarts.
      const acked: string[] = [];
      let unavailable = 0;
      const wrong: string[] = [];
      let stop = false;
      let restarting = false;
      let okAfterRecovery = 0;
      let recovered = false;
      const body = JSON.stringify({ pad: "x".repeat(20_000) });
      const senders = Array.from({ length: 4 }, async () => {
        while (!stop) {
          let response: Response;
          try {
            response = await postWebhook(user.webhookUrl, body);
          } catch (error) {
            if (restarting) {
              await new Promise((resolve) => setTimeout(resolve, 20));
              continue;
            }
            wrong.push(`no answer: ${(error as Error).message}`);
            stop = true;
            return;
          }
          if (response.status === 200) {
            acked.push((await response.json()).id);
            if (recovered) okAfterRecovery++;
          } else if (response.status === 503) {
            const text = await response.text();
            if (
              !response.headers.get("retry-after")?.match(/^\d+$/) ||
              !response.headers.get("content-type")?.startsWith("application/json") ||
              JSON.parse(text).error !==
                "Cannot ingest: storage is unavailable (disk full); retry later"
            ) wrong.push(`503 ${JSON.stringify([...response.headers])} ${text}`);
            unavailable++;
            // A sender that honours Retry-After would wait; a little pause keeps the test light.
            await new Promise((resolve) => setTimeout(resolve, 20));
          } else {
            wrong.push(`${response.status} ${await response.text()}`);
          }
        }
      });
      await waitFor("webhooks acked before the disk fills", () => acked.length >= 20);

      // Fill the disk to under the guard's 1 MiB of "full", and stop there: SQLite may still
      // find room in its own free pages. A filler that ran on to ENOSPC raced the guard: when
      // ingest hit the full disk first, the guard released its reserve while the filler was
      // still writing, the filler took that room too, and KV's expiry ended the process (once
      // in CI). No guard can keep another process off released space; the test stops short.
      const file = await Deno.open(filler, { create: true, write: true });
      const block = new Uint8Array(256 * 1024);
      try {
        let left = await freeBytes(dir) - 512 * 1024;
        while (left > 0) left -= await file.write(block.subarray(0, Math.min(block.length, left)));
      } catch (error) {
        // Ingest took the last of it first; the disk is full all the same.
        assert.match(String(error), /No space left|os error 28/);
      } finally {
        file.close();
      }
      await waitFor("senders to get 503", () => unavailable >= 20 || stop, 60_000);
      assert.ok(Date.now() < expiringAt, "the disk filled before the seeded keys expired");
      // No event says when KV's thread has run: past the expiry plus its jitter (1 s), it has.
      await waitFor(
        "the seeded keys' expiry run",
        () => Date.now() > expiringAt + 3000 || stop,
        EXPIRING_KEYS_MS + 10_000,
      );
      assert.deepEqual(wrong, [], server.output());
      await assertServing(server, { url, user });

      // A restart while the disk is still full comes up and answers the same.
      restarting = true;
      assert.equal(await server.stop(), 0, server.output());
      server = await spawnServer(server.env);
      const before = unavailable;
      restarting = false;
      await waitFor("503 after the restart", () => unavailable > before + 4 || stop, 60_000);
      await assertServing(server, { url, user });

      // Space returns: ingest comes back without a restart.
      await Deno.remove(filler);
      recovered = true;
      await waitFor("ingest to recover", () => okAfterRecovery >= 20 || stop, 60_000);
      stop = true;
      await Promise.all(senders);
      assert.deepEqual(wrong, [], server.output());
      assert.equal(server.exited(), false, `the server exited:\n${server.output()}`);

      // Every acked webhook is stored, exactly once.
      const stored: string[] = [];
      let cursor: string | null = null;
      do {
        const page: Response = await fetch(
          `${url}/api/events?limit=200${cursor ? `&cursor=${cursor}` : ""}`,
          { headers: { Authorization: `Bearer ${user.token}` } },
        );
        assert.equal(page.status, 200);
        const json: { events: { id: string }[]; nextCursor: string | null } = await page.json();
        stored.push(...json.events.map((e) => e.id));
        cursor = json.nextCursor;
      } while (cursor);
      const counts = new Map<string, number>();
      for (const id of stored) counts.set(id, (counts.get(id) ?? 0) + 1);
      assert.deepEqual(acked.filter((id) => counts.get(id) !== 1), []);
      assert.equal(stored.length, new Set(stored).size);

      const exitCode = await server.stop();
      assert.equal(exitCode, 0, server.output());
      assert.doesNotMatch(server.output(), /panicked|Uncaught/);
      server = null;
    } finally {
      await server?.kill();
      await Deno.remove(filler).catch(() => {});
      await unmount();
    }
  },
});

/** A guard's 3 MiB reserve, as the tests below size it. */
const RESERVE_BYTES = 3 * 1024 * 1024;

/**
 * A 16 MiB tmpfs filled to leave `freeBytes`, for storage guards on its KV file. `setFree`
 * changes what is left; disposing stops the guards started through it, then unmounts.
 */
async function guardDisk(prefix: string, freeBytes: number) {
  const { dir, unmount } = await mountTmpfs(prefix, "16m");
  const guards: StorageGuard[] = [];
  let filled: { filler: Deno.FsFile; full: number };
  try {
    filled = await fillDisk(dir);
    await filled.filler.truncate(filled.full - freeBytes);
  } catch (error) {
    await unmount();
    throw error;
  }
  const { filler, full } = filled;
  const kvPath = `${dir}/websocks.kv`;
  return {
    kvPath,
    reservePath: `${kvPath}.reserve`,
    setFree: (bytes: number) => filler.truncate(full - bytes),
    async start(): Promise<StorageGuard> {
      const guard = await startStorageGuard({ kvPath, reserveBytes: RESERVE_BYTES });
      guards.push(guard);
      return guard;
    },
    async [Symbol.asyncDispose]() {
      filler.close();
      for (const guard of guards) await guard.stop();
      await unmount();
    },
  };
}

Deno.test({
  name: "[store] a guard that is down comes back when its whole reserve is in place again",
  ignore: !MOUNTABLE,
  async fn() {
    // The guard goes down and releases its reserve; then the reserve is written again by
    // someone else (the next run's guard), leaving less free than a reserve plus the floor. The
    // margin is whole again: the guard must not wait for room for a second reserve.
    await using disk = await guardDisk("websocks-guard-back-", 6 * 1024 * 1024);
    const writeReserve = async () => {
      const file = await Deno.open(disk.reservePath, { create: true, write: true });
      await file.write(new Uint8Array(RESERVE_BYTES));
      file.close();
    };
    await writeReserve();
    const guard = await disk.start();
    assert.equal(guard.unavailable(), null);
    // A write failed for lack of space: down, and the reserve is released.
    guard.report(new Error("database or disk is full"));
    assert.equal(guard.unavailable(), "disk full");
    // Polled without a pause, so the guard's own check (every second) cannot take the room
    // between the release and the next run's reserve.
    while (await Deno.stat(disk.reservePath).then(() => true, () => false));
    await writeReserve();
    await waitFor("the guard to come back", () => guard.unavailable() === null);
  },
});

Deno.test({
  name: "[store] a reserve half written by another guard counts as room for it",
  ignore: !MOUNTABLE,
  async fn() {
    // Another process's guard on the same KV file is writing the reserve as this one starts (a
    // CI run saw it): the half written is room this guard's own write would take back.
    // 6 MiB free, then 2.5 MiB of the reserve written: 3.5 MiB free, under reserve + floor.
    await using disk = await guardDisk("websocks-guard-half-", 6 * 1024 * 1024);
    await Deno.writeFile(disk.reservePath, new Uint8Array(2.5 * 1024 * 1024));
    const guard = await disk.start();
    await guard.firstCheck();
    assert.equal(guard.unavailable(), null);
    await waitFor(
      "the reserve to be whole",
      async () => (await Deno.stat(disk.reservePath)).size === RESERVE_BYTES,
    );
  },
});

Deno.test({
  name:
    "[store] the storage guard starts refusing writes when its reserve is gone and cannot be taken back",
  ignore: !MOUNTABLE,
  async fn() {
    // An earlier run released the reserve when the disk filled, then stopped. What is free now is
    // that reserve: a guard that started up would let ingest spend the store's upkeep margin.
    // 2.5 MiB free: more than the 1 MiB floor, less than a 3 MiB reserve plus that floor.
    await using disk = await guardDisk("websocks-guard-start-", 2.5 * 1024 * 1024);
    const guard = await disk.start();
    // Free space is read when the first write asks, not at the start; then the guard knows.
    const reading = guard.firstCheck();
    assert.ok(reading, "a guard without its reserve has a first reading to wait for");
    await reading;
    assert.equal(guard.firstCheck(), null);
    assert.equal(guard.unavailable(), "disk full");

    // With room for the reserve and the floor, a new guard starts up and takes its reserve.
    await disk.setFree(6 * 1024 * 1024);
    const next = await disk.start();
    await next.firstCheck();
    assert.equal(next.unavailable(), null);
    await waitFor(
      "the reserve to be written",
      async () => (await Deno.stat(disk.reservePath).catch(() => null))?.size === RESERVE_BYTES,
    );
    // The first guard takes it as its own too, and comes back.
    await waitFor("the first guard to come back", () => guard.unavailable() === null);
  },
});

/** How long after seeding the test's expiring keys expire: time enough to fill the disk. */
const EXPIRING_KEYS_MS = 25_000;

/** A server run as its own process, as operators run it. */
interface ServerProcess {
  env: Record<string, string>;
  output(): string;
  exited(): boolean;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number>;
  kill(): Promise<void>;
}

async function spawnServer(env: Record<string, string>): Promise<ServerProcess> {
  // The Deno running the tests: under .ci/run's LTS pass, the server runs on the LTS too.
  const child = new Deno.Command(
    Deno.execPath(),
    {
      args: ["run", "-A", "main.ts"],
      cwd: fromFileUrl(new URL("..", import.meta.url)),
      env: { SHUTDOWN_DRAIN_SECONDS: "0", ...env },
      stdout: "piped",
      stderr: "piped",
    },
  ).spawn();
  let output = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const bytes of stream) output += decoder.decode(bytes, { stream: true });
  };
  const collected = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  await waitFor("the server to answer /", async () => {
    if (exited) throw new Error(`server exited:\n${output}`);
    return (await fetchStatus(`${env.PUBLIC_URL}/`)) === 200;
  });
  return {
    env,
    output: () => output,
    exited: () => exited,
    async stop() {
      child.kill("SIGTERM");
      const { code } = await status;
      await collected;
      return code;
    },
    async kill() {
      if (!exited) child.kill("SIGKILL");
      await status;
      await collected;
    },
  };
}

/** While the store is full: alive, `/`, history and the dashboard answer 200. */
async function assertServing(
  server: ServerProcess,
  options: { url: string; user: { token: string; cookie: string } },
): Promise<void> {
  const { url, user } = options;
  assert.equal(server.exited(), false, `the server exited:\n${server.output()}`);
  assert.equal(await fetchStatus(`${url}/`), 200);
  const history = await fetch(`${url}/api/events?limit=1`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(history.status, 200);
  assert.match(history.headers.get("content-type")!, /^application\/json/);
  await history.body?.cancel();
  const dashboard = await fetch(`${url}/dashboard`, { headers: { Cookie: user.cookie } });
  assert.equal(dashboard.status, 200);
  assert.match(dashboard.headers.get("content-type")!, /^text\/html/);
  await dashboard.body?.cancel();
}

// --- support ---------------------------------------------------------------------------------

function seeded(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
}

function storedEvent(fields: Partial<StoredEvent> & { id: string }): StoredEvent {
  return {
    userId: crypto.randomUUID(),
    endpointId: crypto.randomUUID(),
    endpoint: "abcdefghijkl",
    receivedAt: new Date().toISOString(),
    expiresAt: Date.now(),
    method: "POST",
    path: "/",
    queryJson: "{}",
    headersJson: "{}",
    contentType: null,
    kind: "other",
    size: 0,
    body: null,
    blobId: null,
    chunks: 0,
    ...fields,
  };
}

function webhook(endpoint: IncomingWebhook["endpoint"], path: string): IncomingWebhook {
  return {
    endpoint,
    receivedAt: new Date(),
    method: "POST",
    path,
    queryJson: "{}",
    headersJson: '{"content-type":"application/json"}',
    contentType: "application/json",
    kind: "json",
    body: new TextEncoder().encode("{}"),
    text: "{}",
  };
}

function accepted(outcome: PromiseSettledResult<IngestResult>): boolean {
  return outcome.status === "fulfilled" && outcome.value.accepted;
}

async function historyCount(server: TestServer, token: string): Promise<number> {
  const response = await fetch(`${server.url}/api/events?limit=200`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  return (await response.json()).events.length;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function fetchStatus(url: string): Promise<number | null> {
  try {
    const response = await fetch(url);
    await response.body?.cancel();
    return response.status;
  } catch {
    return null;
  }
}

/** A file in `dir` that takes every free byte, still open, and its size once the disk is full. */
async function fillDisk(dir: string): Promise<{ filler: Deno.FsFile; full: number }> {
  const filler = await Deno.open(`${dir}/filler`, { create: true, write: true });
  try {
    for (;;) await filler.write(new Uint8Array(256 * 1024));
  } catch (error) {
    assert.match(String(error), /No space left|os error 28/);
  }
  return { filler, full: (await Deno.stat(`${dir}/filler`)).size };
}

async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A share's refusal: 429 with Retry-After, JSON, naming the limit. */
async function assertShareRefusal(refused: Response, error: string): Promise<void> {
  assert.equal(refused.status, 429);
  assert.match(refused.headers.get("content-type")!, /^application\/json/);
  assert.equal(refused.headers.get("retry-after"), "1");
  assert.equal((await refused.json()).error, error);
}

/** `count` requests to `url` whose bodies start and then stall until `finish()`. */
function stalledBodies(url: string, count: number) {
  const senders: ReadableStreamDefaultController<Uint8Array>[] = [];
  const responses = Array.from({ length: count }, () =>
    fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode("{"));
          senders.push(controller);
        },
      }),
    }));
  const finished = new Set<number>();
  return {
    responses,
    /** Sends the last byte of body `index`, or of every body not yet finished. */
    finish(index?: number) {
      for (const [n, sender] of senders.entries()) {
        if ((index !== undefined && n !== index) || finished.has(n)) continue;
        finished.add(n);
        sender.enqueue(new TextEncoder().encode("}"));
        sender.close();
      }
    },
  };
}

Deno.test("[ingest] one account's webhooks in progress beyond its share get 429; another account's are served", async () => {
  await using server = await startTestServer({ MAX_REQUESTS_PER_ACCOUNT: "2" });
  const attacker = await signUp(server);
  const victim = await signUp(server);
  // Respond mode with a client that never answers: each webhook stays in progress.
  await respondMode(server, attacker, 30);
  const client = await openWs(`${server.wsUrl}?token=${attacker.token}`);
  const waiting = [1, 2].map((n) => postWebhook(attacker.webhookUrl, JSON.stringify({ n })));
  const delivered = [await client.next(), await client.next()];
  const refused = await postWebhook(attacker.webhookUrl, '{"n":3}');
  await assertShareRefusal(
    refused,
    "Cannot ingest: 2 webhooks to this account's endpoints are in progress (limit 2); " +
      "wait for some to finish",
  );
  // The victim, from the same address, is served meanwhile.
  const served = await postWebhook(victim.webhookUrl, '{"n":1}');
  assert.equal(served.status, 200);
  await served.body?.cancel();
  // Answered, the attacker's account is served again.
  for (const event of delivered) client.send({ type: "response", id: event.id, status: 204 });
  for (const answer of await Promise.all(waiting)) {
    assert.equal(answer.status, 204);
    await answer.body?.cancel();
  }
  const again = postWebhook(attacker.webhookUrl, '{"n":4}');
  client.send({ type: "response", id: (await client.next()).id, status: 200, body: "ok" });
  assert.equal((await again).status, 200);
  assert.equal(await historyCount(server, attacker.token), 3);
  assert.equal(await historyCount(server, victim.token), 1);
  await client.close();
});

Deno.test("[ingest] respond-mode waits beyond an account's share get 429 at once and nothing is stored", async () => {
  await using server = await startTestServer({ MAX_RESPOND_WAITS_PER_ACCOUNT: "2" });
  const attacker = await signUp(server);
  await respondMode(server, attacker, 30);
  // A connected client that never answers: each sender waits for the full timeout.
  const client = await openWs(`${server.wsUrl}?token=${attacker.token}`);
  const waiting = [1, 2].map((n) => postWebhook(attacker.webhookUrl, JSON.stringify({ n })));
  const delivered = [await client.next(), await client.next()];
  assert.deepEqual(delivered.map((event) => event.type), ["webhook", "webhook"]);
  const refused = await postWebhook(attacker.webhookUrl, '{"n":3}');
  await assertShareRefusal(
    refused,
    "Cannot ingest: 2 webhooks of this account are waiting for a client's answer (limit 2); " +
      "wait for some to be answered",
  );
  assert.equal(await historyCount(server, attacker.token), 2);
  // Answered, the waits end and the account may wait again.
  for (const event of delivered) client.send({ type: "response", id: event.id, status: 204 });
  for (const answer of await Promise.all(waiting)) {
    assert.equal(answer.status, 204);
    await answer.body?.cancel();
  }
  const next = postWebhook(attacker.webhookUrl, '{"n":4}');
  const event = await client.next();
  client.send({ type: "response", id: event.id, status: 202, body: "ok" });
  const answered = await next;
  assert.equal(answered.status, 202);
  assert.equal(await answered.text(), "ok");
  await client.close();
});

Deno.test("[ingest] bodies still arriving take none of the account's shares", async () => {
  await using server = await startTestServer({
    MAX_REQUESTS_PER_ACCOUNT: "2",
    MAX_RESPOND_WAITS_PER_ACCOUNT: "2",
  });
  const victim = await signUp(server);
  await respondMode(server, victim, 30);
  const client = await openWs(`${server.wsUrl}?token=${victim.token}`);
  // Anyone may post to the victim's URL: three bodies held open, one byte short.
  const stalled = stalledBodies(victim.webhookUrl, 3);
  try {
    await waitFor("the stalled bodies to be received", () => server.load().bodies === 3);
    // The victim's own sender is still served: its webhook reaches the client, which answers.
    const sending = postWebhook(victim.webhookUrl, '{"real":true}');
    const event = await client.next();
    assert.deepEqual(event.payload, { real: true });
    client.send({ type: "response", id: event.id, status: 201, body: "answered" });
    const answered = await sending;
    assert.equal(answered.status, 201);
    assert.equal(await answered.text(), "answered");
    // Finished, each stalled webhook is stored and waits for its answer like any other. One at
    // a time: three finished at once would hold three shares of two, and the third get 429.
    for (const [n, pending] of stalled.responses.entries()) {
      stalled.finish(n);
      const event = await client.next();
      client.send({ type: "response", id: event.id, status: 204 });
      const response = await pending;
      assert.equal(response.status, 204);
      await response.body?.cancel();
    }
  } finally {
    stalled.finish();
  }
  await client.close();
});

Deno.test("[ingest] the relay's own cookies sent to another account's URL are not stored", async () => {
  // Ingest is served on the dashboard's host unless INGEST_URL says otherwise, and GET is an
  // ingest method: a logged-in user who follows a link to an attacker's webhook URL sends the
  // session cookie (SameSite=Lax rides along on a top-level navigation). Stored, the attacker
  // read it from the event and was that user.
  await using server = await startTestServer();
  const victim = await signUp(server);
  const attacker = await signUp(server);
  const device = "websocks_device=d1; __Host-websocks_session=s2; __Host-websocks_device=d2";
  const visit = await fetch(`${attacker.webhookUrl}/hello`, {
    headers: { Cookie: `theme=dark; ${victim.cookie}; ${device}; lang=en` },
  });
  assert.equal(visit.status, 200);
  const { id } = await visit.json();
  const headers = { Authorization: `Bearer ${attacker.token}` };
  const stored = await fetch(`${server.url}/api/events/${id}`, { headers });
  assert.equal(stored.status, 200);
  assert.match(stored.headers.get("content-type")!, /^application\/json/);
  // The sender's other cookies are the webhook's own, and kept.
  assert.equal((await stored.json()).headers.cookie, "theme=dark; lang=en");
  // Only the relay's cookies: the header goes with them.
  const only = await fetch(attacker.webhookUrl, { headers: { Cookie: victim.cookie } });
  assert.equal(only.status, 200);
  const event = await fetch(`${server.url}/api/events/${(await only.json()).id}`, { headers });
  assert.equal(event.status, 200);
  assert.equal("cookie" in (await event.json()).headers, false);
  // And the victim's session still works: nothing about it reached the attacker.
  const me = await fetch(`${server.url}/api/me`, { headers: { Cookie: victim.cookie } });
  assert.equal(me.status, 200);
  await me.body?.cancel();
});

Deno.test("[ingest] a slug too long to be a KV key gets 404 like any unknown one, not 500", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  // A stranger's URL: the slug was read from KV as it came, and KV refuses a key over 2 KiB
  // even to read it ("Key too large for read"): 500, and an error logged with the whole path.
  const slug = "a".repeat(2100);
  const ingest = await postWebhook(`${server.url}/api/in/${slug}`, "{}");
  assert.equal(ingest.status, 404);
  assert.match(ingest.headers.get("content-type")!, /^application\/json/);
  assert.match((await ingest.json()).error, /^Cannot ingest: no endpoint with slug "a{64}…"$/);
  // The account's own routes that take a slug or a token id.
  const headers = { Authorization: `Bearer ${user.token}` };
  const endpoint = await fetch(`${server.url}/api/endpoints/${slug}/rotate`, {
    method: "POST",
    headers,
  });
  assert.equal(endpoint.status, 404);
  assert.match(endpoint.headers.get("content-type")!, /^application\/json/);
  assert.match((await endpoint.json()).error, /no endpoint a{1,40}$/);
  const token = await fetch(`${server.url}/api/tokens/${slug}`, { method: "DELETE", headers });
  assert.equal(token.status, 404);
  assert.match(token.headers.get("content-type")!, /^application\/json/);
  assert.match((await token.json()).error, /^Cannot revoke token: no token a{1,40}/);
});

Deno.test("[ingest] the endpoint cache keeps no entry for a slug too long to be one", async () => {
  // Such slugs were cached as unknown, keyed by the whole slug (up to the 16 KiB path): 50,000
  // strangers' URLs could hold some 800 MB, and each flushed real endpoints from the cache.
  const kv = await Deno.openKv(":memory:");
  try {
    const endpoint = await userEndpoint(kv, "cached");
    let reads = 0;
    const get = kv.get.bind(kv);
    kv.get = ((key: Deno.KvKey) => {
      reads++;
      return get(key);
    }) as typeof kv.get;
    const cache = createEndpointCache(kv, { maxEntries: 2 });
    assert.equal((await cache.get(endpoint.slug))?.id, endpoint.id);
    const before = reads;
    for (let n = 0; n < 3; n++) assert.equal(await cache.get(`${n}${"x".repeat(3000)}`), null);
    assert.equal(reads, before, "no KV read for them");
    assert.equal((await cache.get(endpoint.slug))?.id, endpoint.id);
    assert.equal(reads, before, "the real endpoint is still cached");
  } finally {
    kv.close();
  }
});
