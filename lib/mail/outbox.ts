/**
 * The durable outbox: a mail is written to KV (sealed, since reset links are secrets) and sent
 * by whichever sender loop claims it first, so a failed SMTP server loses no mail and two
 * isolates or instances on one store send it once.
 *
 * A sender claims a due mail with an atomic check of the entry it read and a lease; a claim
 * that loses the race sends nothing. The lease outlasts an SMTP exchange many times over
 * (SMTP_TIMEOUT_MS), so only a sender that died mid-send lets another try again, with the same
 * Message-ID, which receivers use to drop a duplicate. Failures back off exponentially and give
 * up after MAIL_GIVE_UP_HOURS.
 *
 * What a visitor can make us send is rate limited when it is queued: per recipient address,
 * per account and in total (MAILS_PER_*), counted in the commit that queues the mail. The
 * recipient's count is keyed by a hash of the address and outlives a deleted account (for at
 * most its hour): deleting an account and signing up again with the address starts no fresh
 * hour of mail to it.
 */
import { mailOutboxKey, mailOutboxPrefix, mailRateKey } from "../store/kv_keys.ts";
import { log } from "../observe/log.ts";
import { openSecret, sealSecret } from "../accounts/secret_box.ts";
import { nextId } from "../store/ids.ts";
import { sha256Hex } from "../accounts/secrets.ts";
import { HttpError } from "../http/http_error.ts";
import { type MailTransport, SMTP_TIMEOUT_MS } from "./transport.ts";

/** What a mail says and to whom. */
export interface MailMessage {
  to: string;
  subject: string;
  text: string;
  html: string;
}

/**
 * Why a mail is sent; a visitor's actions cause the first three (rate limited), and notices to
 * an address nobody verified are limited too (account_mail.ts).
 */
export type MailKind =
  | "verify"
  | "reset"
  | "change"
  | "email_changed"
  | "quota"
  | "payment_failed"
  | "invoice";

/** Mails a visitor can cause, per hour. */
export interface MailRates {
  perAddress: number;
  perAccount: number;
  total: number;
}

/** An outbox entry: the message sealed under the secrets key, and its delivery state. */
export interface OutboxMail {
  id: string;
  messageId: string;
  kind: MailKind;
  /** The account it concerns, so deleting the account can drop its mails. */
  userId: string | null;
  sealed: string;
  attempts: number;
  createdAt: number;
  /** Not sent before this time (ms). */
  dueAt: number;
  /** A sender holds it until then (ms); 0 when nobody does. */
  leaseUntil: number;
  lastError: string | null;
}

const RATE_WINDOW_MS = 3600_000;
const MAX_BACKOFF_MS = 3600_000;
/** How long a claim holds a mail: a sender that dies mid-send delays it this long. */
export const LEASE_MS = 10 * SMTP_TIMEOUT_MS;

/**
 * Queues a mail; false when a rate limit refused it (only `rates` given: a visitor's mail).
 * `domain` names the Message-ID's right side (the public host).
 */
