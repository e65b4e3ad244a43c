/**
 * The forward command end to end: a real server, a real target that checks a GitHub-style HMAC,
 * and `forward.ts` as a subprocess.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseOptions } from "../forward.ts";
import { backoffDelay } from "../lib/forward/backoff.ts";
import { targetUrl } from "../lib/forward/target_request.ts";
import {
  githubSignature,
  postWebhook,
  randomBytes,
  respondMode,
  signUp,
  startTestServer,
  type TestServer,
  type TestUser,
  waitFor,
} from "./helpers.ts";

const SECRET = "It's a Secret to Everybody";
const FORWARD = fileURLToPath(new URL("../forward.ts", import.meta.url));

/** What the target received. */
interface Received {
  method: string;
  path: string;
  query: [string, string][];
  body: Uint8Array;
  signatureOk: boolean;
  contentType: string | null;
}

/** A local target that verifies X-Hub-Signature-256; `answer` picks each status. */
function startTarget(answer: (received: Received, index: number) => number = () => 200) {
  const received: Received[] = [];
  let calls = 0;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
    const url = new URL(request.url);
    const body = new Uint8Array(await request.arrayBuffer());
    const expected = await githubSignature(SECRET, body);
    const entry: Received = {
      method: request.method,
      path: url.pathname,
      query: [...url.searchParams],
      body,
      signatureOk: request.headers.get("x-hub-signature-256") === expected,
      contentType: request.headers.get("content-type"),
    };
    const status = answer(entry, calls++);
    if (status < 300) received.push(entry);
    return new Response(status < 300 ? "ok" : "no", { status });
  });
  return {
    received,
    url: `http://127.0.0.1:${server.addr.port}/webhooks`,
    shutdown: () => server.shutdown(),
  };
}

/** `forward.ts` as a subprocess with its output collected line by line. */
function startForwarder(args: string[], env: Record<string, string> = {}) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FORWARD, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  const lines: string[] = [];
  const errors: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array<ArrayBuffer>>, into: string[]) => {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      into.push(...parts);
    }
    if (buffer) into.push(buffer);
  };
  const reading = Promise.all([collect(child.stdout, lines), collect(child.stderr, errors)]);
  let exit: Promise<number> | null = null;
  const status = () => (exit ??= child.status.then(async (s) => (await reading, s.code)));
  return {
    lines,
    errors,
    status,
    /** Waits until some stdout line matches; fails with the output so far. */
    async waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<string> {
      await until(
        () => lines.some((l) => pattern.test(l)),
        timeoutMs,
        () =>
          `no line matching ${pattern}; stdout:\n${lines.join("\n")}\nstderr:\n${
            errors.join("\n")
          }`,
      );
      return lines.find((l) => pattern.test(l))!;
    },
    async stop(): Promise<number> {
      try {
        child.kill("SIGTERM");
      } catch {
        // already exited
      }
      return await status();
    },
  };
}

/** A target and `forward.ts` forwarding `user`'s events to it, resuming from a fresh state file. */
async function forwardTo(server: TestServer, user: TestUser) {
  const target = startTarget();
  const state = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.remove(state);
  const forwarder = startForwarder([
    "--url",
    server.url,
    "--token",
    user.token,
    "--target",
    target.url,
    "--state",
    state,
  ]);
  return { target, state, forwarder };
}

/**
 * `forward.ts` forwarding `user`'s events to `target` from a fresh state file, connected;
 * disposing stops it (it must exit 0) and removes the state file.
 */
async function forwarding(server: TestServer, user: TestUser, target: string) {
  const state = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.remove(state);
  const forwarder = startForwarder(
    ["--url", server.url, "--token", user.token, "--target", target, "--state", state],
  );
  await forwarder.waitFor(/connected to/);
  return Object.assign(forwarder, {
    async [Symbol.asyncDispose]() {
      assert.equal(await forwarder.stop(), 0);
      await Deno.remove(state).catch(() => {});
    },
  });
}

