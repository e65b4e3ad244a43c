/**
 * Issue 10, findings 2, 6 (bodies) and 14: what a stranger without an account can do to the
 * process. Each test runs `main.ts` in its own process, so descriptors and RSS are its own.
 */
import assert from "node:assert/strict";
import { signUp, startTestServer } from "./helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A `main.ts` process on a temporary KV file. */
interface ServerProcess {
  base: string;
  port: number;
  pid: number;
  child: Deno.ChildProcess;
  /** Exit status if the process has ended, else null. */
  exited(): Deno.CommandStatus | null;
  stderr(): string;
  rssBytes(): number;
  stop(): Promise<Deno.CommandStatus>;
}

/** Starts `main.ts` (under `ulimit -n files` when given) and waits for its start-up line. */
async function startProcess(
  env: Record<string, string>,
  options: { files?: number } = {},
): Promise<ServerProcess> {
  const dir = await Deno.makeTempDir({ prefix: "websocks-limits-" });
  const limit = options.files ? `ulimit -n ${options.files}; ` : "";
  const child = new Deno.Command("bash", {
    args: ["-c", `${limit}exec "$DENO" run -A main.ts`],
    env: {
      DENO: Deno.execPath(),
      PORT: "0",
      HOST: "127.0.0.1",
      KV_PATH: `${dir}/websocks.kv`,
      WORKERS: "1",
      SHUTDOWN_DRAIN_SECONDS: "0",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let status: Deno.CommandStatus | null = null;
  const ended = child.status.then((s) => status = s);
  let errors = "";
  const stderrDone = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (errors += chunk) }),
  );
  const output = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  while (!log.includes("listening")) {
    const { value, done } = await output.read();
    if (done) throw new Error(`main.ts exited (${(await child.status).code}):\n${errors}`);
    log += value;
  }
  const draining = (async () => {
    while (!(await output.read()).done);
  })();
  const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log)?.[1]);
  assert.ok(port > 0, `no port in the start-up line: ${log}`);
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    child,
    exited: () => status,
    stderr: () => errors,
    rssBytes() {
      const text = Deno.readTextFileSync(`/proc/${child.pid}/status`);
      return Number(/VmRSS:\s+(\d+) kB/.exec(text)![1]) * 1024;
    },
    async stop() {
      if (status === null) child.kill("SIGTERM");
      await ended;
      await draining;
      await stderrDone;
      await Deno.remove(dir, { recursive: true });
      return status!;
    },
  };
}

/** Signs up through the API and returns the user's webhook URL. */
async function webhookUrl(base: string): Promise<string> {
  const response = await fetch(`${base}/api/auth/signup`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      email: `limits-${crypto.randomUUID().slice(0, 8)}@example.com`,
      password: "correct horse battery",
    }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  // The public URL names port 0 (the configured one); the path is what matters.
  return `${base}${new URL((await response.json()).endpoint.url).pathname}`;
}

/** Opens a TCP connection, giving up after `ms` (a full accept queue drops SYNs silently). */
async function connect(port: number, ms: number): Promise<Deno.TcpConn | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = Deno.connect({ hostname: "127.0.0.1", port });
  const late = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
  try {
    const conn = await Promise.race([attempt, late]);
    if (conn === null) attempt.then((c) => c.close(), () => {});
    return conn;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** The status of the first response on `conn`, or null if it closed without one. */
async function responseStatus(
  conn: Deno.TcpConn,
): Promise<{ status: number; text: string } | null> {
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n));
      if (text.includes("\r\n\r\n") && /\}\s*$/.test(text)) break;
    }
  } catch {
    // reset by the server: no answer
  }
  const status = /^HTTP\/1\.1 (\d{3})/.exec(text)?.[1];
  return status ? { status: Number(status), text } : null;
}

