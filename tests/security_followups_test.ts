/**
 * Follow-ups of the attacker's review of issue 10: resends without a rate limit, IPv6 clients
 * escaping per-address limits with the rest of their /64, and respond-mode answers too large for
 * one KV value when they cross instances (BROKER=kv).
 */
import assert from "node:assert/strict";
import { addressKey } from "../lib/http/load_guard.ts";
import { type BrokerMessage, createBroker } from "../lib/fanout/broker.ts";
import { createIngest } from "../lib/intake/group_commit.ts";
import { kvTransport } from "../lib/fanout/broker_kv.ts";
import { messageQueue, postWebhook, signUp, startTestServer, waitFor } from "./helpers.ts";
import { fakeSink, heardEventIds, jsonWebhook, userEndpoint } from "./fakes.ts";
import { createConnections } from "../lib/fanout/connections.ts";
import { instanceSides, postOn, respondOn, signUpOn } from "./sides.ts";

Deno.test("[resend] resends are limited per account: 429 with Retry-After past the burst", async () => {
  await using server = await startTestServer({ RESENDS_PER_SECOND: "1", RESENDS_BURST: "3" });
  const user = await signUp(server);
  const posted = await postWebhook(user.webhookUrl, "{}");
  assert.equal(posted.status, 200);
  const { id } = await posted.json();
  const resend = (path = "resend", token = user.token) =>
    fetch(`${server.url}/api/events/${id}/${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
    });
  for (let n = 0; n < 3; n++) {
    const accepted = await resend(n % 2 ? "redeliver" : "resend");
    assert.equal(accepted.status, 200);
    await accepted.body?.cancel();
  }
  // The alias shares the account's budget: it is one limit, not one per path.
  for (const path of ["resend", "redeliver"]) {
    const refused = await resend(path);
    assert.equal(refused.status, 429);
    assert.match(refused.headers.get("content-type") ?? "", /^application\/json/);
    assert.ok(Number(refused.headers.get("retry-after")) >= 1, "429 carries Retry-After");
    assert.match(
      (await refused.json()).error,
      /^Cannot resend: more than 1 resends a second for this account; retry in \d+ s$/,
    );
  }
  // Another account keeps its own budget.
  const other = await signUp(server);
  const theirs = await postWebhook(other.webhookUrl, "{}");
  const theirId = (await theirs.json()).id;
  const allowed = await fetch(`${server.url}/api/events/${theirId}/resend`, {
    method: "POST",
    headers: { Authorization: `Bearer ${other.token}` },
  });
  assert.equal(allowed.status, 200);
  await allowed.body?.cancel();
});

Deno.test("[resend] a burst of 200 resends fans out at most the burst", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const posted = await postWebhook(user.webhookUrl, "{}");
  const { id } = await posted.json();
  const statuses = await Promise.all(Array.from({ length: 200 }, async () => {
    const response = await fetch(`${server.url}/api/events/${id}/resend`, {
      method: "POST",
      headers: { Authorization: `Bearer ${user.token}` },
    });
    await response.body?.cancel();
    return response.status;
  }));
  const accepted = statuses.filter((status) => status === 200).length;
  assert.ok(accepted >= 20, `the default burst of 20 goes through (${accepted})`);
  assert.ok(accepted <= 25, `no more than the burst and a little refill (${accepted})`);
  assert.equal(statuses.filter((status) => status === 429).length, 200 - accepted);
});

Deno.test("[addresses] IPv6 addresses are keyed by their /64, IPv4-mapped ones as IPv4", () => {
  assert.equal(addressKey("2001:db8:1:2::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:DB8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:0db8:0001:0002:0:0:0:ffff"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(addressKey("::1"), "0:0:0:0::/64");
  assert.equal(addressKey("::"), "0:0:0:0::/64");
  assert.equal(addressKey("[2001:db8:1:2::9]"), "2001:db8:1:2::/64");
  assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(addressKey("64:ff9b::192.0.2.1"), "64:ff9b:0:0::/64");
  assert.equal(addressKey("::ffff:192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey("::FFFF:192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey("::ffff:c000:201"), "192.0.2.1");
  assert.equal(addressKey("0:0:0:0:0:ffff:192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey("192.0.2.1"), "192.0.2.1");
  assert.equal(addressKey(" 192.0.2.1 "), "192.0.2.1");
  // What is not an address stays as it is: it still keys its own sender.
  assert.equal(addressKey("unknown"), "unknown");
  assert.equal(addressKey("2001:db8::1::2"), "2001:db8::1::2");
  assert.equal(addressKey("1:2:3:4:5:6:7:8:9"), "1:2:3:4:5:6:7:8:9");
});

Deno.test("[addresses] two IPv6 addresses of one /64 share the sign-up limit; another /64 does not", async () => {
  await using server = await startTestServer({ TRUST_PROXY: "1", SIGNUPS_PER_ADDRESS: "2" });
  const signUpFrom = (address: string) =>
    fetch(`${server.url}/api/auth/signup`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Forwarded-For": address },
      body: JSON.stringify({
        email: `${crypto.randomUUID().slice(0, 8)}@example.com`,
        password: "correct horse battery",
      }),
    });
  for (const address of ["2001:db8:7:7::1", "2001:db8:7:7:ffff::2"]) {
    const created = await signUpFrom(address);
    assert.equal(created.status, 201);
    await created.body?.cancel();
  }
  const third = await signUpFrom("2001:db8:7:7:1234:5678:9abc:def0");
  assert.equal(third.status, 429);
  assert.match(third.headers.get("content-type") ?? "", /^application\/json/);
  assert.match((await third.json()).error, /^Cannot sign up: too many accounts created/);
  // An IPv4-mapped address is its IPv4 address: the same sender, the same limit.
  for (const address of ["192.0.2.44", "::ffff:192.0.2.44"]) {
    const created = await signUpFrom(address);
    assert.equal(created.status, 201);
    await created.body?.cancel();
  }
  const mapped = await signUpFrom("::ffff:192.0.2.44");
  assert.equal(mapped.status, 429);
  await mapped.body?.cancel();
  const elsewhere = await signUpFrom("2001:db8:7:8::1");
  assert.equal(elsewhere.status, 201);
  await elsewhere.body?.cancel();
});

Deno.test("[respond] with BROKER=kv, a 1 MiB answer crosses to the instance holding the sender", async () => {
  const sides = await instanceSides();
  try {
    const user = await signUpOn(sides);
    await respondOn(sides, user, 10);
    await waitFor(
      async () => (await postOn(sides, { side: 1, slug: user.slug, body: "{}" })).status === 503,
      { what: "respond mode on at side 1" },
    );
    const client = await sides.openWs(0, `/?token=${user.token}`);
    // Each size: small (unchanged path), just over one KV value, and the largest body.
    for (const size of [1000, 70_000, 1024 * 1024]) {
      const sending = sides.fetch(1, `/api/in/${user.slug}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: '{"big":true}',
      });
      const event = await client.next();
      assert.equal(event.respond, true);
      const body = new Uint8Array(size);
      for (let n = 0; n < size; n++) body[n] = (n * 7 + size) % 251;
      client.send({
        type: "response",
        id: event.id,
        status: 200,
        headers: { "Content-Type": "application/octet-stream" },
        bodyBase64: body.toBase64(),
      });
      const response = await sending;
      assert.equal(response.status, 200, `an answer of ${size} bytes reaches the sender`);
      assert.equal(response.headers.get("content-type"), "application/octet-stream");
      assert.deepEqual(new Uint8Array(await response.arrayBuffer()), body);
    }
    await client.close();
  } finally {
    await sides.close();
  }
});

