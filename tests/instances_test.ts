/** BROKER=kv: two instances sharing one KV store deliver to each other's clients. */
import assert from "node:assert/strict";
import { instanceSides, postOn, respondOn, signUpOn, transportSuite } from "./sides.ts";
import { waitFor } from "./helpers.ts";

transportSuite("instances", () => instanceSides());

Deno.test("[instances] an instance stopping mid-stream loses nothing for clients that reconnect to the other", async () => {
  const sides = await instanceSides();
  try {
    const [first] = sides.servers;
    const user = await signUpOn(sides);
    const stream = await sides.openSse(0, `/api/events/stream?token=${user.token}`);
    // A sender keeps posting to the second instance while the first one stops.
    const sent: string[] = [];
    const sending = (async () => {
      for (let n = 0; n < 60; n++) {
        const posted = await postOn(sides, { side: 1, slug: user.slug, body: `{"n":${n}}` });
        assert.equal(posted.status, 200);
        sent.push(posted.id!);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    const received: string[] = [];
    while (received.length < 10) received.push((await stream.next()).id!);
    await first.shutdown();
    // Whatever was already on the wire is read, then the stream ends.
    for (;;) {
      try {
        const message = await stream.next(1000);
        // The named "close" event carries the last id too (SSE ids persist); skip it.
        if (message.event === null) received.push(message.id!);
        else assert.equal(message.event, "close");
      } catch {
        break;
      }
    }
    const resumed = await sides.openSse(1, `/api/events/stream?token=${user.token}`, {
      "Last-Event-ID": received.at(-1)!,
    });
    await sending;
    while (received.length < sent.length) received.push((await resumed.next()).id!);
    assert.deepEqual(received, sent);
    resumed.close();
  } finally {
    await sides.close();
  }
});

Deno.test("[instances] quota notices and usage cross to the other instance", async () => {
  const sides = await instanceSides({ FREE_MONTHLY_LIMIT: "5" });
  try {
    const user = await signUpOn(sides);
    const client = await sides.openWs(1, `/?token=${user.token}&notices=1`);
    for (let n = 0; n < 4; n++) {
      assert.equal((await postOn(sides, { side: 0, slug: user.slug, body: "{}" })).status, 200);
    }
    const seen = [];
    for (let n = 0; n < 5; n++) seen.push(await client.next());
    // Events cross through the log and notices through the mailbox, so a notice may overtake
    // the webhook that crossed the threshold; both arrive, once.
    assert.equal(seen.filter((m) => m.type === "webhook").length, 4);
    const notices = seen.filter((m) => m.type === "quota");
    assert.equal(notices.length, 1);
    assert.equal(notices[0].level, 80);
    await client.close();
  } finally {
    await sides.close();
  }
});

Deno.test("[instances] group members limited to other endpoints, on two instances, let an event neither takes pass", async () => {
  const sides = await instanceSides({ ACKS_PER_SECOND: "0" });
  try {
    const user = await signUpOn(sides);
    const json = { ...user.auth, "Content-Type": "application/json" };
    const endpoint = async (name: string) => {
      const response = await sides.fetch(0, "/api/endpoints", {
        method: "POST",
        headers: json,
        body: JSON.stringify({ name }),
      });
      assert.equal(response.status, 201);
      return (await response.json()).endpoint.slug as string;
    };
    const token = async (slug: string) => {
      const response = await sides.fetch(0, "/api/tokens", {
        method: "POST",
        headers: json,
        body: JSON.stringify({ name: slug, endpoints: [slug] }),
      });
      assert.equal(response.status, 201);
      return (await response.json()).token.value as string;
    };
    const [b, c] = [await endpoint("b"), await endpoint("c")];
    // One member per instance, one limited to endpoint a, the other to b.
    const onA = await sides.openWs(0, `/ws?token=${await token(user.slug)}&group=g`);
    const onB = await sides.openWs(1, `/ws?token=${await token(b)}&group=g`);
    const cursor = async () => {
      const response = await sides.fetch(0, "/api/groups", { headers: user.auth });
      const { groups } = await response.json();
      return groups.find((group: { name: string }) => group.name === "g")?.cursor ?? null;
    };
    // An event of c: neither member takes it. Before, each instance read the other's member
    // as taking everything (its endpoint limit was not published), so neither let it pass
    // and the group's cursor stayed behind it for good.
    const { id: skipped } = await postOn(sides, { side: 0, slug: c, body: '{"of":"c"}' });
    await waitFor(async () => (await cursor()) === skipped, {
      what: "the cursor past the event no member takes",
      timeoutMs: 15_000,
    });
    // Each member still gets its own endpoint's events.
    const { id: ofB } = await postOn(sides, { side: 0, slug: b, body: '{"of":"b"}' });
    assert.equal((await onB.next()).id, ofB);
    await onA.close();
    await onB.close();
  } finally {
    await sides.close();
  }
});

Deno.test("[instances] respond mode: a sender waits no longer than its timeout while the instances are asked", async () => {
  const sides = await instanceSides();
  try {
    const user = await signUpOn(sides);
    await respondOn(sides, user, 1);
    // Nobody is connected anywhere, so no instance answers "is a client there": asking waits
    // its 2 s, and the sender's 1 s timeout ends the wait first.
    const { status, response } = await postOn(sides, { side: 1, slug: user.slug, body: "{}" });
    assert.equal(status, 504);
    assert.equal(response.headers.get("content-type"), "application/json");
  } finally {
    await sides.close();
  }
});