/** Polls `condition` until it holds; gives up after `attempts`. */
async function eventually(
  what: string,
  condition: () => Promise<boolean>,
  attempts = 200,
): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (await condition().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: not within ${attempts} attempts`);
}

Deno.test("[limits] requests in progress from one address beyond its share get 429", async () => {
  await using server = await startTestServer({ MAX_REQUESTS_PER_ADDRESS: "3" });
  const user = await signUp(server);
  // Three bodies held open from this address take its share.
  const senders: ReadableStreamDefaultController<Uint8Array>[] = [];
  const held = Array.from({ length: 3 }, () =>
    fetch(user.webhookUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode("{"));
          senders.push(controller);
        },
      }),
    }));
  await eventually("three requests in progress", async () => {
    const response = await fetch(user.webhookUrl, { method: "POST", body: "{}" });
    await response.body?.cancel();
    return response.status === 429;
  });
  const refused = await fetch(user.webhookUrl, { method: "POST", body: "{}" });
  assert.equal(refused.status, 429);
  assert.match(refused.headers.get("content-type") ?? "", /application\/json/);
  assert.match(
    (await refused.json()).error,
    /Too many requests in progress from 127\.0\.0\.1 \(limit 3\)/,
  );
  // Once they finish, the address is served again.
  senders.forEach((sender) => {
    sender.enqueue(encoder.encode("}"));
    sender.close();
  });
  for (const response of await Promise.all(held)) {
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }
  await eventually("served again", async () => {
    const response = await fetch(user.webhookUrl, { method: "POST", body: "{}" });
    await response.body?.cancel();
    return response.status === 200;
  });
});

Deno.test("[limits] a stalled API body gets 408 and an oversized form 413", async () => {
  await using server = await startTestServer({ BODY_IDLE_TIMEOUT_SECONDS: "1" });
  const { port } = new URL(server.url);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  await conn.write(encoder.encode(
    "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
      'Content-Length: 100\r\n\r\n{"email":',
  ));
  const stalled = await responseStatus(conn);
  conn.close();
  assert.equal(stalled?.status, 408);
  assert.match(stalled!.text, /content-type: application\/json/i);
  assert.match(stalled!.text, /Cannot log in: body not received within 1 s/);

  const form = await fetch(`${server.url}/login`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: server.url },
    body: `email=a%40example.com&password=${"x".repeat(100_000)}`,
  });
  assert.equal(form.status, 413);
  assert.match(form.headers.get("content-type") ?? "", /text\/html/);
  assert.match(await form.text(), /Cannot read form: body is larger than the limit of 65536 bytes/);
});

Deno.test("[limits] short of memory, bodies and streams get 503 while pages answer", async () => {
  await using server = await startTestServer({ MAX_RSS_MB: "1" });
  const page = await fetch(`${server.url}/`);
  assert.equal(page.status, 200);
  await page.body?.cancel();
  const signup = await fetch(`${server.url}/api/auth/signup`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: "rss@example.com", password: "correct horse battery" }),
  });
  assert.equal(signup.status, 503);
  assert.equal(signup.headers.get("retry-after"), "5");
  assert.match(signup.headers.get("content-type") ?? "", /application\/json/);
  assert.match(
    (await signup.json()).error,
    /Server busy: short of memory \(\d+ MiB in use, limit 1 MiB\)/,
  );
  const stream = await fetch(`${server.url}/api/events/stream?token=x`, {
    headers: { Accept: "text/event-stream" },
  });
  assert.equal(stream.status, 503);
  await stream.body?.cancel();
});

Deno.test("[limits] a process with 256 descriptors survives 2,000 idle, slowloris and half-sent connections", async () => {
  const server = await startProcess({
    BODY_IDLE_TIMEOUT_SECONDS: "2",
    BODY_TIMEOUT_SECONDS: "5",
  }, { files: 256 });
  try {
    const url = new URL(await webhookUrl(server.base));
    const held: Deno.TcpConn[] = [];
    let opened = 0;
    // 2,000 connections opened, whatever the server does in between (bounded by attempts).
    for (let attempt = 0; opened < 2000 && attempt < 20_000 && !server.exited(); attempt++) {
      const conn = await connect(server.port, 500);
      if (!conn) {
        // Refused while the server listens again: an attacker would retry too.
        await new Promise((resolve) => setTimeout(resolve, 5));
        continue;
      }
      const i = opened++;
      held.push(conn);
      const request = [
        // idle: connects and says nothing
        "",
        // slowloris: headers that never end
        "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n",
        // half-sent chunked body to a real endpoint
        `POST ${url.pathname} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        'Transfer-Encoding: chunked\r\n\r\n10\r\n{"a":',
      ][i % 3];
      if (request) await conn.write(encoder.encode(request)).catch(() => {});
    }
    assert.equal(server.exited(), null, `the process ended:\n${server.stderr()}`);
    assert.equal(opened, 2000, `only ${opened} connections were accepted`);
    assert.equal(server.exited(), null, `the process ended:\n${server.stderr()}`);
    for (const conn of held) {
      try {
        conn.close();
      } catch {
        // closed by the server already
      }
    }
    // Once the load is gone, it serves normally again.
    await eventually("GET / answers 200", async () => {
      const response = await fetch(`${server.base}/`);
      await response.body?.cancel();
      return response.status === 200;
    });
    // Webhooks too, once the server has seen the closed connections go (it finds out as it
    // reads them, so on a busy machine a moment after the client closed them): until then, a
    // body is refused with 503 for want of descriptors, never accepted half-way.
    let response!: Response;
    await eventually("a webhook accepted", async () => {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: '{"after":"attack"}',
      });
      if (response.status === 503) {
        assert.match((await response.json()).error, /^Server busy: short of file descriptors/);
        return false;
      }
      return true;
    });
    assert.equal(response.status, 200, await response.clone().text());
    assert.match(response.headers.get("content-type") ?? "", /application\/json/);
    assert.equal((await response.json()).ok, true);
    assert.equal(server.exited(), null, `the process ended:\n${server.stderr()}`);
    assert.doesNotMatch(server.stderr(), /Uncaught|panicked/);
  } finally {
    const status = await server.stop();
    assert.equal(status.code, 0, server.stderr());
  }
});

