/**
 * The JSON shapes of the API besides the envelope (see envelope.ts): one definition each, a zod
 * schema with the type inferred from it. The server sends them, the islands read the types, and
 * the OpenAPI document (lib/api/) and the test-only response check use the schemas. Pure, so
 * browser-safe; a bundle that imports only the types leaves the schemas and zod out.
 */
import { z } from "zod";

/** The plans a user can be on. */
export const PLANS = ["free", "pro"] as const;

/** What a token may do: read events (streams, history) and manage the account. */
export const SCOPES = ["events:read", "manage"] as const;

let built: Wire | null = null;

/**
 * The wire's schemas, by name, built at the first call: only the OpenAPI document and the
 * test-only response check (routes/_api.ts, imported when first needed) use them, and building
 * them took every start ~9 ms. A bundle that needs only the types drops them and zod with them
 * (tests/envelope_test.ts checks the inspector's bundle).
 */
export function wireSchemas(): Wire {
  return built ??= buildWireSchemas();
}

function buildWireSchemas() {
  const time = () => z.string().describe("ISO 8601 time");
  const transport = z.enum(["sse", "ws"]);
  const plan = z.enum(PLANS);

  const error = z.looseObject({
    error: z.string().describe("What failed and why, for people"),
  }).describe("Every error answer: a message, sometimes with details (e.g. `retryAfterSeconds`)");

  const clientInfo = z.object({
    id: z.string(),
    transport,
    connectedAt: time(),
    lastSeenAt: time(),
    lastEventId: z.string().nullable(),
    group: z.string().optional().describe(
      "The consumer group it is a member of; absent for broadcast clients",
    ),
    inFlight: z.string().nullable().optional().describe(
      "A group member's event sent and not yet acked, or null",
    ),
  }).describe("A connected client");

  const delivery = z.object({
    connectionId: z.string(),
    transport,
    status: z.number().int().nullable().describe(
      "The status the client reports (e.g. its local target's HTTP status), or null",
    ),
    at: time(),
  }).describe("One client's acknowledgement of one event");

  const verified = z.union([
    z.object({ provider: z.string(), ok: z.literal(true) }),
    z.object({ provider: z.string(), ok: z.literal(false), reason: z.string() }),
  ]);

  const eventSummary = z.object({
    id: z.string(),
    endpoint: z.string(),
    receivedAt: time(),
    method: z.string(),
    path: z.string(),
    contentType: z.string().nullable(),
    size: z.number().int().min(0),
    eventType: z.string().nullable().describe(
      "The provider's name for the event (e.g. `invoice.paid`, `issues.opened`), or null",
    ),
    verified: verified.optional().describe(
      "The provider check's verdict, when the endpoint names a provider",
    ),
    handshake: z.boolean().optional().describe(
      "A provider's URL handshake, answered by the relay itself",
    ),
  }).describe("A retained event in history lists");

  const publicEndpoint = z.object({
    id: z.string().describe("Stays the same when the slug is rotated"),
    slug: z.string(),
    name: z.string(),
    createdAt: time(),
    url: z.string().describe("Where senders post"),
    respond: z.boolean(),
    respondTimeoutSeconds: z.number().describe(
      "How long a sender waits in respond mode before 504",
    ),
    provider: z.string().nullable().describe(
      "Whose signatures webhooks are checked against, or null",
    ),
    secretLast4: z.string().nullable().describe(
      "The signing secret's last 4 characters; the secret itself is never shown after it is set",
    ),
    verifyTokenSet: z.boolean().describe("A verify token (Meta's URL handshake) is set"),
    enforce: z.boolean().describe(
      "A webhook whose signature does not verify is refused with 401 rather than marked",
    ),
  }).describe("An endpoint");

  const publicUser = z.object({
    id: z.string(),
    email: z.string(),
    plan,
    monthlyLimit: z.number().nullable().describe("The enforced monthly limit; null: unlimited"),
    emailVerified: z.boolean().describe("Whether a mailed link proved the address (Pro needs it)"),
    createdAt: time(),
  }).describe("A user");

  const publicToken = z.object({
    id: z.string(),
    name: z.string(),
    prefix: z.string().describe("The value's first characters, to recognise it"),
    createdAt: time(),
    lastUsedAt: time().nullable(),
    scopes: z.array(z.enum(SCOPES)),
    endpoints: z.array(z.string()).nullable().describe(
      "The slugs of the endpoints it is limited to that still exist; null: every endpoint",
    ),
  }).describe("An API token (never its value, except once when created)");

  const billingView = z.object({
    plan,
    monthlyCap: z.number().nullable().describe("The cap the user set; null when they set none"),
    monthlyLimit: z.number().nullable().describe("The limit enforced this month (null: unlimited)"),
    planAllowance: z.number().nullable().describe(
      "What the plan allows (Free's allowance; null on Pro)",
    ),
    used: z.number(),
    resetsAt: time(),
    pricePerWebhookUsd: z.number(),
    costSoFarUsd: z.number(),
    projectedCostUsd: z.number().describe("Cost at this month's pace"),
    capUsd: z.number().nullable().describe("The cap in dollars, when there is a cap on Pro"),
  }).describe("A user's plan and month");

  const dailyUsage = z.object({
    day: z.string().describe("YYYY-MM-DD"),
    accepted: z.number().int(),
    rejected: z.number().int(),
  });

  const usageReport = z.object({
    month: z.string().describe("YYYY-MM"),
    used: z.number().int(),
    rejected: z.number().int(),
    daily: z.array(dailyUsage).describe("Every day of the month so far"),
  });

  const publicInvoice = z.object({
    period: z.string().describe("YYYY-MM"),
    plan,
    acceptedRequests: z.number().int(),
    freeAllowance: z.number().describe("Webhooks the plan includes at no charge"),
    unitPriceUsd: z.number(),
    amountUsd: z.number(),
    status: z.enum(["paid", "due"]),
    createdAt: time(),
  }).describe("A monthly invoice");

  const groupSummary = z.object({
    name: z.string(),
    createdAt: time(),
    cursor: z.string().nullable(),
    lag: z.number().int().describe("Retained events after the cursor, counted up to a cap"),
    lagCapped: z.boolean(),
    unacked: z.number().int().describe(
      "Events handed to a member and not acked, counted among the first claims after the cursor",
    ),
    unackedCapped: z.boolean().describe("Not every claim was read, so more may be unacked"),
    members: z.array(z.object({
      id: z.string(),
      transport,
      connectedAt: time(),
      inFlight: z.string().nullable(),
    })),
  }).describe("A consumer group");

  return {
    error,
    clientInfo,
    delivery,
    eventSummary,
    publicEndpoint,
    publicUser,
    publicToken,
    billingView,
    dailyUsage,
    usageReport,
    publicInvoice,
    groupSummary,
  };
}

