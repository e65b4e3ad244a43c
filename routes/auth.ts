/** Sign up, log in, log out. */
import { Hono } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { z } from "zod";
import { createSession, deleteSession, SESSION_COOKIE } from "../lib/sessions.ts";
import { logIn, publicUser, signUp } from "../lib/users.ts";
import { publicToken } from "../lib/tokens.ts";
import { endpointUrl } from "../lib/urls.ts";
import { type AppEnv, parseBody } from "./_env.ts";
import type { Context } from "hono";

const credentials = z.object({
  email: z.email("must be an email address").max(254),
  password: z.string().min(10, "must be at least 10 characters").max(1024),
});

const loginBody = z.object({
  email: z.string().min(1, "is required").max(254),
  password: z.string().min(1, "is required").max(1024),
});

async function startSession(c: Context<AppEnv>, userId: string): Promise<void> {
  const { kv, config } = c.get("services");
  const old = getCookie(c, SESSION_COOKIE);
  if (old) await deleteSession(kv, old); // a login always gets a fresh session id
  const id = await createSession(kv, { userId, ttlMs: config.sessionMs });
  setCookie(c, SESSION_COOKIE, id, {
    httpOnly: true,
    sameSite: "Lax",
    secure: config.publicUrl.startsWith("https:"),
    path: "/",
    maxAge: Math.floor(config.sessionMs / 1000),
  });
}

/** /api/auth/* */
export function authRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.post("/api/auth/signup", async (c) => {
    const body = await parseBody(c, { schema: credentials, action: "sign up" });
    const { kv, config } = c.get("services");
    const created = await signUp(kv, { ...body, monthlyLimit: config.freeMonthlyLimit });
    await startSession(c, created.user.id);
    return c.json({
      user: publicUser(created.user),
      endpoint: {
        slug: created.endpoint.slug,
        name: created.endpoint.name,
        url: endpointUrl(config.publicUrl, created.endpoint.slug),
      },
      token: { ...publicToken(created.token), value: created.tokenValue },
    }, 201);
  });

  app.post("/api/auth/login", async (c) => {
    const body = await parseBody(c, { schema: loginBody, action: "log in" });
    const user = await logIn(c.get("services").kv, body);
    await startSession(c, user.id);
    return c.json({ user: publicUser(user) });
  });

  app.post("/api/auth/logout", async (c) => {
    const id = getCookie(c, SESSION_COOKIE);
    if (id) await deleteSession(c.get("services").kv, id);
    deleteCookie(c, SESSION_COOKIE, { path: "/" });
    return c.json({ ok: true });
  });

  return app;
}
