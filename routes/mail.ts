/**
 * The JSON API of what accounts do by mail: forgot and reset a password, verify the address,
 * change it (the pages are in mail_pages.tsx).
 */
import { Hono } from "hono";
import { z } from "zod";
import { publicUser } from "../lib/accounts/users.ts";
import { PASSWORD_MIN_LENGTH } from "../lib/accounts/passwords.ts";
import { HttpError } from "../lib/http/http_error.ts";
import {
  confirmEmailChange,
  FORGOT_ANSWER,
  requestEmailChange,
  resetPassword,
  sendVerification,
  startPasswordReset,
  verifyEmail,
} from "../lib/mail/account_mail.ts";
import { type AppEnv, clientAddress } from "./_env.ts";
import { requireAuth, requireSameOrigin, requireScope } from "./_auth.ts";
import { parseBody } from "./_parse.ts";
import { loginLimits, startSession } from "./_session.ts";

/** A mailed link's secret, as forms and the API send it back. */
export const linkToken = z.string().min(1, "is required").max(200, "is not a link's token");

/** The new password of a reset. */
export const newPassword = z.string().min(
  PASSWORD_MIN_LENGTH,
  `must be at least ${PASSWORD_MIN_LENGTH} characters`,
).max(1024);

/** POST /api/auth/forgot */
export const forgotBody = z.object({ email: z.email("must be an email address").max(254) });
/** POST /api/auth/reset */
export const resetBody = z.object({
  token: linkToken,
  password: newPassword,
  keepTokens: z.boolean().default(false),
});
/** POST /api/auth/verify and /api/account/email/confirm */
export const tokenBody = z.object({ token: linkToken });
/** POST /api/account/email */
export const emailChangeBody = z.object({
  email: z.email("must be an email address").max(254),
  password: z.string().min(1, "is required").max(1024),
});

/** /api/auth/{forgot,reset,verify}, /api/account/{verification,email,email/confirm} */
export function mailRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const manage = [requireAuth, requireScope("manage")] as const;

  app.post("/api/auth/forgot", requireSameOrigin, async (c) => {
    const { email } = await parseBody(c, { schema: forgotBody, action: "send reset link" });
    await startPasswordReset(c.get("services"), {
      email,
      client: clientAddress(c),
      perClientPerHour: c.get("services").config.mailsPerClientPerHour,
    });
    return c.json({ message: FORGOT_ANSWER }, 202);
  });

  app.post("/api/auth/reset", requireSameOrigin, async (c) => {
    const body = await parseBody(c, { schema: resetBody, action: "reset password" });
    const user = await resetPassword(c.get("services"), {
      secret: body.token,
      password: body.password,
      keepTokens: body.keepTokens,
    });
    await startSession(c, user);
    return c.json({ user: publicUser(user) });
  });

  app.post("/api/auth/verify", requireSameOrigin, async (c) => {
    const { token } = await parseBody(c, { schema: tokenBody, action: "verify email" });
    return c.json({ user: publicUser(await verifyEmail(c.get("services"), token)) });
  });

  app.post("/api/account/verification", ...manage, async (c) => {
    const user = c.get("auth").user;
    if (!(await sendVerification(c.get("services"), user))) {
      throw new HttpError(
        429,
        "Cannot send a verification mail: too many mails went to this address or account in " +
          "the last hour; try again later",
        { "Retry-After": "3600" },
      );
    }
    return c.json({ message: `We sent a verification link to ${user.email}.` }, 202);
  });

  app.post("/api/account/email", ...manage, async (c) => {
    const body = await parseBody(c, { schema: emailChangeBody, action: "change email" });
    await requestEmailChange(c.get("services"), {
      user: c.get("auth").user,
      newEmail: body.email,
      password: body.password,
      address: clientAddress(c),
      limits: loginLimits(c.get("services").config),
      perAccountPerHour: c.get("services").config.mailsPerAccountPerHour,
    });
    return c.json({
      message: `We sent a link to ${body.email.trim().toLowerCase()}; the change happens when ` +
        "it is followed.",
    }, 202);
  });

  app.post("/api/account/email/confirm", requireSameOrigin, async (c) => {
    const { token } = await parseBody(c, { schema: tokenBody, action: "change email" });
    return c.json({ user: publicUser(await confirmEmailChange(c.get("services"), token)) });
  });

  return app;
}