Deno.test("[limits] webhook bodies held one byte short get 408 or 503 and RSS stays bounded", async () => {
  const server = await startProcess({
    BODY_IDLE_TIMEOUT_SECONDS: "2",
    MAX_BUFFERED_BODY_MB: "64",
    // One loopback address sends them all: this test is about the whole budget.
    MAX_BUFFERED_BODY_MB_PER_ADDRESS: "64",
    MAX_BODY_BYTES: String(1024 * 1024),
  });
  try {
    const url = new URL(await webhookUrl(server.base));
    const before = server.rssBytes();
    let peak = before;
    const sampler = setInterval(() => peak = Math.max(peak, server.rssBytes()), 50);
    const body = new Uint8Array(1024 * 1024 - 1).fill(0x20);
    const head = encoder.encode(
      `POST ${url.pathname} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${1024 * 1024}\r\n\r\n`,
    );
    const conns: Deno.TcpConn[] = [];
    for (let i = 0; i < 400; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      conns.push(conn);
      conn.write(head).then(() => conn.write(body)).catch(() => {});
    }
    // Without a body timeout no answer ever comes: give up after a generous minute.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const answers = await Promise.race([
      Promise.all(conns.map(responseStatus)),
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error("held bodies got no answer in 60 s")), 60_000)
      ),
    ]).finally(() => clearTimeout(timer));
    clearInterval(sampler);
    const statuses = answers.map((a) => a?.status ?? 0);
    const counts = Object.groupBy(statuses, (s) => String(s));
    assert.ok(
      statuses.every((s) => s === 408 || s === 503),
      `statuses: ${JSON.stringify(Object.keys(counts))}`,
    );
    assert.ok((counts["408"]?.length ?? 0) > 0, "no body timed out");
    const timedOut = answers.find((a) => a?.status === 408)!.text;
    assert.match(timedOut, /content-type: application\/json/i);
    assert.match(timedOut, /Cannot ingest: body not received within 2 s/);
    const grown = (peak - before) / 2 ** 20;
    assert.ok(grown < 400, `RSS grew by ${grown.toFixed(0)} MiB`);
    console.log(
      `held bodies: RSS ${(before / 2 ** 20).toFixed(0)} MiB → peak ${
        (peak / 2 ** 20).toFixed(0)
      } MiB; ${counts["408"]?.length ?? 0}× 408, ${counts["503"]?.length ?? 0}× 503`,
    );
    conns.forEach((conn) => conn.close());
    // Still serving.
    const response = await fetch(url, { method: "POST", body: "{}" });
    assert.equal(response.status, 200);
    await response.body?.cancel();
  } finally {
    await server.stop();
  }
});

Deno.test("[limits] 20 senders posting 25 MiB at once from one address are all accepted and RSS stays bounded", async () => {
  // Default settings, with two isolates as on a two-core machine (Workers stage their bodies and
  // ask the KV writer to admit them): bodies stream into KV chunks, only staging buffers are held.
  const server = await startProcess({ WORKERS: "2" });
  try {
    const url = await webhookUrl(server.base);
    const size = 25 * 1024 * 1024;
    const body = new Uint8Array(size);
    for (let at = 0; at < size; at += 65536) {
      crypto.getRandomValues(body.subarray(at, Math.min(size, at + 65536)));
    }
    const post = () =>
      fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream" },
        body,
      });
    // Warm up: the first large body compiles the paths and grows the store once.
    const warm = await post();
    assert.equal(warm.status, 200, await warm.clone().text());
    await warm.body?.cancel();
    const before = server.rssBytes();
    let peak = before;
    const sampler = setInterval(() => peak = Math.max(peak, server.rssBytes()), 20);
    const responses = await Promise.all(Array.from({ length: 20 }, post));
    clearInterval(sampler);
    peak = Math.max(peak, server.rssBytes());
    const statuses = responses.map((response) => response.status);
    for (const response of responses) {
      if (response.status !== 200) console.log(await response.text());
      else await response.body?.cancel();
    }
    assert.deepEqual(statuses, Array(20).fill(200));
    const grown = (peak - before) / 2 ** 20;
    console.log(
      `20 × 25 MiB at once: RSS ${(before / 2 ** 20).toFixed(0)} MiB after warm-up → peak ${
        (peak / 2 ** 20).toFixed(0)
      } MiB (+${grown.toFixed(0)} MiB)`,
    );
    assert.ok(grown < 150, `RSS grew by ${grown.toFixed(0)} MiB`);
    assert.doesNotMatch(server.stderr(), /Uncaught|panicked/);
  } finally {
    await server.stop();
  }
});

