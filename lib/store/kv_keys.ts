/**
 * Every Deno KV key WebSocks uses, built in one place.
 *
 * | key                                       | value                              | writer          |
 * | ----------------------------------------- | ---------------------------------- | --------------- |
 * | ["users", userId]                         | User                               | users.ts        |
 * | ["users_by_email", email]                 | userId                             | users.ts        |
 * | ["sessions", sha256(sessionId)]           | Session                            | sessions.ts     |
 * | ["sessions_of_user", userId, sha256(id)]  | expiresAt: index of a user's       | sessions.ts     |
 * |                                           | sessions (same commit, same TTL)   |                 |
 * | ["tokens", userId, tokenId]               | Token (hash of the value only)     | tokens.ts       |
 * | ["tokens_by_hash", sha256(value)]         | { userId, tokenId }                | tokens.ts       |
 * | ["token_count", userId, "all"]            | number: at least the user's tokens | tokens.ts       |
 * |                                           | (raised with each new one, counted |                 |
 * |                                           | again at the cap; never lowered)   |                 |
 * | ["endpoints", userId, endpointId]         | Endpoint                           | endpoints.ts    |
 * | ["endpoints_by_slug", slug]               | { userId, endpointId }             | endpoints.ts    |
 * | ["events", userId, firstEventId]          | StoredEvent[]: consecutive events, | group_commit.ts |
 * |                                           | ≤ 60 KB (bodies inline or split);  |                 |
 * |                                           | or those deflated, as bytes        |                 |
 * |                                           | (pack_codec.ts)                    |                 |
 * | ["event_bodies", userId, blobId, n]       | Uint8Array, part n of a large body | events.ts       |
 * |                                           | (written as it arrives when        |                 |
 * |                                           | streamed; deleted if abandoned)    |                 |
 * | ["event_head", userId]                    | id of the user's newest event      | group_commit.ts |
 * | ["usage_month", userId, "YYYY-MM"]        | Deno.KvU64 accepted webhooks       | group_commit.ts |
 * | ["usage_day", userId, "YYYY-MM-DD"]       | Deno.KvU64 accepted webhooks       | group_commit.ts |
 * | ["usage_rejected_month", userId, "YYYY-MM"] | Deno.KvU64 refused (402) webhooks | usage.ts       |
 * | ["usage_rejected_day", userId, "YYYY-MM-DD"] | Deno.KvU64 refused (402) webhooks | usage.ts      |
 * | ["invoices", userId, "YYYY-MM"]           | Invoice for a closed month         | invoices.ts     |
 * | ["users_by_stripe_customer", customerId]  | userId                             | stripe.ts       |
 * | ["stripe_events", eventId]                | { type, appliedAt } (30 days)      | stripe.ts       |
 * | ["stripe_usage_reported", userId, month]  | Deno.KvU64 reported to the meter   | stripe.ts       |
 * | ["stripe_usage_pending", userId, month]   | { from, to, identifier }           | stripe.ts       |
 * | ["deliveries", userId, eventId, connId]   | Delivery: a client's ack           | log/acks.ts     |
 * | ["flash", sha256(sessionId)]              | Flash sealed with the session id   | flash.ts        |
 * | ["login_failures", "address", address]   | number[]: failed/reserved times    | login_guard.ts  |
 * | ["login_failures", "email", email]       | { failures, lastAt }: the delay    | login_guard.ts  |
 * | ["login_devices", sha256(cookie)]         | { email, userId, failures } (180   | login_guard.ts  |
 * |                                           | days): trusted for that account    |                 |
 * | ["signups", address]                      | number[]: sign-up attempt times    | login_guard.ts  |
 * | ["broker_messages", id]                   | { origin, at, message } (60 s), or | broker_kv.ts    |
 * |                                           | { origin, at, parts } when large   |                 |
 * | ["broker_message_parts", id, n]           | Uint8Array, part n of a large      | broker_kv.ts    |
 * |                                           | serialized message (60 s)          |                 |
 * | ["broker_head", "all"]                    | id of the newest broker message    | broker_kv.ts    |
 * | ["group", userId, name]                   | { name, cursor, createdAt }: ids   | groups.ts       |
 * |                                           | ≤ cursor are done for the group    |                 |
 * | ["group_names", userId, "all"]            | string[]: the account's groups,    | groups.ts       |
 * |                                           | written with each record it names  |                 |
 * | ["group_claim", userId, name, eventId]    | { member, origin, attempt, until,  | groups.ts       |
 * |                                           | acked, gaveUp? }: who holds one    |                 |
 * |                                           | delivery                           |                 |
 * | ["group_member", userId, name, origin]    | { filters (with endpointIds of a   | groups.ts       |
 * |                                           | limited token), until } (60 s):    |                 |
 * |                                           | what an isolate's members take     |                 |
 * | ["readiness_probe", isolateId]            | time of /readyz's last KV check    | observe/health  |
 * |                                           | (60 s; at most one write a second) |                 |
 * | ["account_deletions", userId]             | DeletionMarker: an account being   | deletion.ts     |
 * |                                           | deleted (email, stripe ids, phase) |                 |
 * |                                           | until every key of it is gone      |                 |
 * | ["mail_outbox", mailId]                   | OutboxMail: the message sealed     | outbox.ts       |
 * |                                           | (secret_box), attempts, due, lease |                 |
 * | ["mail_rate", "address"|"account"|"all",  | number[]: times mails were queued  | outbox.ts       |
 * |   sha256(email)|userId|"all"]             | (1 hour; an address's outlives a   |                 |
 * |                                           | deleted account, so a new sign-up  |                 |
 * |                                           | with it starts no fresh hour)      |                 |
 * | ["mail_rate", "client", address]          | number[]: reset requests of one    | outbox.ts       |
 * |                                           | client address (1 hour)            |                 |
 * | ["mail_rate", "change", userId]           | number[]: change-of-address        | outbox.ts       |
 * |                                           | requests of one account (1 hour)   |                 |
 * | ["mail_tokens", sha256(token)]            | MailToken { kind, userId, email,   | mail_tokens.ts  |
 * |                                           | expiresAt }: a link's secret       |                 |
 * | ["mail_tokens_of_user", userId, kind]     | sha256(token): the one live link   | mail_tokens.ts  |
 * |                                           | of a kind (same commit, same TTL)  |                 |
 * | ["mail_notices", userId, name]            | sent at: a notice mailed once      | account_mail.ts |
 * |                                           | (quota-80-YYYY-MM, …) (62 days)    |                 |
 *
 * Secondary indexes hold ids only and are written in the same atomic commit as their record.
 * Events, chunks, day counters, flashes, login failures, sign-ups, group claims and members carry `expireIn`; readers still check
 * times themselves because KV deletes expired keys lazily.
 */

