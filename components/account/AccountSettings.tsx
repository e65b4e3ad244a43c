/**
 * The account settings page (/dashboard/account) and deleting an account. Each concern is its
 * own section component, so other sections (the email ones) join the page as children.
 */
import type { ComponentChildren } from "preact";
import { Field, FormAlert } from "../Form.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import type { Flash } from "../../lib/accounts/flash.ts";
import { PASSWORD_MIN_LENGTH } from "../../lib/accounts/passwords.ts";

/** A password form's state after a refusal: problems by field, or about the whole attempt. */
export interface PasswordFormState {
  errors?: Record<string, string>;
  alert?: string;
}

/** /dashboard/account: the user's sections, then deleting the account last. */
export function AccountSettingsPage(props: {
  user: LayoutUser;
  flash: Flash | null;
  password?: PasswordFormState;
  /** More sections (email address, verification), shown before the password. */
  children?: ComponentChildren;
}) {
  return (
    <Layout title="Account: WebSocks" user={props.user} section="account">
      <h1>Account</h1>
      <p class="muted">Signed in as {props.user.email}.</p>
      <Notice flash={props.flash} />
      {props.children}
      <ChangePasswordSection {...(props.password ?? {})} />
      <DeleteAccountSection />
    </Layout>
  );
}

/** Change password: the current one is required; other browsers are logged out. */
export function ChangePasswordSection(props: PasswordFormState) {
  const errors = props.errors ?? {};
  return (
    <section class="card" aria-labelledby="password-title">
      <h2 id="password-title">Change password</h2>
      <p class="muted">
        Every other browser signed in to this account is logged out, and its live streams close.
      </p>
      {props.alert ? <FormAlert>{props.alert}</FormAlert> : null}
      <form method="post" action="/dashboard/account/password" novalidate>
        <Field
          name="currentPassword"
          label="Current password"
          type="password"
          error={errors.currentPassword}
          autocomplete="current-password"
          required
        />
        <Field
          name="newPassword"
          label="New password"
          type="password"
          error={errors.newPassword}
          hint={`At least ${PASSWORD_MIN_LENGTH} characters.`}
          autocomplete="new-password"
          required
          minLength={PASSWORD_MIN_LENGTH}
        />
        <button type="submit" class="button primary">Change password</button>
      </form>
    </section>
  );
}

/** The way to delete the account: a link to the page that asks for the password. */
export function DeleteAccountSection() {
  return (
    <section class="card" aria-labelledby="delete-title">
      <h2 id="delete-title">Delete account</h2>
      <p class="muted">
        Deletes your endpoints, tokens, events and usage, and cancels a Pro subscription.
      </p>
      <p>
        <a href="/dashboard/account/delete" class="button danger">Delete account…</a>
      </p>
    </section>
  );
}

/** /dashboard/account/delete: what goes, and the password to confirm it. */
export function DeleteAccountPage(props: { user: LayoutUser } & PasswordFormState) {
  const errors = props.errors ?? {};
  return (
    <Layout title="Delete account: WebSocks" user={props.user} section="account">
      <section class="narrow confirm" aria-labelledby="confirm-title">
        <h1 id="confirm-title">Delete your account?</h1>
        <div class="warning" role="note">
          <p>
            This deletes the account {props.user.email}{" "}
            at once: its endpoint URLs stop accepting webhooks (404), its API tokens stop working,
            connected clients are disconnected, and its events, stored bodies, usage and sessions
            are erased. A Pro subscription is cancelled. Invoices Stripe billed are kept for
            accounting, without your email. This cannot be undone.
          </p>
        </div>
        {props.alert ? <FormAlert>{props.alert}</FormAlert> : null}
        <form method="post" action="/dashboard/account/delete" novalidate>
          <Field
            name="password"
            label="Your password"
            type="password"
            error={errors.password}
            autocomplete="current-password"
            required
            autofocus
          />
          <div class="actions">
            <button type="submit" class="button danger">Delete account</button>
            <a href="/dashboard/account" class="button">Cancel</a>
          </div>
        </form>
      </section>
    </Layout>
  );
}

/** The answer to a deletion: the visitor is signed out and the account is gone. */
export function AccountDeletedPage() {
  return (
    <Layout title="Account deleted: WebSocks">
      <section class="narrow">
        <h1>Your account was deleted</h1>
        <p>
          Its endpoints, tokens and events are gone. Thank you for trying WebSocks.
        </p>
        <p>
          <a href="/">Back to the start</a>
        </p>
      </section>
    </Layout>
  );
}