async function until(check: () => boolean, timeoutMs: number, message: () => string) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(message());
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function signedPost(url: string, body: Uint8Array, contentType: string) {
  const response = await postWebhook(url, body as BodyInit, {
    "Content-Type": contentType,
    "X-Hub-Signature-256": await githubSignature(SECRET, body),
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).id as string;
}

const text = (value: string) => new TextEncoder().encode(value);

Deno.test("[forward] target URL joins the path and rebuilds the query; backoff is bounded", () => {
  assert.equal(targetUrl("http://x/webhooks", "/github", {}), "http://x/webhooks/github");
  assert.equal(targetUrl("http://x/webhooks/", "/", {}), "http://x/webhooks/");
  assert.equal(
    targetUrl("http://x/webhooks", "/", { a: "1", t: ["x", "y"] }),
    "http://x/webhooks?a=1&t=x&t=y",
  );
  assert.equal(targetUrl("http://x/", "/a%20b", {}), "http://x/a%20b");
  for (let attempt = 1; attempt < 20; attempt++) {
    const delay = backoffDelay(attempt, { baseMs: 100, maxMs: 1000 });
    assert.ok(delay >= 50 && delay <= 1000);
  }
  const bad = parseOptions(["--url", "http://h", "--token", "t", "--target", "nope"], {});
  assert.equal(bad.ok, false);
  const vars = { WEBSOCKS_URL: "http://h", WEBSOCKS_TOKEN: "t", WEBSOCKS_TARGET: "http://t/" };
  const env = parseOptions([], { ...vars, XDG_STATE_HOME: "/state" });
  assert.ok(env.ok);
  assert.match(env.options.stateFile, /^\/state\/websocks\/h-[0-9a-f]{12}\.json$/);
  // Without XDG_STATE_HOME, under the home folder; one file per server and filter set.
  const home = parseOptions(["--endpoint", "abc"], { ...vars, HOME: "/home/me" });
  assert.ok(home.ok);
  assert.match(
    home.options.stateFile,
    /^\/home\/me\/.local\/state\/websocks\/h-abc-[0-9a-f]{12}\.json$/,
  );
  const other = parseOptions(["--endpoint", "abc", "--event", "a.*"], {
    ...vars,
    HOME: "/home/me",
  });
  assert.ok(other.ok && other.options.stateFile !== home.options.stateFile);
  // --state still wins; routes need a pattern and an http URL; a target or a route is needed.
  const given = parseOptions(["--state", "s.json"], vars);
  assert.ok(given.ok && given.options.stateFile === "s.json");
  const noPlace = parseOptions([], vars);
  assert.ok(!noPlace.ok && /XDG_STATE_HOME or HOME/.test(noPlace.message));
  const bare = { WEBSOCKS_URL: "http://h", WEBSOCKS_TOKEN: "t", HOME: "/home/me" };
  const none = parseOptions([], bare);
  assert.ok(!none.ok && /--route is required/.test(none.message));
  const routed = parseOptions(
    ["--route", "invoice.*=http://a/x?y=1", "--route", "*=http://b"],
    bare,
  );
  assert.ok(routed.ok);
  assert.deepEqual(routed.options.routes, [
    { pattern: "invoice.*", target: "http://a/x?y=1" },
    { pattern: "*", target: "http://b" },
  ]);
  for (const route of ["nopattern", "=http://a", "a=ftp://b"]) {
    const bad = parseOptions(["--route", route], bare);
    assert.ok(!bad.ok && /route/.test(bad.message), route);
  }
});

Deno.test("[forward] a path with dot segments, however encoded, is not forwarded", () => {
  // Anyone may post to the ingest URL, and its path is stored raw: URL parsing resolves %2e%2e
  // as "..", which took /webhooks/github plus /%2e%2e/%2e%2e/admin to /admin.
  for (
    const path of [
      "/%2e%2e/%2e%2e/admin",
      "/%2E%2e/config",
      "/../x",
      "/a/../../x",
      "/.%2E",
      // One segment to URL parsing, a climb to a server that decodes first (Python's
      // http.server, nginx, file servers), takes "\\" for "/", or reads ";" as Tomcat does.
      "/..%2fsecret.txt",
      "/%2e%2e%2Fsecret.txt",
      "/..%5Csecret.txt",
      "/..\\secret.txt",
      "/..;/secret.txt",
      "/a/../b",
      // An escape that is not valid UTF-8 or not hex must not hide the others from the check.
      "/..%2f%zz%2f..%2fsecret.txt",
      "/..%2F%ff%2F..%2Fsecret.txt",
      "/..%5c%zz%5c..%5csecret.txt",
      // Decoded twice by some servers.
      "/%252e%252e%252fsecret.txt",
    ]
  ) {
    assert.throws(
      () => targetUrl("http://x/webhooks/github", path, {}),
      /^Error: Cannot forward: the path .+ has "\." or "\.\." segments \(however encoded\), which could leave the target's path \/webhooks\/github$/,
      path,
    );
  }
  // An encoded slash that climbs nowhere is a name like any other (GitLab's "group%2Fproject").
  assert.equal(
    targetUrl("http://x/webhooks", "/group%2Fproject", {}),
    "http://x/webhooks/group%2Fproject",
  );
  assert.equal(targetUrl("http://x/webhooks", "/a..b/c.d", {}), "http://x/webhooks/a..b/c.d");
});

Deno.test("[forward] a stranger's path that would leave the target is not sent; the sender gets 502", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user, 20);
  const seen: string[] = [];
  await using target = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    seen.push(`${request.method} ${path}`);
    return new Response(path.startsWith("/webhooks") ? "webhook ok" : "LOCAL SECRET");
  });
  await using forwarder = await forwarding(
    server,
    user,
    `http://127.0.0.1:${target.addr.port}/webhooks`,
  );
  // fetch would resolve the dots itself: the stranger writes the request line by hand.
  const answer = await rawRequest(server.url, `GET /api/in/${user.slug}/%2e%2e/config`);
  assert.match(answer.head, /^HTTP\/1.1 502 /);
  assert.match(answer.head, /content-type: text\/plain/i);
  assert.match(
    answer.body,
    /^The forward target failed: Cannot forward: the path \/%2e%2e\/config/,
  );
  assert.doesNotMatch(answer.body, /LOCAL SECRET/);
  await forwarder.waitFor(/GET .* \/%2e%2e\/config -> failed \(Cannot forward/);
  // The next webhook goes through as usual: the refusal held nothing up.
  const next = await fetch(`${user.webhookUrl}/github`, { method: "POST", body: "{}" });
  assert.equal(next.status, 200);
  assert.equal(await next.text(), "webhook ok");
  assert.deepEqual(seen, ["POST /webhooks/github"]);
});

