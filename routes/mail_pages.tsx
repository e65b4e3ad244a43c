/**
 * The pages of what accounts do by mail: "Forgot password?", the pages mailed links open
 * (opening one spends nothing: mail scanners fetch links; its button does), and the email
 * settings. Plain forms, same-origin checked like every form route.
 */
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { z } from "zod";
import {
  ConfirmLinkPage,
  EmailSettingsPage,
  ForgotPasswordPage,
  ForgotSentPage,
  LinkDonePage,
  ResetPasswordPage,
} from "../components/account/EmailSections.tsx";
import { setFlash } from "../lib/accounts/flash.ts";
import { HttpError } from "../lib/http/http_error.ts";
import {
  checkMailLink,
  confirmEmailChange,
  MAIL_PATHS,
  requestEmailChange,
  resetPassword,
  sendVerification,
  startPasswordReset,
  verifyEmail,
} from "../lib/mail/account_mail.ts";
import { type AppEnv, clientAddress } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { readForm } from "./_parse.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
  redirect,
  requireViewer,
  sendPage,
  viewerOf,
} from "./_page.tsx";
import { loginLimits, startSession } from "./_session.ts";
import { emailChangeBody, forgotBody, linkToken, newPassword } from "./mail.ts";

/** Pages whose address holds a link's secret: it must not leave in a Referer. */
const NO_REFERRER = { "Referrer-Policy": "no-referrer" };

/**
 * The same-origin check of the forms on link pages. Those pages send no Referer, so Chromium
 * posts their forms with `Origin: null`; it is accepted only when the browser itself says the
 * request is same-origin (Sec-Fetch-Site, which no page can set). Else the usual check.
 */
const linkFormOrigin: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (c.req.header("Origin") === "null" && c.req.header("Sec-Fetch-Site") === "same-origin") {
    return await next();
  }
  return await requireSameOrigin(c, next);
};

/** The secret of the link that opened a page; 400 when absent. */
function linkSecret(c: Context<AppEnv>): string {
  const parsed = linkToken.safeParse(c.req.query("token"));
  if (!parsed.success) {
    throw new HttpError(
      400,
      "Cannot open the link: it has no token; copy the whole link from the mail",
    );
  }
  return parsed.data;
}

