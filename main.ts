/** WebSocks entry point: `deno task start`. */
import { loadConfig } from "./lib/config.ts";
import { startServer } from "./lib/server.ts";

let config;
try {
  config = loadConfig();
} catch (error) {
  console.error((error as Error).message);
  Deno.exit(1);
}

const server = await startServer(config);
console.log(
  `WebSocks listening on ${server.url} (public URL ${config.publicUrl}, KV ${config.kvPath})`,
);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    console.log(`${signal}: closing streams and shutting down`);
    await server.shutdown();
    Deno.exit(0);
  });
}