Deno.test("[forward] in respond mode a target's answer over 1 MiB is not buffered; the sender gets 502", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user, 20);
  await using target = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request) => {
    const big = new URL(request.url).pathname.endsWith("/big");
    // The large answer never ends: the sender is answered only if the forwarder stops reading.
    const body = big
      ? new ReadableStream<Uint8Array>({
        pull(controller) {
          controller.enqueue(new Uint8Array(64 * 1024));
        },
      })
      : "small";
    return new Response(body);
  });
  await using _forwarder = await forwarding(
    server,
    user,
    `http://127.0.0.1:${target.addr.port}/hook`,
  );
  const big = await fetch(`${user.webhookUrl}/big`, { method: "POST", body: "{}" });
  assert.equal(big.status, 502);
  assert.match(big.headers.get("content-type")!, /^text\/plain/);
  assert.equal(
    await big.text(),
    "The forward target's answer is over 1048576 bytes; it was not relayed",
  );
  const small = await fetch(`${user.webhookUrl}/small`, { method: "POST", body: "{}" });
  assert.equal(small.status, 200);
  assert.equal(await small.text(), "small");
});

/** One HTTP/1.1 request written as is (`line` is "METHOD target"), and its answer. */
async function rawRequest(url: string, line: string): Promise<{ head: string; body: string }> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  await conn.write(
    new TextEncoder().encode(`${line} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n\r\n`),
  );
  let text = "";
  for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) text += chunk;
  const split = text.indexOf("\r\n\r\n");
  return { head: text.slice(0, split), body: text.slice(split + 4) };
}

