/**
 * Operations (lib/observe): /healthz, /readyz (KV closed, SIGTERM drain), /metrics moving with
 * real traffic in one isolate and across two Workers, METRICS_TOKEN, X-Request-Id on every kind
 * of response, and JSON logs with no token in them.
 */
import assert from "node:assert/strict";
import {
  openSse,
  openWs,
  postWebhook,
  signUp,
  startTestServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";
import { clusterSides, postOn, signUpOn, within } from "./sides.ts";
import { redactQuery } from "../lib/observe/log.ts";
import { METRICS_CONTENT_TYPE } from "../lib/observe/metrics.ts";
import client from "prom-client";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Prometheus text as `name{labels}` → value (comments and histogram buckets left out). */
function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#") || line.includes("_bucket{")) continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

async function scrape(
  fetchMetrics: () => Promise<Response>,
): Promise<Map<string, number>> {
  const response = await fetchMetrics();
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseMetrics(await response.text());
}

/** A metric's value, 0 when absent (a labelled counter appears once counted). */
const value = (metrics: Map<string, number>, name: string) => metrics.get(name) ?? 0;

Deno.test("[health] /healthz answers 200 and /readyz 200 naming each check", async () => {
  await using server = await startTestServer();
  const health = await fetch(`${server.url}/healthz`);
  assert.equal(health.status, 200);
  assert.match(health.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual(await health.json(), { status: "ok" });

  const ready = await fetch(`${server.url}/readyz`);
  assert.equal(ready.status, 200);
  assert.match(ready.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal(ready.headers.get("cache-control"), "no-store");
  const body = await ready.json();
  assert.equal(body.status, "ready");
  assert.deepEqual(body.failing, []);
  assert.deepEqual(Object.keys(body.checks).sort(), ["cron", "kv", "queue", "shutdown"]);
  assert.equal(body.checks.kv.ok, true);
  assert.match(body.checks.queue.status, /no KV queue/);
});

Deno.test("[health] /readyz answers 503 naming kv when KV is closed; /healthz stays 200", async () => {
  const server = await startTestServer();
  try {
    server.services.kv.close();
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 503);
    assert.match(ready.headers.get("content-type") ?? "", /^application\/json/);
    const body = await ready.json();
    assert.equal(body.status, "not ready");
    assert.deepEqual(body.failing, ["kv"]);
    assert.equal(body.checks.kv.ok, false);
    assert.match(body.checks.kv.status, /^failed: /);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    // KV is closed already: closing it again is the only part of shutdown that may complain.
    await server.shutdown().catch(() => {});
  }
});

/** `main.ts` in its own process; stdout and stderr kept whole. */
async function spawnMain(env: Record<string, string>) {
  const dir = await Deno.makeTempDir({ prefix: "websocks-observe-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    env: { PORT: "0", HOST: "127.0.0.1", KV_PATH: `${dir}/websocks.kv`, ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  while (!/listening on http:\/\/127\.0\.0\.1:\d+/.test(stdout)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`main.ts exited (${(await child.status).code}):\n${await stderr}`);
    stdout += value;
  }
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      stdout += value;
    }
  })();
  const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stdout)![1]);
  return {
    base: `http://127.0.0.1:${port}`,
    child,
    /** Sends `signal` (SIGTERM by default) and returns the exit code and both outputs. */
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
      const { code } = await child.status;
      await rest;
      const errors = await stderr;
      await Deno.remove(dir, { recursive: true });
      return { code, stdout, stderr: errors };
    },
  };
}

Deno.test("[health] SIGTERM: /readyz turns 503 naming shutdown while streams stay open, then they close", async () => {
  const server = await spawnMain({ WORKERS: "2", SHUTDOWN_DRAIN_SECONDS: "3" });
  let stopped: ReturnType<typeof server.stop> | null = null;
  try {
    const signup = await fetch(`${server.base}/api/auth/signup`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: "drain@example.com", password: "correct horse battery" }),
    });
    assert.equal(signup.status, 201);
    const { token, endpoint } = await signup.json();
    const stream = await openSse(`${server.base}/api/events/stream?token=${token.value}`);
    assert.equal(stream.response.status, 200);
    let streamEnded = false;
    const ended = (async () => {
      try {
        for (;;) await stream.next(60_000);
      } catch {
        streamEnded = true;
      }
    })();

    stopped = server.stop("SIGTERM");
    let report: { failing: string[]; status: string } | null = null;
    await waitFor(async () => {
      const ready = await fetch(`${server.base}/readyz`);
      if (ready.status !== 503) {
        await ready.body?.cancel();
        return false;
      }
      assert.match(ready.headers.get("content-type") ?? "", /^application\/json/);
      report = await ready.json();
      return true;
    }, { what: "/readyz turning 503 after SIGTERM", timeoutMs: 3000, intervalMs: 20 });
    assert.deepEqual(report!.failing, ["shutdown"]);
    assert.equal(report!.status, "not ready");
    // Not ready is not gone: during the drain the stream is open and webhooks are still taken.
    assert.equal(streamEnded, false, "the stream closed before /readyz turned 503");
    const posted = await postWebhook(`${server.base}/api/in/${endpoint.slug}`, "{}");
    assert.equal(posted.status, 200);
    await posted.body?.cancel();

    await within(ended, { ms: 15_000, what: "the stream closing after the drain" });
    const { code, stdout } = await stopped;
    assert.equal(code, 0, stdout);
  } finally {
    await (stopped ?? server.stop("SIGKILL"));
  }
});

