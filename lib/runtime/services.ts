/** Everything a request handler needs, built once per server so tests can run several. */
import { createSendBudget } from "../fanout/send_budget.ts";
import { type Broker, createBroker, type Transport } from "../fanout/broker.ts";
import { kvTransport } from "../fanout/broker_kv.ts";
import { createPresence, type Presence } from "../fanout/presence.ts";
import { createGroups, type Groups } from "../fanout/groups.ts";
import { createResender, type Resender } from "../fanout/resend.ts";
import type { Config } from "./config.ts";
import { type Connections, createConnections } from "../fanout/connections.ts";
import { createEndpointCache, type EndpointCache } from "../endpoints/endpoints.ts";
import { createIngest, type Ingest } from "../intake/group_commit.ts";
import { openKv } from "../store/kv.ts";
import { loadSecretsKey } from "../accounts/secret_box.ts";
import { createRateLimiter, type RateLimiter } from "../intake/rate_limit.ts";
import { type AccountShares, createAccountShares } from "../intake/account_share.ts";
import type Stripe from "stripe";
import { createStripe } from "../billing/stripe.ts";
import { createResponses, type Responses } from "../fanout/respond_waiters.ts";
import { recordAck } from "../log/acks.ts";
import { createRejectionCounter, type RejectionCounter } from "../billing/usage.ts";
import { startStorageGuard } from "../store/storage_guard.ts";
import type { ClientLimits, ClientReplies } from "../fanout/websocket.ts";
import { createReadiness, type Readiness } from "../observe/health.ts";
import { log } from "../observe/log.ts";
import { createDeletions, type Deletions } from "../accounts/deletion.ts";
import { createMailer, type Mailer } from "../mail/mailer.ts";
import { deleteMailDataOf, notifyQuota } from "../mail/account_mail.ts";
import { countMail } from "../observe/metrics.ts";
import { createDownloadGuard, type DownloadGuard } from "../http/download_guard.ts";

/** The process-wide parts of one WebSocks server. */
export interface Services {
  config: Config;
  kv: Deno.Kv;
  broker: Broker;
  connections: Connections;
  ingest: Ingest;
  endpoints: EndpointCache;
  /** The Stripe client, or null when Stripe is switched off. */
  stripe: Stripe | null;
  /** Senders in respond mode waiting for a client's answer. */
  responses: Responses;
  /** What one account's senders may hold of this isolate (lib/intake/account_share.ts). */
  accountShares: AccountShares;
  /** Monthly cap changes per account (CAP_CHANGES_PER_MINUTE), as setMonthlyCap takes them. */
  capChanges: { limiter: RateLimiter; perMinute: number };
  /** Refused webhooks of this isolate, counted in memory and written once a second. */
  rejections: RejectionCounter;
  /** Where WebSocket clients' acks and answers go. */
  clientReplies: ClientReplies;
  /** What WebSocket clients may send: message rate and size, acks per account. */
  clientLimits: ClientLimits;
  /** The user's connected clients in every isolate and instance. */
  presence: Presence;
  /** Consumer groups: their dispatchers here, acks, and their state for the API. */
  groups: Groups;
  /** Resends stored events on request, at RESENDS_PER_SECOND per account. */
  resender: Resender;
  /** Slots for downloads of large events (MAX_DOWNLOADS_PER_ACCOUNT, MAX_DOWNLOADS). */
  downloads: DownloadGuard;
  /** The key endpoints' signing secrets are sealed with (see secret_box.ts). */
  secretsKey: CryptoKey;
  /** What /readyz reports; shutdown marks it first (lib/observe/health.ts). */
  readiness: Readiness;
  /** Account deletions: the first commit, then the sweep of the rest (resumed at start-up). */
  deletions: Deletions;
  /** Mail: queued in KV's outbox, sent by the isolate that commits (lib/mail/). */
  mail: Mailer;
  /** Stops timers and listeners and closes KV. */
  close(): Promise<void>;
}

/** How a server fits into a larger whole; a lone server needs none of it. */
export interface ServiceOptions {
  /** Replaces the clock of the quota window, so tests can cross a month's end. */
  now?: () => Date;
  /** Names this process in the shared-KV mailbox (all isolates of a process share it). */
  processId?: string;
  /** Transports to the other isolates of this process (BroadcastChannel). */
  transports?: Transport[];
  /** Commits happen elsewhere (the process's KV writer); this isolate forwards to it. */
  ingest?: Ingest;
}

/**
 * Opens KV and wires the services. No KV queue is used: see ingest.ts for why publishing
 * needs no durable job, and a queue's thread would end the process when the disk fills.
 */