/** /forgot-password, /reset-password, /verify-email, /confirm-email, /dashboard/account/… */
export function mailPageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);
  const guarded = [requireSameOrigin, loadViewer, requireViewer] as const;
  // Error pages of link routes carry the secret in their address too.
  for (const path of Object.values(MAIL_PATHS)) {
    app.use(path, async (c, next) => {
      await next();
      c.res.headers.set("Referrer-Policy", "no-referrer");
    });
  }

  app.get("/forgot-password", loadViewer, (c) => sendPage(c, <ForgotPasswordPage />));

  app.post("/forgot-password", requireSameOrigin, loadViewer, async (c) => {
    const form = await readForm(c, forgotBody);
    if (!form.ok) {
      const errors = { email: `Email ${form.errors.email ?? "is required"}.` };
      return sendPage(c, <ForgotPasswordPage email={form.values.email} errors={errors} />, {
        status: 400,
      });
    }
    await startPasswordReset(c.get("services"), {
      email: form.data.email,
      client: clientAddress(c),
      perClientPerHour: c.get("services").config.mailsPerClientPerHour,
    });
    return sendPage(c, <ForgotSentPage />);
  });

  app.get(MAIL_PATHS.reset, loadViewer, async (c) => {
    const token = linkSecret(c);
    const { email } = await checkMailLink(c.get("services"), { secret: token, kind: "reset" });
    return sendPage(c, <ResetPasswordPage token={token} email={email} />, { headers: NO_REFERRER });
  });

  app.post(MAIL_PATHS.reset, linkFormOrigin, loadViewer, async (c) => {
    const form = await readForm(
      c,
      z.object({ token: linkToken, password: newPassword, keepTokens: z.literal("on").optional() }),
    );
    const token = form.values.token ?? "";
    if (!form.ok) {
      const { email } = await checkMailLink(c.get("services"), { secret: token, kind: "reset" });
      const errors = form.errors.password
        ? { password: `Password ${form.errors.password}.` }
        : form.errors;
      return sendPage(c, <ResetPasswordPage token={token} email={email} errors={errors} />, {
        status: 400,
        headers: NO_REFERRER,
      });
    }
    const user = await resetPassword(c.get("services"), {
      secret: form.data.token,
      password: form.data.password,
      keepTokens: form.data.keepTokens === "on",
    });
    const sessionId = await startSession(c, user);
    await setFlash(c.get("services").kv, sessionId, {
      kind: "success",
      message: "Your password is changed. Every other browser was logged out.",
    });
    return c.redirect("/dashboard", 303);
  });

  app.get(MAIL_PATHS.verify, loadViewer, async (c) => {
    const token = linkSecret(c);
    const { email } = await checkMailLink(c.get("services"), { secret: token, kind: "verify" });
    return sendPage(
      c,
      <ConfirmLinkPage
        title="Verify your email address"
        text={`Confirm that ${email} is your address. If you did not sign up for WebSocks, ` +
          "someone else used it: reset the password instead, which ends their access."}
        action={MAIL_PATHS.verify}
        token={token}
        button="Verify my email address"
        user={c.get("viewer")?.user}
      />,
      { headers: NO_REFERRER },
    );
  });

  app.post(MAIL_PATHS.verify, linkFormOrigin, loadViewer, async (c) => {
    const form = await readForm(c, z.object({ token: linkToken }));
    if (!form.ok) {
      throw new HttpError(400, "Cannot verify your email address: the form has no token");
    }
    const user = await verifyEmail(c.get("services"), form.data.token);
    const message = `Thank you: ${user.email} is verified.`;
    if (c.get("viewer")?.user.id === user.id) {
      return await redirect(c, "/dashboard", { flash: { kind: "success", message } });
    }
    return sendPage(c, <LinkDonePage title="Email address verified" text={message} />);
  });

  app.get(MAIL_PATHS.change, loadViewer, async (c) => {
    const token = linkSecret(c);
    const { email } = await checkMailLink(c.get("services"), { secret: token, kind: "change" });
    return sendPage(
      c,
      <ConfirmLinkPage
        title="Use this email address"
        text={`Move your WebSocks account to ${email}. Mails, log-in and password resets use it from then on.`}
        action={MAIL_PATHS.change}
        token={token}
        button="Use this address"
        user={c.get("viewer")?.user}
      />,
      { headers: NO_REFERRER },
    );
  });

  app.post(MAIL_PATHS.change, linkFormOrigin, loadViewer, async (c) => {
    const form = await readForm(c, z.object({ token: linkToken }));
    if (!form.ok) {
      throw new HttpError(400, "Cannot change your email address: the form has no token");
    }
    const user = await confirmEmailChange(c.get("services"), form.data.token);
    const message = `Your account now uses ${user.email}; log in with it from now on.`;
    if (c.get("viewer")?.user.id === user.id) {
      return await redirect(c, "/dashboard/account/email", { flash: { kind: "success", message } });
    }
    return sendPage(c, <LinkDonePage title="Email address changed" text={message} />);
  });

  app.get("/dashboard/account/email", loadViewer, requireViewer, async (c) => {
    const { user } = viewerOf(c);
    return sendPage(
      c,
      <EmailSettingsPage
        user={user}
        verified={!!user.emailVerifiedAt}
        flash={await pageFlash(c)}
      />,
    );
  });

  app.post("/dashboard/account/verify", ...guarded, async (c) => {
    const { user } = viewerOf(c);
    let flash;
    try {
      flash = (await sendVerification(c.get("services"), user))
        ? { kind: "success" as const, message: `We sent a verification link to ${user.email}.` }
        : {
          kind: "error" as const,
          message: "We cannot send another verification mail right now: too many went to this " +
            "address in the last hour. Try again later.",
        };
    } catch (error) {
      if (!(error instanceof HttpError) || error.status !== 409) throw error;
      flash = { kind: "info" as const, message: "Your address is verified already." };
    }
    return await redirect(c, "/dashboard/account/email", { flash });
  });

  app.post("/dashboard/account/email", ...guarded, async (c) => {
    const { user } = viewerOf(c);
    const form = await readForm(c, emailChangeBody);
    const newEmail = (form.values.email ?? "").trim();
    const page = (
      change: { errors?: Record<string, string>; alert?: string },
      status: 400 | 401 | 409 | 429,
    ) =>
      sendPage(
        c,
        <EmailSettingsPage
          user={user}
          verified={!!user.emailVerifiedAt}
          flash={null}
          change={{ newEmail, ...change }}
        />,
        { status },
      );
    if (!form.ok) {
      const errors: Record<string, string> = {};
      if (form.errors.email) errors.email = `Email ${form.errors.email}.`;
      if (form.errors.password) errors.password = `Current password ${form.errors.password}.`;
      return page({ errors }, 400);
    }
    try {
      await requestEmailChange(c.get("services"), {
        user,
        newEmail: form.data.email,
        password: form.data.password,
        address: clientAddress(c),
        limits: loginLimits(c.get("services").config),
        perAccountPerHour: c.get("services").config.mailsPerAccountPerHour,
      });
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      if (error.status === 401) return page({ errors: { password: error.message } }, 401);
      if (error.status === 400 || error.status === 409) {
        return page({ errors: { email: error.message } }, error.status);
      }
      if (error.status === 429) return page({ alert: error.message }, 429);
      throw error;
    }
    return await redirect(c, "/dashboard/account/email", {
      flash: {
        kind: "success",
        message: `We sent a link to ${newEmail.toLowerCase()}. Follow it to finish the change; ` +
          "until then your account keeps its current address.",
      },
    });
  });

  return app;
}
