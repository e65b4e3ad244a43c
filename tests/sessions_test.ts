import assert from "node:assert/strict";
import { createBroker } from "../lib/fanout/broker.ts";
import {
  createSession,
  deleteSession,
  endUserSessions,
  findSession,
} from "../lib/accounts/sessions.ts";
import { sessionsOfUserPrefix } from "../lib/store/kv_keys.ts";

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
  const mine = await createSession(kv, { userId: "u1", ttlMs });
  const other = await createSession(kv, { userId: "u1", ttlMs });
  const third = await createSession(kv, { userId: "u1", ttlMs });
  const stranger = await createSession(kv, { userId: "u2", ttlMs });
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
