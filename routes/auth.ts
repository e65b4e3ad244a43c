/** Sign up, log in, log out (JSON API; the HTML forms are in account_pages.tsx). */
import { Hono } from "hono";
import { z } from "zod";
import { guardedLogIn, guardedSignUp } from "../lib/accounts/login_guard.ts";
import { publicUser } from "../lib/accounts/users.ts";
import { publicToken } from "../lib/accounts/tokens.ts";
import { publicEndpoint } from "../lib/endpoints/endpoints.ts";
import { PASSWORD_MIN_LENGTH } from "../lib/accounts/passwords.ts";
import { type AppEnv, clientAddress } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { parseBody } from "./_parse.ts";
import { verifyAfterSignUp } from "../lib/mail/account_mail.ts";
import {
  deviceOf,
  endSession,
  loginLimits,
  rememberDevice,
  signupLimits,
  startSession,
} from "./_session.ts";

/** Sign-up input, for the API and the form. */
export const credentials = z.object({
  email: z.email("must be an email address").max(254),
  password: z.string().min(
    PASSWORD_MIN_LENGTH,
    `must be at least ${PASSWORD_MIN_LENGTH} characters`,
  ).max(1024),
});

/** Log-in input, for the API and the form. */
export const loginBody = z.object({
  email: z.string().min(1, "is required").max(254),
  password: z.string().min(1, "is required").max(1024),
});

/** /api/auth/* */
export function authRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  // Another site must not sign a visitor in or out (login CSRF), not even with a simple request.
  app.use("/api/auth/*", requireSameOrigin);

  app.post("/api/auth/signup", async (c) => {
    const body = await parseBody(c, { schema: credentials, action: "sign up" });
    const { kv, config } = c.get("services");
    const created = await guardedSignUp(kv, {
      ...body,
      monthlyLimit: config.freeMonthlyLimit,
      address: clientAddress(c),
      limits: signupLimits(config),
    });
    await startSession(c, created.user);
    rememberDevice(c, created.device);
    await verifyAfterSignUp(c.get("services"), created.user);
    return c.json({
      user: publicUser(created.user),
      endpoint: publicEndpoint(config, created.endpoint),
      token: { ...publicToken(created.token), value: created.tokenValue },
    }, 201);
  });

  app.post("/api/auth/login", async (c) => {
    const body = await parseBody(c, { schema: loginBody, action: "log in" });
    const { kv, config } = c.get("services");
    const { user, device } = await guardedLogIn(kv, {
      ...body,
      address: clientAddress(c),
      device: deviceOf(c),
      limits: loginLimits(config),
    });
    await startSession(c, user);
    rememberDevice(c, device);
    return c.json({ user: publicUser(user) });
  });

  app.post("/api/auth/logout", async (c) => {
    await endSession(c);
    return c.json({ ok: true });
  });

  return app;
}