Deno.test("[respond] the KV mailbox keeps small messages in their entry and splits large ones", async () => {
  const kv = await Deno.openKv(":memory:");
  const here = kvTransport(kv, { processId: "here" });
  const there = kvTransport(kv, { processId: "there" });
  const heard = messageQueue<BrokerMessage>("a message from the other instance");
  here.start(() => {});
  there.start((message) => heard.push(message));
  try {
    const answer = (bytes: number): BrokerMessage => ({
      kind: "response",
      id: "01JZZZZZZZZZZZZZZZZZZZZZZZ",
      userId: "u1",
      response: { status: 200, headers: { "X-A": "ü" }, body: new Uint8Array(bytes).fill(7) },
    });
    here.send(answer(100));
    assert.deepEqual(await heard.next(), answer(100));
    const entries = await Array.fromAsync(
      kv.list<Record<string, unknown>>({ prefix: ["broker_messages"] }),
    );
    assert.equal(entries.length, 1);
    assert.ok("message" in entries[0].value, "a small message stays in its entry");
    assert.equal((await Array.fromAsync(kv.list({ prefix: ["broker_message_parts"] }))).length, 0);

    here.send(answer(200_000));
    assert.deepEqual(await heard.next(), answer(200_000));
    const parts = await Array.fromAsync(kv.list({ prefix: ["broker_message_parts"] }));
    assert.equal(parts.length, 4, "200 kB in parts of 60 kB");
    const large =
      (await Array.fromAsync(kv.list<Record<string, unknown>>({ prefix: ["broker_messages"] })))
        .find((entry) => "parts" in entry.value);
    assert.equal(large?.value.parts, 4);

    // An entry whose parts are gone (expired) is skipped, and the next message still arrives.
    const firstPart = parts[0].key;
    here.send(answer(70_000));
    await heard.next();
    await kv.delete(firstPart);
    const stale = large!;
    await kv.delete(stale.key);
    await kv.set(["broker_messages", "01ZZZZZZZZZZZZZZZZZZZZZZZZ"], stale.value);
    await kv.set(["broker_head", "all"], "01ZZZZZZZZZZZZZZZZZZZZZZZZ");
    here.send({ kind: "endpoint_changed", slug: "after" });
    assert.deepEqual(await heard.next(), { kind: "endpoint_changed", slug: "after" });
    // Read in the same pass, after it: had the stale entry been heard, it would come next.
    here.send({ kind: "endpoint_changed", slug: "last" });
    assert.deepEqual(await heard.next(), { kind: "endpoint_changed", slug: "last" });
  } finally {
    here.close();
    there.close();
    kv.close();
  }
});

