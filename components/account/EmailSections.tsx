/**
 * The email parts of account settings: the banner asking to verify, the verification and
 * change-of-address sections (kept apart from the other settings sections so each can move),
 * and the pages mailed links open. Plain forms: no JavaScript needed.
 */
import { Field, FormAlert } from "../Form.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import type { Flash } from "../../lib/accounts/flash.ts";
import { PASSWORD_MIN_LENGTH } from "../../lib/accounts/passwords.ts";
import { FORGOT_ANSWER } from "../../lib/mail/account_mail.ts";

/** The settings section about the address's verification. */
export function VerifyEmailSection(props: { email: string; verified: boolean }) {
  return (
    <section class="card" id="email-verification">
      <h2>Email address</h2>
      <p>
        {props.email} {props.verified
          ? <strong class="verified">(verified)</strong>
          : <strong class="unverified">(not verified yet)</strong>}
      </p>
      {props.verified ? null : (
        <form method="post" action="/dashboard/account/verify">
          <button type="submit" class="button">Send the verification mail again</button>
        </form>
      )}
    </section>
  );
}

/** The settings section that moves the account to another address. */
export function ChangeEmailSection(
  props: { newEmail?: string; errors?: Record<string, string>; alert?: string },
) {
  const errors = props.errors ?? {};
  return (
    <section class="card" id="change-email">
      <h2>Change email address</h2>
      <p class="muted">
        We mail a link to the new address; the change happens when you follow it. Your current
        address is told.
      </p>
      {props.alert ? <FormAlert>{props.alert}</FormAlert> : null}
      <form method="post" action="/dashboard/account/email" novalidate>
        <Field
          name="email"
          label="New email address"
          type="email"
          value={props.newEmail}
          error={errors.email}
          autocomplete="email"
          required
        />
        <Field
          name="password"
          label="Current password"
          type="password"
          error={errors.password}
          autocomplete="current-password"
          required
        />
        <button type="submit" class="button primary">Send confirmation link</button>
      </form>
    </section>
  );
}

/** /dashboard/account/email: the email sections on their own page. */
export function EmailSettingsPage(props: {
  user: LayoutUser;
  verified: boolean;
  flash: Flash | null;
  change?: { newEmail?: string; errors?: Record<string, string>; alert?: string };
}) {
  return (
    <Layout title="Email: WebSocks" user={props.user}>
      <section class="narrow">
        <h1>Email</h1>
        <Notice flash={props.flash} />
        <VerifyEmailSection email={props.user.email} verified={props.verified} />
        <ChangeEmailSection {...props.change} />
      </section>
    </Layout>
  );
}

/** /forgot-password: asks for the address. */
export function ForgotPasswordPage(
  props: { email?: string; errors?: Record<string, string> },
) {
  return (
    <Layout title="Forgot password: WebSocks" section="login">
      <section class="narrow card auth">
        <h1>Forgot your password?</h1>
        <p class="muted">
          Enter your account's email address. We mail you a link to choose a new password; it works
          once, for 1 hour.
        </p>
        <form method="post" action="/forgot-password" novalidate>
          <Field
            name="email"
            label="Email"
            type="email"
            value={props.email}
            error={props.errors?.email}
            autocomplete="username"
            required
            autofocus
          />
          <button type="submit" class="button primary full">Send reset link</button>
        </form>
        <p class="muted">
          Remembered it? <a href="/login">Log in</a>
        </p>
      </section>
    </Layout>
  );
}

/** The answer to /forgot-password: the same for every address. */
export function ForgotSentPage() {
  return (
    <Layout title="Check your mail: WebSocks" section="login">
      <section class="narrow card auth">
        <h1>Check your mail</h1>
        <p>{FORGOT_ANSWER}</p>
        <p class="muted">
          <a href="/login">Back to log in</a>
        </p>
      </section>
    </Layout>
  );
}

/** /reset-password?token=…: the new password form (opening it spends nothing). */
export function ResetPasswordPage(
  props: { token: string; email: string; errors?: Record<string, string> },
) {
  return (
    <Layout title="Choose a new password: WebSocks" section="login">
      <section class="narrow card auth">
        <h1>Choose a new password</h1>
        <p class="muted">
          For{" "}
          {props.email}. Saving it logs out every other browser, closes their live streams and
          revokes the account's API tokens, unless you keep them.
        </p>
        <form method="post" action="/reset-password" novalidate>
          <input type="hidden" name="token" value={props.token} />
          <Field
            name="password"
            label="New password"
            type="password"
            error={props.errors?.password}
            hint={`At least ${PASSWORD_MIN_LENGTH} characters.`}
            autocomplete="new-password"
            required
            minLength={PASSWORD_MIN_LENGTH}
            autofocus
          />
          <fieldset class="choices">
            <legend>API tokens</legend>
            <label class="check">
              <input type="checkbox" name="keepTokens" value="on" />
              <span>Keep them: only if you made every one of them</span>
            </label>
          </fieldset>
          <button type="submit" class="button primary full">Save new password</button>
        </form>
      </section>
    </Layout>
  );
}

/** A mailed link's confirmation page: one button that spends it (GET only shows this). */
export function ConfirmLinkPage(props: {
  title: string;
  text: string;
  action: string;
  token: string;
  button: string;
  user?: LayoutUser | null;
}) {
  return (
    <Layout title={`${props.title}: WebSocks`} user={props.user}>
      <section class="narrow card auth">
        <h1>{props.title}</h1>
        <p>{props.text}</p>
        <form method="post" action={props.action}>
          <input type="hidden" name="token" value={props.token} />
          <button type="submit" class="button primary full">{props.button}</button>
        </form>
      </section>
    </Layout>
  );
}

/** After a link did its work, for a visitor who is not logged in. */
export function LinkDonePage(props: { title: string; text: string }) {
  return (
    <Layout title={`${props.title}: WebSocks`}>
      <section class="narrow card auth">
        <h1>{props.title}</h1>
        <p>{props.text}</p>
        <p>
          <a href="/login" class="button primary">Log in</a>
        </p>
      </section>
    </Layout>
  );
}
