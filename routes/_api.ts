/**
 * The API's description: one declaration per route (method, path, the zod schemas its request
 * is parsed with, its answers by status). GET /api/openapi.json and /docs/api are built from it,
 * tests/openapi_test.ts fails when a `/api` route of the app has no declaration here, and with
 * API_RESPONSE_CHECK=1 (the tests) every answer is checked against its declaration.
 *
 * Adding a route: export the schema the route parses with from its file, and add one entry to
 * API_ROUTES below (the group of its file), with each status it answers besides the generic
 * errors (an undeclared 4xx/5xx must still be `{"error": …}`).
 */
import { z } from "zod";
import {
  type ApiMethod,
  type ApiResponse,
  type ApiRoute,
  openApiDocument,
} from "../lib/api/openapi.ts";
import { checkedResponse } from "../lib/api/response_check.ts";
import type { Handler } from "../lib/http/server.ts";
import { wireSchemas } from "../lib/shared/wire.ts";
import { webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import { wsClientMessageSchema } from "../lib/fanout/websocket.ts";
import { filterFields } from "../lib/fanout/filters.ts";
import { ACK_TIMEOUT_SECONDS } from "../lib/fanout/groups.ts";
import { credentials, loginBody } from "./auth.ts";
import { emailChangeBody, forgotBody, resetBody, tokenBody } from "./mail.ts";
import { accountDeletionBody, passwordChangeBody } from "./account_settings.tsx";
import { createTokenBody } from "./tokens.ts";
import { capBody } from "./billing.ts";
import { createEndpointBody, endpointSettingsBody } from "./endpoints.ts";
import { historyQuery } from "./events.ts";
import { ackBody } from "./groups.ts";
import { INGEST_METHODS } from "./ingest.ts";

const wire = wireSchemas();

/** An error answer with this meaning. */
const error = (description: string): ApiResponse => ({ description, schema: wire.error });

const ok = z.literal(true);
const message = z.object({ message: z.string() });
const tokenWithValue = wire.publicToken.extend({
  value: z.string().describe("The token itself: shown this once, never again"),
});

const BAD_BODY = error("The body is not JSON, or a field is wrong (the message names it)");
const UNAUTHORIZED = error("No valid token or session");
const FORBIDDEN = error("The token lacks the scope, or a cookie request came from another site");
const TOO_LARGE = error("The body is larger than API_MAX_BODY_BYTES");

/** The query of both stream transports (SSE and WebSocket). */
const streamQuery = z.object({
  token: z.string().optional().describe("An API token, for clients that cannot set headers"),
  lastEventId: z.string().optional().describe(
    "Resume after this event id (SSE clients may send the `Last-Event-ID` header instead)",
  ),
  endpoint: filterFields.endpoint.describe("Only these endpoints' events (slugs; repeatable)"),
  event: filterFields.event.describe(
    "Only events whose `eventType` matches one of these patterns (`*` any run: `invoice.*`)",
  ),
  method: filterFields.method.describe("Only webhooks sent with these methods (repeatable)"),
  path: filterFields.path.describe(
    "Only webhooks whose path after the slug starts with one of these (`/github`)",
  ),
  group: z.string().optional().describe(
    "Join this consumer group: each event goes to one member, which acks it",
  ),
  ackTimeoutSeconds: z.coerce.number().int().min(ACK_TIMEOUT_SECONDS.min)
    .max(ACK_TIMEOUT_SECONDS.max).optional().describe(
      `A group member's time to ack before the event goes to another (default ${ACK_TIMEOUT_SECONDS.default})`,
    ),
});

const ingestRoutes: ApiRoute[] = INGEST_METHODS.map((method) => ({
  method: method.toLowerCase() as ApiRoute["method"],
  path: "/api/in/:slug",
  tag: "Ingest",
  summary: `Receive a webhook (${method})`,
  description: "Where senders deliver webhooks; any path below the slug too " +
    "(`/api/in/{slug}/github/push`), kept as the event's `path`. In respond mode the answer " +
    "is the connected client's (status, headers, body), or 504 when none answers in time.",
  auth: "none",
  params: { slug: "The endpoint's slug" },
  responses: {
    200: {
      description: "Stored and delivered; quota headers (`X-Quota-*`) tell the month's use",
      schema: z.object({ ok, id: z.string().describe("The event's id") }),
    },
    400: error("A JSON content type (or none) with a body that does not parse"),
    401: error("The endpoint enforces its provider's signature and this one does not verify"),
    402: error("The account's monthly quota is used up (refused webhooks are not counted)"),
    404: error("No endpoint has this slug (also after a rotate or delete)"),
    405: error("The method is not one of " + INGEST_METHODS.join(", ")),
    408: error("The body stalled or took too long to arrive"),
    413: error("The body is larger than MAX_BODY_BYTES"),
    414: error("Path, headers and query together are over MAX_METADATA_BYTES"),
    429: error(
      "The endpoint is flooded, or one address or account has too many requests in progress " +
        "(in respond mode, waiting for an answer); see `Retry-After`",
    ),
    431: error("The headers alone are over MAX_METADATA_BYTES"),
    503: error("Storage unavailable or the server short of memory; retry after `Retry-After`"),
    504: error("Respond mode: no client answered in time"),
  },
}));

/** Every route the API serves, by group. */
export const API_ROUTES: readonly ApiRoute[] = [
  // routes/auth.ts
  {
    method: "post",
    path: "/api/auth/signup",
    tag: "Account",
    summary: "Sign up",
    description: "Creates the account, its first endpoint and a first token (value shown once), " +
      "and starts a session (cookie).",
    auth: "none",
    body: credentials,
    responses: {
      201: {
        description: "The account, its first endpoint and token",
        schema: z.object({
          user: wire.publicUser,
          endpoint: wire.publicEndpoint,
          token: tokenWithValue,
        }),
      },
      400: BAD_BODY,
      403: error("The request came from another site"),
      409: error("An account with this email exists"),
      413: TOO_LARGE,
      429: error("Too many sign-ups from this address; try again later"),
    },
  },
  {
    method: "post",
    path: "/api/auth/login",
    tag: "Account",
    summary: "Log in",
    description: "Starts a session (cookie). Repeated failures are slowed down and limited.",
    auth: "none",
    body: loginBody,
    responses: {
      200: { description: "Logged in", schema: z.object({ user: wire.publicUser }) },
      400: BAD_BODY,
      401: error("Wrong email or password"),
      403: error("The request came from another site"),
      413: TOO_LARGE,
      429: error("Too many failed log-ins; try again later"),
    },
  },
  {
    method: "post",
    path: "/api/auth/logout",
    tag: "Account",
    summary: "Log out",
    auth: "none",
    responses: {
      200: { description: "The session ended", schema: z.object({ ok }) },
      403: error("The request came from another site"),
    },
  },
  // routes/mail.ts: recovery and verification by mailed links
  {
    method: "post",
    path: "/api/auth/forgot",
    tag: "Account",
    summary: "Ask for a password reset link",
    description: "The answer is the same whether or not the address has an account; a link " +
      "valid for one hour goes out when it has.",
    auth: "none",
    body: forgotBody,
    responses: {
      202: { description: "The same answer for every address", schema: message },
      400: BAD_BODY,
      403: error("The request came from another site"),
      413: TOO_LARGE,
      429: error(
        "Too many reset requests from this network address in the last hour " +
          "(MAILS_PER_CLIENT_PER_HOUR), whatever address they named",
      ),
    },
  },
  {
    method: "post",
    path: "/api/auth/reset",
    tag: "Account",
    summary: "Set a new password with a reset link",
    description: "The link works once. Every session of the account ends (their live streams " +
      "close) and a new one starts (cookie); a pending change of address is void. When the " +
      "link is the first proof of the address, the account's API tokens are revoked too.",
    auth: "none",
    body: resetBody,
    responses: {
      200: { description: "The password is set", schema: z.object({ user: wire.publicUser }) },
      400: error("A field is wrong, or the link expired, was used or was replaced"),
      403: error("The request came from another site"),
      413: TOO_LARGE,
    },
  },
  {
    method: "post",
    path: "/api/auth/verify",
    tag: "Account",
    summary: "Verify the address with a mailed link",
    auth: "none",
    body: tokenBody,
    responses: {
      200: { description: "The address is verified", schema: z.object({ user: wire.publicUser }) },
      400: error("A field is wrong, or the link expired, was used or was replaced"),
      403: error("The request came from another site"),
      413: TOO_LARGE,
    },
  },
  {
    method: "post",
    path: "/api/account/verification",
    tag: "Account",
    summary: "Mail the verification link again",
    auth: "account",
    scope: "manage",
    responses: {
      202: { description: "The link is on its way", schema: message },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      409: error("The address is verified already"),
      429: error("Too many mails to this address or account in the last hour"),
    },
  },
  {
    method: "post",
    path: "/api/account/email",
    tag: "Account",
    summary: "Change the address",
    description: "Needs the current password. A link goes to the new address; the change " +
      "happens when it is followed, and the old address is told.",
    auth: "account",
    scope: "manage",
    body: emailChangeBody,
    responses: {
      202: { description: "The link is on its way", schema: message },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      409: error("The new address belongs to another account"),
      413: TOO_LARGE,
      429: error("Too many wrong passwords, change requests or mails; try again later"),
    },
  },
  {
    method: "post",
    path: "/api/account/email/confirm",
    tag: "Account",
    summary: "Confirm a change of address with the mailed link",
    auth: "none",
    body: tokenBody,
    responses: {
      200: { description: "The account moved", schema: z.object({ user: wire.publicUser }) },
      400: error("A field is wrong, or the link expired, was used or was replaced"),
      403: error("The request came from another site"),
      409: error("The new address was taken meanwhile"),
      413: TOO_LARGE,
    },
  },
  // routes/me.ts
  {
    method: "get",
    path: "/api/me",
    tag: "Account",
    summary: "Who am I",
    description: "The caller, their endpoints (a token limited to endpoints sees those), live " +
      "clients, this month's usage (null without `manage`) and what the token may do.",
    auth: "account",
    responses: {
      200: {
        description: "The caller",
        schema: z.object({
          user: wire.publicUser,
          endpoints: z.array(wire.publicEndpoint),
          connectedClients: z.number().int(),
          usage: z.object({
            used: z.number(),
            limit: z.number().nullable(),
            resetsAt: z.string(),
          }).nullable(),
          access: z.object({
            scopes: z.array(z.string()),
            endpoints: z.array(z.string()).nullable(),
          }),
        }),
      },
      401: UNAUTHORIZED,
    },
  },
  // routes/account_settings.tsx
  {
    method: "post",
    path: "/api/account/password",
    tag: "Account",
    summary: "Change the password",
    description: "Needs the current password (tried like a log-in: limited per account and " +
      "address). Every other session of the account ends and its live streams close.",
    auth: "account",
    scope: "manage",
    body: passwordChangeBody,
    responses: {
      200: {
        description: "The password changed",
        schema: z.object({ ok, endedSessions: z.number().int() }),
      },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: error("The current password is wrong, or the token lacks the scope"),
      413: TOO_LARGE,
      429: error("Too many wrong passwords: try again after Retry-After seconds"),
    },
  },
  {
    method: "delete",
    path: "/api/account",
    tag: "Account",
    summary: "Delete the account",
    description: "Needs the password. The endpoint URLs answer 404 and live connections close " +
      "at once; every key of the account is then deleted (invoices Stripe billed are kept " +
      "without the owner), and a Stripe subscription is cancelled.",
    auth: "account",
    scope: "manage",
    body: accountDeletionBody,
    responses: {
      200: { description: "The account is deleted", schema: z.object({ deleted: ok }) },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: error("The password is wrong, or the token lacks the scope"),
      413: TOO_LARGE,
      429: error("Too many wrong passwords: try again after Retry-After seconds"),
      502: error("Stripe could not cancel the subscription; nothing was deleted"),
    },
  },
  // routes/tokens.ts
  {
    method: "get",
    path: "/api/tokens",
    tag: "Tokens",
    summary: "List tokens",
    auth: "account",
    scope: "manage",
    responses: {
      200: { description: "The tokens", schema: z.object({ tokens: z.array(wire.publicToken) }) },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  {
    method: "post",
    path: "/api/tokens",
    tag: "Tokens",
    summary: "Create a token",
    description: "Scopes default to every scope, endpoints to all of the account's.",
    auth: "account",
    scope: "manage",
    body: createTokenBody,
    responses: {
      201: {
        description: "The token, with its value shown this once",
        schema: z.object({ token: tokenWithValue }),
      },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("A named endpoint does not exist"),
      409: error("The account has too many tokens"),
      413: TOO_LARGE,
    },
  },
  {
    method: "delete",
    path: "/api/tokens/:id",
    tag: "Tokens",
    summary: "Revoke a token",
    description: "Its live connections close at once.",
    auth: "account",
    scope: "manage",
    params: { id: "The token's id" },
    responses: {
      200: {
        description: "Revoked",
        schema: z.object({ ok, revoked: wire.publicToken }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No such token"),
    },
  },
  // routes/billing.ts
  {
    method: "get",
    path: "/api/billing",
    tag: "Billing",
    summary: "Plan, cap and this month's cost",
    auth: "account",
    scope: "manage",
    responses: {
      200: { description: "The plan and month", schema: wire.billingView },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  {
    method: "put",
    path: "/api/billing/cap",
    tag: "Billing",
    summary: "Set the monthly cap",
    description: "null removes the cap; on Free the cap may only lower the allowance.",
    auth: "account",
    scope: "manage",
    body: capBody,
    responses: {
      200: { description: "The plan and month with the new cap", schema: wire.billingView },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      413: TOO_LARGE,
      429: error("The cap changed CAP_CHANGES_PER_MINUTE times already; see `Retry-After`"),
    },
  },
  {
    method: "get",
    path: "/api/invoices",
    tag: "Billing",
    summary: "List invoices",
    auth: "account",
    scope: "manage",
    responses: {
      200: {
        description: "Invoices, newest first",
        schema: z.object({ invoices: z.array(wire.publicInvoice) }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  {
    method: "get",
    path: "/api/usage",
    tag: "Billing",
    summary: "This month's usage, per day",
    auth: "account",
    scope: "manage",
    responses: {
      200: {
        description: "Accepted and refused webhooks, with the plan's limit and cost",
        schema: wire.usageReport.extend(
          wire.billingView.pick({
            monthlyLimit: true,
            monthlyCap: true,
            plan: true,
            costSoFarUsd: true,
            projectedCostUsd: true,
          }).shape,
        ),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  // routes/stripe.ts
  {
    method: "post",
    path: "/api/billing/checkout",
    tag: "Billing",
    summary: "Start upgrading to Pro",
    auth: "account",
    scope: "manage",
    responses: {
      200: {
        description: "Stripe Checkout's page, to open in a browser",
        schema: z.object({ url: z.string() }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      409: error("The account is on Pro already"),
      503: error("Stripe is not configured here, or does not answer"),
    },
  },
  {
    method: "post",
    path: "/api/billing/portal",
    tag: "Billing",
    summary: "Open Stripe's billing portal",
    auth: "account",
    scope: "manage",
    responses: {
      200: { description: "The portal's page", schema: z.object({ url: z.string() }) },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      409: error("The account is not on Pro"),
      503: error("Stripe is not configured here, or does not answer"),
    },
  },
  {
    method: "post",
    path: "/api/billing/downgrade",
    tag: "Billing",
    summary: "Go back to Free",
    auth: "account",
    scope: "manage",
    responses: {
      200: {
        description: "The plan and its limit",
        schema: wire.billingView.pick({ plan: true, monthlyLimit: true }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  {
    method: "post",
    path: "/api/stripe/webhook",
    tag: "Billing",
    summary: "Stripe's events (for Stripe only)",
    description: "Checked with the `Stripe-Signature` header.",
    auth: "none",
    responses: {
      200: {
        description: "Received",
        schema: z.object({ received: ok, outcome: z.enum(["applied", "duplicate", "ignored"]) }),
      },
      400: error("The signature does not verify"),
      404: error("Stripe is not configured here"),
    },
  },
  // routes/endpoints.ts
  {
    method: "get",
    path: "/api/endpoints",
    tag: "Endpoints",
    summary: "List endpoints",
    auth: "account",
    scope: "manage",
    responses: {
      200: {
        description: "The endpoints",
        schema: z.object({ endpoints: z.array(wire.publicEndpoint) }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  {
    method: "post",
    path: "/api/endpoints",
    tag: "Endpoints",
    summary: "Create an endpoint",
    auth: "account",
    scope: "manage",
    body: createEndpointBody,
    responses: {
      201: { description: "Created", schema: z.object({ endpoint: wire.publicEndpoint }) },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      409: error("The account has too many endpoints"),
      413: TOO_LARGE,
    },
  },
  {
    method: "patch",
    path: "/api/endpoints/:slug",
    tag: "Endpoints",
    summary: "Change an endpoint's settings",
    description: "Respond mode, its timeout, and the provider whose signatures are checked " +
      "(with its secret and verify token). Fields left out stay as they are.",
    auth: "account",
    scope: "manage",
    params: { slug: "The endpoint's slug" },
    body: endpointSettingsBody,
    responses: {
      200: { description: "Updated", schema: z.object({ endpoint: wire.publicEndpoint }) },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No such endpoint"),
      413: TOO_LARGE,
    },
  },
  {
    method: "post",
    path: "/api/endpoints/:slug/rotate",
    tag: "Endpoints",
    summary: "Rotate an endpoint's slug",
    description: "The old URL stops receiving at once; the endpoint's id stays.",
    auth: "account",
    scope: "manage",
    params: { slug: "The endpoint's slug" },
    responses: {
      200: {
        description: "The endpoint with its new slug",
        schema: z.object({ endpoint: wire.publicEndpoint, oldSlug: z.string() }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No such endpoint"),
      409: error("It changed meanwhile; retry"),
    },
  },
  {
    method: "delete",
    path: "/api/endpoints/:slug",
    tag: "Endpoints",
    summary: "Delete an endpoint",
    auth: "account",
    scope: "manage",
    params: { slug: "The endpoint's slug" },
    responses: {
      200: { description: "Deleted", schema: z.object({ ok, deleted: wire.publicEndpoint }) },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No such endpoint"),
    },
  },
  // routes/events.ts
  {
    method: "get",
    path: "/api/events/stream",
    tag: "Streams",
    summary: "Live events over Server-Sent Events",
    description: "Each `data:` is a WebhookEnvelope (see components), its `id:` the event id; " +
      "a consumer group member first gets an `event: group` message with its connection id. " +
      "Reconnecting with `Last-Event-ID` catches up from the log.",
    auth: "stream",
    scope: "events:read",
    query: streamQuery,
    responses: {
      200: {
        description: "The stream: `data:` lines hold WebhookEnvelope JSON",
        contentType: "text/event-stream",
      },
      400: error("A query parameter is malformed (the message names it)"),
      401: UNAUTHORIZED,
      403: error("The token lacks `events:read`, or a filter names an endpoint outside its limit"),
      429: error("Too many connections for this token or account"),
    },
  },
  {
    method: "get",
    path: "/api/events",
    tag: "Events",
    summary: "List retained events",
    description: "Newest first, a page at a time (`nextCursor` → `cursor`).",
    auth: "account",
    scope: "events:read",
    query: historyQuery,
    responses: {
      200: {
        description: "A page of events",
        schema: z.object({
          events: z.array(wire.eventSummary),
          nextCursor: z.string().nullable(),
        }),
      },
      400: error("`limit` or `cursor` is malformed"),
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  {
    method: "get",
    path: "/api/events/:id",
    tag: "Events",
    summary: "One event, as streams deliver it",
    auth: "account",
    scope: "events:read",
    params: { id: "The event's id" },
    responses: {
      200: { description: "The envelope", schema: webhookEnvelopeSchema },
      400: error("Not an event id"),
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No retained event with this id"),
      429: error("A large event, and the account has MAX_DOWNLOADS_PER_ACCOUNT in progress"),
      503: error("A large event, and the server has MAX_DOWNLOADS in progress"),
    },
  },
  {
    method: "get",
    path: "/api/events/:id/body",
    tag: "Events",
    summary: "An event's body, as a download",
    description: "The exact bytes the sender posted, always as an attachment.",
    auth: "account",
    scope: "events:read",
    params: { id: "The event's id" },
    responses: {
      200: { description: "The body's bytes", contentType: "application/octet-stream" },
      400: error("Not an event id"),
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No retained event with this id"),
      429: error("A large body, and the account has MAX_DOWNLOADS_PER_ACCOUNT in progress"),
      503: error("A large body, and the server has MAX_DOWNLOADS in progress"),
    },
  },
  {
    method: "get",
    path: "/api/events/:id/deliveries",
    tag: "Events",
    summary: "Which clients acknowledged an event",
    auth: "account",
    scope: "events:read",
    params: { id: "The event's id" },
    responses: {
      200: {
        description: "The acknowledgements",
        schema: z.object({ id: z.string(), deliveries: z.array(wire.delivery) }),
      },
      400: error("Not an event id"),
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No retained event with this id (tokens limited to endpoints)"),
    },
  },
  {
    method: "get",
    path: "/api/clients",
    tag: "Streams",
    summary: "Connected clients",
    auth: "account",
    scope: "events:read",
    responses: {
      200: {
        description: "Live SSE and WebSocket clients",
        schema: z.object({ clients: z.array(wire.clientInfo) }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  ...(["/api/events/:id/resend", "/api/events/:id/redeliver"] as const).map((path) => ({
    method: "post" as const,
    path,
    tag: "Events",
    summary: path.endsWith("resend") ? "Resend an event" : "Resend an event (first name)",
    description: "Sends the stored event again to every connected client, at a rate per account.",
    auth: "account" as const,
    scope: "events:read",
    params: { id: "The event's id" },
    responses: {
      200: {
        description: "Sent again",
        schema: z.object({
          ok,
          id: z.string(),
          clients: z.number().int().describe("Clients it went to"),
        }),
      },
      400: error("Not an event id"),
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No retained event with this id"),
      429: error("Too many resends; try again after `Retry-After`"),
    },
  })),
  // routes/groups.ts
  {
    method: "get",
    path: "/api/groups",
    tag: "Streams",
    summary: "Consumer groups",
    auth: "account",
    scope: "events:read",
    responses: {
      200: {
        description: "Each group's cursor, lag and members",
        schema: z.object({ groups: z.array(wire.groupSummary) }),
      },
      401: UNAUTHORIZED,
      403: FORBIDDEN,
    },
  },
  {
    method: "delete",
    path: "/api/groups/:name",
    tag: "Streams",
    summary: "Delete a consumer group",
    auth: "account",
    scope: "manage",
    params: { name: "The group's name" },
    responses: {
      200: { description: "Deleted", schema: z.object({ ok, group: z.string() }) },
      400: error("Not a group name"),
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No such group"),
      409: error("The group has connected members"),
    },
  },
  {
    method: "post",
    path: "/api/groups/:name/ack",
    tag: "Streams",
    summary: "Ack an event a group member received over SSE",
    description: 'WebSocket members ack on the socket (`{"type":"ack"}`).',
    auth: "account",
    scope: "events:read",
    params: { name: "The group's name" },
    body: ackBody,
    responses: {
      200: {
        description: "Acked",
        schema: z.object({ ok, group: z.string(), connection: z.string(), id: z.string() }),
      },
      400: BAD_BODY,
      401: UNAUTHORIZED,
      403: FORBIDDEN,
      404: error("No such group or member, or an event outside the token's endpoints"),
      409: error("Held by another member, acked already, or handed on meanwhile"),
      413: TOO_LARGE,
    },
  },
  // routes/socket.ts
  {
    method: "get",
    path: "/ws",
    tag: "Streams",
    summary: "Live events over WebSocket (also at `/`)",
    description: "Each server message is a WebhookEnvelope (or a control message with its own " +
      "`type`: `pong`, `error`, `subscribed`, `replayed`); the client may send " +
      "WsClientMessage (see components). `notices=1` asks for notices of skipped events.",
    auth: "stream",
    scope: "events:read",
    query: streamQuery.extend({
      notices: z.enum(["1"]).optional().describe("`1`: send notices as messages"),
    }),
    responses: {
      101: { description: "Switching to the WebSocket protocol" },
      400: error("A query parameter is malformed (the message names it)"),
      401: UNAUTHORIZED,
      403: error("The token lacks `events:read`, or a filter names an endpoint outside its limit"),
      426: error("Not a WebSocket upgrade request"),
      429: error("Too many connections for this token or account"),
    },
  },
  // routes/api_docs.tsx
  {
    method: "get",
    path: "/api/openapi.json",
    tag: "Meta",
    summary: "This description, as OpenAPI 3.1",
    auth: "none",
    responses: {
      200: {
        description: "The OpenAPI document",
        schema: z.looseObject({ openapi: z.string(), paths: z.record(z.string(), z.unknown()) }),
      },
    },
  },
  // routes/ingest.ts (served before the router)
  ...ingestRoutes,
  {
    method: "options",
    path: "/api/in/:slug",
    tag: "Ingest",
    summary: "CORS preflight for browsers posting webhooks",
    auth: "none",
    params: { slug: "The endpoint's slug" },
    responses: { 204: { description: "Allowed methods and headers" } },
  },
];

/** Schemas the document names although no route's JSON answer holds them. */
export const API_SCHEMAS = {
  Error: wire.error,
  WebhookEnvelope: webhookEnvelopeSchema,
  WsClientMessage: wsClientMessageSchema,
  PublicUser: wire.publicUser,
  PublicEndpoint: wire.publicEndpoint,
  PublicToken: wire.publicToken,
  PublicInvoice: wire.publicInvoice,
  BillingView: wire.billingView,
  UsageReport: wire.usageReport,
  EventSummary: wire.eventSummary,
  Delivery: wire.delivery,
  ClientInfo: wire.clientInfo,
  GroupSummary: wire.groupSummary,
};

/** Which declaration a request is for (static segments before parameters), or null. */
export function findApiRoute(method: string, path: string): ApiRoute | null {
  const lower = method.toLowerCase();
  for (const { route, pattern } of MATCHERS) {
    if (route.method === lower && pattern.test(path)) return route;
  }
  return null;
}

const MATCHERS = API_ROUTES.map((route) => ({
  route,
  params: (route.path.match(/:/g) ?? []).length,
  pattern: new RegExp(
    `^${route.path.replace(/[.]/g, "\\.").replace(/:\w+/g, "[^/]+")}${
      route.tag === "Ingest" ? "(/.*)?" : ""
    }$`,
  ),
})).sort((a, b) => a.params - b.params);

/**
 * The description of this server: built once per public URL (the document names it as its
 * server), from API_ROUTES and API_SCHEMAS.
 */
export function apiDocument(publicUrl: string): Record<string, unknown> {
  if (built?.url !== publicUrl) {
    built = {
      url: publicUrl,
      document: openApiDocument(API_ROUTES, {
        title: "WebSocks API",
        version: API_VERSION,
        description: "Receive webhooks at a public URL and stream them to your clients over " +
          "Server-Sent Events or WebSocket, with history, resend, acks and consumer groups. " +
          'Errors are always `{"error": "…"}`.',
        serverUrl: publicUrl,
        errorSchema: wire.error,
        schemas: API_SCHEMAS,
      }),
    };
  }
  return built.document;
}

/** The API's version as the document states it; a breaking change raises the major. */
const API_VERSION = "1.0.0";
let built: { url: string; document: Record<string, unknown> } | null = null;

/**
 * API_RESPONSE_CHECK=1 (the tests): every answer under /api is checked against its route's
 * declaration, and one that differs becomes a 500 naming the difference (checkedResponse).
 * Wraps the router from outside, so a checked JSON answer keeps its exact bytes and framing.
 */
export function withResponseCheck(handler: Handler): Handler {
  return async (request, info) => {
    const response = await handler(request, info);
    const path = new URL(request.url).pathname;
    if (!path.startsWith("/api/") || request.method === "HEAD") return response;
    const route = findApiRoute(request.method, path);
    // An undeclared route is tests/openapi_test.ts's to name; its errors still have the shape.
    if (route === null && response.status < 400) return response;
    return await checkedResponse(
      route ?? { ...UNKNOWN_ROUTE, method: request.method.toLowerCase() as ApiMethod, path },
      response,
      wire.error,
    );
  };
}

const UNKNOWN_ROUTE: ApiRoute = {
  method: "get",
  path: "",
  tag: "",
  summary: "",
  auth: "none",
  responses: {},
};