/**
 * Whether outside text (a slug or id from a URL) could name a record. No id or slug this store
 * makes is longer than 64 characters, and a much longer one makes a key KV refuses even to read
 * (over 2 KiB), so it is unknown without asking KV.
 */
export const mayNameRecord = (text: string) => text.length <= 64;

/** ["users", userId] */
export const userKey = (userId: string) => ["users", userId];
/** ["users_by_email", email] */
export const userByEmailKey = (email: string) => ["users_by_email", email];
/** ["sessions", hash] */
export const sessionKey = (hash: string) => ["sessions", hash];
/** ["sessions_of_user", userId, hash]: the index that ends every session of a user. */
export const sessionOfUserKey = (
  userId: string,
  hash: string,
) => ["sessions_of_user", userId, hash];
/** Prefix of one user's session index. */
export const sessionsOfUserPrefix = (userId: string) => ["sessions_of_user", userId];
/** ["tokens", userId, tokenId] */
export const tokenKey = (userId: string, tokenId: string) => ["tokens", userId, tokenId];
/** Prefix of one user's tokens. */
export const tokensOfUserPrefix = (userId: string) => ["tokens", userId];
/** ["token_count", userId, "all"]: what token creations check and raise in their commit. */
export const tokenCountKey = (userId: string) => ["token_count", userId, "all"];
/** ["tokens_by_hash", hash] */
export const tokenByHashKey = (hash: string) => ["tokens_by_hash", hash];
/** ["endpoints", userId, endpointId] */
export const endpointKey = (userId: string, endpointId: string) => [
  "endpoints",
  userId,
  endpointId,
];
/** Prefix of one user's endpoints. */
export const endpointsOfUserPrefix = (userId: string) => ["endpoints", userId];
/** ["endpoints_by_slug", slug] */
export const endpointBySlugKey = (slug: string) => ["endpoints_by_slug", slug];
/** ["events", userId, firstEventId]: a pack of consecutive events starting at that id. */
export const eventKey = (userId: string, eventId: string) => ["events", userId, eventId];
/** Prefix of one user's event log. */
export const eventsOfUserPrefix = (userId: string) => ["events", userId];
/** ["event_bodies", userId, blobId, n] */
export const eventBodyChunkKey = (userId: string, blobId: string, n: number) => [
  "event_bodies",
  userId,
  blobId,
  n,
];
/** Prefix of one large body's chunks. */
export const eventBodyPrefix = (userId: string, blobId: string) => ["event_bodies", userId, blobId];
/** ["event_head", userId] */
export const eventHeadKey = (userId: string) => ["event_head", userId];
/** ["usage_month", userId, "YYYY-MM"] */
export const usageMonthKey = (userId: string, month: string) => ["usage_month", userId, month];
/** ["usage_day", userId, "YYYY-MM-DD"] */
export const usageDayKey = (userId: string, day: string) => ["usage_day", userId, day];
/** ["flash", hash] */
export const flashKey = (sessionHash: string) => ["flash", sessionHash];
/** ["login_failures", kind, value]: recent failed log-ins of one email or one address. */
export const loginFailuresKey = (kind: "email" | "address", value: string) => [
  "login_failures",
  kind,
  value,
];
/** ["login_devices", hash]: a browser that logged in to an account (its device cookie). */
export const loginDeviceKey = (hash: string) => ["login_devices", hash];
/** ["signups", address]: recent sign-up attempts from one client address. */
export const signupsKey = (address: string) => ["signups", address];
/** ["usage_rejected_month", userId, "YYYY-MM"]: webhooks refused with 402 that month. */
export const usageRejectedMonthKey = (userId: string, month: string) => [
  "usage_rejected_month",
  userId,
  month,
];
/** ["usage_rejected_day", userId, "YYYY-MM-DD"]: webhooks refused with 402 that day. */
export const usageRejectedDayKey = (userId: string, day: string) => [
  "usage_rejected_day",
  userId,
  day,
];
/** Prefix of one user's daily accepted counters. */
export const usageDaysOfUserPrefix = (userId: string) => ["usage_day", userId];
/** Prefix of one user's daily rejected counters. */
export const usageRejectedDaysOfUserPrefix = (userId: string) => ["usage_rejected_day", userId];
/** ["invoices", userId, "YYYY-MM"] */
export const invoiceKey = (userId: string, period: string) => ["invoices", userId, period];
/** Prefix of one user's invoices. */
export const invoicesOfUserPrefix = (userId: string) => ["invoices", userId];
/** ["users_by_stripe_customer", customerId] */
export const userByStripeCustomerKey = (customerId: string) => [
  "users_by_stripe_customer",
  customerId,
];
/** ["stripe_events", eventId]: a Stripe event already applied (expires after 30 days). */
export const stripeEventKey = (eventId: string) => ["stripe_events", eventId];
/** ["stripe_usage_reported", userId, "YYYY-MM"]: webhooks reported to Stripe's meter. */
export const stripeReportedKey = (userId: string, month: string) => [
  "stripe_usage_reported",
  userId,
  month,
];
/** ["stripe_usage_pending", userId, "YYYY-MM"]: a meter batch sent but not yet confirmed. */
export const stripePendingKey = (userId: string, month: string) => [
  "stripe_usage_pending",
  userId,
  month,
];
/** ["deliveries", userId, eventId, connectionId] */
export const deliveryKey = (userId: string, eventId: string, connectionId: string) => [
  "deliveries",
  userId,
  eventId,
  connectionId,
];
/** Prefix of one event's acknowledgements. */
export const deliveriesOfEventPrefix = (userId: string, eventId: string) => [
  "deliveries",
  userId,
  eventId,
];
/** ["broker_messages", id]: one message for other instances (shared-KV transport). */
export const brokerMessageKey = (id: string) => ["broker_messages", id];
/** Prefix of the broker messages. */
export const brokerMessagesPrefix = () => ["broker_messages"];
/** ["broker_message_parts", id, n]: part n of a broker message too large for one KV value. */
export const brokerMessagePartKey = (id: string, n: number) => ["broker_message_parts", id, n];
/** Prefix of the parts of broker message `id`. */
export const brokerMessagePartsPrefix = (id: string) => ["broker_message_parts", id];
/** ["broker_head", "all"]: moved with every broker message so instances can watch one key. */
export const brokerHeadKey = () => ["broker_head", "all"];
/** ["group", userId, name]: a consumer group's durable progress. */
export const groupKey = (userId: string, name: string) => ["group", userId, name];
/** Prefix of one user's consumer groups. */
export const groupsOfUserPrefix = (userId: string) => ["group", userId];
/**
 * ["group_names", userId, "all"]: the names of the user's groups, written in the same commit as each
 * record it gains or loses, so the groups-per-account limit holds against joins side by side.
 */