Deno.test("[metrics] counters move with real traffic: ingest, SSE and WS clients, deliveries, catch-up", async () => {
  await using server = await startTestServer();
  const metrics = () => scrape(() => fetch(`${server.url}/metrics`));
  const user = await signUp(server);
  const before = await metrics();

  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  const ws = await openWs(`${server.wsUrl}/?token=${user.token}`);
  const connected = await metrics();
  assert.equal(value(connected, 'websocks_connected_clients{transport="sse"}'), 1);
  assert.equal(value(connected, 'websocks_connected_clients{transport="ws"}'), 1);

  let lastId = "";
  for (let n = 0; n < 3; n++) {
    const posted = await postWebhook(user.webhookUrl, JSON.stringify({ n }));
    assert.equal(posted.status, 200);
    lastId = (await posted.json()).id;
  }
  const refused = await postWebhook(`${server.url}/api/in/no-such-endpoint`, "{}");
  assert.equal(refused.status, 404);
  await refused.body?.cancel();
  for (let n = 0; n < 3; n++) {
    await sse.next();
    let message;
    do message = await ws.next(); while (message.type !== "webhook");
  }
  // A client reconnecting with its last event id runs a catch-up read.
  const resumed = await openSse(`${server.url}/api/events/stream?token=${user.token}`, {
    "Last-Event-ID": lastId,
  });

  let after = await metrics();
  const delta = (name: string) => value(after, name) - value(before, name);
  assert.equal(delta("websocks_webhooks_accepted_total"), 3);
  assert.equal(delta('websocks_webhooks_refused_total{status="404"}'), 1);
  assert.equal(delta("websocks_ingest_duration_seconds_count"), 4);
  assert.ok(delta("websocks_group_commit_duration_seconds_count") >= 1);
  assert.equal(delta("websocks_group_commit_batch_size_sum"), 3);
  assert.ok(
    delta("websocks_deliveries_total") >= 6,
    `deliveries ${delta("websocks_deliveries_total")}`,
  );
  assert.ok(delta("websocks_catch_up_reads_total") >= 1);
  assert.ok(value(after, "websocks_process_resident_memory_bytes") > 0);
  assert.ok(value(after, "websocks_heap_used_bytes") > 0);
  assert.ok(after.has("websocks_event_loop_delay_seconds_count"));
  assert.ok(after.has("websocks_kv_commit_errors_total"));
  assert.ok(after.has('websocks_kv_commit_retries_total{reason="conflict"}'));
  assert.ok(after.has("websocks_mails_sent_total"));
  assert.ok(after.has("websocks_respond_timeouts_total"));

  sse.close();
  resumed.close();
  await ws.close();
  await waitFor(async () => {
    after = await metrics();
    return value(after, 'websocks_connected_clients{transport="sse"}') === 0 &&
      value(after, 'websocks_connected_clients{transport="ws"}') === 0;
  }, { what: "connected clients back to 0" });
});

Deno.test("[metrics] the content type, fixed so prom-client loads lazily, is prom-client's", () => {
  assert.equal(METRICS_CONTENT_TYPE, client.Registry.PROMETHEUS_CONTENT_TYPE);
});

Deno.test("[metrics] METRICS_TOKEN: 401 without it or with another, 200 with it", async () => {
  const token = "metrics-secret-0123456789";
  await using server = await startTestServer({ METRICS_TOKEN: token });
  const without = await fetch(`${server.url}/metrics`);
  assert.equal(without.status, 401);
  assert.match(without.headers.get("content-type") ?? "", /^application\/json/);
  assert.match((await without.json()).error, /METRICS_TOKEN/);
  const wrong = await fetch(`${server.url}/metrics`, {
    headers: { Authorization: `Bearer ${token}x` },
  });
  assert.equal(wrong.status, 401);
  await wrong.body?.cancel();
  const right = await scrape(() =>
    fetch(`${server.url}/metrics`, { headers: { Authorization: `Bearer ${token}` } })
  );
  assert.ok(right.has("websocks_webhooks_accepted_total"));
});

