/**
 * API tokens: the value is returned once at creation; KV keeps only its SHA-256. A token has
 * scopes (SCOPES) and may be limited to some endpoints, kept by id so that rotating a slug
 * keeps the token working; tokens stored before scopes existed have neither and are full.
 */
import { randomSecret, sha256Hex } from "./secrets.ts";
import { isStorageUnavailable, listAll } from "../store/kv.ts";
import {
  mayNameRecord,
  tokenByHashKey,
  tokenCountKey,
  tokenKey,
  tokensOfUserPrefix,
  userKey,
} from "../store/kv_keys.ts";
import { HttpError } from "../http/http_error.ts";
import type { Broker } from "../fanout/broker.ts";
import type { Endpoint } from "../endpoints/endpoints.ts";
import { type PublicToken, SCOPES } from "../shared/wire.ts";

/**
 * What a token may do: `events:read` (streams, history, acks, answers, resend, deliveries,
 * clients) and `manage` (tokens, endpoints, billing, the account).
 */
export { SCOPES };
/** One of SCOPES. */
export type Scope = typeof SCOPES[number];

/** A stored token; `hash` is the SHA-256 of the secret value. */
export interface Token {
  id: string;
  userId: string;
  name: string;
  hash: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
  /** Absent in tokens made before scopes existed: those have every scope. */
  scopes?: Scope[];
  /** The account's token generation it was made in (User.tokenGeneration); absent: 0. */
  generation?: number;
  /** The endpoints (by id) whose events it sees; absent or null: all of the user's. */
  endpointIds?: string[] | null;
}

/** A token as the API shows it (its one definition is lib/shared/wire.ts). */
export type { PublicToken };

const TOKEN_PREFIX = "wsk_";
const LAST_USED_RESOLUTION_MS = 60_000;

/** Builds a new token and its one-time value (32 random bytes, 256 bits). */
export async function newToken(
  userId: string,
  name: string,
  access: TokenAccess = FULL_ACCESS,
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
    scopes: [...access.scopes],
    endpointIds: access.endpointIds,
  };
  return { token, value };
}

/** What a token may do and see. */
export interface TokenAccess {
  scopes: readonly Scope[];
  /** Endpoint ids; null: every endpoint of the user. */
  endpointIds: string[] | null;
}

/** Every scope, every endpoint: the sign-up token and tokens from before scopes. */
export const FULL_ACCESS: TokenAccess = { scopes: SCOPES, endpointIds: null };

/** A token's access; a token stored without scopes has all of them. */
export function tokenAccess(token: Token): TokenAccess {
  return { scopes: token.scopes ?? SCOPES, endpointIds: token.endpointIds ?? null };
}

/**
 * The access a new token asks for, checked against the user's endpoints (`slugs` name them):
 * 400 for a slug that is not one of them, or for `manage` on a token limited to endpoints
 * (managing, it could make itself an unlimited token). Scopes left out are every scope, or
 * `events:read` alone when endpoints are given.
 */
export function requestedAccess(
  endpoints: readonly Endpoint[],
  options: { scopes?: readonly Scope[]; slugs?: readonly string[]; action: string },
): TokenAccess {
  if (options.slugs === undefined) {
    return { scopes: uniqueScopes(options.scopes ?? SCOPES), endpointIds: null };
  }
  const bySlug = new Map(endpoints.map((endpoint) => [endpoint.slug, endpoint.id]));
  const endpointIds: string[] = [];
  for (const slug of options.slugs) {
    const id = bySlug.get(slug);
    // The slug is the caller's input: echo only a bounded piece of it.
    if (!id) {
      throw new HttpError(
        400,
        `Cannot ${options.action}: endpoints: no endpoint ${slug.slice(0, 40)} in this account`,
      );
    }
    if (!endpointIds.includes(id)) endpointIds.push(id);
  }
  const scopes = uniqueScopes(options.scopes ?? ["events:read"]);
  if (scopes.includes("manage")) {
    throw new HttpError(
      400,
      `Cannot ${options.action}: a token limited to endpoints cannot have the "manage" scope ` +
        '(it could create an unlimited token); give "scopes": ["events:read"]',
    );
  }
  return { scopes, endpointIds };
}

/** Scopes without repeats, in SCOPES order. */
function uniqueScopes(scopes: readonly Scope[]): Scope[] {
  return SCOPES.filter((scope) => scopes.includes(scope));
}

/** Adds the token and its hash index to an atomic operation. */
export function writeToken(op: Deno.AtomicOperation, token: Token): Deno.AtomicOperation {
  return op
    .check({ key: tokenByHashKey(token.hash), versionstamp: null })
    .set(tokenKey(token.userId, token.id), token)
    .set(tokenByHashKey(token.hash), { userId: token.userId, tokenId: token.id });
}

