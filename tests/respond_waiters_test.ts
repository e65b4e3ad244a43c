/**
 * lib/fanout/respond_waiters.ts on its own: waiters and answers meeting by event id, in one
 * isolate and across two linked brokers, and the checks on what an answer may carry.
 */
import assert from "node:assert/strict";
import {
  ANSWER_SECURITY_HEADERS,
  answerHeaders,
  type ClientResponse,
  createResponses,
  isAnswerHeader,
  senderHeaders,
} from "../lib/fanout/respond_waiters.ts";
import { nextId } from "../lib/store/ids.ts";
import { linkedBrokers } from "./fakes.ts";

/** Real event ids, made at first use: an early answer is kept only for a fresh event. */
const IDS = new Map<number, string>();
const e = (n: number) => IDS.get(n) ?? IDS.set(n, nextId()).get(n)!;

const OWNER = "owner";
const OTHER = "other";

const answer = (status = 200, body = "ok"): ClientResponse => ({
  status,
  headers: { "content-type": "text/plain" },
  body: new TextEncoder().encode(body),
});

Deno.test("[respond_waiters] a waiter gets its owner's answer; the next answer is late", async () => {
  const responses = createResponses();
  const waiting = responses.wait(e(1), OWNER, 10_000);
  assert.equal(responses.answer(e(1), OWNER, answer(201)), "taken");
  assert.equal((await waiting)?.status, 201);
  assert.equal(responses.answer(e(1), OWNER, answer(202)), "late");
  responses.stop();
});

Deno.test("[respond_waiters] a wait given up ends at once, and a later answer is late", async () => {
  const responses = createResponses();
  const giveUp = new AbortController();
  const waiting = responses.wait(e(1), OWNER, 10_000, giveUp.signal);
  giveUp.abort();
  assert.equal(await waiting, null);
  assert.equal(responses.answer(e(1), OWNER, answer(201)), "late");
  responses.stop();
});

Deno.test("[respond_waiters] an answer from another user is refused and the owner's still counts", async () => {
  const responses = createResponses();
  const waiting = responses.wait(e(1), OWNER, 10_000);
  assert.equal(responses.answer(e(1), OTHER, answer(500, "forged")), "not_yours");
  assert.equal(responses.answer(e(1), OWNER, answer(200, "real")), "taken");
  assert.equal(new TextDecoder().decode((await waiting)?.body), "real");
  responses.stop();
});

Deno.test("[respond_waiters] an answer before its waiter is kept for its owner only", async () => {
  const responses = createResponses();
  assert.equal(responses.answer(e(1), OWNER, answer(203)), "taken");
  assert.equal(responses.answer(e(1), OWNER, answer(204)), "late", "one early answer per event");
  assert.equal((await responses.wait(e(1), OWNER, 10_000))?.status, 203);
  // Another user's early answer never reaches the owner's waiter.
  assert.equal(responses.answer(e(2), OTHER, answer(500)), "taken");
  const owners = responses.wait(e(2), OWNER, 10_000);
  assert.equal(responses.answer(e(2), OWNER, answer(200)), "taken");
  assert.equal((await owners)?.status, 200);
  responses.stop();
});

Deno.test("[respond_waiters] a waiter with no answer in time gets null", async () => {
  const responses = createResponses();
  assert.equal(await responses.wait(e(1), OWNER, 1), null);
  responses.stop();
});

Deno.test("[respond_waiters] early answers are bounded, forgetting the oldest", async () => {
  const responses = createResponses();
  for (let n = 0; n <= 1000; n++) {
    assert.equal(responses.answer(e(n), OWNER, answer(200, String(n))), "taken");
  }
  const text = async (id: string) =>
    new TextDecoder().decode((await responses.wait(id, OWNER, 10_000))?.body);
  assert.equal(await text(e(1000)), "1000");
  assert.equal(await text(e(1)), "1");
  // The oldest was dropped: its waiter waits, and takes the next answer.
  const oldest = text(e(0));
  assert.equal(responses.answer(e(0), OWNER, answer(200, "again")), "taken");
  assert.equal(await oldest, "again");
  responses.stop();
});

Deno.test("[respond_waiters] an answer crosses the broker to the isolate holding the sender", async () => {
  const [here, there] = linkedBrokers();
  const waiters = createResponses({ broker: here });
  const answerers = createResponses({ broker: there });
  const waiting = waiters.wait(e(1), OWNER, 10_000);
  assert.equal(answerers.answer(e(1), OWNER, answer(207, "from afar")), "taken");
  const got = await waiting;
  assert.equal(got?.status, 207);
  assert.equal(new TextDecoder().decode(got?.body), "from afar");
  // Across the broker, another user's answer is refused by the waiter's side.
  const guarded = waiters.wait(e(2), OWNER, 10_000);
  answerers.answer(e(2), OTHER, answer(500));
  answerers.answer(e(2), OWNER, answer(200));
  assert.equal((await guarded)?.status, 200);
  waiters.stop();
  answerers.stop();
  here.close();
  there.close();
});

Deno.test("[respond_waiters] answer headers: allowed ones kept in lower case, the rest dropped", () => {
  const checked = answerHeaders({
    "Content-Type": "application/json",
    "X-Custom": "1",
    "Set-Cookie": "a=b",
    "Location": "https://evil.example",
    "X-Accel-Redirect": "/etc/passwd",
    "X-Websocks-Thing": "no",
  });
  assert.deepEqual(checked, { headers: { "content-type": "application/json", "x-custom": "1" } });
  assert.equal(isAnswerHeader("etag"), true);
  // Caching is the relay's to say (no-store): a cache would keep a tenant's answer.
  assert.equal(isAnswerHeader("cache-control"), false);
  assert.equal(isAnswerHeader("x-frame-options"), false);
  assert.deepEqual(answerHeaders({ "Bad Name": "x" }), {
    problem: 'header "Bad Name" is not a valid header name',
  });
  assert.match(
    (answerHeaders({ "x-a": "line\nbreak" }) as { problem: string }).problem,
    /^header "x-a" has an invalid value/,
  );
  assert.deepEqual(answerHeaders({ "x-a": "y".repeat(16_001) }), {
    problem: "headers exceed 16000 characters",
  });
});

Deno.test("[respond_waiters] the sender's headers always carry the security headers", () => {
  const answer = {
    status: 200,
    headers: { "content-type": "text/html", "content-security-policy": "none" },
    body: new Uint8Array(),
  };
  const headers = senderHeaders(answer, { fetchDest: null });
  assert.equal(headers.get("content-type"), "text/html");
  for (const [name, value] of Object.entries(ANSWER_SECURITY_HEADERS)) {
    assert.equal(headers.get(name), value);
  }
  // A browser loading it as a page: text.
  const page = senderHeaders(answer, { fetchDest: "document" });
  assert.equal(page.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(senderHeaders(answer, { fetchDest: "empty" }).get("content-type"), "text/html");
  // A same-origin download link: `empty`, but a navigation.
  const download = senderHeaders(answer, { fetchDest: "empty", fetchMode: "navigate" });
  assert.equal(download.get("content-type"), "text/plain; charset=utf-8");
});