Deno.test("[metrics] one scrape adds up both Workers, whichever isolate answers it", async () => {
  const sides = await clusterSides();
  try {
    const user = await signUpOn(sides);
    const sse = await sides.openSse(0, `/api/events/stream?token=${user.token}`);
    const ws = await sides.openWs(1, `/?token=${user.token}`);
    for (const side of [0, 1, 0, 1] as const) {
      assert.equal((await postOn(sides, { side, slug: user.slug, body: "{}" })).status, 200);
    }
    for (let n = 0; n < 4; n++) {
      await sse.next();
      let message;
      do message = await ws.next(); while (message.type !== "webhook");
    }
    for (const side of [0, 1] as const) {
      const metrics = await scrape(() => sides.fetch(side, "/metrics"));
      assert.equal(value(metrics, "websocks_webhooks_accepted_total"), 4, `scraped on ${side}`);
      assert.equal(value(metrics, "websocks_ingest_duration_seconds_count"), 4);
      assert.equal(value(metrics, "websocks_group_commit_batch_size_sum"), 4);
      assert.equal(value(metrics, 'websocks_connected_clients{transport="sse"}'), 1);
      assert.equal(value(metrics, 'websocks_connected_clients{transport="ws"}'), 1);
      assert.ok(value(metrics, "websocks_deliveries_total") >= 8);
    }
    sse.close();
    await ws.close();
  } finally {
    await sides.close();
  }
});

/**
 * The headers of a WebSocket upgrade's 101 response, read off a raw TCP handshake (the `ws`
 * package's node:http upgrade path fails on Deno 2.5, where CI also runs this file).
 */