/** The account's credential generations (User's fields; users.ts imports this module). */
export interface CredentialGenerations {
  tokenGeneration?: number;
  sessionGeneration?: number;
}

/** A token or session as credentialCurrent reads it: its kind and the generation it was made in. */
export interface CredentialStamp {
  via: "session" | "token";
  credentialGeneration: number;
}

/**
 * Whether a token or session belongs to the account's current generation of its kind. A
 * password reset bumps the generations in its one commit, voiding every session (and, unless
 * kept, every token) at once; deleting them after takes many commits, and one of them could
 * mint another meanwhile. A new token or session takes the generation it reads, so one made
 * while a reset commits is void too.
 */
export function credentialCurrent(
  credential: CredentialStamp,
  account: CredentialGenerations,
): boolean {
  return credential.credentialGeneration ===
    (credential.via === "token" ? account.tokenGeneration ?? 0 : account.sessionGeneration ?? 0);
}

/**
 * Creates a token for a user and returns it with its value. The `creator`'s own credential must
 * still be current against the account as read here (credentialCurrent), and the token takes
 * that read's generation: a password reset voids both at once, whichever commits first. 409
 * when the account holds `maxTokens` already: tokens never expire, and each is kept in KV. The
 * count is checked in the token's own commit (tokenCountKey), so creations side by side cannot
 * pass it; 409 too when they kept conflicting.
 */
export async function createToken(
  kv: Deno.Kv,
  options: {
    userId: string;
    name: string;
    access?: TokenAccess;
    /** The caller's credential; absent: none to check (the account's first token). */
    creator?: CredentialStamp;
    /** Tokens the account may hold; 0 or absent: no limit. */
    maxTokens?: number;
  },
): Promise<{ token: Token; value: string }> {
  const user = (await kv.get<CredentialGenerations>(userKey(options.userId))).value;
  if (!user || (options.creator && !credentialCurrent(options.creator, user))) {
    throw new HttpError(401, "Cannot create token: your token or session was revoked");
  }
  const max = options.maxTokens ?? 0;
  const created = await newToken(options.userId, options.name, options.access);
  created.token.generation = user.tokenGeneration ?? 0;
  const countKey = tokenCountKey(options.userId);
  // The count is checked and raised in the token's own commit: creations side by side conflict,
  // and each one tries again with the count the other left (600 at once passed a listed count).
  for (let tries = 0; tries < 10; tries++) {
    const counted = await kv.get<number>(countKey);
    let count = counted.value ?? -1;
    // Absent (tokens made before it, or at sign-up), or at the cap (revokes do not lower it):
    // the tokens themselves are counted.
    if (count < 0 || (max > 0 && count >= max)) count = await countTokens(kv, options.userId);
    if (max > 0 && count >= max) {
      throw new HttpError(
        409,
        `Cannot create token: the account has ${max} tokens, the most it may have; revoke one ` +
          "first",
      );
    }
    const result = await writeToken(kv.atomic().check(counted), created.token)
      .set(countKey, count + 1)
      .commit();
    if (result.ok) return created;
  }
  throw new HttpError(
    409,
    "Cannot create token: other tokens of this account were being created at the same moment; " +
      "retry",
  );
}

/** How many tokens the user has. */
async function countTokens(kv: Deno.Kv, userId: string): Promise<number> {
  let count = 0;
  for await (const _ of kv.list({ prefix: tokensOfUserPrefix(userId) })) count++;
  return count;
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
  if (!mayNameRecord(options.tokenId)) return null;
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
  const entry = mayNameRecord(options.tokenId)
    ? await kv.get<Token>(tokenKey(options.userId, options.tokenId))
    : null;
  if (!entry?.value) {
    throw new HttpError(404, `Cannot revoke token: no token ${options.tokenId.slice(0, 40)}`);
  }
  await kv.atomic().delete(entry.key).delete(tokenByHashKey(entry.value.hash)).commit();
  options.broker.publish({
    kind: "credential_revoked",
    userId: options.userId,
    credential: entry.value.id,
  });
  return entry.value;
}

/**
 * The API view of a token; `endpoints` (the user's) turn a limited token's ids into today's
 * slugs, leaving out deleted ones.
 */
export function publicToken(token: Token, endpoints: readonly Endpoint[] = []): PublicToken {
  const access = tokenAccess(token);
  const limit = access.endpointIds === null ? null : new Set(access.endpointIds);
  return {
    id: token.id,
    name: token.name,
    prefix: token.prefix,
    createdAt: token.createdAt,
    lastUsedAt: token.lastUsedAt,
    scopes: [...access.scopes],
    endpoints: limit === null
      ? null
      : endpoints.filter((endpoint) => limit.has(endpoint.id)).map((endpoint) => endpoint.slug),
  };
}
