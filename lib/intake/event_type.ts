/**
 * The event type of a webhook, as its provider names it, derived once at ingest and stored with
 * the event: what `event=` filters and the forward command's routes match, and the envelope's
 * `eventType`. Pure: it reads headers and the body already parsed at ingest, never the body again.
 *
 * In order: GitHub's `X-GitHub-Event` (plus `.action` when the JSON body has a string `action`,
 * e.g. `issues.opened`); Shopify's `X-Shopify-Topic`; Slack's Events API `event.type` when the
 * body is an `event_callback`; else the JSON body's string `type` (Stripe, Standard Webhooks,
 * Slack's `url_verification`) or `event` field; else null.
 */

/** The longest event type stored, in UTF-16 code units: longer ones are cut. */
export const MAX_EVENT_TYPE_LENGTH = 200;

/**
 * The event type of a webhook from its headers and its JSON body, already parsed (undefined
 * when it was not parsed: not JSON, or a large body streamed into chunks, whose type then comes
 * from headers only).
 */
export function eventTypeOf(headers: Pick<Headers, "get">, json: unknown): string | null {
  const github = headers.get("x-github-event");
  if (github) {
    const action = field(json, "action");
    return bounded(action !== null ? `${github}.${action}` : github);
  }
  const shopify = headers.get("x-shopify-topic");
  if (shopify) return bounded(shopify);
  if (field(json, "type") === "event_callback") {
    const inner = (json as Record<string, unknown>).event;
    const type = field(inner, "type");
    if (type !== null) return bounded(type);
  }
  return bounded(field(json, "type") ?? field(json, "event"));
}

/** A non-empty string field of a JSON object, or null. */
function field(json: unknown, name: string): string | null {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return null;
  const value = (json as Record<string, unknown>)[name];
  return typeof value === "string" && value !== "" ? value : null;
}

/** Cuts a type to MAX_EVENT_TYPE_LENGTH without splitting a surrogate pair. */
function bounded(type: string | null): string | null {
  if (type === null || type.length <= MAX_EVENT_TYPE_LENGTH) return type;
  const cut = type.slice(0, MAX_EVENT_TYPE_LENGTH);
  const last = cut.charCodeAt(cut.length - 1);
  return last >= 0xd800 && last <= 0xdbff ? cut.slice(0, -1) : cut;
}
