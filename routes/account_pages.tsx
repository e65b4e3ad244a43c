/**
 * Sign-up, log-in and log-out as plain HTML forms: they work without JavaScript, show each
 * problem next to its field, keep the email on a failed attempt, and answer success with 303.
 */
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Context } from "hono";
import {
  type AccountFormState,
  LoginPage,
  SignupPage,
} from "../components/account/AccountPages.tsx";
import { setFlash } from "../lib/accounts/flash.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { guardedLogIn, guardedSignUp } from "../lib/accounts/login_guard.ts";
import { type AppEnv, clientAddress } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { readForm } from "./_parse.ts";
import { verifyAfterSignUp } from "../lib/mail/account_mail.ts";
import { credentials, loginBody } from "./auth.ts";
import { loadViewer, pageError, safeNext, sendPage } from "./_page.tsx";
import {
  deviceOf,
  endSession,
  loginLimits,
  rememberDevice,
  signupLimits,
  startSession,
} from "./_session.ts";

const LABELS: Record<string, string> = { email: "Email", password: "Password" };

/** Field errors as sentences: "Password must be at least 10 characters." */
function sentences(errors: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(errors).map((
      [field, message],
    ) => [field, `${LABELS[field] ?? field} ${message}.`]),
  );
}

/** Sends the sign-up page with the server's free allowance. */
function signupPage(
  c: Context<AppEnv>,
  state: AccountFormState,
  status: ContentfulStatusCode = 200,
) {
  const { freeMonthlyLimit } = c.get("services").config;
  return sendPage(c, <SignupPage {...state} freeAllowance={freeMonthlyLimit} />, { status });
}

/** Sends the log-in page. */
function loginPage(
  c: Context<AppEnv>,
  state: AccountFormState & { next: string },
  status: ContentfulStatusCode = 200,
) {
  return sendPage(c, <LoginPage {...state} />, { status });
}

/** /signup, /login, /logout */
export function accountPageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);

  app.get("/signup", loadViewer, (c) => {
    if (c.get("viewer")) return c.redirect("/dashboard", 303);
    return signupPage(c, { email: "", errors: {} });
  });

  app.post("/signup", requireSameOrigin, loadViewer, async (c) => {
    const form = await readForm(c, credentials);
    const email = (form.values.email ?? "").trim();
    if (!form.ok) return signupPage(c, { email, errors: sentences(form.errors) }, 400);
    const { kv, config } = c.get("services");
    let created;
    try {
      created = await guardedSignUp(kv, {
        ...form.data,
        monthlyLimit: config.freeMonthlyLimit,
        address: clientAddress(c),
        limits: signupLimits(config),
      });
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      if (error.status === 429) {
        for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
        return signupPage(c, { email, errors: {}, alert: error.message }, 429);
      }
      if (error.status !== 409) throw error;
      const errors = { email: "An account with this email already exists. Log in instead?" };
      return signupPage(c, { email, errors }, 409);
    }
    const sessionId = await startSession(c, created.user);
    rememberDevice(c, created.device);
    await verifyAfterSignUp(c.get("services"), created.user);
    await setFlash(kv, sessionId, {
      kind: "success",
      message: "Welcome to WebSocks. Your webhook URL is below. Your first API token, for your " +
        "own clients, is shown here once: copy it now.",
      secret: { label: "API token", value: created.tokenValue },
    });
    return c.redirect("/dashboard", 303);
  });

  app.get("/login", loadViewer, (c) => {
    const next = safeNext(c.req.query("next"));
    if (c.get("viewer")) return c.redirect(next, 303);
    return loginPage(c, { email: "", errors: {}, next });
  });

  app.post("/login", requireSameOrigin, loadViewer, async (c) => {
    const form = await readForm(c, loginBody);
    const email = (form.values.email ?? "").trim();
    const next = safeNext(form.values.next);
    if (!form.ok) return loginPage(c, { email, next, errors: sentences(form.errors) }, 400);
    const { kv, config } = c.get("services");
    let login;
    try {
      login = await guardedLogIn(kv, {
        ...form.data,
        address: clientAddress(c),
        device: deviceOf(c),
        limits: loginLimits(config),
      });
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      for (const [name, value] of Object.entries(error.headers)) c.header(name, value);
      if (error.status === 401) {
        return loginPage(c, { email, next, errors: { password: error.message } }, 401);
      }
      if (error.status === 429) {
        return loginPage(c, { email, next, errors: {}, alert: error.message }, 429);
      }
      throw error;
    }
    await startSession(c, login.user);
    rememberDevice(c, login.device);
    return c.redirect(next, 303);
  });

  app.post("/logout", requireSameOrigin, async (c) => {
    await endSession(c);
    return c.redirect("/", 303);
  });

  return app;
}