Deno.test("[instances] events published here wait for another instance's earlier ones not yet read", async () => {
  // Instance "elsewhere" commits webhooks; this instance's own publish of the last of a batch
  // comes before its KV watch has read the one before it. Sent as it came, the last would pass
  // that one, and a connection, which never goes back to a lower id, would lose it.
  const kv = await Deno.openKv(":memory:");
  const here = createBroker({ transports: [kvTransport(kv, { processId: "here" })] });
  const elsewhere = createBroker();
  const heard = heardEventIds(here);
  const endpoint = await userEndpoint(kv, "instances", 100);
  const release = here.follow(endpoint.userId);
  const ingest = createIngest(kv, { broker: elsewhere, retentionMs: 60_000 });
  const submit = (n: number) => ingest.submit(jsonWebhook(endpoint, `{"n":${n}}`));
  try {
    // A first event, read through the watch: this instance now follows the log.
    const first = await submit(1);
    assert.ok(first.accepted);
    await waitFor(() => heard.includes(first.id), { what: "the first event, read from KV" });
    // Later ones committed together (a batch): the last is published here at once, the one
    // before it not at all.
    let pair: [string, string] | null = null;
    elsewhere.subscribe((message) => {
      if (message.kind !== "events" || message.events.length < 2 || pair) return;
      const [before, last] = message.events.slice(-2);
      here.publish({ kind: "events", userId: endpoint.userId, after: before.id, events: [last] });
      pair = [before.id, last.id];
    });
    const results = await Promise.all([2, 3, 4, 5, 6].map(submit));
    assert.ok(results.every((result) => result.accepted));
    assert.ok(pair, "a batch of several was committed, and its last published here");
    const [before, last] = pair as [string, string];
    await waitFor(() => heard.includes(before) && heard.includes(last), {
      what: "both events heard here",
    });
    assert.ok(
      heard.indexOf(before) < heard.indexOf(last),
      `the earlier event is heard first: ${JSON.stringify(heard)}`,
    );
  } finally {
    release();
    kv.close();
  }
});

/**
 * A KV whose watches start only when `open()` is called: a busy process's were that late.
 * With `lateHeadReads`, reads of a log head (`event_head`) wait for it too: a failing store.
 * `headReads` settles once every head read so far has been answered.
 */