Deno.test("[forward] JSON, form and binary bodies arrive byte-exact with method, path and query", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const { target, state, forwarder } = await forwardTo(server, user);
  try {
    await forwarder.waitFor(/connected to/);
    const json = text('{"event": "push",  "ref": "refs/heads/main", "emoji": "🚀"}');
    const form = text("a=1&b=two+words&b=%26amp");
    const binary = new Uint8Array(256).map((_, i) => 255 - i);
    await signedPost(
      `${user.webhookUrl}/github/push?delivery=1&tag=a&tag=b`,
      json,
      "application/json",
    );
    await signedPost(`${user.webhookUrl}/form`, form, "application/x-www-form-urlencoded");
    await signedPost(user.webhookUrl, binary, "application/octet-stream");
    await until(() => target.received.length === 3, 20_000, () => forwarder.lines.join("\n"));
    const [a, b, c] = target.received;
    assert.deepEqual([a.method, a.path, a.query], [
      "POST",
      "/webhooks/github/push",
      [["delivery", "1"], ["tag", "a"], ["tag", "b"]],
    ]);
    assert.deepEqual(a.body, json);
    assert.equal(a.contentType, "application/json");
    assert.deepEqual([b.path, b.body], ["/webhooks/form", form]);
    assert.deepEqual([c.path, c.body], ["/webhooks", binary]);
    assert.ok(target.received.every((r) => r.signatureOk));
    await forwarder.waitFor(/POST \S+ \/github\/push -> 200 \d+ms/);
    const saved = JSON.parse(await Deno.readTextFile(state));
    assert.match(saved.lastEventId, /^[0-9A-Z]{26}$/);
  } finally {
    assert.equal(await forwarder.stop(), 0);
    await target.shutdown();
    await Deno.remove(state).catch(() => {});
  }
  assert.match(forwarder.lines.at(-1)!, /^summary: 3 forwarded, 0 rejected \(4xx\), 0 failed$/);
});

Deno.test("[forward] a 25 MiB binary body reaches the target byte-exact", async () => {
  await using server = await startTestServer({ MAX_BODY_BYTES: String(25 * 2 ** 20) });
  const user = await signUp(server);
  const { target, state, forwarder } = await forwardTo(server, user);
  try {
    await forwarder.waitFor(/connected to/);
    const body = randomBytes(25 * 2 ** 20);
    await signedPost(user.webhookUrl, body, "application/octet-stream");
    await until(() => target.received.length === 1, 60_000, () => forwarder.lines.join("\n"));
    const [received] = target.received;
    assert.equal(received.body.byteLength, body.byteLength);
    assert.equal(received.body.findIndex((byte, i) => byte !== body[i]), -1);
    assert.ok(received.signatureOk, "the sender's signature still verifies at the target");
  } finally {
    assert.equal(await forwarder.stop(), 0);
    await target.shutdown();
    await Deno.remove(state).catch(() => {});
  }
});

Deno.test("[forward] killed mid-stream and restarted: every webhook arrives exactly once", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  // A slow target, so the kill lands while events are still waiting.
  const target = startTarget();
  const slow = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
    await new Promise((resolve) => setTimeout(resolve, 40));
    const body = new Uint8Array(await request.arrayBuffer());
    return await fetch(target.url, { method: "POST", headers: request.headers, body });
  });
  const slowUrl = `http://127.0.0.1:${slow.addr.port}/webhooks`;
  const state = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.remove(state);
  const args = ["--url", server.url, "--token", user.token, "--target", slowUrl, "--state", state];
  let forwarder = startForwarder(args);
  const seq = (n: number) => text(JSON.stringify({ seq: n }));
  try {
    await forwarder.waitFor(/connected to/);
    for (let n = 0; n < 15; n++) await signedPost(user.webhookUrl, seq(n), "application/json");
    await until(() => target.received.length >= 3, 20_000, () => forwarder.lines.join("\n"));
    assert.equal(await forwarder.stop(), 0);
    for (let n = 15; n < 25; n++) await signedPost(user.webhookUrl, seq(n), "application/json");
    forwarder = startForwarder(args);
    await forwarder.waitFor(/connected to .* \(resuming after [0-9A-Z]{26}\)/);
    // Events arrive in order, so once the last one is in, any repeat would already be in too.
    const seqs = () => target.received.map((r) => JSON.parse(new TextDecoder().decode(r.body)).seq);
    await until(() => seqs().includes(24), 30_000, () => forwarder.lines.join("\n"));
    assert.deepEqual(seqs(), Array.from({ length: 25 }, (_, n) => n));
    assert.ok(target.received.every((r) => r.signatureOk));
  } finally {
    await forwarder.stop();
    await slow.shutdown();
    await target.shutdown();
    await Deno.remove(state).catch(() => {});
  }
});

