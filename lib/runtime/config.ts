/**
 * Settings from the environment, validated once at startup.
 *
 * Every variable has a default so `deno task start` works with no setup; a bad value stops the
 * process with one line per problem naming the variable and what is wrong with it.
 */
import { z } from "zod";
import { decodeSecretsKey } from "../accounts/secret_box.ts";

const positiveInt = z.coerce.number().int().positive();
const nonNegativeInt = z.coerce.number().int().min(0);

const withoutSlash = (url: string) => url.replace(/\/+$/, "");
const appHost = (publicUrl: string | undefined, port: number) =>
  new URL(publicUrl ?? `http://localhost:${port}`).host;

const schema = z.object({
  PORT: nonNegativeInt.max(65535).default(8000),
  HOST: z.string().min(1).default("0.0.0.0"),
  KV_PATH: z.string().min(1).default("./data/websocks.kv"),
  PUBLIC_URL: z.url().optional(),
  INGEST_URL: z.url().optional(),
  SECRETS_KEY: z.string().refine((v) => decodeSecretsKey(v) !== null, {
    message: "must be base64 of 32 bytes (e.g. `openssl rand -base64 32`)",
  }).optional(),
  MAX_BODY_BYTES: positiveInt.default(25 * 1024 * 1024),
  STREAM_BODY_BYTES: positiveInt.default(1024 * 1024),
  // Twice this (a two-byte string) plus the rest of an event must fit one 64 KiB KV value.
  MAX_METADATA_BYTES: positiveInt.max(28 * 1024).default(16 * 1024),
  STORAGE_RESERVE_BYTES: nonNegativeInt.default(32 * 1024 * 1024),
  RETENTION_HOURS: z.coerce.number().positive().default(24),
  FREE_MONTHLY_LIMIT: nonNegativeInt.default(1000),
  INGEST_RATE_PER_SECOND: nonNegativeInt.default(1000),
  INGEST_RATE_BURST: positiveInt.default(10000),
  HEARTBEAT_SECONDS: z.coerce.number().positive().max(25).default(15),
  SLOW_CONSUMER_BYTES: positiveInt.default(4 * 1024 * 1024),
  CATCH_UP_BYTES: positiveInt.default(256 * 1024),
  CATCH_UP_READ_MB_PER_SECOND: z.coerce.number().nonnegative().default(32),
  MAX_CONNECTIONS_PER_TOKEN: nonNegativeInt.default(100),
  MAX_CONNECTIONS_PER_USER: nonNegativeInt.default(200),
  MAX_TOKENS_PER_ACCOUNT: nonNegativeInt.default(100),
  MAX_DOWNLOADS_PER_ACCOUNT: nonNegativeInt.default(4),
  MAX_DOWNLOADS: nonNegativeInt.default(64),
  DOWNLOAD_STALL_SECONDS: z.coerce.number().positive().default(15),
  WS_MESSAGES_PER_SECOND: positiveInt.default(20),
  WS_MESSAGES_BURST: positiveInt.default(50),
  WS_MAX_MESSAGE_BYTES: positiveInt.default(2 * 1024 * 1024),
  LARGE_SEND_BUDGET_MB: z.coerce.number().positive().default(128),
  WS_MAX_UNACKED: positiveInt.default(1000),
  ACKS_PER_SECOND: nonNegativeInt.default(20),
  ACKS_BURST: positiveInt.default(100),
  RESENDS_PER_SECOND: nonNegativeInt.default(5),
  RESENDS_BURST: positiveInt.default(20),
  SESSION_DAYS: z.coerce.number().positive().default(30),
  LOG_REQUESTS: z.enum(["0", "1"]).default("0"),
  LOGIN_FAILURES_PER_ACCOUNT: positiveInt.default(5),
  LOGIN_FAILURES_PER_ADDRESS: positiveInt.default(20),
  LOGIN_WINDOW_MINUTES: z.coerce.number().positive().default(15),
  LOGIN_DELAY_BASE_SECONDS: z.coerce.number().positive().default(1),
  LOGIN_DELAY_MAX_SECONDS: z.coerce.number().positive().default(300),
  SIGNUPS_PER_ADDRESS: positiveInt.default(20),
  SIGNUP_WINDOW_MINUTES: z.coerce.number().positive().default(60),
  PASSWORD_HASH_CONCURRENCY: positiveInt.default(
    Math.max(1, Math.floor((navigator.hardwareConcurrency ?? 2) / 2)),
  ),
  PASSWORD_HASH_QUEUE: nonNegativeInt.default(50),
  TRUST_PROXY: z.enum(["0", "1"]).default("0"),
  ISLANDS_DIR: z.string().min(1).optional(),
  STRIPE_SECRET_KEY: z.string().startsWith("sk_", "must be a Stripe secret key (sk_…)").optional(),
  STRIPE_WEBHOOK_SECRET: z.string().startsWith("whsec_", "must be a webhook secret (whsec_…)")
    .optional(),
  STRIPE_PRICE_ID: z.string().startsWith("price_", "must be a Stripe price id (price_…)")
    .optional(),
  STRIPE_METER_EVENT: z.string().min(1).default("websocks_webhooks"),
  STRIPE_API_URL: z.url().optional(),
  PAYMENT_GRACE_DAYS: z.coerce.number().min(0).default(7),
  WORKERS: positiveInt.max(256).default(navigator.hardwareConcurrency ?? 1),
  BROKER: z.enum(["process", "kv"], "must be process or kv").default("process"),
  BODY_IDLE_TIMEOUT_SECONDS: z.coerce.number().positive().default(10),
  BODY_TIMEOUT_SECONDS: z.coerce.number().positive().default(60),
  API_MAX_BODY_BYTES: positiveInt.default(64 * 1024),
  MAX_BUFFERED_BODY_MB: z.coerce.number().positive().default(256),
  MAX_BUFFERED_BODY_MB_PER_ADDRESS: z.coerce.number().positive().default(16),
  MAX_STAGING_MB: z.coerce.number().positive().default(2048),
  MAX_STAGING_MB_PER_ADDRESS: z.coerce.number().positive().default(512),
  MAX_REQUESTS_PER_ADDRESS: positiveInt.default(4096),
  MAX_REQUESTS: positiveInt.default(16384),
  MAX_REQUESTS_PER_ACCOUNT: positiveInt.default(2048),
  MAX_RESPOND_WAITS_PER_ACCOUNT: positiveInt.default(64),
  CAP_CHANGES_PER_MINUTE: positiveInt.default(10),
  GROUP_MAX_ATTEMPTS: positiveInt.max(1000).default(10),
  MAX_RSS_MB: nonNegativeInt.default(2048),
  MIN_FREE_FILES_PERCENT: z.coerce.number().min(0).max(90).default(10),
  // Operations (lib/observe): logs, metrics, health and the drain before shutdown.
  LOG_FORMAT: z.enum(["text", "json"], "must be text or json").default("text"),
  METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  SHUTDOWN_DRAIN_SECONDS: z.coerce.number().min(0).max(300).default(5),
  // Account lifecycle (issue 14: change password, delete account).
  DELETION_SETTLE_SECONDS: z.coerce.number().min(0).max(3600).default(60),
  // API description (issue 14): the tests check every answer against its declaration.
  API_RESPONSE_CHECK: z.enum(["0", "1"]).default("0"),
  // Mail (issue 14, lib/mail/): SMTP, sender, and how many mails anyone can make us send.
  SMTP_URL: z.url().refine((v) => /^smtps?:$/.test(new URL(v).protocol), {
    message: "must be smtp://user:pass@host:587 (STARTTLS when offered) or smtps://…:465",
  }).optional(),
  MAIL_FROM: z.string().min(3).max(200).optional(),
  // Each is a list of times in one KV value (64 KiB): 5,000 fit with room to spare.
  MAILS_PER_ADDRESS_PER_HOUR: positiveInt.max(5000).default(5),
  MAILS_PER_ACCOUNT_PER_HOUR: positiveInt.max(5000).default(10),
  MAILS_PER_HOUR: positiveInt.max(5000).default(1000),
  MAILS_PER_CLIENT_PER_HOUR: positiveInt.max(5000).default(20),
  MAIL_RETRY_BASE_SECONDS: z.coerce.number().positive().default(30),
  MAIL_GIVE_UP_HOURS: z.coerce.number().positive().default(48),
}).refine(
  (e) => !e.INGEST_URL || new URL(e.INGEST_URL).host !== appHost(e.PUBLIC_URL, e.PORT),
  {
    message: "must be on another host than PUBLIC_URL (it exists to keep answers off that origin)",
    path: ["INGEST_URL"],
  },
).refine(
  (e) => !e.STRIPE_SECRET_KEY || (e.STRIPE_WEBHOOK_SECRET && e.STRIPE_PRICE_ID),
  {
    message: "is set, so STRIPE_WEBHOOK_SECRET and STRIPE_PRICE_ID are needed too",
    path: ["STRIPE_SECRET_KEY"],
  },
);

