/** Who is calling: a session cookie (dashboard) or an API token (clients and scripts). */
import { findSession, sessionCredential } from "./sessions.ts";
import { findTokenByValue } from "./tokens.ts";
import { getUser, type User } from "./users.ts";
import { HttpError } from "../http/http_error.ts";

/** An authenticated caller. `tokenId` is set when a token was used. */
export interface Auth {
  user: User;
  via: "session" | "token";
  tokenId: string | null;
  /** What live connections remember, so revoking the token or ending the session closes them. */
  credential: string;
  sessionId: string | null;
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
  if (!token || !user) {
    throw new HttpError(401, "Unauthorized: the API token is unknown or revoked");
  }
  return { user, via: "token", tokenId: token.id, sessionId: null, credential: token.id };
}

/** Resolves a session cookie value to its user; 401 when missing or expired. */
export async function authenticateSession(kv: Deno.Kv, sessionId: string): Promise<Auth> {
  const session = await findSession(kv, sessionId);
  const user = session ? await getUser(kv, session.userId) : null;
  if (!session || !user) {
    throw new HttpError(401, "Unauthorized: the session has expired, log in again");
  }
  return {
    user,
    via: "session",
    tokenId: null,
    sessionId,
    credential: await sessionCredential(sessionId),
  };
}
