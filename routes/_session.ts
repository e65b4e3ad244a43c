/** The session cookie: set at sign-up and log-in (always a fresh id), cleared at log-out. */
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { Config } from "../lib/config.ts";
import type { LoginLimits } from "../lib/login_guard.ts";
import { deleteSession, rotateSession, SESSION_COOKIE } from "../lib/sessions.ts";
import type { AppEnv } from "./_env.ts";

/** Starts a session for `userId`, ending the caller's previous one; returns the new id. */
export async function startSession(c: Context<AppEnv>, userId: string): Promise<string> {
  const { kv, config } = c.get("services");
  const id = await rotateSession(kv, {
    previousId: getCookie(c, SESSION_COOKIE) ?? null,
    userId,
    ttlMs: config.sessionMs,
  });
  setCookie(c, SESSION_COOKIE, id, {
    httpOnly: true,
    sameSite: "Lax",
    secure: config.publicUrl.startsWith("https:"),
    path: "/",
    maxAge: Math.floor(config.sessionMs / 1000),
  });
  return id;
}

/** Ends the caller's session on the server and clears the cookie. */
export async function endSession(c: Context<AppEnv>): Promise<void> {
  const id = getCookie(c, SESSION_COOKIE);
  if (id) await deleteSession(c.get("services").kv, id);
  deleteCookie(c, SESSION_COOKIE, { path: "/" });
}

/** The log-in limits of a configuration. */
export function loginLimits(config: Config): LoginLimits {
  return {
    perAccount: config.loginFailuresPerAccount,
    perAddress: config.loginFailuresPerAddress,
    windowMs: config.loginWindowMs,
  };
}
