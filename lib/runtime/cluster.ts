/**
 * Every core of one machine: the main isolate and `WORKERS − 1` Deno Workers serve HTTP on one
 * port with `reusePort`, and the main isolate is the process's one KV writer for webhooks.
 *
 * Why one writer: measured on this machine (bench/kv_isolates.ts), two KV handles on one SQLite
 * file commit no faster together than one alone (SQLite has one write lock) and spend their time
 * on "database is locked" retries. So Workers forward each webhook here over postMessage; the
 * group commit, the quota and the flood limit stay in one place, exactly as with one isolate.
 */
import { broadcastTransport, toWire, type Transport, type WireMessage } from "../fanout/broker.ts";
import type { Config } from "./config.ts";
import type { IncomingWebhook, Ingest, IngestResult, Refusal } from "../intake/group_commit.ts";
import { gatherPerTurn } from "./per_turn.ts";
import type { Endpoint } from "../endpoints/endpoints.ts";
import { type IslandModules, writeBundles } from "../web/bundles.ts";
import { HttpError } from "../http/http_error.ts";
import { type HandlerFactory, type RunningServer, startServer } from "../http/server.ts";
import { type IsolateMetrics, isolateMetrics, setMetricsGatherer } from "../observe/metrics.ts";

/** Messages from the main isolate to a Worker. */
export type ToWorker =
  | {
    type: "start";
    config: Config;
    processId: string;
    channel: string;
    peers: number;
    index: number;
  }
  | { type: "submitted"; outcomes: SubmitOutcome[] }
  /** The answer to one `admit` (a large body asking in before it is staged). */
  | { type: "admitted"; outcome: AdmitOutcome }
  /** A message the main isolate published (committed events, quota notices). */
  | { type: "broker"; message: WireMessage }
  /** Shutdown begins: /readyz turns 503 while the Worker still serves (SHUTDOWN_DRAIN_SECONDS). */
  | { type: "drain" }
  /** The main isolate gathers a scrape: send this isolate's metrics. */
  | { type: "metrics"; seq: number }
  /** The whole process's metrics, for a scrape the Worker is answering. */
  | { type: "gathered"; seq: number; metrics: IsolateMetrics[] }
  | { type: "shutdown" };

/** What became of one forwarded webhook. */
export type SubmitOutcome = { seq: number; result: IngestResult } | FailedOutcome;

/** What the main isolate said to one large body asking in. */
export type AdmitOutcome = { seq: number; refusal: Refusal | null } | FailedOutcome;

/**
 * An ingest call that threw, as it crosses to the Worker: `status` and `headers` when the error
 * was an HttpError, so it stays one across isolates.
 */
export type FailedOutcome = {
  seq: number;
  error: string;
  status?: number;
  headers?: Record<string, string>;
};

/** The error of call `seq`, as it crosses to the Worker. */
function failedOutcome(seq: number, error: unknown): FailedOutcome {
  return error instanceof HttpError
    ? { seq, error: error.message, status: error.status, headers: error.headers }
    : { seq, error: (error as Error).message };
}

/** Messages from a Worker to the main isolate. */
export type FromWorker =
  | { type: "ready" }
  | { type: "listening" }
  | { type: "failed"; message: string }
  | { type: "submit"; webhooks: SubmittedWebhook[] }
  /** A large body asks in before it is staged (the flood limit and quota live here). */
  | { type: "admit"; seq: number; endpoint: Endpoint }
  | { type: "stopped" }
  /** This Worker's metrics, answering `metrics` with the same seq. */
  | { type: "metrics"; seq: number; metrics: IsolateMetrics }
  /** A scrape reached this Worker: gather every isolate's metrics for it. */
  | { type: "gather"; seq: number }
  /** The Worker holds connections of `userId` (or no longer): send it that user's events. */
  | { type: "follow" | "unfollow"; userId: string };

const STOP_TIMEOUT_MS = 10_000;
/** A Worker that does not send its metrics within this long is left out of the scrape. */
const METRICS_TIMEOUT_MS = 2_000;

/** A webhook a Worker hands over, numbered so that its outcome finds its way back. */
export interface SubmittedWebhook {
  seq: number;
  webhook: IncomingWebhook;
}