export async function queueMail(
  kv: Deno.Kv,
  options: {
    secretsKey: CryptoKey;
    message: MailMessage;
    kind: MailKind;
    userId: string | null;
    domain: string;
    rates?: MailRates;
    /** A marker that makes the mail go once (a notice): not queued when the key exists. */
    once?: { key: Deno.KvKey; expireIn: number };
    /**
     * Writes that go live only with the mail (a link's secret), read afresh on each attempt:
     * a mail the limits hold back leaves them unwritten.
     */
    alongside?: () => Promise<(op: Deno.AtomicOperation) => void>;
  },
): Promise<boolean> {
  const id = nextId();
  const now = Date.now();
  const mail: OutboxMail = {
    id,
    messageId: `<${id}.${options.kind}@${options.domain}>`,
    kind: options.kind,
    userId: options.userId,
    sealed: await sealSecret(options.secretsKey, JSON.stringify(options.message)),
    attempts: 0,
    createdAt: now,
    dueAt: now,
    leaseUntil: 0,
    lastError: null,
  };
  const limits = options.rates
    ? [
      {
        key: mailRateKey("address", await sha256Hex(options.message.to.toLowerCase())),
        max: options.rates.perAddress,
      },
      ...(options.userId
        ? [{ key: mailRateKey("account", options.userId), max: options.rates.perAccount }]
        : []),
      { key: mailRateKey("all", "all"), max: options.rates.total },
    ]
    : [];
  for (let attempt = 0; attempt < 20; attempt++) {
    const entries = limits.length > 0
      ? await kv.getMany<number[]>(limits.map((limit) => limit.key))
      : [];
    const op = kv.atomic();
    if (options.once) {
      const marker = await kv.get(options.once.key);
      if (marker.versionstamp) return false;
      op.check(marker).set(marker.key, new Date(now).toISOString(), {
        expireIn: options.once.expireIn,
      });
    }
    for (const [i, entry] of entries.entries()) {
      const recent = ((entry.value ?? []) as number[]).filter((at) => at > now - RATE_WINDOW_MS);
      if (recent.length >= limits[i].max) return false;
      op.check(entry).set(entry.key, [...recent, now], { expireIn: RATE_WINDOW_MS });
    }
    if (options.alongside) (await options.alongside())(op);
    op.set(mailOutboxKey(id), mail);
    if ((await op.commit()).ok) return true;
  }
  throw new Error("Cannot queue mail: the rate counters kept changing");
}

/**
 * Counts a request that may cause a mail, before anything it names is looked up: one client
 * network address's reset request ("client": the answer is the same for every address it asks
 * about), or one account's request to change its address ("change": its answer says whether
 * the address is taken, so it must not be asked without limit). 429 past `perHour`, with
 * `action` in the message.
 */
export async function countMailRequest(
  kv: Deno.Kv,
  options: { by: "client" | "change"; id: string; perHour: number; action: string },
): Promise<void> {
  const key = mailRateKey(options.by, options.id);
  const whose = options.by === "client" ? "from your network address" : "for this account";
  for (let attempt = 0; attempt < 20; attempt++) {
    const now = Date.now();
    const entry = await kv.get<number[]>(key);
    const recent = (entry.value ?? []).filter((at) => at > now - RATE_WINDOW_MS);
    if (recent.length >= options.perHour) {
      const waitMs = recent[recent.length - options.perHour] + RATE_WINDOW_MS - now;
      throw new HttpError(
        429,
        `Cannot ${options.action}: too many requests ${whose} in the last hour; try again in ` +
          `${Math.ceil(waitMs / 60_000)} min`,
        { "Retry-After": String(Math.max(1, Math.ceil(waitMs / 1000))) },
      );
    }
    const op = kv.atomic().check(entry).set(key, [...recent, now], { expireIn: RATE_WINDOW_MS });
    if ((await op.commit()).ok) return;
  }
  throw new HttpError(
    503,
    `Cannot ${options.action}: the request counter ${whose} kept changing; try again`,
    { "Retry-After": "1" },
  );
}

/** The outcome of one attempt to send, for metrics. */
export type MailOutcome = "sent" | "failed";

/** A running sender loop. */
export interface MailSender {
  /** Looks at the outbox now (a mail was just queued in this isolate). */
  nudge(): void;
  /** One pass over the outbox; resolves with ms until the next mail falls due (or null). */
  sendDue(): Promise<number | null>;
  /** Stops the loop after the pass in progress. */
  stop(): Promise<void>;
}

/**
 * Starts a sender: it passes over the outbox when nudged, when a retry falls due, and every
 * `pollMs` (mails queued by other isolates and instances).
 */