type Wire = ReturnType<typeof buildWireSchemas>;

/** An error answer: `{"error": message}`, sometimes with details. */
export type ErrorBody = z.infer<Wire["error"]>;
/** A connected client, as GET /api/clients lists it and the dashboard shows it. */
export type ClientInfo = z.infer<Wire["clientInfo"]>;
/** One client's acknowledgement of one event, as GET /api/events/:id/deliveries lists it. */
export type Delivery = z.infer<Wire["delivery"]>;
/** A retained event in history lists, as GET /api/events pages them. */
export type EventSummary = z.infer<Wire["eventSummary"]>;
/** An endpoint as every API response shows it (see publicEndpoint); without the owner's id. */
export type PublicEndpoint = z.infer<Wire["publicEndpoint"]>;
/** A user as the API shows it. */
export type PublicUser = z.infer<Wire["publicUser"]>;
/** A token as the API shows it (never the hash): its scopes, its endpoints' current slugs. */
export type PublicToken = z.infer<Wire["publicToken"]>;
/** What a user sees of their plan and month. */
export type BillingView = z.infer<Wire["billingView"]>;
/** Accepted and refused webhooks of one day. */
export type DailyUsage = z.infer<Wire["dailyUsage"]>;
/** A user's month as the usage page and /api/usage show it. */
export type UsageReport = z.infer<Wire["usageReport"]>;
/** An invoice as the API shows it to its owner: without the owner's id. */
export type PublicInvoice = z.infer<Wire["publicInvoice"]>;
/** One consumer group as GET /api/groups describes it. */
export type GroupSummary = z.infer<Wire["groupSummary"]>;
