/**
 * The secrets in mailed links (verify an address, reset a password, confirm a new address).
 * KV keeps only a hash; a user has at most one live link of each kind, so asking again retires
 * the previous link. Opening a link (GET) only looks; the form it shows spends it (POST), since
 * mail scanners fetch links before their reader does.
 */
import { randomSecret, sha256Hex } from "../accounts/secrets.ts";
import { mailTokenKey, mailTokenOfUserKey } from "../store/kv_keys.ts";

/** What a link does. */
export type MailTokenKind = "verify" | "reset" | "change";

/** A stored link secret. `email` is the address it was sent to (for "change": the new one). */
export interface MailToken {
  kind: MailTokenKind;
  userId: string;
  email: string;
  expiresAt: number;
}

/** How long each kind of link works. */
export const MAIL_TOKEN_TTL_MS: Record<MailTokenKind, number> = {
  verify: 7 * 86400_000,
  reset: 3600_000,
  change: 24 * 3600_000,
};

/**
 * A new link secret, not stored yet: `write` adds it to a commit (retiring the user's previous
 * link of its kind, checked), so it goes live in the commit that queues its mail and a mail the
 * limits hold back retires nothing. Each call of `write` reads the index afresh (a retry).
 */
export interface NewMailToken {
  secret: string;
  write(): Promise<(op: Deno.AtomicOperation) => void>;
}

/** Creates a link secret; nothing is stored until a commit applies its `write`. */
export async function newMailToken(
  kv: Deno.Kv,
  options: { kind: MailTokenKind; userId: string; email: string; now: Date },
): Promise<NewMailToken> {
  const secret = randomSecret(32);
  const hash = await sha256Hex(secret);
  const ttl = MAIL_TOKEN_TTL_MS[options.kind];
  const token: MailToken = {
    kind: options.kind,
    userId: options.userId,
    email: options.email,
    expiresAt: options.now.getTime() + ttl,
  };
  const indexKey = mailTokenOfUserKey(options.userId, options.kind);
  return {
    secret,
    async write() {
      const index = await kv.get<string>(indexKey);
      return (op) => {
        op.check(index)
          .set(mailTokenKey(hash), token, { expireIn: ttl })
          .set(indexKey, hash, { expireIn: ttl });
        if (index.value) op.delete(mailTokenKey(index.value));
      };
    },
  };
}

/**
 * The retiring of the user's live link of `kind`, to add to a commit (checked, so a link
 * issued meanwhile makes the commit retry). A new password voids a pending change of address:
 * whoever asked for it knew the old password.
 */
export async function retireMailToken(
  kv: Deno.Kv,
  options: { userId: string; kind: MailTokenKind },
): Promise<(op: Deno.AtomicOperation) => void> {
  const index = await kv.get<string>(mailTokenOfUserKey(options.userId, options.kind));
  return (op) => {
    op.check(index);
    if (index.value) op.delete(index.key).delete(mailTokenKey(index.value));
  };
}

/** Retires the user's live links of `kinds`, each in a commit of its own. */
export async function retireMailTokens(
  kv: Deno.Kv,
  options: { userId: string; kinds: MailTokenKind[] },
): Promise<void> {
  for (const kind of options.kinds) {
    for (;;) {
      const retire = await retireMailToken(kv, { userId: options.userId, kind });
      const op = kv.atomic();
      retire(op);
      if ((await op.commit()).ok) break;
    }
  }
}

/** A link's secret as read: the stored token, and the entries a commit that spends it checks. */
export interface FoundMailToken {
  token: MailToken;
  entry: Deno.KvEntry<MailToken>;
  index: Deno.KvEntryMaybe<string>;
}

/**
 * The live token of `kind` for a link's secret, or a reason it does not work (the same message
 * for unknown, spent and retired links: whoever holds one learns nothing more).
 */
export async function findMailToken(
  kv: Deno.Kv,
  options: { secret: string; kind: MailTokenKind; now: Date },
): Promise<FoundMailToken | { problem: "invalid" | "expired" }> {
  if (!/^[\w-]{20,100}$/.test(options.secret)) return { problem: "invalid" };
  const hash = await sha256Hex(options.secret);
  const entry = await kv.get<MailToken>(mailTokenKey(hash));
  if (!entry.value || entry.value.kind !== options.kind) return { problem: "invalid" };
  if (entry.value.expiresAt <= options.now.getTime()) return { problem: "expired" };
  const index = await kv.get<string>(mailTokenOfUserKey(entry.value.userId, options.kind));
  if (index.value !== hash) return { problem: "invalid" };
  return { token: entry.value, entry: entry as Deno.KvEntry<MailToken>, index };
}

/** Adds the spending of a token to a commit (checked: it is spent once). */
export function spendMailToken(
  op: Deno.AtomicOperation,
  found: FoundMailToken,
): Deno.AtomicOperation {
  return op.check(found.entry).check(found.index).delete(found.entry.key).delete(found.index.key);
}