Deno.test("[forward] 503 twice then 200 is retried and delivered once; always failing moves on", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const target = startTarget((received, index) => {
    if (received.path.endsWith("/broken")) return 500;
    return index < 2 ? 503 : 200;
  });
  const state = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.remove(state);
  const forwarder = startForwarder([
    "--url",
    server.url,
    "--token",
    user.token,
    "--target",
    target.url,
    "--state",
    state,
    "--retry-base-ms",
    "20",
    "--retry-max-ms",
    "100",
    "--attempts",
    "4",
  ]);
  try {
    await forwarder.waitFor(/connected to/);
    await signedPost(`${user.webhookUrl}/flaky`, text('{"n": 1}'), "application/json");
    await forwarder.waitFor(/\/flaky -> 200 \d+ms after 3 attempts/);
    await signedPost(`${user.webhookUrl}/broken`, text('{"n": 2}'), "application/json");
    await signedPost(`${user.webhookUrl}/after`, text('{"n": 3}'), "application/json");
    await forwarder.waitFor(/\/broken -> failed \(HTTP 500\) \d+ms after 4 attempts/);
    await forwarder.waitFor(/\/after -> 200/);
    assert.deepEqual(target.received.map((r) => r.path), ["/webhooks/flaky", "/webhooks/after"]);
  } finally {
    assert.equal(await forwarder.stop(), 0);
    await target.shutdown();
    await Deno.remove(state).catch(() => {});
  }
  assert.match(forwarder.lines.at(-1)!, /^summary: 2 forwarded, 0 rejected \(4xx\), 1 failed$/);
});

