/**
 * `deno task forward`: relays webhooks from a WebSocks server to a local target, byte-exact,
 * in order, resuming after a restart. Flags win over environment variables. Exit codes: 0
 * stopped, 2 bad arguments, 3 token refused or revoked, 4 server unreachable at start.
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { runForwarder } from "./lib/forward/forwarder.ts";
import { DEFAULTS, EXIT, type ForwardOptions } from "./lib/forward/options.ts";
import { parseRoute } from "./lib/forward/routes.ts";
import { defaultStateFile } from "./lib/forward/state.ts";

const USAGE = `usage: deno task forward --url http://localhost:8000 --token wsk_… \\
         --target http://localhost:3000/webhooks [--endpoint=<slug>]… [--event <pattern>]… \\
         [--route '<pattern>=http://…']… [--state <file>]
  --endpoint, --event: only those endpoints / event types (e.g. 'invoice.*'), filtered by the server
  --route: an event goes to the first route whose pattern matches its type, else to --target,
           else it is skipped; at least one of --target and --route is needed
  --state: where the resume point is kept; by default $XDG_STATE_HOME/websocks/ (else
           ~/.local/state/websocks/), one file per server, endpoints and events
  also from WEBSOCKS_URL, WEBSOCKS_TOKEN, WEBSOCKS_TARGET, WEBSOCKS_ENDPOINT, WEBSOCKS_STATE
  tuning: --attempts 6 --retry-base-ms 500 --retry-max-ms 30000`;

/** Values of one repeatable filter flag: like the server's limits, so it never refuses them. */
const filterValues = (flag: string) =>
  z.array(
    z.string().min(1, `${flag} must not be empty`).max(200, `${flag} is over 200 characters`),
  ).max(20, `at most 20 ${flag} flags`);

const httpUrl = (what: string) =>
  z.string({ error: `${what} is required` }).min(1, `${what} is required`).refine((value) => {
    try {
      return ["http:", "https:"].includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, `${what} must be an http:// or https:// URL`);

const count = (what: string, min: number) =>
  z.coerce.number({ error: `${what} must be a number` }).int(`${what} must be a whole number`)
    .min(min, `${what} must be at least ${min}`);

const optionsSchema = z.object({
  url: httpUrl("--url (or WEBSOCKS_URL)"),
  token: z.string({ error: "--token (or WEBSOCKS_TOKEN) is required" })
    .min(1, "--token (or WEBSOCKS_TOKEN) is required"),
  target: httpUrl("--target (or WEBSOCKS_TARGET)").optional(),
  endpoints: filterValues("--endpoint"),
  events: filterValues("--event"),
  routes: z.array(
    z.string().transform((text, context) => {
      const route = parseRoute(text);
      if (route === null) {
        context.addIssue({
          code: "custom",
          message: `--route "${text}" must be '<pattern>=<http:// or https:// URL>'`,
        });
        return z.NEVER;
      }
      return route;
    }).pipe(z.object({
      pattern: z.string().max(200, "a --route pattern is over 200 characters"),
      target: httpUrl("a --route target"),
    })),
  ),
  stateFile: z.string().min(1).optional(),
  attempts: count("--attempts", 1),
  retryBaseMs: count("--retry-base-ms", 0),
  retryMaxMs: count("--retry-max-ms", 0),
});

/** Parses argv plus environment into options, or a message saying what is wrong. */
export function parseOptions(
  args: string[],
  env: Record<string, string | undefined>,
): { ok: true; options: ForwardOptions } | { ok: false; message: string } {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      options: {
        url: { type: "string" },
        token: { type: "string" },
        target: { type: "string" },
        endpoint: { type: "string", multiple: true },
        event: { type: "string", multiple: true },
        route: { type: "string", multiple: true },
        state: { type: "string" },
        attempts: { type: "string" },
        "retry-base-ms": { type: "string" },
        "retry-max-ms": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (error) {
    return { ok: false, message: error instanceof Error ? error.message : String(error) };
  }
  if (values.help) return { ok: false, message: "" };
  const parsed = optionsSchema.safeParse({
    url: values.url ?? env.WEBSOCKS_URL,
    token: values.token ?? env.WEBSOCKS_TOKEN,
    target: values.target ?? (env.WEBSOCKS_TARGET || undefined),
    endpoints: values.endpoint ?? (env.WEBSOCKS_ENDPOINT ? [env.WEBSOCKS_ENDPOINT] : []),
    events: values.event ?? [],
    routes: values.route ?? [],
    stateFile: values.state ?? (env.WEBSOCKS_STATE || undefined),
    attempts: values.attempts ?? DEFAULTS.attempts,
    retryBaseMs: values["retry-base-ms"] ?? DEFAULTS.retryBaseMs,
    retryMaxMs: values["retry-max-ms"] ?? DEFAULTS.retryMaxMs,
  });
  if (!parsed.success) return { ok: false, message: parsed.error.issues[0].message };
  const { stateFile, ...data } = parsed.data;
  if (!data.target && data.routes.length === 0) {
    return { ok: false, message: "--target (or WEBSOCKS_TARGET) or a --route is required" };
  }
  const file = stateFile ?? defaultStateFile(
    { url: data.url, endpoints: data.endpoints, events: data.events },
    env,
  );
  if (file === null) {
    return {
      ok: false,
      message: "no place for the state file: set XDG_STATE_HOME or HOME, or give --state",
    };
  }
  return {
    ok: true,
    options: {
      ...data,
      stateFile: file,
      heartbeatTimeoutMs: DEFAULTS.heartbeatTimeoutMs,
      requestTimeoutMs: DEFAULTS.requestTimeoutMs,
    },
  };
}

if (import.meta.main) {
  const parsed = parseOptions(Deno.args, Deno.env.toObject());
  if (!parsed.ok) {
    if (parsed.message) console.error("error: %s", parsed.message);
    console.error(USAGE);
    Deno.exit(parsed.message ? EXIT.badArguments : EXIT.ok);
  }
  const controller = new AbortController();
  const stop = () => controller.abort(new Error("stopped"));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const code = await runForwarder(parsed.options, controller.signal);
  // Exit explicitly: a socket still closing must not keep the process (and a script) waiting.
  Deno.exit(code);
}
