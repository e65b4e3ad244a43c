/** lib/store/kv.ts on its own: the busy retry, the wrapped handle, and storage-fault reasons. */
import assert from "node:assert/strict";
import {
  isStorageUnavailable,
  listAll,
  openKv,
  retryBusy,
  STORAGE_RETRY_AFTER_SECONDS,
  storageUnavailableError,
  storageUnavailableReason,
} from "../lib/store/kv.ts";
import { HttpError } from "../lib/http/http_error.ts";

const LOCKED = "TypeError: database is locked";

Deno.test("[kv] retryBusy retries a write refused as locked until it goes through", async () => {
  let attempts = 0;
  const result = await retryBusy(() => {
    attempts++;
    return attempts < 4 ? Promise.reject(new Error(LOCKED)) : Promise.resolve("written");
  });
  assert.equal(result, "written");
  assert.equal(attempts, 4);
});

Deno.test("[kv] retryBusy gives up after 50 attempts with the last error", async () => {
  let attempts = 0;
  await assert.rejects(
    retryBusy(() => {
      attempts++;
      return Promise.reject(new Error(`${LOCKED} (${attempts})`));
    }),
    { message: `${LOCKED} (50)` },
  );
  assert.equal(attempts, 50);
});

Deno.test("[kv] retryBusy rethrows any other error at once", async () => {
  let attempts = 0;
  const fault = new TypeError("Value too large (max 65536 bytes)");
  await assert.rejects(
    retryBusy(() => {
      attempts++;
      return Promise.reject(fault);
    }),
    (error) => error === fault,
  );
  assert.equal(attempts, 1);
});

Deno.test("[kv] openKv(':memory:') gives a working handle with sets, deletes and commits", async () => {
  const kv = await openKv(":memory:");
  await kv.set(["a"], 1);
  const commit = await kv.atomic().check({ key: ["b"], versionstamp: null }).set(["b"], 2).commit();
  assert.equal(commit.ok, true);
  assert.deepEqual((await listAll<number>(kv, { prefix: [] })).map((e) => [e.key, e.value]), [
    [["a"], 1],
    [["b"], 2],
  ]);
  await kv.delete(["a"]);
  assert.equal((await kv.get(["a"])).value, null);
  // A failed check is an answer, not an error to retry.
  const refused = await kv.atomic().check({ key: ["b"], versionstamp: null }).set(["b"], 3)
    .commit();
  assert.equal(refused.ok, false);
  assert.equal(kv.get, kv.get, "methods are bound once, not per call");
  kv.close();
});

Deno.test("[kv] storage faults are named; other errors are not storage faults", () => {
  const cases: [string, string | null][] = [
    ["database or disk is full", "disk full"],
    ["No space left on device (os error 28)", "disk full"],
    ["Disk quota exceeded", "disk full"],
    ["disk I/O error", "disk I/O error"],
    ["attempt to write a readonly database", "read-only"],
    ["Read-only file system (os error 30)", "read-only"],
    ["unable to open database file", "cannot open the database"],
    ["database disk image is malformed", "cannot open the database"],
    [LOCKED, "busy"],
    ["database is busy", "busy"],
    ["Value too large (max 65536 bytes)", null],
    ["Key too large for write (max 2048 bytes)", null],
  ];
  for (const [message, reason] of cases) {
    assert.equal(storageUnavailableReason(new Error(message)), reason, message);
    assert.equal(isStorageUnavailable(new Error(message)), reason !== null, message);
  }
  assert.equal(storageUnavailableReason("os error 28"), "disk full", "a thrown string counts");
  assert.equal(storageUnavailableReason(new HttpError(503, "disk full")), null);
});

Deno.test("[kv] a storage fault becomes a 503 naming the action and the reason, with Retry-After", () => {
  const error = storageUnavailableError(new Error("No space left on device"), "ingest");
  assert.equal(error.status, 503);
  assert.equal(error.message, "Cannot ingest: storage is unavailable (disk full); retry later");
  assert.deepEqual(error.headers, { "Retry-After": String(STORAGE_RETRY_AFTER_SECONDS) });
  assert.equal(
    storageUnavailableError(new Error("odd"), "save").message,
    "Cannot save: storage is unavailable (storage fault); retry later",
  );
});
