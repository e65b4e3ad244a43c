/** API tokens: the value is returned once at creation; KV keeps only its SHA-256. */
import { randomSecret, sha256Hex } from "./secrets.ts";
import { isStorageUnavailable, listAll } from "../store/kv.ts";
import { tokenByHashKey, tokenKey, tokensOfUserPrefix } from "../store/kv_keys.ts";
import { HttpError } from "../http/http_error.ts";
import type { Broker } from "../fanout/broker.ts";

/** A stored token; `hash` is the SHA-256 of the secret value. */
export interface Token {
  id: string;
  userId: string;
  name: string;
  hash: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
}

/** A token as the API shows it (never the hash). */
export type PublicToken = Omit<Token, "hash" | "userId">;

const TOKEN_PREFIX = "wsk_";
const LAST_USED_RESOLUTION_MS = 60_000;

/** Builds a new token and its one-time value (32 random bytes, 256 bits). */
export async function newToken(
  userId: string,
  name: string,
): Promise<{ token: Token; value: string }> {
  const value = TOKEN_PREFIX + randomSecret(32);
  const token: Token = {
    id: crypto.randomUUID(),
    userId,
    name,
    hash: await sha256Hex(value),
    prefix: value.slice(0, TOKEN_PREFIX.length + 4),
    createdAt: new Date().toISOString(),
    lastUsedAt: null,
  };
  return { token, value };
}

/** Adds the token and its hash index to an atomic operation. */
export function writeToken(op: Deno.AtomicOperation, token: Token): Deno.AtomicOperation {
  return op
    .check({ key: tokenByHashKey(token.hash), versionstamp: null })
    .set(tokenKey(token.userId, token.id), token)
    .set(tokenByHashKey(token.hash), { userId: token.userId, tokenId: token.id });
}

/** Creates a token for a user and returns it with its value. */
export async function createToken(
  kv: Deno.Kv,
  options: { userId: string; name: string },
): Promise<{ token: Token; value: string }> {
  const created = await newToken(options.userId, options.name);
  const result = await writeToken(kv.atomic(), created.token).commit();
  if (!result.ok) throw new Error("Cannot create token: commit conflicted");
  return created;
}

/** Lists a user's tokens, oldest first. */
export async function listTokens(kv: Deno.Kv, userId: string): Promise<Token[]> {
  const entries = await listAll<Token>(kv, { prefix: tokensOfUserPrefix(userId) });
  return entries.map((e) => e.value).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** One of a user's tokens by id, or null. */
export async function findToken(
  kv: Deno.Kv,
  options: { userId: string; tokenId: string },
): Promise<Token | null> {
  return (await kv.get<Token>(tokenKey(options.userId, options.tokenId))).value;
}

/** The token a secret value belongs to, or null; stamps its last use at most once a minute. */
export async function findTokenByValue(kv: Deno.Kv, value: string): Promise<Token | null> {
  if (!value.startsWith(TOKEN_PREFIX)) return null;
  const index = await kv.get<{ userId: string; tokenId: string }>(
    tokenByHashKey(await sha256Hex(value)),
  );
  if (!index.value) return null;
  const entry = await kv.get<Token>(tokenKey(index.value.userId, index.value.tokenId));
  if (!entry.value) return null;
  const now = Date.now();
  const lastUsed = entry.value.lastUsedAt ? Date.parse(entry.value.lastUsedAt) : 0;
  if (now - lastUsed > LAST_USED_RESOLUTION_MS) {
    const updated = { ...entry.value, lastUsedAt: new Date(now).toISOString() };
    // Losing this race only loses a timestamp; never fail the caller over it, nor over a
    // store that is full for now (reads still work).
    try {
      await kv.atomic().check(entry).set(entry.key, updated).commit();
    } catch (error) {
      if (!isStorageUnavailable(error)) throw error;
      return entry.value;
    }
    return updated;
  }
  return entry.value;
}

/**
 * Deletes a token and its index, then closes the connections it opened (within a second, on
 * every transport the broker reaches); 404 when the user has no such token.
 */
export async function revokeToken(
  kv: Deno.Kv,
  options: { userId: string; tokenId: string; broker: Broker },
): Promise<Token> {
  const entry = await kv.get<Token>(tokenKey(options.userId, options.tokenId));
  if (!entry.value) throw new HttpError(404, `Cannot revoke token: no token ${options.tokenId}`);
  await kv.atomic().delete(entry.key).delete(tokenByHashKey(entry.value.hash)).commit();
  options.broker.publish({
    kind: "credential_revoked",
    userId: options.userId,
    credential: entry.value.id,
  });
  return entry.value;
}

/** The API view of a token. */
export function publicToken(token: Token): PublicToken {
  const { hash: _hash, userId: _userId, ...rest } = token;
  return rest;
}
