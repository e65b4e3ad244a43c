/** Starting and stopping one WebSocks server: services, HTTP listener and graceful shutdown. */
import type { Config } from "../runtime/config.ts";
import { CLOSE } from "../fanout/connections.ts";
import { limitPasswordHashing } from "../accounts/passwords.ts";
import { createLoadGuard, type LoadStats, requestAddress } from "./load_guard.ts";
import { createServices, type ServiceOptions, type Services } from "../runtime/services.ts";
import { configureLog, log } from "../observe/log.ts";
import { withRequestIds } from "../observe/requests.ts";
import { startEventLoopMonitor } from "../observe/metrics.ts";

/** A running server. */
export interface RunningServer {
  /** Base URL it listens on, e.g. http://127.0.0.1:8000 */
  url: string;
  services: Services;
  /** What the load guard holds now: requests and bodies in progress, pressure (load_guard.ts). */
  load(): LoadStats;
  /**
   * Turns /readyz 503 and waits SHUTDOWN_DRAIN_SECONDS while still serving, so a load balancer
   * stops sending first; once per server (shutdown runs it if nobody did).
   */
  drain(): Promise<void>;
  /** Drains, stops accepting, closes live streams so clients reconnect elsewhere, closes KV. */
  shutdown(): Promise<void>;
}

/** Longest pause between attempts to listen again after the listener failed. */
const RELISTEN_MAX_DELAY_MS = 2000;
/** Failed attempts to listen again (about 3 s) before the failed servers are aborted. */
const RELISTEN_ABORT_AFTER = 6;

/** A request handler, as Deno.serve takes it. */
export type Handler = (
  request: Request,
  info: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

/**
 * Builds the request handler for one set of services. The entry point passes the routes' one
 * (routes/_app.ts): lib/ serves whatever it is given and never imports the web layers.
 */
export type HandlerFactory = (services: Services) => Handler;

/**
 * Deno.serve that outlives its accept loop. Measured with Deno 2.9: with descriptors exhausted
 * Deno.serve's `finished` rejects with "Too many open files", its listener is gone, and left
 * alone the rejection ends the process; the connections it held, idle ones included, stay
 * open. So on failure the failed server is shut down gracefully, which closes at once the
 * connections without a request in progress (idle and slowloris ones, measured: all of them
 * within 10 ms) while requests in progress, streams and WebSockets go on; then the port is
 * listened on again with backoff. Only if listening keeps failing are the old servers aborted,
 * which closes every connection they hold.
 */
function serveSupervised(
  options: { port: number; hostname: string; reusePort: boolean },
  handler: Handler,
): { addr: Deno.NetAddr; shutdown(): Promise<void> } {
  let stopping = false;
  let current: Deno.HttpServer<Deno.NetAddr>;
  /** Failed servers still finishing their requests, and how to end them at once. */
  const draining = new Map<Deno.HttpServer<Deno.NetAddr>, AbortController>();
  const listen = (port: number) => {
    const abort = new AbortController();
    const server = Deno.serve(
      { ...options, port, signal: abort.signal, onListen: () => {} },
      handler,
    );
    current = server;
    server.finished.then(() => failed(null), failed);
    function failed(error: unknown) {
      if (stopping || current !== server) return;
      // The port actually bound: with port 0 a new listener would pick another one.
      const bound = server.addr.port;
      log.warn(
        `Accepting connections on port ${bound} failed (${
          error instanceof Error ? error.message : "the listener closed"
        }); closing idle connections and listening again`,
      );
      draining.set(server, abort);
      server.shutdown().catch(() => {}).finally(() => draining.delete(server));
      relisten(bound);
    }
  };
  const relisten = async (port: number) => {
    let delay = 50;
    for (let attempt = 1; !stopping; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (stopping) return;
      try {
        listen(port);
        log.warn(`Listening on port ${port} again`);
        return;
      } catch {
        // Still out of descriptors: what is in progress holds them. After a few tries end it.
        if (attempt === RELISTEN_ABORT_AFTER) {
          log.warn(`Still out of descriptors: closing every connection of port ${port}`);
          for (const abort of draining.values()) abort.abort();
        }
        delay = Math.min(delay * 2, RELISTEN_MAX_DELAY_MS);
      }
    }
  };
  listen(options.port);
  return {
    addr: current!.addr,
    async shutdown() {
      stopping = true;
      await Promise.all([current.shutdown(), ...[...draining.keys()].map((s) => s.shutdown())]);
    },
  };
}

/**
 * Starts a server for `config` (port 0 picks a free port) answering with the handler that
 * `createHandler` builds. With `reusePort`, several isolates listen on one port and the kernel
 * spreads connections between them.
 */
export async function startServer(
  config: Config,
  createHandler: HandlerFactory,
  options: ServiceOptions & { reusePort?: boolean; isolate?: string } = {},
): Promise<RunningServer> {
  configureLog({ format: config.logFormat, isolate: options.isolate });
  limitPasswordHashing({
    concurrency: config.passwordHashConcurrency,
    queue: config.passwordHashQueue,
  });
  const services = await createServices(config, options);
  const handler = createHandler(services);
  const guard = createLoadGuard(config);
  const { isolate } = options;
  const stopMonitor = startEventLoopMonitor();
  const server = serveSupervised(
    { port: config.port, hostname: config.host, reusePort: options.reusePort ?? false },
    // The guard admits inside the id wrapper, so its refusals carry a request id too.
    withRequestIds(
      isolate === undefined ? handler : async (request, info) => {
        // Which isolate answered: operators read it in logs, tests use it to cross isolates.
        const response = await handler(request, info);
        response.headers.set("X-WebSocks-Isolate", isolate);
        return response;
      },
      {
        trustProxy: config.trustProxy,
        logRequests: config.logRequests,
        admit: (request, info) =>
          guard.admit(request, requestAddress(request, info, config.trustProxy)),
      },
    ),
  );
  const addr = server.addr;
  const host = addr.hostname === "0.0.0.0" ? "localhost" : addr.hostname;
  let stopping: Promise<void> | null = null;
  let draining: Promise<void> | null = null;
  const drain = () => {
    draining ??= (async () => {
      services.readiness.shuttingDown = true;
      if (config.shutdownDrainMs > 0) {
        await new Promise((resolve) => setTimeout(resolve, config.shutdownDrainMs));
      }
    })();
    return draining;
  };
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${addr.port}`,
    services,
    load: () => guard.stats(),
    drain,
    shutdown() {
      stopping ??= (async () => {
        await drain();
        stopMonitor();
        const drained = server.shutdown();
        services.connections.closeAll(CLOSE.shutdown);
        await drained;
        guard.close();
        await services.close();
      })();
      return stopping;
    },
  };
}
