/**
 * Issue 12 end to end: real signatures (made with the providers' own libraries or their
 * documented rule) through a running server, the verdict in the envelope, enforcement, and the
 * URL handshakes the relay answers with no client connected.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { sign as githubSign } from "@octokit/webhooks-methods";
import { type WebhookEnvelope, webhookEnvelopeSchema } from "../lib/shared/envelope.ts";
import {
  openWs,
  signUp,
  startTestServer,
  type TestServer,
  type TestUser,
  waitFor,
} from "./helpers.ts";

/** PATCHes an endpoint's provider settings with the user's token. */
async function setProvider(
  user: TestUser,
  server: TestServer,
  settings: Record<string, unknown>,
): Promise<void> {
  const response = await fetch(`${server.url}/api/endpoints/${user.slug}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify(settings),
  });
  assert.equal(response.status, 200, await response.text());
}

/** The retained events of a user, newest first. */
async function history(
  server: TestServer,
  user: TestUser,
): Promise<{ id: string; verified?: unknown; handshake?: boolean }[]> {
  const response = await fetch(`${server.url}/api/events`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(response.status, 200);
  return (await response.json()).events;
}

/** This month's accepted and refused counts. */
async function usage(
  server: TestServer,
  user: TestUser,
): Promise<{ used: number; rejected: number }> {
  const response = await fetch(`${server.url}/api/usage`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(response.status, 200);
  const { used, rejected } = await response.json();
  return { used, rejected };
}

Deno.test("[providers] a GitHub signature made by Octokit verifies; a forged one is marked, and refused when enforced", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const secret = "It's a Secret to Everybody";
  await setProvider(user, server, { provider: "github", secret });
  const ws = await openWs(`${server.wsUrl}/?token=${user.token}`);
  try {
    const body = '{"action":"opened","number":1}';
    const genuine = await fetch(user.webhookUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-Hub-Signature-256": await githubSign(secret, body),
      },
      body,
    });
    assert.equal(genuine.status, 200);
    assert.match(genuine.headers.get("content-type")!, /^application\/json/);
    await genuine.body?.cancel();
    const first: WebhookEnvelope = webhookEnvelopeSchema.parse(await ws.next());
    assert.deepEqual(first.verified, { provider: "github", ok: true });
    assert.equal(first.body, body, "the bytes are never altered");

    const forged = await fetch(user.webhookUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": await githubSign("a guess", body),
      },
      body,
    });
    assert.equal(forged.status, 200);
    await forged.body?.cancel();
    const second = webhookEnvelopeSchema.parse(await ws.next());
    assert.deepEqual(second.verified, {
      provider: "github",
      ok: false,
      reason: "signature does not match",
    });

    // History rows carry the verdict too, so the inspector's badges need no envelope.
    assert.deepEqual((await history(server, user)).map((e) => e.verified), [
      { provider: "github", ok: false, reason: "signature does not match" },
      { provider: "github", ok: true },
    ]);

    await setProvider(user, server, { enforce: true });
    const before = (await history(server, user)).length;
    const refused = await fetch(user.webhookUrl, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": await githubSign("a guess", body),
      },
      body,
    });
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get("content-type")!, /^application\/json/);
    assert.match((await refused.json()).error, /^Cannot ingest: signature does not match/);
    assert.equal((await history(server, user)).length, before, "nothing stored");
  } finally {
    await ws.close();
  }
});

/** Sets Meta on the user's endpoint, enforced, with the verify token "my verify token". */
async function setMeta(user: TestUser, server: TestServer): Promise<void> {
  await setProvider(user, server, {
    provider: "meta",
    secret: "app-secret",
    verifyToken: "my verify token",
    enforce: true,
  });
}

Deno.test("[providers] Meta's GET handshake is answered with no client connected, stored, counted", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await setMeta(user, server);
  const query = "hub.mode=subscribe&hub.verify_token=my%20verify%20token&hub.challenge=1158201444";
  const answered = await fetch(`${user.webhookUrl}?${query}`);
  assert.equal(answered.status, 200);
  assert.match(answered.headers.get("content-type")!, /^text\/plain/);
  assert.equal(await answered.text(), "1158201444");
  const events = await history(server, user);
  assert.equal(events.length, 1, "the handshake is kept as an event");
  assert.equal(events[0].handshake, true);
  const event = await fetch(`${server.url}/api/events/${events[0].id}`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(event.status, 200);
  const stored = webhookEnvelopeSchema.parse(await event.json());
  assert.equal(stored.handshake, true);
  assert.equal(stored.verified, undefined, "no signature to fail: the verify token was the check");

  // A wrong verify token is refused, stores nothing and is no free event.
  const wrong = await fetch(`${user.webhookUrl}?${query.replace("my%20verify", "guess")}`);
  assert.equal(wrong.status, 403);
  assert.match(wrong.headers.get("content-type")!, /^application\/json/);
  assert.match((await wrong.json()).error, /^Cannot answer the handshake: /);
  assert.equal((await history(server, user)).length, 1);
  // Refusals are written once a second, together.
  await waitFor(async () => (await usage(server, user)).rejected === 1, {
    what: "the refused handshake counted",
  });
  assert.deepEqual(
    await usage(server, user),
    { used: 1, rejected: 1 },
    "the answered handshake counts like any webhook",
  );
});

Deno.test("[providers] over the limit a handshake is answered, but nothing is stored or delivered", async () => {
  // Handshakes were stored and delivered uncounted, whatever the sender put around the fields
  // that make one: an owner wrapped any payload in them, past the Free limit and the Pro cap.
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1" });
  const user = await signUp(server);
  await setMeta(user, server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  try {
    const query = (n: number) =>
      `hub.mode=subscribe&hub.verify_token=my%20verify%20token&hub.challenge=${n}&payload=secret`;
    const first = await fetch(`${user.webhookUrl}?${query(1)}`);
    assert.equal(first.status, 200);
    assert.equal(await first.text(), "1");
    assert.equal((await ws.next() as WebhookEnvelope).query["hub.challenge"], "1");
    const over = await fetch(`${user.webhookUrl}?${query(2)}`);
    assert.equal(over.status, 200);
    assert.match(over.headers.get("content-type")!, /^text\/plain/);
    assert.equal(await over.text(), "2");
    // The client's next message is the answer to its ping: nothing was delivered before it.
    ws.send({ type: "ping" });
    assert.equal((await ws.next()).type, "pong");
    assert.equal((await history(server, user)).length, 1);
    assert.equal((await usage(server, user)).used, 1);
  } finally {
    await ws.close();
  }
});

Deno.test("[providers] Slack's url_verification and Zoom's url_validation are answered when signed", async () => {
  await using server = await startTestServer();
  const slack = await signUp(server);
  const zoom = await signUp(server);
  await setProvider(slack, server, { provider: "slack", secret: "slack-signing-secret" });
  await setProvider(zoom, server, { provider: "zoom", secret: "zoom-secret-token" });

  // Slack's v0 rule, as its docs give it.
  const slackBody = JSON.stringify({
    token: "x",
    challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3g",
    type: "url_verification",
  });
  const ts = String(Math.floor(Date.now() / 1000));
  const slackSignature = "v0=" +
    createHmac("sha256", "slack-signing-secret").update(`v0:${ts}:${slackBody}`).digest("hex");
  const slackAnswer = await fetch(slack.webhookUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "X-Slack-Request-Timestamp": ts,
      "X-Slack-Signature": slackSignature,
    },
    body: slackBody,
  });
  assert.equal(slackAnswer.status, 200);
  assert.match(slackAnswer.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await slackAnswer.json(), { challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3g" });
  const unsigned = await fetch(slack.webhookUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: slackBody,
  });
  assert.equal(unsigned.status, 401, "an unsigned challenge is not answered");
  await unsigned.body?.cancel();

  // Zoom's rule, as its docs give it.
  const zoomBody = JSON.stringify({
    event: "endpoint.url_validation",
    payload: { plainToken: "qgg8vlvZRS6UYooatFL8Aw" },
    event_ts: Date.now(),
  });
  const zoomSignature = "v0=" +
    createHmac("sha256", "zoom-secret-token").update(`v0:${ts}:${zoomBody}`).digest("hex");
  const zoomAnswer = await fetch(zoom.webhookUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "x-zm-request-timestamp": ts,
      "x-zm-signature": zoomSignature,
    },
    body: zoomBody,
  });
  assert.equal(zoomAnswer.status, 200);
  assert.match(zoomAnswer.headers.get("content-type")!, /^application\/json/);
  assert.deepEqual(await zoomAnswer.json(), {
    plainToken: "qgg8vlvZRS6UYooatFL8Aw",
    encryptedToken: createHmac("sha256", "zoom-secret-token").update("qgg8vlvZRS6UYooatFL8Aw")
      .digest("hex"),
  });
});
