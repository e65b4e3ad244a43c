/**
 * WebSocks entry point: `deno task start`. It is also the module every cluster Worker runs
 * (lib/runtime/cluster.ts starts them): there it serves with the same routes and nothing else.
 * Here, the only place that sees both, the routes and islands are plugged into lib/.
 */
import { type Config, loadConfig } from "./lib/runtime/config.ts";
import { type RunningServer, startServer } from "./lib/http/server.ts";
import { startCluster } from "./lib/runtime/cluster.ts";
import {
  cronUnavailable,
  detectPlatform,
  isolatesFor,
  type Platform,
} from "./lib/runtime/platform.ts";
import { bundlesStaleness } from "./lib/web/bundles.ts";
import { pathOf } from "./lib/runtime/paths.ts";
import { serveInWorker } from "./lib/runtime/cluster_worker.ts";
import { generateInvoices, previousMonth } from "./lib/billing/invoices.ts";
import { endExpiredGrace, reportUsage } from "./lib/billing/stripe.ts";
import { createHandler } from "./routes/_app.ts";
import { notifyInvoice } from "./lib/mail/account_mail.ts";
import { ISLAND_MODULES } from "./islands/_registry.ts";
import { configureLog, log } from "./lib/observe/log.ts";
import { noteCron } from "./lib/observe/health.ts";

if ("WorkerGlobalScope" in globalThis) serveInWorker(createHandler);
else await main();

/** Loads the configuration, starts one isolate or the cluster, then the scheduled jobs. */
async function main(): Promise<void> {
  // Signal handlers before anything starts: a SIGTERM while the isolates start (Workers take a
  // while) waits for them to be up, then shuts them down and exits 0 like any other stop.
  let starting: Promise<RunningServer> | null = null;
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      if (stopping) return;
      stopping = true;
      // /readyz answers 503 from now; streams close after SHUTDOWN_DRAIN_SECONDS.
      log.info(`${signal}: closing streams and shutting down after the drain`);
      const running = await starting?.catch(() => null);
      await running?.shutdown();
      Deno.exit(0);
    });
  }

  // Before the configuration is validated, so even its error line is JSON when asked for.
  if (Deno.env.get("LOG_FORMAT") === "json") configureLog({ format: "json" });
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    log.error((error as Error).message);
    Deno.exit(1);
  }
  configureLog({ format: config.logFormat });

  // Platform APIs not stable in every supported Deno (2.5 LTS on): fewer isolates, not a crash.
  const platform = detectPlatform();
  const isolates = isolatesFor(config.workers, platform);
  if (isolates.warning) log.warn(isolates.warning);
  config = { ...config, workers: isolates.workers, islandsDir: islandsDir(config) };

  log.info(`WebSocks starting ${config.workers} isolate${config.workers > 1 ? "s" : ""}`);
  // One isolate per core: Workers serve HTTP on a shared port, this isolate commits webhooks.
  starting = config.workers > 1
    ? startCluster(config, {
      createHandler,
      islands: ISLAND_MODULES,
      workerModule: new URL(import.meta.url),
    })
    : startServer(config, createHandler);
  let server: RunningServer;
  try {
    server = await starting;
  } catch (error) {
    // A refusal to start (e.g. SECRETS_KEY missing for an https PUBLIC_URL): one clear line.
    log.error((error as Error).message);
    Deno.exit(1);
  }
  // Stopping already: the signal handler shuts the server down; schedule nothing more.
  if (!stopping) afterStart(server, config, platform);
}

/**
 * The prebuilt island bundles to serve: ISLANDS_DIR, else dist/islands when `deno task build`
 * (which `deno task start` runs when needed) wrote it from the sources as they are; else null,
 * and the server runs `deno bundle` itself (`deno task dev` after an edit).
 */
function islandsDir(config: Config): string | null {
  // Where `deno task build` writes them by default (build.ts).
  const dir = config.islandsDir ?? pathOf(new URL("./dist/islands", import.meta.url));
  const stale = bundlesStaleness(dir, ISLAND_MODULES);
  if (config.islandsDir) {
    // Asked for: served as they are (a missing bundle still stops the start, in bundles.ts).
    if (stale) log.warn(`island bundles may be out of date: ${stale}; run deno task build`);
    return config.islandsDir;
  }
  if (!stale) return dir;
  log.info(
    `building island bundles with deno bundle (${stale}); deno task build prebuilds them`,
  );
  return null;
}

/** The start-up line, and the jobs that run on a schedule. */
function afterStart(server: RunningServer, config: Config, platform: Platform): void {
  log.info(
    `WebSocks listening on ${server.url} (public URL ${config.publicUrl}, KV ${config.kvPath}, ` +
      `${config.workers} isolate${config.workers > 1 ? "s" : ""}, broker ${config.broker})`,
  );
  if (config.metricsToken === null && config.publicUrl.startsWith("https:")) {
    log.warn("GET /metrics is open to anyone who reaches the port: set METRICS_TOKEN");
  }

  /**
   * Registers a cron job where the platform has Deno.cron; where it does not, the server still
   * serves and says what will not run on its own.
   */
  function cron(name: string, schedule: string, job: () => Promise<void>): void {
    // No Deno.cron on this platform (or runtime): /readyz reports it as unavailable.
    const unavailable = cronUnavailable(platform);
    if (unavailable) return log.warn(`cron "${name}" not scheduled: ${unavailable}`);
    try {
      Deno.cron(name, schedule, job);
      noteCron(name, null);
    } catch (error) {
      log.warn(`cron "${name}" not scheduled: ${(error as Error).message}`);
      noteCron(name, (error as Error).message);
    }
  }

  // Invoices for the month that just closed: at 01:00 UTC on the 1st, and once now in case the
  // server was down then. Writing an invoice twice changes nothing.
  const closeMonth = async () => {
    const period = previousMonth(new Date());
    const created = await generateInvoices(server.services.kv, {
      period,
      freeAllowance: config.freeMonthlyLimit,
      onInvoice: (invoice, user) =>
        notifyInvoice(server.services, {
          user,
          period,
          amountUsd: invoice.amountUsd,
          accepted: invoice.acceptedRequests,
        }),
    });
    if (created > 0) log.info(`invoices for ${period}: ${created} written`);
  };
  cron("monthly invoices", "0 1 1 * *", closeMonth);
  closeMonth().catch((error) => log.error("writing invoices failed", error));

  // Stripe: usage to the Billing Meter every five minutes; grace periods ended after failed
  // payments fall back to Free limits hourly.
  const { stripe } = server.services;
  if (stripe && config.stripe) {
    const meterEventName = config.stripe.meterEventName;
    cron("report usage to Stripe", "*/5 * * * *", async () => {
      await reportUsage(server.services.kv, { stripe, meterEventName });
    });
  }
  cron("end payment grace periods", "17 * * * *", async () => {
    await endExpiredGrace(server.services.kv, { freeAllowance: config.freeMonthlyLimit });
  });
}
