/** The Hono environment every route shares, and what it says about the caller's connection. */
import type { Context } from "hono";
import type { Auth } from "../lib/accounts/auth.ts";
import { requestAddress } from "../lib/http/load_guard.ts";
import type { Services } from "../lib/runtime/services.ts";

/** Hono environment: Deno's connection info as `c.env`, and per-request variables. */
export type AppEnv = {
  Bindings: Partial<Deno.ServeHandlerInfo>;
  Variables: {
    services: Services;
    auth: Auth;
    /** Who is looking at a page: set by the page routes, null when logged out. */
    viewer: Auth | null;
  };
};

/** The client's IP address, as the load guard sees it (requestAddress). */
export function clientAddress(c: Context<AppEnv>): string {
  return requestAddress(c.req.raw, c.env, c.get("services").config.trustProxy);
}
