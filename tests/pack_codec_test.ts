/** Unit tests of lib/log/pack_codec.ts: how a pack of events sits in its KV value. */
import assert from "node:assert/strict";
import { deflateRawSync } from "node:zlib";
import { decodePack, encodePack, PACK_BYTES } from "../lib/log/pack_codec.ts";
import { eventsAfter, type StoredEvent, toPacks } from "../lib/log/events.ts";
import { eventKey } from "../lib/store/kv_keys.ts";
import { randomBytes } from "./helpers.ts";
import { storedEvent } from "./fakes.ts";

const USER = "user-1";

/** A stored event carrying `body`, with non-ASCII text in its strings and `extra` over them. */
function stored(body: Uint8Array | null, extra: Partial<StoredEvent> = {}): StoredEvent {
  return storedEvent(USER, body, {
    path: "/hooks/ü",
    queryJson: '{"q":["a","b"],"emoji":"🦕"}',
    headersJson: '{"content-type":"application/json","x-github-event":"push"}',
    eventType: null,
    ...extra,
  });
}

/** A GitHub-like push body, different in its ids and message each time. */
function pushBody(n: number): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({
    ref: "refs/heads/main",
    after: crypto.randomUUID(),
    repository: { full_name: "octo-org/websocks", private: false, topics: ["webhooks"] },
    pusher: { name: "octocat", email: "octocat@example.com" },
    head_commit: { id: crypto.randomUUID(), message: `commit ${n}` },
  }));
}

/** Text of `length` UTF-16 code units drawn from all of them, lone surrogates included. */
function anyUnits(length: number): string {
  return String.fromCharCode(
    ...Array.from({ length }, () => Math.floor(Math.random() * 0x10000)),
  );
}

Deno.test("[log] a deflated pack reads back field for field and byte for byte", async () => {
  const everyByte = Uint8Array.from({ length: 256 }, (_, n) => n);
  const events = [
    ...Array.from({ length: 20 }, (_, n) => stored(pushBody(n))),
    stored(everyByte, { kind: "other", contentType: "application/octet-stream" }),
    stored(pushBody(8), { verified: { provider: "github", ok: true }, eventType: "push" }),
    stored(null, {
      blobId: "blob-1",
      chunks: 3,
      size: 150_000,
      large: { utf8: true, chars: 150_000, escapedChars: 150_010, wide: false },
    }),
    stored(new Uint8Array(), {
      handshake: true,
      verified: { provider: "slack", ok: false, reason: "signature does not match" },
    }),
    stored(pushBody(9), { respond: true, eventType: "\u0000\ud800 \u2028" }),
  ];
  const value = await encodePack(events);
  assert.ok(value instanceof Uint8Array, "stored as deflated bytes");
  assert.equal(value[0], 1, "layout 1");
  const read = await decodePack<StoredEvent>(value);
  assert.deepEqual(read, events);
  for (const event of read) {
    if (event.body) assert.equal(event.body.byteLength, event.body.buffer.byteLength, "own buffer");
  }
});

Deno.test("[log] any UTF-16 text in a pack's strings reads back unchanged", async () => {
  for (let round = 0; round < 20; round++) {
    const events = Array.from({ length: 6 }, (_, n) =>
      stored(pushBody(n), {
        path: "/" + anyUnits(40),
        headersJson: JSON.stringify({ "x-any": anyUnits(200) }),
        queryJson: JSON.stringify({ q: anyUnits(100) }),
        eventType: anyUnits(30),
        contentType: "text/plain; charset=" + anyUnits(10),
      }));
    const value = await encodePack(events);
    assert.deepEqual(await decodePack(value), events, `round ${round}`);
  }
});

Deno.test("[log] a pack of webhook JSON is stored deflated, in under half the bytes", async () => {
  const events = Array.from({ length: 20 }, (_, n) => stored(pushBody(n)));
  const value = await encodePack(events);
  const plain = events.reduce((sum, event) => sum + event.size + event.headersJson.length, 0);
  assert.ok(value instanceof Uint8Array);
  assert.ok(value.byteLength * 2 < plain, `${value.byteLength} bytes stored for ${plain}`);
  assert.deepEqual(await decodePack(value), events);
});

Deno.test("[log] a pack under 8 KiB stays the array KV serializes", async () => {
  const events = Array.from({ length: 3 }, (_, n) => stored(pushBody(n)));
  assert.equal(await encodePack(events), events, "the events themselves");
});