/**
 * The main isolate's side of the hand-off: submits a Worker's webhooks and answers each one as
 * soon as it is settled, the outcomes of one turn of the event loop in one message (a message
 * wakes the other thread, and wake-ups are what postMessage costs under load). Not one answer
 * per batch: a webhook must not wait for the commits of others handed over with it, one
 * account's flood among them.
 */
export function submitRelay(
  ingest: Pick<Ingest, "submit">,
  post: (message: ToWorker) => void,
): (webhooks: SubmittedWebhook[]) => void {
  const answer = gatherPerTurn<SubmitOutcome>((outcomes) => post({ type: "submitted", outcomes }));
  return (webhooks) => {
    for (const { seq, webhook } of webhooks) {
      ingest.submit(webhook).then(
        (result) => answer({ seq, result }),
        (error) => answer(failedOutcome(seq, error)),
      );
    }
  };
}

/** Picks a free port for all Workers to share when the configuration asks for port 0. */
function freePort(hostname: string): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function nextMessage(worker: Worker, types: FromWorker["type"][]): Promise<FromWorker> {
  return new Promise((resolve, reject) => {
    const onMessage = (event: MessageEvent<FromWorker>) => {
      if (!types.includes(event.data.type)) return;
      cleanup();
      resolve(event.data);
    };
    const onError = (event: ErrorEvent) => {
      event.preventDefault();
      cleanup();
      reject(new Error(`worker failed: ${event.message}`));
    };
    const cleanup = () => {
      worker.removeEventListener("message", onMessage);
      worker.removeEventListener("error", onError);
    };
    worker.addEventListener("message", onMessage);
    worker.addEventListener("error", onError);
  });
}

/**
 * What this isolate publishes (committed events, quota notices) goes to each Worker over its
 * own port, in order. Not over BroadcastChannel: Deno hands every BroadcastChannel message to
 * every isolate, the sender's too, and measured here a Worker receives 15k such messages/s
 * against 150k/s over its port; with events on BroadcastChannel the cluster accepted 8.3k
 * webhooks/s, with ports 13.5k (bench/RESULTS.md). What Workers publish goes over the
 * BroadcastChannel, to each other and to this isolate.
 */
function toWorkers(workers: Worker[], following: Map<Worker, Map<string, number>>): Transport {
  return {
    send(message) {
      let wire: ToWorker | null = null;
      for (const worker of workers) {
        // Events only where the user has connections: most users are connected to one isolate.
        if (message.kind === "events" && !following.get(worker)?.has(message.userId)) continue;
        wire ??= { type: "broker", message: toWire(message) };
        worker.postMessage(wire);
      }
    },
    start() {},
    peers: () => 0,
    close() {},
  };
}

/**
 * What the entry point plugs in: the routes' handler, the islands to prebuild, and the module
 * each Worker runs, which must call cluster_worker.ts's `serveInWorker` with the same handler.
 */
export interface ClusterParts {
  createHandler: HandlerFactory;
  islands: IslandModules;
  workerModule: URL;
}

