/** The sign-up and log-in pages: plain forms, each problem next to its field. */
import { Field, FormAlert } from "../Form.tsx";
import { Layout } from "../Layout.tsx";
import { PASSWORD_MIN_LENGTH } from "../../lib/accounts/passwords.ts";
import { formatCount } from "../../lib/shared/format.ts";

/** A credentials form's state: the email kept after a failed attempt, problems by field. */
export interface AccountFormState {
  email: string;
  errors: Record<string, string>;
  /** A problem with the attempt as a whole (too many attempts). */
  alert?: string;
}

/** /signup; `freeAllowance` is FREE_MONTHLY_LIMIT. */
export function SignupPage(props: AccountFormState & { freeAllowance: number }) {
  return (
    <Layout title="Sign up: WebSocks" section="signup">
      <section class="narrow card auth">
        <h1>Create your account</h1>
        <p class="muted">
          You get a webhook URL and an API token at once. {formatCount(props.freeAllowance)}{" "}
          webhooks a month free.
        </p>
        {props.alert ? <FormAlert>{props.alert}</FormAlert> : null}
        <form method="post" action="/signup" novalidate>
          <Field
            name="email"
            label="Email"
            type="email"
            value={props.email}
            error={props.errors.email}
            autocomplete="email"
            required
            autofocus={!props.email}
          />
          <Field
            name="password"
            label="Password"
            type="password"
            error={props.errors.password}
            hint={`At least ${PASSWORD_MIN_LENGTH} characters.`}
            autocomplete="new-password"
            required
            minLength={PASSWORD_MIN_LENGTH}
            autofocus={!!props.email}
          />
          <button type="submit" class="button primary full">Sign up</button>
        </form>
        <p class="muted">
          Already have an account? <a href="/login">Log in</a>
        </p>
      </section>
    </Layout>
  );
}

/** /login; `next` is where a successful log-in leads. */
export function LoginPage(props: AccountFormState & { next: string }) {
  return (
    <Layout title="Log in: WebSocks" section="login">
      <section class="narrow card auth">
        <h1>Log in</h1>
        {props.alert ? <FormAlert>{props.alert}</FormAlert> : null}
        <form method="post" action="/login" novalidate>
          <input type="hidden" name="next" value={props.next} />
          <Field
            name="email"
            label="Email"
            type="email"
            value={props.email}
            error={props.errors.email}
            autocomplete="username"
            required
            autofocus={!props.email}
          />
          <Field
            name="password"
            label="Password"
            type="password"
            error={props.errors.password}
            autocomplete="current-password"
            required
            autofocus={!!props.email}
          />
          <button type="submit" class="button primary full">Log in</button>
        </form>
        <p class="muted">
          <a href="/forgot-password">Forgot password?</a>
        </p>
        <p class="muted">
          New here? <a href="/signup">Create an account</a>
        </p>
      </section>
    </Layout>
  );
}