export const groupNamesKey = (userId: string) => ["group_names", userId, "all"];
/** ["group_claim", userId, name, eventId]: the member holding an event's delivery attempt. */
export const groupClaimKey = (userId: string, name: string, eventId: string) => [
  "group_claim",
  userId,
  name,
  eventId,
];
/** Prefix of one group's claims. */
export const groupClaimsPrefix = (userId: string, name: string) => ["group_claim", userId, name];
/** ["group_member", userId, name, origin]: the filters of one isolate's members of a group. */
export const groupMembersKey = (userId: string, name: string, origin: string) => [
  "group_member",
  userId,
  name,
  origin,
];
/** Prefix of one group's member records, one per isolate. */
export const groupMembersPrefix = (userId: string, name: string) => ["group_member", userId, name];
/** ["readiness_probe", isolateId]: /readyz's write and read-back of KV, one key per isolate. */
export const readinessProbeKey = (isolateId: string) => ["readiness_probe", isolateId];
/** ["account_deletions", userId]: an account whose keys are still being deleted (deletion.ts). */
export const accountDeletionKey = (userId: string) => ["account_deletions", userId];
/** Prefix of every pending account deletion, read at start-up to resume them. */
export const accountDeletionsPrefix = () => ["account_deletions"];
/** Prefix of every login device record (login_guard.ts), swept for a deleted account's email. */
export const loginDevicesPrefix = () => ["login_devices"];