export function startMailSender(
  kv: Deno.Kv,
  options: {
    secretsKey: CryptoKey;
    transport: MailTransport;
    from: string;
    retryBaseMs: number;
    giveUpMs: number;
    pollMs?: number;
    leaseMs?: number;
    /** Each attempt's outcome (the metrics counters). */
    onResult?: (outcome: MailOutcome) => void;
  },
): MailSender {
  const pollMs = options.pollMs ?? 2000;
  const leaseMs = options.leaseMs ?? LEASE_MS;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let running: Promise<void> | null = null;
  let again = false;
  let stopped = false;

  const schedule = (ms: number) => {
    if (stopped) return;
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(run, Math.max(0, ms));
  };

  function run(): void {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = sendDue()
      .catch((error) => {
        log.error("mail outbox pass failed; will try again", error);
        return null;
      })
      .then((next) => {
        running = null;
        if (again) {
          again = false;
          schedule(0);
        } else schedule(Math.min(pollMs, next ?? pollMs));
      });
  }

  async function sendDue(): Promise<number | null> {
    let next: number | null = null;
    for await (const entry of kv.list<OutboxMail>({ prefix: mailOutboxPrefix() })) {
      if (stopped) break;
      const mail = entry.value;
      const now = Date.now();
      const readyAt = Math.max(mail.dueAt, mail.leaseUntil);
      if (readyAt > now) {
        next = Math.min(next ?? Infinity, readyAt - now);
        continue;
      }
      const claimed: OutboxMail = { ...mail, leaseUntil: now + leaseMs };
      const claim = await kv.atomic().check(entry).set(entry.key, claimed).commit();
      if (!claim.ok) continue; // another sender has it
      const outcome = await attempt(claimed);
      options.onResult?.(outcome.sent ? "sent" : "failed");
      const held = { key: entry.key, versionstamp: claim.versionstamp };
      if (outcome.sent) {
        const done = await kv.atomic().check(held).delete(entry.key).commit();
        if (!done.ok) log.error(`mail ${mail.id} sent after its lease ended`);
        continue;
      }
      const attempts = mail.attempts + 1;
      if (now - mail.createdAt >= options.giveUpMs) {
        log.error(
          `mail ${mail.id} (${mail.kind}) dropped after ${attempts} failed attempts: ${outcome.error}`,
        );
        await kv.atomic().check(held).delete(entry.key).commit();
        continue;
      }
      const wait = Math.min(options.retryBaseMs * 2 ** (attempts - 1), MAX_BACKOFF_MS);
      log.warn(
        `mail ${mail.id} (${mail.kind}) not sent (attempt ${attempts}), retrying in ` +
          `${Math.round(wait / 1000)} s: ${outcome.error}`,
      );
      const retry: OutboxMail = {
        ...mail,
        attempts,
        dueAt: Date.now() + wait,
        leaseUntil: 0,
        lastError: outcome.error,
      };
      await kv.atomic().check(held).set(entry.key, retry).commit();
      next = Math.min(next ?? Infinity, wait);
    }
    return next;
  }

  async function attempt(
    mail: OutboxMail,
  ): Promise<{ sent: true } | { sent: false; error: string }> {
    let message: MailMessage;
    try {
      message = JSON.parse(await openSecret(options.secretsKey, mail.sealed));
    } catch {
      return { sent: false, error: "cannot open the sealed mail (was SECRETS_KEY changed?)" };
    }
    let timeout: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        options.transport.send({ ...message, messageId: mail.messageId, from: options.from }),
        new Promise((_, reject) => {
          timeout = setTimeout(
            () => reject(new Error("SMTP exchange took too long")),
            Math.min(leaseMs / 2, 4 * SMTP_TIMEOUT_MS),
          );
        }),
      ]);
      return { sent: true };
    } catch (error) {
      return { sent: false, error: error instanceof Error ? error.message : String(error) };
    } finally {
      clearTimeout(timeout);
    }
  }

  schedule(0);
  return {
    nudge: () => schedule(0),
    sendDue,
    async stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
      await running;
    },
  };
}

/** Drops a deleted account's queued mails (the outbox is small: it is rate limited). */
export async function dropMailsOf(kv: Deno.Kv, userId: string): Promise<void> {
  for await (const entry of kv.list<OutboxMail>({ prefix: mailOutboxPrefix() })) {
    if (entry.value.userId === userId) await kv.delete(entry.key);
  }
}
