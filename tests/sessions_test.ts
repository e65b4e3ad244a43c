import assert from "node:assert/strict";
import { createBroker } from "../lib/fanout/broker.ts";
import {
  createSession,
  deleteSession,
  endUserSessions,
  findSession,
} from "../lib/accounts/sessions.ts";
import { sessionsOfUserPrefix } from "../lib/store/kv_keys.ts";
import {
  holdGroupJoins,
  openSse,
  postWebhook,
  signUp,
  startTestServer,
  waitFor,
} from "./helpers.ts";

async function indexOf(kv: Deno.Kv, userId: string): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix: sessionsOfUserPrefix(userId) })) n++;
  return n;
}

Deno.test("[sessions] ending a user's sessions keeps the caller's, revokes the rest and their streams", async () => {
  await using kv = await Deno.openKv(":memory:");
  const broker = createBroker({ transports: [] });
  const revoked: string[] = [];
  broker.subscribe((m) => {
    if (m.kind === "credential_revoked") revoked.push(m.credential);
  });
  const ttlMs = 60_000;
  const mine = await createSession(kv, { userId: "u1", ttlMs, generation: 0 });
  const other = await createSession(kv, { userId: "u1", ttlMs, generation: 0 });
  const third = await createSession(kv, { userId: "u1", ttlMs, generation: 0 });
  const stranger = await createSession(kv, { userId: "u2", ttlMs, generation: 0 });
  assert.equal(await indexOf(kv, "u1"), 3);

  const ended = await endUserSessions(kv, broker, { userId: "u1", exceptId: mine });
  assert.equal(ended, 2);
  assert.ok(await findSession(kv, mine));
  assert.equal(await findSession(kv, other), null);
  assert.equal(await findSession(kv, third), null);
  assert.ok(await findSession(kv, stranger));
  assert.equal(await indexOf(kv, "u1"), 1);
  assert.equal(revoked.length, 2);
  assert.ok(revoked.every((credential) => credential.startsWith("session:")));

  await deleteSession(kv, mine);
  assert.equal(await indexOf(kv, "u1"), 0);
  broker.close();
});

Deno.test("[sessions] a cookie stream opening while its session logs out is closed once open", async () => {
  // A stream checks its session, then waits for KV before it is registered, and reads its
  // session again once registered. Log-out announced the end before deleting the session: a
  // stream registered in between read it still there and lived on with a dead cookie. Held
  // here: the stream at its group's preparation, and log-out at its delete.
  const proto = Deno.AtomicOperation.prototype;
  const { delete: del, commit } = proto;
  const sessionOps = new WeakSet<Deno.AtomicOperation>();
  let gating = false;
  let deleteHeld = false;
  let releaseDelete!: () => void;
  const deleteGate = new Promise<void>((resolve) => releaseDelete = resolve);
  proto.delete = function (this: Deno.AtomicOperation, key: Deno.KvKey) {
    if (gating && key[0] === "sessions") sessionOps.add(this);
    return del.call(this, key);
  };
  proto.commit = async function (this: Deno.AtomicOperation) {
    if (sessionOps.has(this)) {
      deleteHeld = true;
      await deleteGate;
    }
    return await commit.call(this);
  };
  try {
    await using server = await startTestServer();
    const user = await signUp(server);
    using hold = holdGroupJoins(server);
    const sse = openSse(`${server.url}/api/events/stream?group=g`, {
      Cookie: user.cookie,
      Origin: server.url,
    });
    await waitFor(() => hold.held() === 1, { what: "the stream past its session check" });
    gating = true;
    const logout = fetch(`${server.url}/api/auth/logout`, {
      method: "POST",
      headers: { Cookie: user.cookie, Origin: server.url },
    });
    // The old order announced first and was held at the delete; the new one deletes first.
    await waitFor(() => deleteHeld, { what: "log-out at its delete" });
    hold.release();
    const stream = await sse;
    assert.equal(stream.response.status, 200);
    releaseDelete();
    const out = await logout;
    assert.equal(out.status, 200);
    await out.body?.cancel();
    const sent = await postWebhook(user.webhookUrl, JSON.stringify({ secret: "after log-out" }));
    await sent.body?.cancel();
    await assert.rejects(async () => {
      for (;;) assert.notEqual((await stream.next(5000)).event, "message");
    }, /ended/);
    stream.close();
  } finally {
    proto.delete = del;
    proto.commit = commit;
    releaseDelete();
  }
});