/**
 * Every prefix under which keys of one user live, keyed by that user's id: deleting an account
 * (accounts/deletion.ts) empties each one. A new per-user key family belongs here too (and a key
 * holding the user's email or id elsewhere in deletion.ts's `sweepAccount`), or its keys would
 * outlive the account; other modules' families can also be passed to the deletion as extras.
 * Invoices are not here: deletion.ts keeps the ones Stripe billed.
 */
export const userKeyPrefixes = (userId: string): Deno.KvKey[] => [
  sessionsOfUserPrefix(userId),
  tokensOfUserPrefix(userId),
  ["token_count", userId],
  endpointsOfUserPrefix(userId),
  eventsOfUserPrefix(userId),
  ["event_bodies", userId],
  ["usage_month", userId],
  usageDaysOfUserPrefix(userId),
  ["usage_rejected_month", userId],
  usageRejectedDaysOfUserPrefix(userId),
  ["deliveries", userId],
  groupsOfUserPrefix(userId),
  ["group_names", userId],
  ["group_claim", userId],
  ["group_member", userId],
  ["stripe_usage_reported", userId],
  ["stripe_usage_pending", userId],
];
/** ["mail_outbox", mailId]: a mail waiting to be sent (lib/mail/outbox.ts). */
export const mailOutboxKey = (mailId: string) => ["mail_outbox", mailId];
/** Prefix of the whole outbox. */
export const mailOutboxPrefix = () => ["mail_outbox"];
/**
 * ["mail_rate", kind, value]: when mails were queued for one address (by its SHA-256), one
 * account, or at all; or when one client network address asked for a reset ("client"), or one
 * account for a change of address ("change").
 */
export const mailRateKey = (
  kind: "address" | "account" | "all" | "client" | "change",
  value: string,
) => [
  "mail_rate",
  kind,
  value,
];
/** ["mail_tokens", hash]: a mailed link's secret, by its hash. */
export const mailTokenKey = (hash: string) => ["mail_tokens", hash];
/** ["mail_tokens_of_user", userId, kind]: the hash of the user's live link of that kind. */
export const mailTokenOfUserKey = (userId: string, kind: string) => [
  "mail_tokens_of_user",
  userId,
  kind,
];
/** Prefix of one user's live mailed links. */
export const mailTokensOfUserPrefix = (userId: string) => ["mail_tokens_of_user", userId];
/** ["mail_notices", userId, name]: a notice (quota-80-2026-12, …) already mailed. */
export const mailNoticeKey = (userId: string, name: string) => ["mail_notices", userId, name];
/** Prefix of one user's mailed notices. */
export const mailNoticesOfUserPrefix = (userId: string) => ["mail_notices", userId];
