/** What every HTML page shares: security headers, who is looking, redirects, flashes, errors. */
import type { Context, ErrorHandler, MiddlewareHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { deleteCookie, getCookie } from "hono/cookie";
import type { VNode } from "preact";
import { ErrorPage } from "../components/ErrorPage.tsx";
import { ISLAND_MODULES } from "../islands/_registry.ts";
import { authenticateSession } from "../lib/accounts/auth.ts";
import { islandBundles } from "../lib/web/bundles.ts";
import {
  CLIENT_CLOSED_MESSAGE,
  CLIENT_CLOSED_STATUS,
  isClientDisconnect,
} from "../lib/http/disconnect.ts";
import { type Flash, setFlash, takeFlash } from "../lib/accounts/flash.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { renderPage } from "../lib/web/islands.ts";
import { pageSecurityHeaders } from "../lib/web/security_headers.ts";
import { isHttps, sessionCookieName } from "../lib/accounts/sessions.ts";
import type { AppEnv } from "./_env.ts";
import { log } from "../lib/observe/log.ts";
import { noteRequestUser, requestIdOf } from "../lib/observe/request_context.ts";

/**
 * Renders a page with its islands' scripts; no page is stored by a cache: signed-in pages hold
 * the account, and link pages a reset or verification token.
 */
export function sendPage(
  c: Context<AppEnv>,
  page: VNode,
  options: { status?: ContentfulStatusCode; headers?: Record<string, string> } = {},
) {
  const { config } = c.get("services");
  const bundles = islandBundles(config, ISLAND_MODULES);
  const html = renderPage(page, { scripts: (name) => bundles.scripts(name) });
  return c.body(html, options.status ?? 200, {
    ...pageSecurityHeaders(config),
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    ...options.headers,
  });
}

/** Sets `viewer` from the session cookie; a stale cookie is cleared, never an error. */
export const loadViewer: MiddlewareHandler<AppEnv> = async (c, next) => {
  const { publicUrl } = c.get("services").config;
  const name = sessionCookieName(publicUrl);
  const sessionId = getCookie(c, name);
  c.set("viewer", null);
  if (sessionId) {
    try {
      const viewer = await authenticateSession(c.get("services").kv, sessionId);
      c.set("viewer", viewer);
      noteRequestUser(c.req.raw, viewer.user.id);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      deleteCookie(c, name, { path: "/", secure: isHttps(publicUrl) });
    }
  }
  await next();
};

/** Dashboard pages: logged-out visitors go to the log-in page, and come back after. */
export const requireViewer: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (!c.get("viewer")) {
    const back = c.req.method === "GET" ? `?next=${encodeURIComponent(c.req.path)}` : "";
    return redirect(c, `/login${back}`);
  }
  await next();
};

/** The signed-in viewer; only after `requireViewer`. */
export function viewerOf(c: Context<AppEnv>) {
  const viewer = c.get("viewer");
  if (!viewer) throw new HttpError(401, "Unauthorized: log in to see this page");
  return viewer;
}

/** Where to go after logging in: only our own dashboard paths, never another site. */
export function safeNext(next: string | undefined): string {
  return next && /^\/dashboard(\/[\w-]+)*$/.test(next) ? next : "/dashboard";
}

/** A 303 to a page (a form's answer), leaving a flash for it when given. */
export async function redirect(
  c: Context<AppEnv>,
  location: string,
  options: { flash?: Flash } = {},
): Promise<Response> {
  const sessionId = c.get("viewer")?.sessionId;
  if (options.flash && sessionId) await setFlash(c.get("services").kv, sessionId, options.flash);
  return c.redirect(location, 303);
}

/** The flash left for this page, if any. */
export async function pageFlash(c: Context<AppEnv>): Promise<Flash | null> {
  const sessionId = c.get("viewer")?.sessionId;
  return sessionId ? await takeFlash(c.get("services").kv, sessionId) : null;
}

/** Page routes answer errors with a page, not JSON; real faults get a logged reference. */
export const pageError: ErrorHandler<AppEnv> = (error, c) => {
  let status: ContentfulStatusCode = 500;
  let message: string;
  if (error instanceof HttpError) {
    status = error.status as ContentfulStatusCode;
    message = error.message;
    for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
  } else if (isClientDisconnect(error)) {
    status = CLIENT_CLOSED_STATUS as ContentfulStatusCode;
    message = CLIENT_CLOSED_MESSAGE;
  } else {
    const reference = crypto.randomUUID();
    log.error(`[${reference}] ${c.req.method} ${c.req.path} failed:`, error, {
      requestId: requestIdOf(c.req.raw),
    });
    message = `Internal error; reference ${reference}`;
  }
  const viewer = c.get("viewer") ?? null;
  return sendPage(c, <ErrorPage status={status} message={message} user={viewer?.user} />, {
    status,
  });
};
