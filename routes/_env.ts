/** Types and helpers shared by route files. */
import type { Context, MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import type { z } from "zod";
import {
  type Auth,
  authenticateSession,
  authenticateToken,
  bearerToken,
} from "../lib/accounts/auth.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { isId } from "../lib/store/ids.ts";
import { readBody } from "../lib/http/load_guard.ts";
import { sessionCookieName } from "../lib/accounts/sessions.ts";
import type { Services } from "../lib/runtime/services.ts";

/** Hono environment: Deno's connection info as `c.env`, and per-request variables. */
export type AppEnv = {
  Bindings: Partial<Deno.ServeHandlerInfo>;
  Variables: {
    services: Services;
    auth: Auth;
    /** Who is looking at a page: set by the page routes, null when logged out. */
    viewer: Auth | null;
  };
};

/**
 * The body of an API or form request: at most API_MAX_BODY_BYTES (413), read with the body
 * timeouts (408); login and sign-up read bodies before anyone is known, so this is all a
 * stranger can make the server hold.
 */
export function readSmallBody(
  c: Context<AppEnv>,
  action: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const { config } = c.get("services");
  return readBody(c.req.raw, { maxBytes: config.apiMaxBodyBytes, action });
}

/** Parses a JSON body with a zod schema; 400 naming the first problem otherwise. */
export async function parseBody<T extends z.ZodType>(
  c: Context<AppEnv>,
  options: { schema: T; action: string },
): Promise<z.infer<T>> {
  const body = await readSmallBody(c, options.action);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw new HttpError(400, `Cannot ${options.action}: body is not valid JSON`);
  }
  return parseWith(json, options);
}

/** Validates a value with a zod schema; 400 naming the first problem otherwise. */
export function parseWith<T extends z.ZodType>(
  value: unknown,
  options: { schema: T; action: string },
): z.infer<T> {
  const parsed = options.schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue.path.length ? `${issue.path.join(".")}: ` : "";
  throw new HttpError(400, `Cannot ${options.action}: ${field}${issue.message}`);
}

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
  await next();
};

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
 * Authenticates a live stream: `?token=`, `Authorization: Bearer`, or the dashboard's session
 * cookie. Runs before any upgrade or stream starts, so failures are plain 401 JSON.
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
  return await authenticateToken(kv, token ?? null);
}

/** The resume point of a stream: `Last-Event-ID` header or `lastEventId` query; 400 if malformed. */
export function resumePoint(c: Context<AppEnv>): string | null {
  const value = c.req.header("Last-Event-ID") ?? c.req.query("lastEventId") ?? null;
  if (value === null || value === "") return null;
  if (!isId(value)) {
    throw new HttpError(400, `Cannot resume: "${value.slice(0, 40)}" is not an event id`);
  }
  return value;
}

/** Form posts must come from our own pages: browsers send any site's forms with our cookies. */
export const requireSameOrigin: MiddlewareHandler<AppEnv> = async (c, next) => {
  checkSameOrigin(c, c.get("services").config.publicUrl);
  await next();
};

/** The client's IP address (the proxy's last X-Forwarded-For entry when TRUST_PROXY=1). */
export function clientAddress(c: Context<AppEnv>): string {
  if (c.get("services").config.trustProxy) {
    const forwarded = c.req.header("X-Forwarded-For")?.split(",").at(-1)?.trim();
    if (forwarded) return forwarded;
  }
  const address = c.env?.remoteAddr;
  return address && "hostname" in address ? address.hostname : "unknown";
}