/** Validated, typed settings used by every module. */
export interface Config {
  port: number;
  host: string;
  kvPath: string;
  /** Base URL users see, without a trailing slash; derived from the port when unset. */
  publicUrl: string;
  /**
   * Base URL of webhook endpoints (`/api/in/…`) when they live on a host of their own, without
   * a trailing slash; null serves them on `publicUrl`. Set, the app host refuses ingest paths
   * and this host (matched by the Host header) serves nothing else.
   */
  ingestUrl: string | null;
  /**
   * Base64 of the 32-byte key endpoints' signing secrets are sealed with; null: generated into
   * the data folder on first start (refused when PUBLIC_URL is https, see secret_box.ts).
   */
  secretsKey: string | null;
  /** Largest webhook body (413 above), whether read into memory or streamed into KV chunks. */
  maxBodyBytes: number;
  /**
   * Webhook bodies up to this size are read into memory whole; a larger one is streamed into KV
   * chunks as it arrives (from the first byte when its Content-Length says so, else once this
   * much has arrived), so memory per sender stays bounded whatever MAX_BODY_BYTES allows.
   */
  streamBodyBytes: number;
  /**
   * Bytes a webhook's path, headers and query may take together as stored (one byte per
   * character, two when the text needs more than Latin-1): they live inside the event's KV value.
   */
  maxMetadataBytes: number;
  /**
   * Disk held in a file next to a KV file and released when the disk fills, so the store can
   * still delete expired keys (Deno ends the process when it cannot); 0 holds none.
   */
  storageReserveBytes: number;
  retentionMs: number;
  freeMonthlyLimit: number;
  /** Sustained webhooks per second per endpoint; 0 turns the limiter off. */
  ingestRatePerSecond: number;
  ingestRateBurst: number;
  heartbeatMs: number;
  /** Bytes queued for one client beyond which it is closed as too slow (live and held back). */
  slowConsumerBytes: number;
  /** A catch-up stops reading the log while its client has this many bytes unread. */
  catchUpBytes: number;
  /** Bytes of the log one account's catch-ups, replays and groups read a second, per isolate; 0: any. */
  catchUpReadBytesPerSecond: number;
  /** Live connections (SSE and WebSocket) one token or session may hold; 0 for no limit. */
  maxConnectionsPerToken: number;
  /** Live connections one account may hold across its tokens and sessions; 0 for no limit. */
  maxConnectionsPerUser: number;
  /** API tokens one account may hold (they never expire); 0 for no limit. */
  maxTokensPerAccount: number;
  /** Downloads of large events one account may run at once, per isolate; 0 for no limit. */
  maxDownloadsPerAccount: number;
  /** Downloads of large events an isolate runs at once; 0 for no limit. */
  maxDownloads: number;
  /** A download of a large event its client leaves unread this long is ended. */
  downloadStallMs: number;
  /** Sustained messages per second a WebSocket client may send (acks of new events are free). */
  wsMessagesPerSecond: number;
  /** Messages a WebSocket client may send at once before the rate applies. */
  wsMessagesBurst: number;
  /** Largest message a WebSocket client may send; larger ones close the socket with 1009. */
  wsMaxMessageBytes: number;
  /**
   * Memory an isolate lends to building WebSocket messages of large events (bodies streamed in
   * over STREAM_BODY_BYTES): a message is sent whole, so each such send builds its envelope;
   * sends beyond the budget wait their turn.
   */
  largeSendBudgetBytes: number;
  /** Event ids a WebSocket connection remembers as sent and not yet acked or answered. */
  wsMaxUnacked: number;
  /** Acks recorded (KV writes) per second per account; 0 turns the limit off. */
  acksPerSecond: number;
  acksBurst: number;
  /**
   * Resends (POST /api/events/:id/resend) per second per account, each reaching all of its
   * connections; 0 turns the limit off.
   */
  resendsPerSecond: number;
  resendsBurst: number;
  sessionMs: number;
  logRequests: boolean;
  /**
   * Failed log-ins per email before each further attempt must wait a growing delay (never a
   * hard lock, so a stranger cannot lock the owner out; a successful log-in clears it).
   */
  loginFailuresPerAccount: number;
  /** Failed log-ins per client address within `loginWindowMs` before it is refused. */
  loginFailuresPerAddress: number;
  /** How long failures count: per address, and per account since its last failure. */
  loginWindowMs: number;
  /** The first delay past `loginFailuresPerAccount`; it doubles with each further failure. */
  loginDelayBaseMs: number;
  /** The most an account's delay grows to. */
  loginDelayMaxMs: number;
  /** Sign-ups (attempts that reach password hashing) per client address within the window. */
  signupsPerAddress: number;
  signupWindowMs: number;
  /** Passwords hashed at once per isolate (PBKDF2 takes a core for ~0.2 s); more wait. */
  passwordHashConcurrency: number;
  /** Password checks that may wait for a slot; beyond them the answer is 503. */
  passwordHashQueue: number;
  /** Take the client address from the last X-Forwarded-For entry (behind one proxy). */
  trustProxy: boolean;
  /** Island bundles prebuilt by `deno task build`; null builds them at start. */
  islandsDir: string | null;
  /** Stripe billing, or null when it is switched off (plans change with `deno task admin`). */
  stripe: StripeConfig | null;
  /** How long a Pro account keeps its limits after a failed payment. */
  paymentGraceMs: number;
  /** Isolates serving HTTP on the port; above 1 they run as Workers around one KV writer. */
  workers: number;
  /**
   * How events reach other isolates and instances: "process" within this process only
   * (BroadcastChannel between Workers), "kv" also to other instances sharing the KV store.
   */
  broker: "process" | "kv";
  /** A request body with no data for this long is refused with 408. */
  bodyIdleTimeoutMs: number;
  /** A request body not complete this long after its headers is refused with 408. */
  bodyTimeoutMs: number;
  /** Largest JSON or form body of the API and the pages (413 above). */
  apiMaxBodyBytes: number;
  /** Bytes all request bodies being received may hold together, per isolate (503 above). */
  maxBufferedBodyBytes: number;
  /**
   * The share of that one client address may hold (429 above), so a few hundred bodies held
   * open from one address cannot refuse every tenant's webhooks.
   */
  maxBufferedBodyBytesPerAddress: number;
  /**
   * Bytes of large bodies being streamed into storage at once, per isolate, and the share of
   * one client address: disk an outsider fills before anything is accepted (503, 429).
   */
  maxStagingBytes: number;
  maxStagingBytesPerAddress: number;
  /** Requests in progress from one client address, per isolate (429 above). */
  maxRequestsPerAddress: number;
  /** Requests in progress in total, per isolate (503 above). */
  maxRequests: number;
  /** Webhooks to one account's endpoints read in full and not yet answered, per isolate. */
  maxRequestsPerAccount: number;
  /** Respond-mode webhooks of one account waiting for an answer, per isolate (429 beyond). */
  maxRespondWaitsPerAccount: number;
  /**
   * Changes of one account's monthly cap a minute (429 beyond): each rewrites the account's
   * record, which every shared commit of its webhooks checks.
   */
  capChangesPerMinute: number;
  /** Deliveries of one event to a consumer group without an ack before it is given up. */
  groupMaxAttempts: number;
  /** Process RSS above which bodies and new streams get 503; 0 switches the check off. */
  maxRssBytes: number;
  /** Share of the open-files limit kept free: with less, bodies and new streams get 503. */
  minFreeFilesPercent: number;
  // Operations (lib/observe).
  /** "text" (readable lines) or "json" (one object per line: time, level, message, …). */
  logFormat: "text" | "json";
  /** Bearer token GET /metrics requires; null serves metrics to anyone who can reach it. */
  metricsToken: string | null;
  /**
   * On SIGTERM/SIGINT, how long /readyz answers 503 while the server still serves, so a load
   * balancer stops sending before live streams close.
   */
  shutdownDrainMs: number;
  // Account lifecycle (issue 14).
  /**
   * How long after an account's deletion its keys are swept a second time, for writes already
   * in flight when it went (lib/accounts/deletion.ts).
   */
  accountDeletionSettleMs: number;
  /** API description: answers are checked against routes/_api.ts (tests only; costs a copy). */
  apiResponseCheck: boolean;
  // Mail (issue 14, lib/mail/)
  /** nodemailer's SMTP URL; null prints each mail to the log instead (a local run). */
  smtpUrl: string | null;
  /** The From of every mail; defaults to `WebSocks <no-reply@host of PUBLIC_URL>`. */
  mailFrom: string;
  /**
   * Mails a visitor can cause (verification, reset, change of address) per recipient address,
   * per account, and in total, each per hour; beyond them none is queued (and the reset form
   * still answers the same, so it reveals nothing).
   */
  mailsPerAddressPerHour: number;
  mailsPerAccountPerHour: number;
  mailsPerHour: number;
  /**
   * Reset requests per client network address per hour (429 past it, whatever the address
   * asked for): without it one client could spend `mailsPerHour` and leave nobody a reset link.
   */
  mailsPerClientPerHour: number;
  /** The first retry of a failed send; each further one waits twice as long (at most 1 hour). */
  mailRetryBaseMs: number;
  /** A mail not sent within this long is dropped (and logged). */
  mailGiveUpMs: number;
}

