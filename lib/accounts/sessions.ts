/** Login sessions: a random id in an HttpOnly cookie; KV keeps only its hash and expiry. */
import { randomSecret, sha256Hex } from "./secrets.ts";
import { sessionKey, sessionOfUserKey, sessionsOfUserPrefix } from "../store/kv_keys.ts";
import type { Broker } from "../fanout/broker.ts";

/** A stored session. */
export interface Session {
  userId: string;
  createdAt: string;
  expiresAt: number;
  /** The account's session generation it was started in (User.sessionGeneration); absent: 0. */
  generation?: number;
}

/** The cookie that carries the session id on plain http (a local run). */
export const SESSION_COOKIE = "websocks_session";

/**
 * The session cookie's name for a public URL. Over https it is `__Host-` prefixed: browsers
 * then take it only with Secure, Path=/ and no Domain, so no sibling host (such as an ingest
 * host on a subdomain) and no http page can set or overwrite it.
 */
export function sessionCookieName(publicUrl: string): string {
  return isHttps(publicUrl) ? `__Host-${SESSION_COOKIE}` : SESSION_COOKIE;
}

/** Whether the session cookie must be Secure (and is then `__Host-` prefixed). */
export function isHttps(publicUrl: string): boolean {
  return publicUrl.startsWith("https:");
}

/**
 * Starts a session and returns the id to put in the cookie. `generation` is the account's
 * session generation as read where the caller decided to start it (the read its password was
 * checked against): a reset committed since then voids the session (credentialCurrent).
 */
export async function createSession(
  kv: Deno.Kv,
  options: { userId: string; ttlMs: number; generation: number },
): Promise<string> {
  const id = randomSecret(32);
  const session: Session = {
    userId: options.userId,
    createdAt: new Date().toISOString(),
    expiresAt: Date.now() + options.ttlMs,
    generation: options.generation,
  };
  const hash = await sha256Hex(id);
  await kv.atomic()
    .set(sessionKey(hash), session, { expireIn: options.ttlMs })
    .set(sessionOfUserKey(options.userId, hash), session.expiresAt, { expireIn: options.ttlMs })
    .commit();
  return id;
}

/** The live session for a cookie value, or null (expired ones count as absent). */
export async function findSession(kv: Deno.Kv, id: string): Promise<Session | null> {
  const session = (await kv.get<Session>(sessionKey(await sha256Hex(id)))).value;
  return session && session.expiresAt > Date.now() ? session : null;
}

/** The credential live connections opened with this session carry (its hash, not the secret). */
export async function sessionCredential(id: string): Promise<string> {
  return credentialOf(await sha256Hex(id));
}

const credentialOf = (hash: string) => `session:${hash}`;

/** Ends a session on the server. */
export async function deleteSession(kv: Deno.Kv, id: string): Promise<void> {
  const hash = await sha256Hex(id);
  const session = (await kv.get<Session>(sessionKey(hash))).value;
  const op = kv.atomic().delete(sessionKey(hash));
  if (session) op.delete(sessionOfUserKey(session.userId, hash));
  await op.commit();
}

/**
 * Ends every session of a user but `exceptId` (the caller's own, when it stays), and closes the
 * live streams those sessions opened. Returns how many ended. Used by a password reset or
 * change and by account deletion, so a stolen cookie stops working with the old password.
 */
export async function endUserSessions(
  kv: Deno.Kv,
  broker: Broker,
  options: { userId: string; exceptId?: string | null },
): Promise<number> {
  const keep = options.exceptId ? await sha256Hex(options.exceptId) : null;
  let ended = 0;
  let op = kv.atomic();
  let hashes: string[] = [];
  // Deleted, then announced: a stream registered after the announcement reads its session
  // again (credentialStands) and must find it gone.
  const commit = async () => {
    await op.commit();
    for (const hash of hashes) {
      broker.publish({
        kind: "credential_revoked",
        userId: options.userId,
        credential: credentialOf(hash),
      });
    }
    op = kv.atomic();
    hashes = [];
  };
  for await (const entry of kv.list({ prefix: sessionsOfUserPrefix(options.userId) })) {
    const hash = entry.key[2] as string;
    if (hash === keep) continue;
    op.delete(sessionKey(hash)).delete(entry.key);
    hashes.push(hash);
    ended++;
    // Two mutations per session; stay well under KV's 1,000 per commit.
    if (hashes.length === 400) await commit();
  }
  if (hashes.length > 0) await commit();
  return ended;
}

/** Ends the caller's previous session, if any, and starts a new one: ids change at every login. */
export async function rotateSession(
  kv: Deno.Kv,
  options: { previousId: string | null; userId: string; ttlMs: number; generation: number },
): Promise<string> {
  if (options.previousId) await deleteSession(kv, options.previousId);
  return await createSession(kv, {
    userId: options.userId,
    ttlMs: options.ttlMs,
    generation: options.generation,
  });
}
