/**
 * Local administration for a server without Stripe: `deno task admin set-plan <email> <free|pro>`.
 * It works on the KV named by KV_PATH, like the server, and may run while the server does.
 */
import { setPlan } from "./lib/billing/plans.ts";
import { loadConfig } from "./lib/runtime/config.ts";
import { HttpError } from "./lib/http/http_error.ts";
import { openKv } from "./lib/store/kv.ts";

const USAGE = "usage: deno task admin set-plan <email> <free|pro>";

const [command, email, plan] = Deno.args;
if (command !== "set-plan" || !email || (plan !== "free" && plan !== "pro")) {
  console.error(USAGE);
  Deno.exit(2);
}
const config = loadConfig();
const kv = await openKv(config.kvPath);
try {
  const user = await setPlan(kv, { email, plan, freeAllowance: config.freeMonthlyLimit });
  const limit = user.monthlyLimit === null ? "unlimited" : `${user.monthlyLimit} a month`;
  console.log("%s is now on %s: %s", user.email, user.plan, limit);
} catch (error) {
  if (error instanceof HttpError) console.error("%s", error.message);
  else console.error(error);
  Deno.exit(error instanceof HttpError && error.status === 404 ? 1 : 3);
} finally {
  kv.close();
}
