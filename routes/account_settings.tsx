/**
 * The account's own settings: change password and delete the account, as JSON API
 * (`POST /api/account/password`, `DELETE /api/account`) and as plain forms under
 * /dashboard/account that work without JavaScript.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { deleteCookie } from "hono/cookie";
import { z } from "zod";
import {
  AccountDeletedPage,
  AccountSettingsPage,
  DeleteAccountPage,
  type PasswordFormState,
} from "../components/account/AccountSettings.tsx";
import { ChangeEmailSection, VerifyEmailSection } from "../components/account/EmailSections.tsx";
import { changeUserPassword, deleteUserAccount } from "../lib/accounts/lifecycle.ts";
import { PASSWORD_MIN_LENGTH } from "../lib/accounts/passwords.ts";
import { isHttps, sessionCookieName } from "../lib/accounts/sessions.ts";
import type { Auth } from "../lib/accounts/auth.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { type AppEnv, clientAddress } from "./_env.ts";
import { requireAuth, requireSameOrigin, requireScope } from "./_auth.ts";
import { parseBody, readForm } from "./_parse.ts";
import { deviceOf, loginLimits, rememberDevice, startSession } from "./_session.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
  redirect,
  requireViewer,
  sendPage,
  viewerOf,
} from "./_page.tsx";

/** A new password with the current one, for the API and the form. */
export const passwordChangeBody = z.object({
  currentPassword: z.string().min(1, "is required").max(1024),
  newPassword: z.string().min(
    PASSWORD_MIN_LENGTH,
    `must be at least ${PASSWORD_MIN_LENGTH} characters`,
  ).max(1024),
}).refine((body) => body.currentPassword !== body.newPassword, {
  path: ["newPassword"],
  message: "must differ from the current password",
});

/** The password that confirms deleting the account, for the API and the form. */
export const accountDeletionBody = z.object({
  password: z.string().min(1, "is required").max(1024),
});

const LABELS: Record<string, string> = {
  currentPassword: "Current password",
  newPassword: "New password",
  password: "Password",
};

/** Field errors as sentences: "New password must be at least 10 characters." */
function sentences(errors: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(errors).map((
      [field, message],
    ) => [field, `${LABELS[field] ?? field} ${message}.`]),
  );
}

/** Changes the caller's password; the caller's own session (if any) is started again. */
async function changePasswordOf(
  c: Context<AppEnv>,
  auth: Auth,
  body: z.infer<typeof passwordChangeBody>,
): Promise<number> {
  const { kv, broker, config } = c.get("services");
  const changed = await changeUserPassword(kv, {
    user: auth.user,
    password: body.currentPassword,
    newPassword: body.newPassword,
    address: clientAddress(c),
    device: deviceOf(c),
    limits: loginLimits(config),
    keepSessionId: auth.sessionId,
    broker,
  });
  if (changed.device) rememberDevice(c, changed.device);
  // The change voided every session of the old generation, the caller's own too.
  if (auth.sessionId) await startSession(c, changed.user);
  return changed.endedSessions;
}

/** Deletes the caller's account and clears their session cookie. */
async function deleteAccountOf(c: Context<AppEnv>, auth: Auth, password: string): Promise<void> {
  const { kv, config, deletions, stripe } = c.get("services");
  await deleteUserAccount(kv, {
    user: auth.user,
    password,
    address: clientAddress(c),
    device: deviceOf(c),
    limits: loginLimits(config),
    deletions,
    stripe,
  });
  deleteCookie(c, sessionCookieName(config.publicUrl), {
    path: "/",
    secure: isHttps(config.publicUrl),
  });
}

/** A refusal a password form shows next to its field (403) or above the form (429). */
function formRefusal(
  error: unknown,
  field: string,
): { state: PasswordFormState; status: ContentfulStatusCode; headers: Record<string, string> } {
  if (!(error instanceof HttpError) || (error.status !== 403 && error.status !== 429)) throw error;
  const state = error.status === 403
    ? { errors: { [field]: error.message } }
    : { alert: error.message };
  return { state, status: error.status, headers: error.headers };
}

/** /api/account and /dashboard/account */
export function accountSettingsRoutes(): Hono<AppEnv> {
  const api = new Hono<AppEnv>();
  // A token may change the account only with the `manage` scope; the password is asked anyway.
  const manage = [requireAuth, requireScope("manage")] as const;

  api.post("/api/account/password", ...manage, async (c) => {
    const body = await parseBody(c, { schema: passwordChangeBody, action: "change password" });
    const endedSessions = await changePasswordOf(c, c.get("auth"), body);
    return c.json({ ok: true, endedSessions });
  });

  api.delete("/api/account", ...manage, async (c) => {
    const body = await parseBody(c, { schema: accountDeletionBody, action: "delete account" });
    await deleteAccountOf(c, c.get("auth"), body.password);
    return c.json({ deleted: true });
  });

  const pages = new Hono<AppEnv>();
  pages.onError(pageError);
  const guarded = [loadViewer, requireViewer] as const;

  const settingsPage = async (
    c: Context<AppEnv>,
    password: PasswordFormState = {},
    status: ContentfulStatusCode = 200,
  ) =>
    sendPage(
      c,
      <AccountSettingsPage
        user={viewerOf(c).user}
        flash={await pageFlash(c)}
        password={password}
      >
        <VerifyEmailSection
          email={viewerOf(c).user.email}
          verified={!!viewerOf(c).user.emailVerifiedAt}
        />
        <ChangeEmailSection />
      </AccountSettingsPage>,
      { status },
    );

  pages.get("/dashboard/account", ...guarded, (c) => settingsPage(c));

  pages.post("/dashboard/account/password", requireSameOrigin, ...guarded, async (c) => {
    const form = await readForm(c, passwordChangeBody);
    if (!form.ok) return await settingsPage(c, { errors: sentences(form.errors) }, 400);
    let ended: number;
    try {
      ended = await changePasswordOf(c, viewerOf(c), form.data);
    } catch (error) {
      const refused = formRefusal(error, "currentPassword");
      for (const [name, value] of Object.entries(refused.headers)) c.header(name, value);
      return await settingsPage(c, refused.state, refused.status);
    }
    const others = ended === 1 ? "1 other session was" : `${ended} other sessions were`;
    return await redirect(c, "/dashboard/account", {
      flash: { kind: "success", message: `Password changed. ${others} logged out.` },
    });
  });

  pages.get("/dashboard/account/delete", ...guarded, (c) => {
    return sendPage(c, <DeleteAccountPage user={viewerOf(c).user} />);
  });

  pages.post("/dashboard/account/delete", requireSameOrigin, ...guarded, async (c) => {
    const form = await readForm(c, accountDeletionBody);
    const user = viewerOf(c).user;
    if (!form.ok) {
      return sendPage(c, <DeleteAccountPage user={user} errors={sentences(form.errors)} />, {
        status: 400,
      });
    }
    try {
      await deleteAccountOf(c, viewerOf(c), form.data.password);
    } catch (error) {
      const refused = formRefusal(error, "password");
      for (const [name, value] of Object.entries(refused.headers)) c.header(name, value);
      return sendPage(c, <DeleteAccountPage user={user} {...refused.state} />, {
        status: refused.status,
      });
    }
    c.set("viewer", null);
    return sendPage(c, <AccountDeletedPage />);
  });

  const app = new Hono<AppEnv>();
  app.route("/", api);
  app.route("/", pages);
  return app;
}