/** Stripe settings; `apiUrl` points the client elsewhere (a local stand-in in tests). */
export interface StripeConfig {
  secretKey: string;
  webhookSecret: string;
  priceId: string;
  meterEventName: string;
  apiUrl: string | null;
}

/** Reads and validates settings, throwing an Error that lists every bad variable. */
export function loadConfig(env: Record<string, string | undefined> = Deno.env.toObject()): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join(".")}: ${issue.message}`);
    throw new Error(`Invalid configuration:\n${lines.join("\n")}`);
  }
  const e = parsed.data;
  const publicUrl = withoutSlash(e.PUBLIC_URL ?? `http://localhost:${e.PORT}`);
  return {
    port: e.PORT,
    host: e.HOST,
    kvPath: e.KV_PATH,
    publicUrl,
    ingestUrl: e.INGEST_URL ? withoutSlash(e.INGEST_URL) : null,
    secretsKey: e.SECRETS_KEY ?? null,
    maxBodyBytes: e.MAX_BODY_BYTES,
    streamBodyBytes: e.STREAM_BODY_BYTES,
    maxMetadataBytes: e.MAX_METADATA_BYTES,
    storageReserveBytes: e.STORAGE_RESERVE_BYTES,
    retentionMs: e.RETENTION_HOURS * 3600_000,
    freeMonthlyLimit: e.FREE_MONTHLY_LIMIT,
    ingestRatePerSecond: e.INGEST_RATE_PER_SECOND,
    ingestRateBurst: e.INGEST_RATE_BURST,
    heartbeatMs: e.HEARTBEAT_SECONDS * 1000,
    slowConsumerBytes: e.SLOW_CONSUMER_BYTES,
    catchUpBytes: e.CATCH_UP_BYTES,
    catchUpReadBytesPerSecond: Math.round(e.CATCH_UP_READ_MB_PER_SECOND * 2 ** 20),
    maxConnectionsPerToken: e.MAX_CONNECTIONS_PER_TOKEN,
    maxConnectionsPerUser: e.MAX_CONNECTIONS_PER_USER,
    maxTokensPerAccount: e.MAX_TOKENS_PER_ACCOUNT,
    maxDownloadsPerAccount: e.MAX_DOWNLOADS_PER_ACCOUNT,
    maxDownloads: e.MAX_DOWNLOADS,
    downloadStallMs: e.DOWNLOAD_STALL_SECONDS * 1000,
    wsMessagesPerSecond: e.WS_MESSAGES_PER_SECOND,
    wsMessagesBurst: e.WS_MESSAGES_BURST,
    wsMaxMessageBytes: e.WS_MAX_MESSAGE_BYTES,
    largeSendBudgetBytes: Math.round(e.LARGE_SEND_BUDGET_MB * 2 ** 20),
    wsMaxUnacked: e.WS_MAX_UNACKED,
    acksPerSecond: e.ACKS_PER_SECOND,
    acksBurst: e.ACKS_BURST,
    resendsPerSecond: e.RESENDS_PER_SECOND,
    resendsBurst: e.RESENDS_BURST,
    sessionMs: e.SESSION_DAYS * 86400_000,
    logRequests: e.LOG_REQUESTS === "1",
    loginFailuresPerAccount: e.LOGIN_FAILURES_PER_ACCOUNT,
    loginFailuresPerAddress: e.LOGIN_FAILURES_PER_ADDRESS,
    loginWindowMs: e.LOGIN_WINDOW_MINUTES * 60_000,
    loginDelayBaseMs: e.LOGIN_DELAY_BASE_SECONDS * 1000,
    loginDelayMaxMs: e.LOGIN_DELAY_MAX_SECONDS * 1000,
    signupsPerAddress: e.SIGNUPS_PER_ADDRESS,
    signupWindowMs: e.SIGNUP_WINDOW_MINUTES * 60_000,
    passwordHashConcurrency: e.PASSWORD_HASH_CONCURRENCY,
    passwordHashQueue: e.PASSWORD_HASH_QUEUE,
    trustProxy: e.TRUST_PROXY === "1",
    islandsDir: e.ISLANDS_DIR ?? null,
    stripe: e.STRIPE_SECRET_KEY
      ? {
        secretKey: e.STRIPE_SECRET_KEY,
        webhookSecret: e.STRIPE_WEBHOOK_SECRET!,
        priceId: e.STRIPE_PRICE_ID!,
        meterEventName: e.STRIPE_METER_EVENT,
        apiUrl: e.STRIPE_API_URL ?? null,
      }
      : null,
    paymentGraceMs: e.PAYMENT_GRACE_DAYS * 86400_000,
    workers: e.WORKERS,
    broker: e.BROKER,
    bodyIdleTimeoutMs: e.BODY_IDLE_TIMEOUT_SECONDS * 1000,
    bodyTimeoutMs: e.BODY_TIMEOUT_SECONDS * 1000,
    apiMaxBodyBytes: e.API_MAX_BODY_BYTES,
    maxBufferedBodyBytes: Math.round(e.MAX_BUFFERED_BODY_MB * 2 ** 20),
    maxBufferedBodyBytesPerAddress: Math.round(e.MAX_BUFFERED_BODY_MB_PER_ADDRESS * 2 ** 20),
    maxStagingBytes: Math.round(e.MAX_STAGING_MB * 2 ** 20),
    maxStagingBytesPerAddress: Math.round(e.MAX_STAGING_MB_PER_ADDRESS * 2 ** 20),
    maxRequestsPerAddress: e.MAX_REQUESTS_PER_ADDRESS,
    maxRequests: e.MAX_REQUESTS,
    maxRequestsPerAccount: e.MAX_REQUESTS_PER_ACCOUNT,
    maxRespondWaitsPerAccount: e.MAX_RESPOND_WAITS_PER_ACCOUNT,
    capChangesPerMinute: e.CAP_CHANGES_PER_MINUTE,
    groupMaxAttempts: e.GROUP_MAX_ATTEMPTS,
    maxRssBytes: e.MAX_RSS_MB * 2 ** 20,
    minFreeFilesPercent: e.MIN_FREE_FILES_PERCENT,
    // Operations (lib/observe).
    logFormat: e.LOG_FORMAT,
    metricsToken: e.METRICS_TOKEN ?? null,
    shutdownDrainMs: e.SHUTDOWN_DRAIN_SECONDS * 1000,
    // Account lifecycle (issue 14).
    accountDeletionSettleMs: e.DELETION_SETTLE_SECONDS * 1000,
    // API description (issue 14)
    apiResponseCheck: e.API_RESPONSE_CHECK === "1",
    // Mail (issue 14, lib/mail/)
    smtpUrl: e.SMTP_URL ?? null,
    mailFrom: e.MAIL_FROM ?? `WebSocks <no-reply@${new URL(publicUrl).hostname}>`,
    mailsPerAddressPerHour: e.MAILS_PER_ADDRESS_PER_HOUR,
    mailsPerAccountPerHour: e.MAILS_PER_ACCOUNT_PER_HOUR,
    mailsPerHour: e.MAILS_PER_HOUR,
    mailsPerClientPerHour: e.MAILS_PER_CLIENT_PER_HOUR,
    mailRetryBaseMs: e.MAIL_RETRY_BASE_SECONDS * 1000,
    mailGiveUpMs: e.MAIL_GIVE_UP_HOURS * 3600_000,
  };
}
