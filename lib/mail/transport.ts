/**
 * Where mails leave the process: nodemailer over SMTP_URL (STARTTLS when the server offers it),
 * or, without SMTP_URL, the log (subject, recipient, links), so a local run works end to end.
 */
import type { Transporter } from "nodemailer";
import { log } from "../observe/log.ts";

/** A mail ready to send: Message-ID fixed when it was queued, so a resend is the same mail. */
export interface OutgoingMail {
  messageId: string;
  from: string;
  to: string;
  subject: string;
  text: string;
  html: string;
}

/** Sends one mail; throws when the server refused it or could not be reached. */
export interface MailTransport {
  send(mail: OutgoingMail): Promise<void>;
  close(): void;
}

/** How long one SMTP exchange may take; far below the outbox lease (outbox.ts). */
export const SMTP_TIMEOUT_MS = 30_000;

/**
 * The transport for a configuration: SMTP when `smtpUrl` is set, else the log. nodemailer is
 * imported at the first send: with prom-client it was most of a cold start's module loading.
 */
export function createTransport(options: { smtpUrl: string | null }): MailTransport {
  const { smtpUrl } = options;
  if (!smtpUrl) return logTransport();
  let smtp: Promise<Transporter> | null = null;
  const connect = () =>
    smtp ??= import("nodemailer").then(({ default: nodemailer }) =>
      nodemailer.createTransport({
        url: smtpUrl,
        connectionTimeout: SMTP_TIMEOUT_MS,
        greetingTimeout: SMTP_TIMEOUT_MS,
        socketTimeout: SMTP_TIMEOUT_MS,
      })
    );
  return {
    async send(mail) {
      const transport = await connect();
      await transport.sendMail({
        messageId: mail.messageId,
        from: mail.from,
        to: mail.to,
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
      });
    },
    close() {
      smtp?.then((transport) => transport.close(), () => {});
    },
  };
}

/** Prints each mail: a local run's links are in the server's output. */
function logTransport(): MailTransport {
  return {
    send(mail) {
      const links = mail.text.match(/https?:\/\/\S+/g) ?? [];
      log.info(
        `mail (SMTP_URL unset, not sent) to ${mail.to}: ${mail.subject}` +
          links.map((link) => `\n  ${link}`).join(""),
      );
      return Promise.resolve();
    },
    close() {},
  };
}