Deno.test("[forward] bad token exits 3, bad target URL exits 2, unreachable server exits 4", async () => {
  await using server = await startTestServer();
  const state = await Deno.makeTempDir();
  try {
    const base = ["--state", `${state}/s.json`];
    const badToken = startForwarder([
      ...base,
      "--url",
      server.url,
      "--token",
      "wsk_wrong",
      "--target",
      "http://127.0.0.1:1/",
    ]);
    assert.equal(await badToken.status(), 3);
    assert.match(badToken.errors.join("\n"), /refused the token \(401 unauthorized\)/);

    const badTarget = startForwarder([
      ...base,
      "--url",
      server.url,
      "--token",
      "wsk_x",
      "--target",
      "localhost:3000/webhooks",
    ]);
    assert.equal(await badTarget.status(), 2);
    assert.match(badTarget.errors.join("\n"), /--target .* must be an http/);

    const noToken = startForwarder([...base, "--url", server.url, "--target", "http://t/"]);
    assert.equal(await noToken.status(), 2);
    assert.match(noToken.errors.join("\n"), /--token \(or WEBSOCKS_TOKEN\) is required/);

    const unreachable = startForwarder([
      ...base,
      "--url",
      "http://127.0.0.1:1",
      "--token",
      "wsk_x",
      "--target",
      "http://t/",
    ]);
    assert.equal(await unreachable.status(), 4);
    assert.match(unreachable.errors.join("\n"), /cannot reach the WebSocks server/);
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("[forward] respond mode relays the target's real answer; acks reach the event's record", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  await respondMode(server, user, 20);
  // A target that answers like Meta's verification: the challenge back, as text.
  await using target = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request) => {
    const challenge = new URL(request.url).searchParams.get("hub.challenge") ?? "";
    return new Response(challenge, { status: 200, headers: { "Content-Type": "text/plain" } });
  });
  await using _forwarder = await forwarding(
    server,
    user,
    `http://127.0.0.1:${target.addr.port}/hook`,
  );
  const answer = await fetch(`${user.webhookUrl}?hub.challenge=1158201444`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
  assert.equal(answer.status, 200);
  assert.match(answer.headers.get("content-type")!, /^text\/plain/);
  assert.equal(await answer.text(), "1158201444");
  const auth = { Authorization: `Bearer ${user.token}` };
  const history = await (await fetch(`${server.url}/api/events`, { headers: auth })).json();
  const id = history.events[0].id;
  let deliveries: { status: number }[] = [];
  await waitFor(async () => {
    deliveries = (await (await fetch(`${server.url}/api/events/${id}/deliveries`, {
      headers: auth,
    })).json()).deliveries;
    return deliveries.length > 0;
  }, { what: "the forwarder's ack listed by the API" });
  assert.equal(deliveries.length, 1);
  assert.equal(deliveries[0].status, 200);
});

Deno.test("[forward] a handshake event is acked, not forwarded; the verdict shows in the line", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const target = startTarget();
  const state = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.remove(state);
  const forwarder = startForwarder([
    "--url",
    server.url,
    "--token",
    user.token,
    "--target",
    target.url,
    "--state",
    state,
  ]);
  try {
    await forwarder.waitFor(/connected to/);
    // A handshake the relay answered, stored as ingest stores one (the answers themselves are
    // lib/intake/handshakes.ts's to test).
    const endpoint = (await server.services.endpoints.get(user.slug))!;
    const handshake = await server.services.ingest.submit({
      endpoint,
      receivedAt: new Date(),
      method: "GET",
      path: "/",
      queryJson: '{"hub.mode":"subscribe","hub.challenge":"42"}',
      headersJson: "{}",
      contentType: null,
      kind: "json",
      body: new Uint8Array(),
      text: "",
      verified: { provider: "meta", ok: true },
      handshake: true,
    });
    assert.ok(handshake.accepted);
    await forwarder.waitFor(
      /GET \S+ \/ -> handshake answered by the relay, not forwarded \[meta: verified\]$/,
    );
    await signedPost(user.webhookUrl, text('{"after":"handshake"}'), "application/json");
    await until(() => target.received.length === 1, 20_000, () => forwarder.lines.join("\n"));
    assert.deepEqual(target.received[0].body, text('{"after":"handshake"}'));
    await waitFor(async () => {
      const response = await fetch(`${server.url}/api/events/${handshake.id}/deliveries`, {
        headers: { Authorization: `Bearer ${user.token}` },
      });
      return (await response.json()).deliveries?.length === 1;
    }, { what: "the handshake's ack" });
  } finally {
    assert.equal(await forwarder.stop(), 0);
    await target.shutdown();
    await Deno.remove(state).catch(() => {});
  }
  assert.match(forwarder.lines.at(-1)!, /^summary: 1 forwarded, 0 rejected \(4xx\), 0 failed$/);
});