export async function createServices(
  config: Config,
  options: ServiceOptions = {},
): Promise<Services> {
  const kv = await openKv(config.kvPath);
  let secretsKey: CryptoKey;
  let stripe: Stripe | null;
  try {
    secretsKey = await loadSecretsKey(config);
    stripe = config.stripe ? await createStripe(config.stripe) : null;
  } catch (error) {
    kv.close();
    throw error;
  }
  // Where webhooks are committed, free space is watched so a full disk is an answer (503).
  const storage = options.ingest ? null : await startStorageGuard({
    kvPath: config.kvPath,
    reserveBytes: config.storageReserveBytes,
  });
  const transports = [...(options.transports ?? [])];
  if (config.broker === "kv") {
    transports.push(kvTransport(kv, { processId: options.processId ?? crypto.randomUUID() }));
  }
  const broker = createBroker({ transports });
  const connections = createConnections(kv, {
    broker,
    heartbeatMs: config.heartbeatMs,
    slowConsumerBytes: config.slowConsumerBytes,
    catchUpBytes: config.catchUpBytes,
    catchUpReadBytesPerSecond: config.catchUpReadBytesPerSecond,
    maxPerCredential: config.maxConnectionsPerToken,
    maxPerUser: config.maxConnectionsPerUser,
    maxUnacked: config.wsMaxUnacked,
  });
  const rejections = createRejectionCounter(kv);
  // The isolate that commits webhooks also sends mail; Workers only queue it.
  const mail = createMailer(kv, {
    config,
    secretsKey,
    send: !options.ingest,
    now: options.now,
    onResult: countMail,
  });
  const ingest = options.ingest ??
    createIngest(kv, {
      broker,
      retentionMs: config.retentionMs,
      now: options.now,
      storage: storage ?? undefined,
      rejections,
      limiter: createRateLimiter({
        perSecond: config.ingestRatePerSecond,
        burst: config.ingestRateBurst,
      }),
      onQuotaLevel: (crossing) => {
        notifyQuota({ kv, broker, mail, config }, crossing).catch((error) =>
          log.error("queueing the quota mail failed", error)
        );
      },
    });
  const endpoints = createEndpointCache(kv);
  const responses = createResponses({ broker });
  const presence = createPresence({ broker, connections });
  const groups = createGroups(kv, {
    broker,
    connections,
    retentionMs: config.retentionMs,
    maxAttempts: config.groupMaxAttempts,
  });
  const deletions = createDeletions(kv, {
    broker,
    settleMs: config.accountDeletionSettleMs,
    meterEventName: config.stripe?.meterEventName ?? "",
    freeAllowance: config.freeMonthlyLimit,
    // Mail keys of a user live outside kv_keys.ts `userKeyPrefixes` (links, outbox, counters).
    extraCleanup: (account) => deleteMailDataOf(kv, account),
  });
  // The isolate that commits resumes deletions a previous process left unfinished.
  if (!options.ingest) {
    deletions.resume().catch((error) => log.error("resuming account deletions failed", error));
  }
  const unsubscribe = broker.subscribe((message) => {
    if (message.kind === "endpoint_changed") endpoints.invalidate(message.slug);
  });
  return {
    config,
    kv,
    broker,
    connections,
    ingest,
    endpoints,
    stripe,
    responses,
    accountShares: createAccountShares(config),
    capChanges: {
      limiter: createRateLimiter({
        perSecond: config.capChangesPerMinute / 60,
        burst: config.capChangesPerMinute,
      }),
      perMinute: config.capChangesPerMinute,
    },
    rejections,
    presence,
    groups,
    secretsKey,
    readiness: createReadiness(),
    deletions,
    mail,
    resender: createResender({
      kv,
      broker,
      presence,
      limiter: createRateLimiter({
        perSecond: config.resendsPerSecond,
        burst: config.resendsBurst,
      }),
      perSecond: config.resendsPerSecond,
    }),
    downloads: createDownloadGuard({
      perAccount: config.maxDownloadsPerAccount,
      total: config.maxDownloads,
      stallMs: config.downloadStallMs,
      pace: connections.paceRead,
    }),
    clientLimits: {
      messagesPerSecond: config.wsMessagesPerSecond,
      messagesBurst: config.wsMessagesBurst,
      maxMessageBytes: config.wsMaxMessageBytes,
      acksPerSecond: config.acksPerSecond,
      acks: createRateLimiter({ perSecond: config.acksPerSecond, burst: config.acksBurst }),
      largeSends: createSendBudget(config.largeSendBudgetBytes),
    },
    clientReplies: {
      responses,
      ack: async ({ connection, eventId, status }) => {
        // A group member's ack settles the group's claim first: refused, it records nothing.
        if (connection.group) {
          await groups.ack({
            userId: connection.userId,
            name: connection.group.name,
            connectionId: connection.id,
            eventId,
          });
        }
        await recordAck(kv, {
          userId: connection.userId,
          eventId,
          retentionMs: config.retentionMs,
          delivery: {
            connectionId: connection.id,
            transport: connection.transport,
            status,
            at: new Date().toISOString(),
          },
        });
      },
    },
    async close() {
      await deletions.stop();
      connections.stop();
      await groups.stop();
      presence.stop();
      responses.stop();
      unsubscribe();
      broker.close();
      await rejections.close();
      await mail.close();
      await storage?.stop();
      kv.close();
    },
  };
}
