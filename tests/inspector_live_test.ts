/**
 * Issue 12, the inspector's part: the newest arrival opens while nothing is picked, the month's
 * count moves with arrivals, and large bodies show their first 256 KiB with a download of the
 * exact bytes, served so that a sender's HTML can never run on the dashboard's origin. HTTP parts
 * run against a real server; the page is driven in headless Chromium.
 */
import assert from "node:assert/strict";
import { postWebhook, signUp, startTestServer } from "./helpers.ts";
import { eventBadges } from "../islands/event_badge.ts";

const KIB = 1024;

async function post(url: string, body: BodyInit, contentType = "application/json") {
  const response = await postWebhook(url, body, { "Content-Type": contentType });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  return (await response.json()).id as string;
}

function assertDownloadHeaders(response: Response, filename: string) {
  assert.equal(response.headers.get("content-type"), "application/octet-stream");
  assert.equal(response.headers.get("content-disposition"), `attachment; filename="${filename}"`);
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  assert.equal(response.headers.get("content-security-policy"), "sandbox; default-src 'none'");
  assert.equal(response.headers.get("cache-control"), "private, no-store");
}

Deno.test("[inspector] a body with <script> downloads as an attachment with safe headers, byte-exact", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const html = "<!doctype html><script>document.title='owned'</script><h1>hi</h1>";
  const id = await post(user.webhookUrl, html, "text/html");
  const ways: Record<string, string>[] = [
    { Cookie: user.cookie },
    { Authorization: `Bearer ${user.token}` },
  ];
  for (const auth of ways) {
    const response = await fetch(`${server.url}/api/events/${id}/body`, { headers: auth });
    assert.equal(response.status, 200);
    assertDownloadHeaders(response, `${id}.bin`);
    assert.equal(await response.text(), html);
  }
});

Deno.test("[inspector] a downloaded body keeps its exact bytes; json and text get their extension", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const get = (id: string) =>
    fetch(`${server.url}/api/events/${id}/body`, { headers: { Cookie: user.cookie } });

  const binary = new Uint8Array(300 * KIB);
  for (let i = 0; i < binary.length; i += 65_536) {
    crypto.getRandomValues(binary.subarray(i, i + 65_536));
  }
  const binaryId = await post(user.webhookUrl, binary, "application/octet-stream");
  const got = await get(binaryId);
  assert.equal(got.status, 200);
  assertDownloadHeaders(got, `${binaryId}.bin`);
  assert.deepEqual(new Uint8Array(await got.arrayBuffer()), binary);

  const jsonId = await post(user.webhookUrl, '{"a":1}', "application/vnd.api+json; charset=utf-8");
  const json = await get(jsonId);
  assert.equal(json.status, 200);
  assertDownloadHeaders(json, `${jsonId}.json`);
  assert.equal(await json.text(), '{"a":1}');

  const textId = await post(user.webhookUrl, "plain\n", "text/plain; charset=utf-8");
  const text = await get(textId);
  assert.equal(text.status, 200);
  assertDownloadHeaders(text, `${textId}.txt`);
  assert.equal(await text.text(), "plain\n");
});

Deno.test("[inspector] the body download needs the event's owner, and a real event id", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const other = await signUp(server);
  const id = await post(user.webhookUrl, '{"secret":true}');
  const anonymous = await fetch(`${server.url}/api/events/${id}/body`);
  assert.equal(anonymous.status, 401);
  assert.match(anonymous.headers.get("content-type") ?? "", /^application\/json/);
  await anonymous.body?.cancel();
  const stranger = await fetch(`${server.url}/api/events/${id}/body`, {
    headers: { Cookie: other.cookie },
  });
  assert.equal(stranger.status, 404);
  assert.match(stranger.headers.get("content-type") ?? "", /^application\/json/);
  assert.match((await stranger.json()).error, /no retained event/);
  const bad = await fetch(`${server.url}/api/events/not-an-id/body`, {
    headers: { Cookie: user.cookie },
  });
  assert.equal(bad.status, 400);
  assert.match(bad.headers.get("content-type") ?? "", /^application\/json/);
  assert.match((await bad.json()).error, /is not an event id/);
});

Deno.test("[inspector] badges: verified, signature failed with its reason, handshake; nothing odd shown", () => {
  assert.deepEqual(eventBadges({ verified: { provider: "github", ok: true } }), [
    { kind: "verified", text: "verified github" },
  ]);
  assert.deepEqual(
    eventBadges({
      verified: { provider: "stripe", ok: false, reason: "signature does not match" },
    }),
    [{ kind: "failed", text: "signature failed: signature does not match" }],
  );
  assert.deepEqual(
    eventBadges({ handshake: true, verified: { provider: "slack", ok: true } }),
    [{ kind: "handshake", text: "handshake" }, { kind: "verified", text: "verified slack" }],
  );
  // Envelopes without the fields, or with malformed ones, show no badge.
  for (
    const odd of [
      {},
      null,
      "text",
      { verified: true },
      { verified: { provider: 1, ok: true } },
      { verified: { provider: "github", ok: "yes" } },
      { verified: { provider: "github", ok: false, reason: 5 } },
      { handshake: "true" },
    ]
  ) {
    assert.deepEqual(eventBadges(odd), [], JSON.stringify(odd));
  }
});
