/**
 * Who is calling: a session cookie (dashboard) or an API token (clients and scripts), and what
 * they may do and see: a token's scopes and endpoints (a session has every scope, every endpoint).
 */
import { findSession, sessionCredential } from "./sessions.ts";
import {
  credentialCurrent,
  findToken,
  findTokenByValue,
  type Scope,
  SCOPES,
  tokenAccess,
} from "./tokens.ts";
import { getUser, type User } from "./users.ts";
import { HttpError } from "../http/http_error.ts";
import { listEndpoints } from "../endpoints/endpoints.ts";
import type { EndpointLimit } from "../fanout/filters.ts";
import type { EventFacts } from "../log/envelope_json.ts";

/** An authenticated caller. `tokenId` is set when a token was used. */
export interface Auth {
  user: User;
  via: "session" | "token";
  tokenId: string | null;
  /** What live connections remember, so revoking the token or ending the session closes them. */
  credential: string;
  /** The account's token or session generation it was made in (credentialCurrent). */
  credentialGeneration: number;
  sessionId: string | null;
  /** What the caller may do. */
  scopes: readonly Scope[];
  /** The endpoints (by id) whose events the caller sees; null: all of them. */
  endpointIds: readonly string[] | null;
}

/** 403 naming the scope when the caller lacks it. */
export function checkScope(auth: Auth, scope: Scope): void {
  if (!auth.scopes.includes(scope)) {
    throw new HttpError(403, `Forbidden: this token lacks the "${scope}" scope`);
  }
}

/**
 * The caller's endpoint limit, with the current slugs of its endpoints (one read of the user's
 * endpoints), or null for a caller who sees every endpoint.
 */
export async function endpointLimit(kv: Deno.Kv, auth: Auth): Promise<EndpointLimit | null> {
  if (auth.endpointIds === null) return null;
  const ids = new Set(auth.endpointIds);
  const endpoints = await listEndpoints(kv, auth.user.id);
  const slugs = new Set(endpoints.filter((e) => ids.has(e.id)).map((e) => e.slug));
  return { ids, slugs };
}

/** Whether the caller may see an event; always, for a caller who sees every endpoint. */
export function seesEvent(auth: Auth): ((event: EventFacts) => boolean) | undefined {
  if (auth.endpointIds === null) return undefined;
  const ids = new Set(auth.endpointIds);
  return (event) => ids.has(event.endpointId ?? "");
}

/** The token in `Authorization: Bearer …`, or null. */
export function bearerToken(authorization: string | null | undefined): string | null {
  const match = authorization?.match(/^Bearer\s+(\S+)\s*$/i);
  return match ? match[1] : null;
}

/** Resolves an API token value to its user; 401 when missing, unknown or revoked. */
export async function authenticateToken(kv: Deno.Kv, value: string | null): Promise<Auth> {
  if (!value) {
    throw new HttpError(
      401,
      "Unauthorized: pass your API token as ?token= or Authorization: Bearer",
    );
  }
  const token = await findTokenByValue(kv, value);
  const user = token ? await getUser(kv, token.userId) : null;
  if (
    !token || !user ||
    !credentialCurrent({ via: "token", credentialGeneration: token.generation ?? 0 }, user)
  ) {
    throw new HttpError(401, "Unauthorized: the API token is unknown or revoked");
  }
  const access = tokenAccess(token);
  return {
    user,
    via: "token",
    tokenId: token.id,
    sessionId: null,
    credential: token.id,
    credentialGeneration: token.generation ?? 0,
    scopes: access.scopes,
    endpointIds: access.endpointIds,
  };
}

/**
 * Whether an authenticated caller's credential still stands: the token not revoked, the session
 * not ended, the account not deleted. For streams, read again once they are registered.
 */
export async function credentialStands(kv: Deno.Kv, auth: Auth): Promise<boolean> {
  const userId = auth.user.id;
  const held = async () => {
    if (auth.tokenId !== null) {
      return (await findToken(kv, { userId, tokenId: auth.tokenId })) !== null;
    }
    if (auth.sessionId !== null) return (await findSession(kv, auth.sessionId))?.userId === userId;
    return false;
  };
  const [stands, user] = await Promise.all([held(), getUser(kv, userId)]);
  return stands && user !== null && credentialCurrent(auth, user);
}

/** Resolves a session cookie value to its user; 401 when missing or expired. */
export async function authenticateSession(kv: Deno.Kv, sessionId: string): Promise<Auth> {
  const session = await findSession(kv, sessionId);
  const user = session ? await getUser(kv, session.userId) : null;
  if (
    !session || !user ||
    !credentialCurrent({ via: "session", credentialGeneration: session.generation ?? 0 }, user)
  ) {
    throw new HttpError(401, "Unauthorized: the session has expired, log in again");
  }
  return {
    user,
    via: "session",
    tokenId: null,
    sessionId,
    credential: await sessionCredential(sessionId),
    credentialGeneration: session.generation ?? 0,
    scopes: SCOPES,
    endpointIds: null,
  };
}