Deno.test("[log] a pack deflate cannot shrink by a tenth stays the array KV serializes", async () => {
  const events = Array.from(
    { length: 12 },
    () => stored(randomBytes(4_500), { kind: "other", contentType: "application/octet-stream" }),
  );
  const value = await encodePack(events);
  assert.equal(value, events, "the events themselves");
  assert.deepEqual(await decodePack(value), events);
});

Deno.test("[log] a pack of wide characters that deflate cannot fit stays the array", async () => {
  // A hostile sender's query: 7,000 random characters from U+1000–U+17FF per webhook, counted
  // at 2 bytes a unit by packedSize(), are 3 in UTF-8 JSON and deflate only to ~2.7.
  const wide = () =>
    String.fromCharCode(
      ...Array.from({ length: 7_000 }, () => 0x1000 + Math.floor(Math.random() * 0x800)),
    );
  const events = Array.from(
    { length: 4 },
    () => stored(new Uint8Array(), { queryJson: JSON.stringify({ q: wide() }) }),
  );
  const packed = toPacks(events);
  assert.equal(packed.length, 1, "packedSize lets all four share one pack");
  const value = await encodePack(packed[0]);
  if (value instanceof Uint8Array) {
    assert.ok(value.byteLength <= PACK_BYTES, `${value.byteLength} bytes stored`);
  }
  await using kv = await Deno.openKv(":memory:");
  const committed = await kv.atomic().set(eventKey(USER, events[0].id), value).commit();
  assert.ok(committed.ok);
  assert.deepEqual(await decodePack((await kv.get(eventKey(USER, events[0].id))).value), events);
});

Deno.test("[log] packs stored as arrays (and all from before deflating) are still read", async () => {
  await using kv = await Deno.openKv(":memory:");
  const text = (body: string) =>
    stored(new TextEncoder().encode(body), { kind: "other", contentType: "text/plain" });
  const old = [text("old 1"), text("old 2")];
  const fresh = Array.from({ length: 20 }, () => text("new ".repeat(100)));
  await kv.set(eventKey(USER, old[0].id), old);
  const value = await encodePack(fresh);
  assert.ok(value instanceof Uint8Array);
  await kv.set(eventKey(USER, fresh[0].id), value);
  const bodies: string[] = [];
  for await (const event of eventsAfter(kv, { userId: USER })) {
    assert.ok(!event.large, "small events are inline");
    bodies.push(JSON.parse(event.json).body);
  }
  assert.deepEqual(bodies, ["old 1", "old 2", ...fresh.map(() => "new ".repeat(100))]);
});

Deno.test("[log] a pack value that is damaged fails naming what is wrong", async () => {
  const deflated = (plain: Uint8Array) => {
    const body = deflateRawSync(plain);
    return Uint8Array.from([1, ...body]);
  };
  const metadata = new TextEncoder().encode(JSON.stringify([{ id: "a", bodyBytes: 10 }]));
  const plain = new Uint8Array(4 + metadata.byteLength + 4);
  new DataView(plain.buffer).setUint32(0, metadata.byteLength);
  plain.set(metadata, 4);
  const negative = new TextEncoder().encode(JSON.stringify([{ id: "a", bodyBytes: -1 }]));
  const negativePlain = new Uint8Array(4 + negative.byteLength);
  new DataView(negativePlain.buffer).setUint32(0, negative.byteLength);
  negativePlain.set(negative, 4);
  const cases: [unknown, RegExp][] = [
    [{ not: "a pack" }, /neither an array nor bytes/],
    [new Uint8Array(), /unknown layout \(empty\)/],
    [Uint8Array.from([9, 1, 2]), /unknown layout 9/],
    [Uint8Array.from([1, 0xff, 0xff, 0xff]), /it does not inflate/],
    [deflated(Uint8Array.from([0, 0, 1, 0, 123])), /metadata is cut short/],
    [deflated(plain), /a body is cut short/],
    [deflated(negativePlain), /body length is not a length/],
  ];
  for (const [value, message] of cases) {
    await assert.rejects(decodePack(value), (error: Error) => {
      assert.match(error.message, /^Cannot read an event pack: /);
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("[log] a pack that cannot be encoded is stored as the array, not failed", async () => {
  const events = [stored(pushBody(0)), stored(pushBody(1))];
  // JSON has no BigInt: the encoding throws, and the commit must still get a value it can store.
  (events[1] as unknown as { extra: bigint }).extra = 1n;
  const value = await encodePack(events);
  assert.equal(value, events, "the events themselves");
});
