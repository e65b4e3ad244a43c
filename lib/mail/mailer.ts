/** The mail service of one isolate: queueing into the outbox, and the sender loop where KV is written. */
import type { Config } from "../runtime/config.ts";
import { log } from "../observe/log.ts";
import {
  type MailKind,
  type MailMessage,
  type MailOutcome,
  type MailSender,
  queueMail,
  startMailSender,
} from "./outbox.ts";
import { createTransport, type MailTransport } from "./transport.ts";

/** Queues mails; the isolate's sender (if it runs one) is nudged at once. */
export interface Mailer {
  /**
   * Queues a mail. `limited` marks a mail a visitor's action caused, or a notice to an address
   * nobody verified (counted against MAILS_PER_*); `once` makes a notice go once. False when
   * not queued for either reason.
   */
  queue(
    message: MailMessage,
    options: {
      kind: MailKind;
      userId: string | null;
      limited: boolean;
      once?: { key: Deno.KvKey; expireIn: number };
      /** Writes committed with the mail only (outbox.ts `queueMail`): a link's secret. */
      alongside?: () => Promise<(op: Deno.AtomicOperation) => void>;
    },
  ): Promise<boolean>;
  /** The clock of links' expiry (injected by tests). */
  now(): Date;
  /** Stops the sender loop and closes the SMTP transport. */
  close(): Promise<void>;
}

/**
 * Creates the mailer. `send` starts a sender loop here (the isolate that writes KV; other
 * isolates only queue, and that loop finds their mails within a poll).
 */
export function createMailer(
  kv: Deno.Kv,
  options: {
    config: Config;
    secretsKey: CryptoKey;
    send: boolean;
    now?: () => Date;
    transport?: MailTransport;
    onResult?: (outcome: MailOutcome) => void;
  },
): Mailer {
  const { config } = options;
  const transport = options.send
    ? options.transport ?? createTransport({ smtpUrl: config.smtpUrl })
    : null;
  const sender: MailSender | null = transport
    ? startMailSender(kv, {
      secretsKey: options.secretsKey,
      transport,
      from: config.mailFrom,
      retryBaseMs: config.mailRetryBaseMs,
      giveUpMs: config.mailGiveUpMs,
      onResult: options.onResult,
    })
    : null;
  return {
    async queue(message, queueOptions) {
      const queued = await queueMail(kv, {
        secretsKey: options.secretsKey,
        message,
        kind: queueOptions.kind,
        userId: queueOptions.userId,
        // Read at send time: tests learn the real public URL after the config is loaded.
        domain: new URL(config.publicUrl).hostname,
        rates: queueOptions.limited
          ? {
            perAddress: config.mailsPerAddressPerHour,
            perAccount: config.mailsPerAccountPerHour,
            total: config.mailsPerHour,
          }
          : undefined,
        once: queueOptions.once,
        alongside: queueOptions.alongside,
      });
      if (queued) sender?.nudge();
      else if (queueOptions.limited) {
        log.warn(`mail (${queueOptions.kind}) not queued: a MAILS_PER_* limit was reached`);
      }
      return queued;
    },
    now: options.now ?? (() => new Date()),
    async close() {
      await sender?.stop();
      transport?.close();
    },
  };
}
