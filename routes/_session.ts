/** The session cookie: set at sign-up and log-in (always a fresh id), cleared at log-out. */
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { Config } from "../lib/runtime/config.ts";
import {
  DEVICE_COOKIE,
  DEVICE_TTL_MS,
  type LoginLimits,
  type SignupLimits,
} from "../lib/accounts/login_guard.ts";
import {
  deleteSession,
  findSession,
  isHttps,
  rotateSession,
  sessionCookieName,
  sessionCredential,
} from "../lib/accounts/sessions.ts";
import type { AppEnv } from "./_env.ts";
import type { User } from "../lib/accounts/users.ts";

/**
 * Starts a session for `user`, as read where it was decided (its password checked against it),
 * ending the caller's previous one; returns the new id.
 */
export async function startSession(c: Context<AppEnv>, user: User): Promise<string> {
  const userId = user.id;
  const { kv, config } = c.get("services");
  const name = sessionCookieName(config.publicUrl);
  const previousId = getCookie(c, name) ?? null;
  const previous = previousId ? await findSession(kv, previousId) : null;
  const id = await rotateSession(kv, {
    previousId,
    userId,
    ttlMs: config.sessionMs,
    generation: user.sessionGeneration ?? 0,
  });
  // Announced once deleted (rotateSession), as in endSession.
  if (previous) await closeSessionStreams(c, { id: previousId!, userId: previous.userId });
  setCookie(c, name, id, {
    httpOnly: true,
    sameSite: "Lax",
    secure: isHttps(config.publicUrl),
    path: "/",
    maxAge: Math.floor(config.sessionMs / 1000),
  });
  // The rest of this request (a flash for the next page) belongs to the new session.
  const viewer = c.get("viewer");
  if (viewer?.sessionId) {
    c.set("viewer", {
      ...viewer,
      user,
      sessionId: id,
      credential: await sessionCredential(id),
      credentialGeneration: user.sessionGeneration ?? 0,
    });
  }
  return id;
}

/** The device cookie's name: `__Host-` prefixed over https, like the session cookie's. */
function deviceCookieName(publicUrl: string): string {
  return isHttps(publicUrl) ? `__Host-${DEVICE_COOKIE}` : DEVICE_COOKIE;
}

/** The caller's device cookie: set by a successful log-in, it skips the account's delay. */
export function deviceOf(c: Context<AppEnv>): string | null {
  return getCookie(c, deviceCookieName(c.get("services").config.publicUrl)) ?? null;
}

/** Sets the device cookie (kept at log-out: it says this browser knew the password). */
export function rememberDevice(c: Context<AppEnv>, device: string): void {
  const { publicUrl } = c.get("services").config;
  setCookie(c, deviceCookieName(publicUrl), device, {
    httpOnly: true,
    sameSite: "Lax",
    secure: isHttps(publicUrl),
    path: "/",
    maxAge: Math.floor(DEVICE_TTL_MS / 1000),
  });
}

/** Ends the caller's session on the server and clears the cookie. */
export async function endSession(c: Context<AppEnv>): Promise<void> {
  const { publicUrl } = c.get("services").config;
  const name = sessionCookieName(publicUrl);
  const id = getCookie(c, name);
  if (id) {
    // Deleted, then announced: a stream registered after the announcement reads its session
    // again and must find it gone.
    const session = await findSession(c.get("services").kv, id);
    await deleteSession(c.get("services").kv, id);
    if (session) await closeSessionStreams(c, { id, userId: session.userId });
  }
  deleteCookie(c, name, { path: "/", secure: isHttps(publicUrl) });
}

/** Closes the live streams (the dashboard inspector) that a session opened. */
async function closeSessionStreams(
  c: Context<AppEnv>,
  session: { id: string; userId: string },
): Promise<void> {
  c.get("services").broker.publish({
    kind: "credential_revoked",
    userId: session.userId,
    credential: await sessionCredential(session.id),
  });
}

/** The log-in limits of a configuration. */
export function loginLimits(config: Config): LoginLimits {
  return {
    perAccount: config.loginFailuresPerAccount,
    perAddress: config.loginFailuresPerAddress,
    windowMs: config.loginWindowMs,
    delayBaseMs: config.loginDelayBaseMs,
    delayMaxMs: config.loginDelayMaxMs,
  };
}

/** The sign-up limits of a configuration. */
export function signupLimits(config: Config): SignupLimits {
  return { perAddress: config.signupsPerAddress, windowMs: config.signupWindowMs };
}