/** Serves on this isolate and `config.workers − 1` Workers; returns once all of them listen. */
export async function startCluster(config: Config, parts: ClusterParts): Promise<RunningServer> {
  const processId = crypto.randomUUID();
  const channel = `websocks:${processId}`;
  const peers = config.workers - 1; // every other serving isolate answers questions
  let bundlesDir: string | null = null;
  if (!config.islandsDir) {
    // Build the island bundles once for all Workers instead of once in each.
    bundlesDir = await Deno.makeTempDir({ prefix: "websocks-islands-" });
    writeBundles(bundlesDir, parts.islands);
  }
  const workerConfig: Config = {
    ...config,
    port: config.port === 0 ? freePort(config.host) : config.port,
    islandsDir: config.islandsDir ?? bundlesDir,
  };
  const ports: Worker[] = [];
  const following = new Map<Worker, Map<string, number>>();
  // This isolate serves too, commits for all, and reaches the Workers over their ports; it
  // only listens on the BroadcastChannel, where the Workers publish to each other and to it.
  const server = await startServer(workerConfig, parts.createHandler, {
    reusePort: true,
    isolate: "0",
    processId,
    transports: [
      toWorkers(ports, following),
      broadcastTransport({ channel, peers, receiveOnly: true }),
    ],
  });
  const { services } = server;

  const workers = Array.from(
    { length: config.workers - 1 },
    () => new Worker(parts.workerModule, { type: "module" }),
  );
  // Listen for "ready" from the start: a Worker may load before we get to wait for it.
  const ready = workers.map((worker) => nextMessage(worker, ["ready"]));
  ready.forEach((promise) => promise.catch(() => {})); // surfaces when start awaits it
  // One scrape shows the process: this isolate asks each Worker for its metrics and adds up.
  let metricsSeq = 0;
  const metricsWaiters = new Map<number, (metrics: IsolateMetrics) => void>();
  const askMetrics = (worker: Worker) =>
    new Promise<IsolateMetrics | null>((resolve) => {
      const seq = ++metricsSeq;
      const timer = setTimeout(() => {
        metricsWaiters.delete(seq);
        resolve(null);
      }, METRICS_TIMEOUT_MS);
      metricsWaiters.set(seq, (metrics) => {
        clearTimeout(timer);
        metricsWaiters.delete(seq);
        resolve(metrics);
      });
      worker.postMessage({ type: "metrics", seq } as ToWorker);
    });
  const gatherAll = async (): Promise<IsolateMetrics[]> => {
    const all = await Promise.all([isolateMetrics(), ...workers.map(askMetrics)]);
    return all.filter((metrics) => metrics !== null);
  };
  setMetricsGatherer(gatherAll);
  for (const worker of workers) {
    const relay = submitRelay(services.ingest, (answer) => worker.postMessage(answer));
    worker.addEventListener("message", (event: MessageEvent<FromWorker>) => {
      const message = event.data;
      if (message.type === "follow" || message.type === "unfollow") {
        return follow(worker, message);
      }
      if (message.type === "metrics") return metricsWaiters.get(message.seq)?.(message.metrics);
      if (message.type === "gather") {
        const { seq } = message;
        gatherAll().then((metrics) =>
          worker.postMessage({ type: "gathered", seq, metrics } as ToWorker)
        );
        return;
      }
      if (message.type === "admit") {
        const { seq } = message;
        services.ingest.admit(message.endpoint).then(
          (refusal): AdmitOutcome => ({ seq, refusal }),
          (error): AdmitOutcome => failedOutcome(seq, error),
        ).then((outcome) => worker.postMessage({ type: "admitted", outcome } as ToWorker));
        return;
      }
      if (message.type !== "submit") return;
      relay(message.webhooks);
    });
  }
  function follow(worker: Worker, message: { type: "follow" | "unfollow"; userId: string }) {
    let users = following.get(worker);
    if (!users) following.set(worker, users = new Map());
    const count = (users.get(message.userId) ?? 0) + (message.type === "follow" ? 1 : -1);
    if (count > 0) users.set(message.userId, count);
    else users.delete(message.userId);
  }
  ports.push(...workers);
  const url = server.url;
  try {
    const started = workers.map(async (worker, i) => {
      const index = i + 1;
      await ready[i];
      const listening = nextMessage(worker, ["listening", "failed"]);
      const start: ToWorker = {
        type: "start",
        config: workerConfig,
        processId,
        channel,
        peers,
        index,
      };
      worker.postMessage(start);
      return await listening;
    });
    for (const message of await Promise.all(started)) {
      if (message.type === "failed") throw new Error(message.message);
    }
  } catch (error) {
    workers.forEach((worker) => worker.terminate());
    await server.shutdown();
    throw error;
  }

  let stopping: Promise<void> | null = null;
  const drain = async () => {
    // Every isolate turns not-ready at once, then all wait the same drain together.
    for (const worker of workers) worker.postMessage({ type: "drain" } as ToWorker);
    await server.drain();
  };
  return {
    url,
    services,
    // The main isolate's guard; each Worker's holds its own connections.
    load: server.load,
    drain,
    shutdown() {
      stopping ??= (async () => {
        await drain();
        setMetricsGatherer(null);
        await Promise.all(workers.map(async (worker) => {
          const stopped = nextMessage(worker, ["stopped"]).catch(() => {});
          worker.postMessage({ type: "shutdown" });
          await Promise.race([stopped, new Promise((r) => setTimeout(r, STOP_TIMEOUT_MS))]);
          worker.terminate();
        }));
        await server.shutdown();
        if (bundlesDir) await Deno.remove(bundlesDir, { recursive: true }).catch(() => {});
      })();
      return stopping;
    },
  };
}
