/** The HTML shell every page shares: head, header with navigation, main, footer. */
import type { ComponentChildren } from "preact";
import { VerifyBanner } from "./VerifyBanner.tsx";

/** Which navigation entry a page belongs to. */
export type Section =
  | "home"
  | "dashboard"
  | "tokens"
  | "endpoints"
  | "usage"
  | "docs"
  | "account"
  | "login"
  | "signup";

/** The signed-in user as the layout shows it, or null. */
export interface LayoutUser {
  email: string;
  /** Unset or null: the banner asks to verify the address (lib/mail/). */
  emailVerifiedAt?: string | null;
}

/** Page frame with title, stylesheet, navigation for the signed-in or anonymous visitor. */
export function Layout(props: {
  title: string;
  user?: LayoutUser | null;
  section?: Section;
  /** Wide pages (the dashboard) use more of a large screen. */
  wide?: boolean;
  children: ComponentChildren;
}) {
  const current = (section: Section) => props.section === section ? "page" : undefined;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="color-scheme" content="light dark" />
        <title>{props.title}</title>
        <link rel="stylesheet" href="/static/style.css" />
        <link rel="icon" href="/static/favicon.svg" type="image/svg+xml" />
      </head>
      <body>
        <a class="skip-link" href="#main">Skip to content</a>
        <header class="site">
          <a href={props.user ? "/dashboard" : "/"} class="brand">
            <img src="/static/favicon.svg" alt="" width={24} height={24} />
            WebSocks
          </a>
          <nav aria-label="Main">
            {props.user
              ? (
                <>
                  <a href="/dashboard" aria-current={current("dashboard")}>Dashboard</a>
                  <a href="/dashboard/tokens" aria-current={current("tokens")}>Tokens</a>
                  <a href="/dashboard/endpoints" aria-current={current("endpoints")}>Endpoints</a>
                  <a href="/dashboard/usage" aria-current={current("usage")}>Usage</a>
                  <a href="/docs" aria-current={current("docs")}>Docs</a>
                  <a href="/dashboard/account" aria-current={current("account")}>Account</a>
                </>
              )
              : (
                <>
                  <a href="/docs" aria-current={current("docs")}>Docs</a>
                  <a href="/login" aria-current={current("login")}>Log in</a>
                  <a href="/signup" class="button primary small" aria-current={current("signup")}>
                    Sign up
                  </a>
                </>
              )}
          </nav>
          {props.user
            ? (
              <form method="post" action="/logout" class="logout">
                <button
                  type="submit"
                  class="link-button"
                  title={`Signed in as ${props.user.email}`}
                >
                  Log out
                </button>
              </form>
            )
            : null}
        </header>
        <main id="main" class={props.wide ? "wide" : undefined}>
          {props.user && !props.user.emailVerifiedAt
            ? <VerifyBanner email={props.user.email} />
            : null}
          {props.children}
        </main>
        <footer class="site">
          <span>WebSocks: webhooks, delivered live.</span>
          {props.user ? <span class="muted">Signed in as {props.user.email}</span> : null}
        </footer>
      </body>
    </html>
  );
}
