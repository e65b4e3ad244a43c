/**
 * What each mail says: plain text plus simple HTML, the product's name, one clear link. Links
 * carry their secret in a `token` query parameter, which request logs redact.
 */
import type { MailMessage } from "./outbox.ts";

const PRODUCT = "WebSocks";

const escapeHtml = (text: string) =>
  text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");

/** A mail of a few paragraphs and at most one button-like link. */
function compose(options: {
  to: string;
  subject: string;
  paragraphs: string[];
  link?: { label: string; url: string };
  footer?: string;
}): MailMessage {
  const footer = options.footer ??
    `You receive this because of your ${PRODUCT} account. If it was not you, ignore this mail.`;
  const text = [
    ...options.paragraphs,
    ...(options.link ? [`${options.link.label}:\n${options.link.url}`] : []),
    `-- \n${PRODUCT}. ${footer}`,
  ].join("\n\n") + "\n";
  const html = `<!doctype html>
<html><body style="font-family: system-ui, sans-serif; line-height: 1.5; color: #1a1a1a">
<p style="font-size: 18px; font-weight: 600">${PRODUCT}</p>
${options.paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join("\n")}
${
    options.link
      ? `<p><a href="${
        escapeHtml(options.link.url)
      }" style="display: inline-block; padding: 10px 18px; background: #2456d6; color: #fff; border-radius: 6px; text-decoration: none">${
        escapeHtml(options.link.label)
      }</a></p>
<p style="font-size: 13px; color: #555">Or paste this address into your browser: ${
        escapeHtml(options.link.url)
      }</p>`
      : ""
  }
<p style="font-size: 13px; color: #555">${escapeHtml(footer)}</p>
</body></html>
`;
  return { to: options.to, subject: `${PRODUCT}: ${options.subject}`, text, html };
}

/** A link to a page with its secret in `token`. */
export function tokenLink(publicUrl: string, path: string, secret: string): string {
  return `${publicUrl}${path}?token=${encodeURIComponent(secret)}`;
}

/** "Verify your email address" after sign-up (or when asked again). */
export function verifyMail(options: { to: string; url: string }): MailMessage {
  return compose({
    to: options.to,
    subject: "verify your email address",
    paragraphs: [
      `Welcome to ${PRODUCT}. Please confirm that ${options.to} is your address. Your account ` +
      "works already; a verified address lets you upgrade to Pro and recover your account.",
      "The link works for 7 days.",
    ],
    link: { label: "Verify my email address", url: options.url },
    footer:
      `Someone signed up for ${PRODUCT} with this address. If it was not you, ignore this mail.`,
  });
}

/** The password reset link. */
export function resetMail(options: { to: string; url: string }): MailMessage {
  return compose({
    to: options.to,
    subject: "reset your password",
    paragraphs: [
      `Someone (hopefully you) asked to reset the password of the ${PRODUCT} account ${options.to}.`,
      "The link works once, for 1 hour. Setting a new password logs out every other browser.",
    ],
    link: { label: "Choose a new password", url: options.url },
    footer: "If you did not ask for this, ignore this mail: your password stays as it is.",
  });
}

/** The confirmation link sent to a new address. */
export function changeEmailMail(options: { to: string; from: string; url: string }): MailMessage {
  return compose({
    to: options.to,
    subject: "confirm your new email address",
    paragraphs: [
      `Your ${PRODUCT} account (${options.from}) asked to use ${options.to} from now on. ` +
      "Confirm the change with the link below; it works for 24 hours.",
    ],
    link: { label: "Use this address", url: options.url },
    footer: "If you did not ask for this, ignore this mail: nothing changes.",
  });
}

/** The notice to the old address once the account moved to a new one. */
export function emailChangedMail(
  options: { to: string; newEmail: string; url: string },
): MailMessage {
  return compose({
    to: options.to,
    subject: "your email address was changed",
    paragraphs: [
      `The ${PRODUCT} account that used ${options.to} now uses ${options.newEmail}. Mails about ` +
      "it, including password resets, go there from now on.",
      "If you did not make this change, someone else may have your password: contact the " +
      "operator of this service at once.",
    ],
    link: { label: "Open WebSocks", url: options.url },
    footer: "This notice goes to the previous address of an account.",
  });
}

/** Quota at 80 % or 100 % of the month's limit. */
export function quotaMail(
  options: {
    to: string;
    level: number;
    used: number;
    limit: number;
    url: string;
    resetsAt: string;
  },
): MailMessage {
  const full = options.level >= 100;
  return compose({
    to: options.to,
    subject: full
      ? "your monthly webhook limit is reached"
      : `you have used ${options.level}% of your monthly webhooks`,
    paragraphs: [
      `Your account has accepted ${options.used.toLocaleString("en")} of its ` +
      `${options.limit.toLocaleString("en")} webhooks this month.`,
      full
        ? "Further webhooks are refused (402) until the month ends on " +
          `${options.resetsAt.slice(0, 10)}, unless you raise your cap or upgrade to Pro.`
        : "When the limit is reached, further webhooks are refused (402) until the month ends.",
    ],
    link: { label: "See usage and plans", url: options.url },
  });
}

/** A payment Stripe could not take. */
export function paymentFailedMail(
  options: { to: string; graceEndsAt: string | null; url: string },
): MailMessage {
  return compose({
    to: options.to,
    subject: "a payment failed",
    paragraphs: [
      "We could not take the payment for your Pro plan.",
      options.graceEndsAt
        ? `Your Pro limits stay until ${options.graceEndsAt.slice(0, 10)}; after that the ` +
          "account falls back to Free limits unless a payment succeeds."
        : "Please update your payment method.",
    ],
    link: { label: "Update payment details", url: options.url },
  });
}

/** A new monthly invoice. */
export function invoiceMail(
  options: { to: string; period: string; amountUsd: number; accepted: number; url: string },
): MailMessage {
  return compose({
    to: options.to,
    subject: `your invoice for ${options.period}`,
    paragraphs: [
      `Your invoice for ${options.period} is ready: ${options.accepted.toLocaleString("en")} ` +
      `webhooks accepted, amount $${options.amountUsd.toFixed(2)}.`,
    ],
    link: { label: "See invoices", url: options.url },
  });
}