Deno.test("[forward] --endpoint, --event and two --routes: each type to its route, the rest skipped and acked; state per server and filters", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const created = await fetch(`${server.url}/api/endpoints`, {
    method: "POST",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "other" }),
  });
  assert.equal(created.status, 201);
  const other = (await created.json()).endpoint;
  const invoices = startTarget();
  const issues = startTarget();
  const xdg = await Deno.makeTempDir();
  const args = [
    "--url",
    server.url,
    "--token",
    user.token,
    // With "=": a slug may start with "-", which would otherwise read as an option.
    `--endpoint=${user.slug}`,
    "--event",
    "invoice.*",
    "--event",
    "issues.*",
    "--event",
    "ping",
    "--route",
    `invoice.*=${invoices.url}/stripe`,
    "--route",
    `issues.*=${issues.url}`,
  ];
  const post = async (url: string, body: unknown, headers: Record<string, string> = {}) => {
    const response = await postWebhook(url, JSON.stringify(body), {
      "Content-Type": "application/json",
      ...headers,
    });
    assert.equal(response.status, 200);
    return (await response.json()).id as string;
  };
  const forwarder = startForwarder(args, { XDG_STATE_HOME: xdg });
  let second: ReturnType<typeof startForwarder> | null = null;
  try {
    await forwarder.waitFor(/connected to/);
    const ids = [
      await post(user.webhookUrl, { type: "invoice.paid" }),
      await post(user.webhookUrl, { type: "customer.created" }), // no --event matches
      await post(user.webhookUrl, { action: "opened" }, { "X-GitHub-Event": "issues" }),
      await post(user.webhookUrl, { zen: "hi" }, { "X-GitHub-Event": "ping" }), // no route
      await post(other.url, { type: "invoice.paid" }), // another endpoint
      await post(user.webhookUrl, { type: "invoice.voided" }),
    ];
    await until(
      () => invoices.received.length === 2 && issues.received.length === 1,
      20_000,
      () => forwarder.lines.join("\n"),
    );
    assert.deepEqual(invoices.received.map((r) => r.path), [
      "/webhooks/stripe",
      "/webhooks/stripe",
    ]);
    assert.deepEqual(
      invoices.received.map((r) => JSON.parse(new TextDecoder().decode(r.body)).type),
      ["invoice.paid", "invoice.voided"],
    );
    assert.equal(issues.received[0].path, "/webhooks");
    await forwarder.waitFor(/-> 200 \d+ms \(invoice\.paid via invoice\.\*\)$/);
    await forwarder.waitFor(/-> 200 \d+ms \(issues\.opened via issues\.\*\)$/);
    await forwarder.waitFor(/-> skipped: no --route matches "ping" and there is no --target$/);
    // The skipped event was acked, so the dashboard shows it handled.
    await waitFor(async () => {
      const response = await fetch(`${server.url}/api/events/${ids[3]}/deliveries`, {
        headers: { Authorization: `Bearer ${user.token}` },
      });
      return (await response.json()).deliveries.length === 1;
    }, { what: "the skipped event's ack" });
    await forwarder.waitFor(/invoice\.voided via/);

    // The state is in XDG_STATE_HOME, one file named for the server and endpoint, recording
    // the server; nothing lands in the working directory.
    const files = [...Deno.readDirSync(`${xdg}/websocks`)].map((f) => f.name);
    assert.equal(files.length, 1);
    assert.match(files[0], new RegExp(`^127\\.0\\.0\\.1_\\d+-${user.slug}-[0-9a-f]{12}\\.json$`));
    const file = `${xdg}/websocks/${files[0]}`;
    await waitFor(
      async () => JSON.parse(await Deno.readTextFile(file)).lastEventId === ids[5],
      { what: "the state file's last id" },
    );
    assert.equal(JSON.parse(await Deno.readTextFile(file)).server, server.url);
    assert.equal(await Deno.stat(".websocks-forward.json").catch(() => null), null);
    assert.equal(await forwarder.stop(), 0);
    assert.match(
      forwarder.lines.at(-1)!,
      /^summary: 3 forwarded, 0 rejected \(4xx\), 0 failed, 1 skipped \(no route\)$/,
    );

    // The same flags find the same file and resume from it.
    second = startForwarder(args, { XDG_STATE_HOME: xdg });
    await second.waitFor(new RegExp(`connected to .* \\(resuming after ${ids[5]}\\)`));
    assert.equal(await second.stop(), 0);

    // That file given to a forwarder of another server is refused, never used.
    const elsewhere = startForwarder(
      ["--url", "http://127.0.0.1:9", "--token", "t", "--target", invoices.url, "--state", file],
    );
    assert.equal(await elsewhere.status(), 2);
    assert.match(
      elsewhere.errors.join("\n"),
      /belongs to http:\/\/127\.0\.0\.1:\d+, not http:\/\/127\.0\.0\.1:9/,
    );
  } finally {
    await forwarder.stop();
    await second?.stop();
    await invoices.shutdown();
    await issues.shutdown();
    await Deno.remove(xdg, { recursive: true });
  }
});

Deno.test("[forward] a token revoked while connected stops the command with exit 3", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const state = await Deno.makeTempDir();
  const forwarder = startForwarder([
    "--url",
    server.url,
    "--token",
    user.token,
    "--target",
    "http://127.0.0.1:1/",
    "--state",
    `${state}/s.json`,
  ]);
  try {
    await forwarder.waitFor(/connected to/);
    const revoked = await fetch(`${server.url}/api/tokens/${user.tokenId}`, {
      method: "DELETE",
      headers: { Cookie: user.cookie, Origin: server.url },
    });
    assert.equal(revoked.status, 200);
    await revoked.body?.cancel();
    assert.equal(await forwarder.status(), 3);
    assert.match(forwarder.errors.join("\n"), /token revoked/);
  } finally {
    await forwarder.stop();
    await Deno.remove(state, { recursive: true });
  }
});