Deno.test("[limits] a 50 MB body to POST /api/auth/login gets 413 at once and RSS stays bounded", async () => {
  const server = await startProcess({});
  try {
    const before = server.rssBytes();
    // Declared: refused on Content-Length before any of it is read.
    const declared = await fetch(`${server.base}/api/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: new Uint8Array(50 * 1024 * 1024).fill(0x20),
    }).catch((error) => error as Error);
    if (declared instanceof Response) {
      assert.equal(declared.status, 413);
      assert.match(declared.headers.get("content-type") ?? "", /application\/json/);
      assert.equal(
        (await declared.json()).error,
        "Cannot log in: body is larger than the limit of 65536 bytes",
      );
    }
    // Chunked, without a length: refused once 64 KiB have arrived.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const answer = responseStatus(conn);
    await conn.write(encoder.encode(
      "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
        "Transfer-Encoding: chunked\r\n\r\n",
    ));
    const chunk = encoder.encode(`100000\r\n${" ".repeat(0x100000)}\r\n`);
    for (let sent = 0; sent < 50; sent++) {
      if (!(await conn.write(chunk).then(() => true, () => false))) break;
    }
    const refused = await answer;
    conn.close();
    assert.equal(refused?.status, 413);
    assert.match(refused!.text, /content-type: application\/json/i);
    assert.match(refused!.text, /Cannot log in: body is larger than the limit of 65536 bytes/);
    const grown = (server.rssBytes() - before) / 2 ** 20;
    console.log(`50 MB login: RSS grew by ${grown.toFixed(0)} MiB`);
    assert.ok(grown < 100, `RSS grew by ${grown.toFixed(0)} MiB`);
  } finally {
    await server.stop();
  }
});

Deno.test("[limits] SIGTERM during start-up with two isolates exits 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websocks-limits-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    env: {
      PORT: "0",
      HOST: "127.0.0.1",
      KV_PATH: `${dir}/websocks.kv`,
      WORKERS: "2",
      SHUTDOWN_DRAIN_SECONDS: "0",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const output = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  // The start-up line comes once the signal handlers are in place, before any isolate starts
  // (after a line about building island bundles when a fresh clone has none prebuilt).
  let log = "";
  while (!/starting/.test(log)) {
    const { value, done } = await output.read();
    assert.ok(!done, `no start-up line before the output ended:\n${log}`);
    log += value;
  }
  assert.doesNotMatch(log, /listening/, "the start-up line came after listening");
  child.kill("SIGTERM");
  for (;;) {
    const { value, done } = await output.read();
    if (done) break;
    log += value;
  }
  const status = await child.status;
  assert.equal(status.signal, null, `killed by ${status.signal}:\n${await stderr}`);
  assert.equal(status.code, 0, await stderr);
  assert.match(log, /SIGTERM: closing streams and shutting down/);
  await stderr;
  await Deno.remove(dir, { recursive: true });
});

Deno.test("[limits] HEAD on the event stream answers its headers and holds no connection", async () => {
  // Deno drops a HEAD answer's body without cancelling it, so a stream opened for HEAD stayed
  // registered for good: it took a place of the token's and account's limits, queued every
  // event, and counted as a connected client, with no socket behind it.
  await using server = await startTestServer({ MAX_CONNECTIONS_PER_TOKEN: "2" });
  const user = await signUp(server);
  const stream = `${server.url}/api/events/stream?token=${user.token}`;
  for (let i = 0; i < 3; i++) {
    const head = await fetch(stream, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.match(head.headers.get("content-type") ?? "", /^text\/event-stream/);
    assert.equal(await head.text(), "");
  }
  const refused = await fetch(`${server.url}/api/events/stream?token=wsk_wrong`, {
    method: "HEAD",
  });
  assert.equal(refused.status, 401);
  const clients = await fetch(`${server.url}/api/clients`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(clients.status, 200);
  assert.deepEqual((await clients.json()).clients, []);
  const opened = await fetch(stream);
  assert.equal(opened.status, 200);
  assert.match(opened.headers.get("content-type") ?? "", /^text\/event-stream/);
  await opened.body?.cancel();
  // A WebSocket opens with GET only.
  const socket = await fetch(`${server.url}/ws?token=${user.token}`, {
    method: "HEAD",
    headers: {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
    },
  });
  assert.equal(socket.status, 405);
  assert.equal(socket.headers.get("allow"), "GET");
});
