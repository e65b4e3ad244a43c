/** BROKER=kv: two instances sharing one KV store deliver to each other's clients. */
import assert from "node:assert/strict";
import { instanceSides, postOn, signUpOn, transportSuite } from "./sides.ts";

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