async function lateWatchKv(options: { lateHeadReads?: boolean } = {}) {
  const real = await Deno.openKv(":memory:");
  let open = () => {};
  const opened = new Promise<void>((resolve) => open = resolve);
  const reads: Promise<unknown>[] = [];
  const kv = new Proxy(real, {
    get(target, prop) {
      if (prop === "get") {
        return (key: Deno.KvKey) => {
          if (key[0] !== "event_head") return target.get(key);
          const read = (options.lateHeadReads ? opened : Promise.resolve()).then(() =>
            target.get(key)
          );
          reads.push(read);
          return read;
        };
      }
      if (prop === "watch") {
        return (keys: Deno.KvKey[]) => {
          let watched: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]> | null = null;
          return new ReadableStream({
            async pull(controller) {
              await opened;
              watched ??= target.watch(keys).getReader();
              const { value, done } = await watched.read();
              if (done) controller.close();
              else controller.enqueue(value);
            },
            cancel: () => watched?.cancel(),
          });
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Deno.Kv;
  return { real, kv, open, headReads: () => Promise.all(reads) };
}

Deno.test("[instances] events committed elsewhere before this instance's watch first answers still reach it", async () => {
  // A client connected here, then a sender's webhook was committed by another instance. The
  // follow took the log head of its watch's first value as where it started, and on a busy
  // machine that value came after the commit: the event was never heard here.
  const { real, kv, open } = await lateWatchKv();
  const here = createBroker({ transports: [kvTransport(kv, { processId: "here" })] });
  const elsewhere = createBroker();
  const heard = heardEventIds(here);
  const endpoint = await userEndpoint(real, "late-watch", 100);
  const release = here.follow(endpoint.userId);
  try {
    const ingest = createIngest(real, { broker: elsewhere, retentionMs: 60_000 });
    const committed = await ingest.submit(jsonWebhook(endpoint, '{"n":1}'));
    assert.ok(committed.accepted);
    open();
    await waitFor(() => heard.includes(committed.id), { what: "the event committed elsewhere" });
    assert.deepEqual(heard, [committed.id]);
  } finally {
    release();
    here.close();
    elsewhere.close();
    real.close();
  }
});

Deno.test("[instances] this instance's own events wait for its watch, so another's earlier one is not passed", async () => {
  // Before the watch first answered, this process's own publish went to the connection at
  // once; the read that followed brought the other instance's earlier event, which the
  // connection, never going back to a lower id, dropped.
  const { real, kv, open } = await lateWatchKv();
  const here = createBroker({ transports: [kvTransport(kv, { processId: "here" })] });
  const elsewhere = createBroker();
  const connections = createConnections(kv, {
    broker: here,
    heartbeatMs: 60_000,
    slowConsumerBytes: 1_000_000,
  });
  const endpoint = await userEndpoint(real, "own-publish", 100);
  const sink = fakeSink();
  try {
    connections.open({ userId: endpoint.userId, credential: "t", transport: "ws", sink });
    const there = await createIngest(real, { broker: elsewhere, retentionMs: 60_000 })
      .submit(jsonWebhook(endpoint, '{"n":1}'));
    const mine = await createIngest(real, { broker: here, retentionMs: 60_000 })
      .submit(jsonWebhook(endpoint, '{"n":2}'));
    assert.ok(there.accepted && mine.accepted);
    open();
    await waitFor(() => sink.sent.length === 2, { what: "both events" });
    assert.deepEqual(sink.sent, [there.id, mine.id]);
  } finally {
    connections.stop();
    here.close();
    elsewhere.close();
    real.close();
  }
});

Deno.test("[instances] a watch that never answers does not hold this instance's own events for good", async () => {
  // Own publishes wait until the follow knows where it starts (see the test above); a failing
  // store that never answers would have kept them from the connection for good.
  const { real, kv, open } = await lateWatchKv({ lateHeadReads: true });
  const here = createBroker({ transports: [kvTransport(kv, { processId: "here" })] });
  const connections = createConnections(kv, {
    broker: here,
    heartbeatMs: 60_000,
    slowConsumerBytes: 1_000_000,
  });
  const endpoint = await userEndpoint(real, "dead-watch", 100);
  const sink = fakeSink();
  const ingest = createIngest(real, { broker: here, retentionMs: 60_000 });
  try {
    const before = await ingest.submit(jsonWebhook(endpoint, '{"n":0}'));
    // A follow starts at its millisecond: an event of the same millisecond may count as after.
    const committedAt = Date.now();
    await waitFor(() => Date.now() > committedAt, { what: "the next millisecond" });
    connections.open({ userId: endpoint.userId, credential: "t", transport: "ws", sink });
    const mine = await ingest.submit(jsonWebhook(endpoint, '{"n":1}'));
    assert.ok(before.accepted && mine.accepted);
    await waitFor(() => sink.sent.length > 0, { what: "the event, read without the watch" });
    assert.deepEqual(sink.sent, [mine.id]);
  } finally {
    open();
    connections.stop();
    here.close();
    real.close();
  }
});

Deno.test("[instances] a follow on an instance whose clock runs ahead still hears what is committed after it", async () => {
  // The follow started at its own clock's millisecond. Another instance whose clock runs
  // behind commits ids below that; when the watch's first value came after such a commit, its
  // head was taken as the start and the event, committed after the client connected, was lost.
  const { real, kv, open, headReads } = await lateWatchKv();
  const here = createBroker({ transports: [kvTransport(kv, { processId: "here" })] });
  const elsewhere = createBroker();
  const heard = heardEventIds(here);
  const endpoint = await userEndpoint(real, "clock-ahead", 100);
  const ingest = createIngest(real, { broker: elsewhere, retentionMs: 60_000 });
  const before = await ingest.submit(jsonWebhook(endpoint, '{"n":0}'));
  const now = Date.now;
  Date.now = () => now() + 60_000;
  let release = () => {};
  try {
    release = here.follow(endpoint.userId);
  } finally {
    Date.now = now;
  }
  try {
    await headReads();
    const committed = await ingest.submit(jsonWebhook(endpoint, '{"n":1}'));
    assert.ok(before.accepted && committed.accepted);
    open();
    await waitFor(() => heard.includes(committed.id), { what: "the event committed elsewhere" });
    assert.deepEqual(heard, [committed.id], "and not the one committed before the follow");
  } finally {
    release();
    here.close();
    elsewhere.close();
    real.close();
  }
});
