/** Starting and stopping one WebSocks server: services, HTTP listener and graceful shutdown. */
import type { Config } from "./config.ts";
import { CLOSE } from "./connections.ts";
import { limitPasswordHashing } from "./passwords.ts";
import { createServices, type ServiceOptions, type Services } from "./services.ts";
import { createHandler } from "../routes/_app.ts";

/** A running server. */
export interface RunningServer {
  /** Base URL it listens on, e.g. http://127.0.0.1:8000 */
  url: string;
  services: Services;
  /** Stops accepting, closes live streams so clients reconnect elsewhere, then closes KV. */
  shutdown(): Promise<void>;
}

/**
 * Starts a server for `config` (port 0 picks a free port). With `reusePort`, several isolates
 * listen on one port and the kernel spreads connections between them.
 */
export async function startServer(
  config: Config,
  options: ServiceOptions & { reusePort?: boolean; isolate?: string } = {},
): Promise<RunningServer> {
  limitPasswordHashing({
    concurrency: config.passwordHashConcurrency,
    queue: config.passwordHashQueue,
  });
  const services = await createServices(config, options);
  const handler = createHandler(services);
  const { isolate } = options;
  const server = Deno.serve(
    {
      port: config.port,
      hostname: config.host,
      reusePort: options.reusePort ?? false,
      onListen: () => {},
    },
    isolate === undefined ? handler : async (request, info) => {
      // Which isolate answered: operators read it in logs, tests use it to cross isolates.
      const response = await handler(request, info);
      response.headers.set("X-WebSocks-Isolate", isolate);
      return response;
    },
  );
  const addr = server.addr as Deno.NetAddr;
  const host = addr.hostname === "0.0.0.0" ? "localhost" : addr.hostname;
  let stopping: Promise<void> | null = null;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${addr.port}`,
    services,
    shutdown() {
      stopping ??= (async () => {
        const drained = server.shutdown();
        services.connections.closeAll(CLOSE.shutdown);
        await drained;
        await services.close();
      })();
      return stopping;
    },
  };
}
