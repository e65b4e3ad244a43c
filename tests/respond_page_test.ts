/**
 * Handler tests for the respond-mode form on /dashboard/endpoints: switching it on and off, the
 * inline error for a bad timeout, and refusal of a post from another site.
 */
import assert from "node:assert/strict";
import { signUp, startTestServer, type TestServer, type TestUser } from "./helpers.ts";

/** POSTs the respond form as a browser on our pages would, not following redirects. */
async function postRespond(
  server: TestServer,
  user: TestUser,
  fields: Record<string, string>,
  origin = server.url,
): Promise<Response> {
  return await fetch(`${server.url}/dashboard/endpoints/${user.slug}/respond`, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Cookie: user.cookie,
      Origin: origin,
    },
    body: new URLSearchParams(fields),
    redirect: "manual",
  });
}

async function endpointsPage(server: TestServer, user: TestUser): Promise<string> {
  const response = await fetch(`${server.url}/dashboard/endpoints`, {
    headers: { Cookie: user.cookie },
  });
  assert.equal(response.status, 200);
  return await response.text();
}

async function apiEndpoint(server: TestServer, user: TestUser) {
  const response = await fetch(`${server.url}/api/endpoints`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  return (await response.json()).endpoints[0];
}

Deno.test("[respond page] the form switches respond mode on and off with a flash", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const before = await endpointsPage(server, user);
  assert.match(before, /data-respond="off"/);
  assert.match(before, /senders get 200 at once/);
  assert.ok(before.includes(`action="/dashboard/endpoints/${user.slug}/respond"`));
  assert.match(before, /503 when no\s+client is connected, 504 when none answers/);

  const on = await postRespond(server, user, { respond: "on", timeout: "5" });
  assert.equal(on.status, 303);
  assert.equal(on.headers.get("location"), "/dashboard/endpoints");
  await on.body?.cancel();
  const page = await endpointsPage(server, user);
  assert.match(page, /Respond mode is on for “default”: senders wait up to 5 s/);
  assert.match(page, /data-respond="on"/);
  assert.match(page, /on, senders wait up to 5 s/);
  assert.match(page, /type="checkbox" name="respond" value="on" checked/);
  const endpoint = await apiEndpoint(server, user);
  assert.equal(endpoint.respond, true);
  assert.equal(endpoint.respondTimeoutSeconds, 5);

  const off = await postRespond(server, user, { timeout: "5" });
  assert.equal(off.status, 303);
  await off.body?.cancel();
  const after = await endpointsPage(server, user);
  assert.match(after, /Respond mode is off for “default”/);
  assert.match(after, /data-respond="off"/);
  assert.equal((await apiEndpoint(server, user)).respond, false);
});

Deno.test("[respond page] a bad timeout answers 400 with the message next to the field", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  for (const timeout of ["0", "31", "abc", "", "2.5"]) {
    const response = await postRespond(server, user, { respond: "on", timeout });
    assert.equal(response.status, 400, timeout);
    assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    const page = await response.text();
    assert.match(
      page,
      /<p id="respond-0-error" class="field-error">Cannot update respond mode: Timeout must be whole seconds from 1 to 30.<\/p>/,
      timeout,
    );
    assert.match(page, /aria-invalid="true"/);
  }
  // Nothing changed.
  assert.equal((await apiEndpoint(server, user)).respond, false);
});

Deno.test("[respond page] a post from another site is refused; another user's endpoint is 404", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const other = await signUp(server);
  const forged = await postRespond(
    server,
    user,
    { respond: "on", timeout: "5" },
    "https://evil.example",
  );
  assert.equal(forged.status, 403);
  assert.match(await forged.text(), /Forbidden: cross-site request refused/);
  assert.equal((await apiEndpoint(server, user)).respond, false);

  const foreign = await postRespond(server, { ...user, slug: other.slug }, {
    respond: "on",
    timeout: "5",
  });
  assert.equal(foreign.status, 404);
  assert.match(await foreign.text(), /Cannot update endpoint: no endpoint/);
  assert.equal((await apiEndpoint(server, other)).respond, false);
});
