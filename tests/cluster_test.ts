/** WORKERS=2: two isolates of one process, BroadcastChannel between them, one KV writer. */
import assert from "node:assert/strict";
import { clusterSides, postOn, signUpOn, transportSuite, within } from "./sides.ts";

transportSuite("cluster", () => clusterSides());

Deno.test("[cluster] SIGTERM closes the streams of every isolate with 1001 and exits 0", async () => {
  const sides = await clusterSides();
  const user = await signUpOn(sides);
  const clients = [
    await sides.openWs(0, `/?token=${user.token}`),
    await sides.openWs(1, `/?token=${user.token}`),
  ];
  await sides.close(); // SIGTERM, and asserts the exit code is 0
  for (const client of clients) {
    const closed = await within(client.closed, { ms: 2000, what: "closing on shutdown" });
    assert.equal(closed.code, 1001);
  }
});

Deno.test("[cluster] quota alerts from the KV writer reach clients of every isolate", async () => {
  const sides = await clusterSides({ FREE_MONTHLY_LIMIT: "5" });
  try {
    const user = await signUpOn(sides);
    const clients = [
      await sides.openSse(0, `/api/events/stream?token=${user.token}`),
      await sides.openSse(1, `/api/events/stream?token=${user.token}`),
    ];
    for (let n = 0; n < 4; n++) {
      assert.equal((await postOn(sides, { side: 1, slug: user.slug, body: "{}" })).status, 200);
    }
    for (const client of clients) {
      let message;
      do message = await client.next(); while (message.event !== "quota");
      assert.equal(JSON.parse(message.data).level, 80);
      client.close();
    }
  } finally {
    await sides.close();
  }
});

Deno.test("[cluster] an endpoint's flood limit counts requests of every isolate once", async () => {
  const sides = await clusterSides({ INGEST_RATE_PER_SECOND: "1", INGEST_RATE_BURST: "3" });
  try {
    const user = await signUpOn(sides);
    const statuses = [];
    for (let n = 0; n < 6; n++) {
      const posted = await postOn(sides, { side: (n % 2) as 0 | 1, slug: user.slug, body: "{}" });
      statuses.push(posted.status);
      if (posted.status === 429) {
        assert.ok(Number(posted.response.headers.get("retry-after")) >= 1);
      }
    }
    // A burst of 3 for the process, not 3 per isolate.
    assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429]);
  } finally {
    await sides.close();
  }
});

Deno.test("[cluster] a large body streamed in on a Worker is admitted by the KV writer and stored whole", async () => {
  const sides = await clusterSides({ FREE_MONTHLY_LIMIT: "2" });
  try {
    const user = await signUpOn(sides);
    const body = JSON.stringify({ data: "x".repeat(3 * 1024 * 1024) });
    const ids = [];
    for (const side of [0, 1] as const) {
      const posted = await postOn(sides, { side, slug: user.slug, body });
      assert.equal(posted.status, 200);
      const download = await sides.fetch(side, `/api/events/${posted.id}/body`, {
        headers: { Authorization: `Bearer ${user.token}` },
      });
      assert.equal(download.status, 200);
      assert.equal(await download.text(), body);
      ids.push(posted.id);
    }
    // The quota is checked before the body is staged, wherever it arrives.
    const refused = await postOn(sides, { side: 1, slug: user.slug, body });
    assert.equal(refused.status, 402);
    assert.match(refused.response.headers.get("content-type") ?? "", /application\/json/);
    assert.equal(ids.length, 2);
  } finally {
    await sides.close();
  }
});
