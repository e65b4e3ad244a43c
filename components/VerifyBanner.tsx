/** The banner asking a signed-in user to verify their address (lib/mail/). */

/** Shown on every signed-in page until the address is verified. */
export function VerifyBanner(props: { email: string }) {
  return (
    <div class="notice info verify-banner" role="status">
      <p>
        Please verify your email address,{" "}
        {props.email}: follow the link in the mail we sent. Your account works already; upgrading to
        Pro needs a verified address.
      </p>
      <form method="post" action="/dashboard/account/verify" class="inline-form">
        <button type="submit" class="link-button">Send the mail again</button>
      </form>{" "}
      <a href="/dashboard/account/email">Wrong address? Change it</a>
    </div>
  );
}