async function upgradeHeaders(
  url: string,
  headers: Record<string, string> = {},
): Promise<Record<string, string>> {
  const target = new URL(url);
  const conn = await Deno.connect({ hostname: target.hostname, port: Number(target.port) });
  try {
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    const lines = [
      `GET ${target.pathname}${target.search} HTTP/1.1`,
      `Host: ${target.host}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${key}`,
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    ];
    await conn.write(new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`));
    let text = "";
    const buffer = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const [status, ...fields] = text.split("\r\n\r\n")[0].split("\r\n");
    assert.match(status, /^HTTP\/1\.1 101 /);
    return Object.fromEntries(fields.map((field) => {
      const colon = field.indexOf(":");
      return [field.slice(0, colon).trim().toLowerCase(), field.slice(colon + 1).trim()];
    }));
  } finally {
    conn.close();
  }
}

Deno.test("[logs] every response carries X-Request-Id: pages, API, errors, ingest, SSE, WebSocket", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const responses: [string, Response][] = [
    ["page", await fetch(`${server.url}/`)],
    [
      "api",
      await fetch(`${server.url}/api/me`, { headers: { Authorization: `Bearer ${user.token}` } }),
    ],
    ["401", await fetch(`${server.url}/api/me`)],
    ["404", await fetch(`${server.url}/no/such/page`)],
    ["ingest", await postWebhook(user.webhookUrl, "{}")],
    ["ingest 404", await postWebhook(`${server.url}/api/in/nothing-here`, "{}")],
    ["ingest 405", await fetch(user.webhookUrl, { method: "PURGE" })],
  ];
  const ids = new Set<string>();
  for (const [what, response] of responses) {
    await response.body?.cancel();
    const id = response.headers.get("x-request-id");
    assert.match(id ?? "", UUID, `${what} (${response.status}) has no request id`);
    ids.add(id!);
  }
  assert.equal(ids.size, responses.length, "request ids repeat");
  const sse = await openSse(`${server.url}/api/events/stream?token=${user.token}`);
  assert.match(sse.response.headers.get("x-request-id") ?? "", UUID);
  sse.close();
  const upgrade = await upgradeHeaders(`${server.wsUrl}/?token=${user.token}`);
  assert.match(String(upgrade["x-request-id"]), UUID);
});

Deno.test("[logs] a proxy's X-Request-Id is kept only with TRUST_PROXY=1 and when sane", async () => {
  const ask = async (server: TestServer, id: string) => {
    const response = await fetch(`${server.url}/healthz`, { headers: { "X-Request-Id": id } });
    await response.body?.cancel();
    return response.headers.get("x-request-id");
  };
  {
    await using trusting = await startTestServer({ TRUST_PROXY: "1" });
    assert.equal(await ask(trusting, "lb-7f3a/42"), "lb-7f3a/42");
    assert.match(await ask(trusting, "x".repeat(201)) ?? "", UUID);
    assert.match(await ask(trusting, "two words") ?? "", UUID);
  }
  await using direct = await startTestServer();
  assert.match(await ask(direct, "lb-7f3a/42") ?? "", UUID);
});

Deno.test("[logs] redactQuery hides secret query values and leaves the rest", () => {
  assert.equal(
    redactQuery("/api/events/stream?token=wsk_abc&after=01H&api_key=k1&x=token"),
    "/api/events/stream?token=REDACTED&after=01H&api_key=REDACTED&x=token",
  );
  assert.equal(redactQuery("/reset?TOKEN=abc#frag"), "/reset?TOKEN=REDACTED#frag");
  assert.equal(redactQuery("/api/in/slug"), "/api/in/slug");
});

Deno.test("[logs] LOG_FORMAT=json: one JSON object per line with request fields, no token anywhere", async () => {
  const server = await spawnMain({
    WORKERS: "1",
    LOG_FORMAT: "json",
    LOG_REQUESTS: "1",
    SHUTDOWN_DRAIN_SECONDS: "0",
  });
  let stopped: ReturnType<typeof server.stop> | null = null;
  try {
    const signup = await fetch(`${server.base}/api/auth/signup`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: "logs@example.com", password: "correct horse battery" }),
    });
    assert.equal(signup.status, 201);
    const { token, endpoint, user } = await signup.json();
    const secret: string = token.value;
    const sse = await openSse(`${server.base}/api/events/stream?token=${secret}`);
    assert.equal(sse.response.status, 200);
    const posted = await postWebhook(
      `${server.base}/api/in/${endpoint.slug}?token=${secret}&a=1`,
      "{}",
    );
    assert.equal(posted.status, 200);
    await posted.body?.cancel();
    await sse.next();
    sse.close();
    const me = await fetch(`${server.base}/api/me?token=${secret}`, {
      headers: { Authorization: `Bearer ${secret}`, "X-Request-Id": "not-trusted" },
    });
    assert.equal(me.status, 200);
    const meId = me.headers.get("x-request-id");
    await me.body?.cancel();
    const ws = await upgradeHeaders(`${server.base.replace("http", "ws")}/?token=${secret}`);
    assert.match(String(ws["x-request-id"]), UUID);

    stopped = server.stop("SIGTERM");
    const { code, stdout, stderr } = await stopped;
    assert.equal(code, 0, stderr);
    const lines = (stdout + stderr).split("\n").filter((line) => line !== "");
    assert.ok(lines.length > 5, `only ${lines.length} lines`);
    const entries = lines.map((line) => {
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        assert.fail(`not a JSON line: ${line}`);
      }
      assert.equal(typeof entry.time, "string", line);
      assert.ok(["info", "warn", "error"].includes(entry.level), line);
      assert.equal(typeof entry.message, "string", line);
      return entry;
    });
    assert.ok(!(stdout + stderr).includes(secret), "a token value reached the logs");
    const requests = entries.filter((entry) => typeof entry.status === "number");
    const stream = requests.find((entry) => entry.path?.startsWith("/api/events/stream"));
    assert.equal(stream?.path, "/api/events/stream?token=REDACTED");
    const ingest = requests.find((entry) => entry.path?.startsWith("/api/in/"));
    assert.match(ingest?.path ?? "", /\?token=REDACTED&a=1$/);
    assert.equal(ingest?.status, 200);
    const meLine = requests.find((entry) => entry.requestId === meId);
    assert.ok(meLine, "no line with /api/me's request id");
    assert.equal(meLine.userId, user.id);
    assert.equal(meLine.method, "GET");
    assert.equal(typeof meLine.durationMs, "number");
    assert.ok(entries.some((entry) => /listening on/.test(entry.message)));
  } finally {
    await (stopped ?? server.stop("SIGKILL"));
  }
});

Deno.test("[logs] LOG_FORMAT=json: even a refused configuration's line is one JSON object", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    env: { LOG_FORMAT: "json", PORT: "not-a-port", KV_PATH: ":memory:" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 1);
  const lines = (new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr))
    .split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, lines.join("\n"));
  const entry = JSON.parse(lines[0]);
  assert.equal(entry.level, "error");
  assert.match(entry.message, /PORT/);
});
