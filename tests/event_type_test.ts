/** The event type of a webhook per provider (lib/intake/event_type.ts), and the patterns it meets. */
import assert from "node:assert/strict";
import { eventTypeOf, MAX_EVENT_TYPE_LENGTH } from "../lib/intake/event_type.ts";
import { matchesPattern, patternMatcher } from "../lib/shared/event_pattern.ts";

const h = (headers: Record<string, string> = {}) => new Headers(headers);

Deno.test("[event-type] GitHub: X-GitHub-Event, plus .action when the body has one", () => {
  assert.equal(eventTypeOf(h({ "X-GitHub-Event": "push" }), { ref: "refs/heads/main" }), "push");
  assert.equal(
    eventTypeOf(h({ "X-GitHub-Event": "issues" }), { action: "opened", type: "ignored" }),
    "issues.opened",
  );
  // A non-string action is not an action; a body not parsed (large, form) gives the header alone.
  assert.equal(eventTypeOf(h({ "X-GitHub-Event": "issues" }), { action: 3 }), "issues");
  assert.equal(eventTypeOf(h({ "X-GitHub-Event": "ping" }), undefined), "ping");
});

Deno.test("[event-type] Stripe and Standard Webhooks: the JSON type", () => {
  assert.equal(
    eventTypeOf(h({ "Stripe-Signature": "t=1,v1=x" }), { type: "invoice.paid", data: {} }),
    "invoice.paid",
  );
  assert.equal(
    eventTypeOf(h({ "webhook-id": "msg_1" }), { type: "user.created", timestamp: "…" }),
    "user.created",
  );
});

Deno.test("[event-type] Slack: event.type of an event_callback, the top-level type otherwise", () => {
  assert.equal(
    eventTypeOf(h(), { type: "event_callback", event: { type: "app_mention", text: "hi" } }),
    "app_mention",
  );
  assert.equal(
    eventTypeOf(h(), { type: "url_verification", challenge: "abc" }),
    "url_verification",
  );
  // An event_callback without an inner type falls back to its own type.
  assert.equal(eventTypeOf(h(), { type: "event_callback", event: {} }), "event_callback");
});

Deno.test("[event-type] Shopify: X-Shopify-Topic", () => {
  assert.equal(
    eventTypeOf(h({ "X-Shopify-Topic": "orders/create" }), { id: 1, type: "x" }),
    "orders/create",
  );
});

Deno.test("[event-type] else the JSON type or event field, else null", () => {
  assert.equal(eventTypeOf(h(), { event: "call.ended" }), "call.ended");
  assert.equal(eventTypeOf(h(), { type: "a", event: "b" }), "a");
  assert.equal(eventTypeOf(h(), { type: { nested: true }, event: "b" }), "b");
  for (const json of [undefined, null, [], ["type"], { type: "" }, { type: 1 }, "text", 12]) {
    assert.equal(eventTypeOf(h(), json), null, JSON.stringify(json));
  }
});

Deno.test("[event-type] a type is cut to its limit without splitting a surrogate pair", () => {
  const long = "x".repeat(MAX_EVENT_TYPE_LENGTH + 50);
  assert.equal(eventTypeOf(h(), { type: long }), long.slice(0, MAX_EVENT_TYPE_LENGTH));
  const emoji = "x".repeat(MAX_EVENT_TYPE_LENGTH - 1) + "😀";
  assert.equal(eventTypeOf(h(), { type: emoji }), "x".repeat(MAX_EVENT_TYPE_LENGTH - 1));
  const header = eventTypeOf(h({ "X-Shopify-Topic": "t".repeat(1000) }), undefined);
  assert.equal(header?.length, MAX_EVENT_TYPE_LENGTH);
});

Deno.test("[event-type] patterns: * is any run, anchored, case-sensitive, nothing else special", () => {
  const cases: [string, string, boolean][] = [
    ["invoice.*", "invoice.paid", true],
    ["invoice.*", "invoice.", true],
    ["invoice.*", "invoice", false],
    ["invoice.*", "xinvoice.paid", false],
    ["*.paid", "invoice.paid", true],
    ["*", "anything", true],
    ["*", "", true],
    ["a*b*c", "abc", true],
    ["a*b*c", "aXbYc", true],
    ["a*b*c", "acb", false],
    ["a*a", "a", false],
    ["a**a", "aa", true],
    ["issues.opened", "issues.opened", true],
    ["issues.opened", "Issues.opened", false],
    ["issues.opened", "issues.openedx", false],
    // Regular expression syntax is text.
    ["a.c", "abc", false],
    ["(a|b)", "a", false],
    ["(a|b)", "(a|b)", true],
    ["[ab]+$", "[ab]+$", true],
  ];
  for (const [pattern, text, expected] of cases) {
    assert.equal(matchesPattern(pattern, text), expected, `${pattern} vs ${text}`);
  }
  const any = patternMatcher(["invoice.*", "customer.created"]);
  assert.ok(any("invoice.paid") && any("customer.created"));
  assert.ok(!any("customer.deleted"));
  // An event that names no type matches no pattern, not even *.
  assert.equal(patternMatcher(["*"])(null), false);
});

Deno.test("[event-type] a pattern of many stars against a long type is answered in one pass", () => {
  // A backtracking regex would not finish here; pieces found in order take one pass each.
  const pattern = "*a".repeat(99) + "*b";
  for (let i = 0; i < 1000; i++) assert.equal(matchesPattern(pattern, "a".repeat(200)), false);
  assert.equal(matchesPattern("*a".repeat(99) + "*", "a".repeat(200)), true);
});
