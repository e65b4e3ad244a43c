/**
 * Who is calling (bearer tokens, session cookies, and the same-origin rule for cookie changes),
 * and whether their token's scope allows the route group.
 */
import type { Context, MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import {
  type Auth,
  authenticateSession,
  authenticateToken,
  bearerToken,
  checkScope,
} from "../lib/accounts/auth.ts";
import type { Scope } from "../lib/accounts/tokens.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { sessionCookieName } from "../lib/accounts/sessions.ts";
import type { AppEnv } from "./_env.ts";
import { noteRequestUser } from "../lib/observe/request_context.ts";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Requires a caller: `Authorization: Bearer <token>` or the session cookie. Changes made with
 * the cookie must come from our own origin, since browsers attach cookies to foreign requests.
 */
export const requireAuth: MiddlewareHandler<AppEnv> = async (c, next) => {
  const { kv, config } = c.get("services");
  const token = bearerToken(c.req.header("Authorization"));
  const sessionId = getCookie(c, sessionCookieName(config.publicUrl));
  if (token) {
    c.set("auth", await authenticateToken(kv, token));
  } else if (sessionId) {
    if (!SAFE_METHODS.has(c.req.method)) checkSameOrigin(c, config.publicUrl);
    c.set("auth", await authenticateSession(kv, sessionId));
  } else {
    throw new HttpError(401, "Unauthorized: log in, or send Authorization: Bearer <API token>");
  }
  noteRequestUser(c.req.raw, c.get("auth").user.id);
  await next();
};

/**
 * After `requireAuth`: 403 naming the scope when the caller's token lacks it. Each route group
 * names its scope once: `manage` (tokens, endpoints, billing) or `events:read` (events, clients).
 */
export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    checkScope(c.get("auth"), scope);
    await next();
  };
}

/** Refuses a browser request from another site; requests without browser headers pass. */
function checkSameOrigin(c: Context<AppEnv>, publicUrl: string): void {
  const origin = c.req.header("Origin");
  const fetchSite = c.req.header("Sec-Fetch-Site");
  const own = new Set([new URL(publicUrl).origin, new URL(c.req.url).origin]);
  if (origin ? !own.has(origin) : fetchSite !== undefined && fetchSite !== "same-origin") {
    throw new HttpError(403, "Forbidden: cross-site request refused (Origin does not match)");
  }
}

/**
 * Authenticates a live stream: `?token=`, `Authorization: Bearer` (a token with the
 * `events:read` scope), or the dashboard's session cookie. Runs before any upgrade or stream
 * starts, so failures are plain 401 or 403 JSON.
 */
export async function authenticateStream(c: Context<AppEnv>): Promise<Auth> {
  const { kv, config } = c.get("services");
  const token = c.req.query("token") ?? bearerToken(c.req.header("Authorization"));
  const sessionId = getCookie(c, sessionCookieName(config.publicUrl));
  if (!token && sessionId) {
    // A page of another site must not read the user's events with their cookie (a WebSocket
    // handshake is not bound by CORS), so cookie streams must come from our own pages.
    checkSameOrigin(c, c.get("services").config.publicUrl);
    return await authenticateSession(kv, sessionId);
  }
  const auth = await authenticateToken(kv, token ?? null);
  checkScope(auth, "events:read");
  return auth;
}

/** Form posts must come from our own pages: browsers send any site's forms with our cookies. */
export const requireSameOrigin: MiddlewareHandler<AppEnv> = async (c, next) => {
  checkSameOrigin(c, c.get("services").config.publicUrl);
  await next();
};
