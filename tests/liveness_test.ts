import assert from "node:assert/strict";
import { openSse, openWs, postWebhook, signUp, startTestServer } from "./helpers.ts";

Deno.test("[sse] idle streams carry heartbeat comments", async () => {
  await using server = await startTestServer({ HEARTBEAT_SECONDS: "0.2" });
  const user = await signUp(server);
  const response = await fetch(`${server.url}/api/events/stream?token=${user.token}`);
  assert.equal(response.status, 200);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const started = Date.now();
  while (!text.includes(": heartbeat\n\n") && Date.now() - started < 3000) {
    text += (await reader.read()).value;
  }
  assert.match(text, /: heartbeat\n\n/);
  await reader.cancel();
});

Deno.test("[slow] a client that stops reading is closed, then resumes from the log", async () => {
  await using server = await startTestServer({ SLOW_CONSUMER_BYTES: "65536" });
  const user = await signUp(server);
  const streamUrl = `${server.url}/api/events/stream?token=${user.token}`;
  const stalled = await fetch(streamUrl);
  assert.equal(stalled.status, 200);
  // Stop reading while ~20 MB of events arrive: more than the socket buffers can absorb.
  const body = JSON.stringify({ filler: "x".repeat(40_000) });
  const ids: string[] = [];
  for (let i = 0; i < 500; i++) {
    const response = await postWebhook(user.webhookUrl, body);
    ids.push((await response.json()).id);
  }
  const me = await (await fetch(`${server.url}/api/me`, {
    headers: { Authorization: `Bearer ${user.token}` },
  })).json();
  assert.equal(me.connectedClients, 0, "the stalled stream was dropped");
  // Reading what was queued ends with the close notice, then the stream ends.
  const text = await stalled.text();
  assert.match(text, /event: close\ndata: \{"reason":"Client too slow/);
  const delivered = [...text.matchAll(/^id: (\S+)$/gm)].map((m) => m[1]);
  assert.ok(delivered.length < ids.length);
  assert.deepEqual(delivered, ids.slice(0, delivered.length));
  // Resuming from the last id it got delivers the rest, in order, exactly once.
  const resumed = await openSse(streamUrl, { "Last-Event-ID": delivered[delivered.length - 1] });
  const rest = [];
  for (let i = delivered.length; i < ids.length; i++) rest.push((await resumed.next()).id);
  assert.deepEqual(rest, ids.slice(delivered.length));
  resumed.close();
});

Deno.test("[process] deno task start runs with no setup and SIGTERM closes clients cleanly", async () => {
  const dir = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    // Port 0: the system picks a free one, read back from the start-up line.
    env: { PORT: "0", HOST: "127.0.0.1", KV_PATH: `${dir}/data/websocks.kv` },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  while (!log.includes("listening")) {
    const { value, done } = await output.read();
    if (done) {
      // Without this check a child that failed to start would keep this loop spinning forever.
      const stderr = await new Response(child.stderr).text();
      throw new Error(`main.ts exited (${(await child.status).code}) before listening:\n${stderr}`);
    }
    log += value;
  }
  const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log)?.[1]);
  assert.ok(port > 0, `no port in the start-up line: ${log}`);
  const base = `http://127.0.0.1:${port}`;
  const signup = await fetch(`${base}/api/auth/signup`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: "proc@example.com", password: "0123456789" }),
  });
  assert.equal(signup.status, 201);
  const { token } = await signup.json();
  const ws = await openWs(`ws://127.0.0.1:${port}?token=${token.value}`);
  child.kill("SIGTERM");
  assert.equal((await ws.closed).code, 1001);
  const status = await child.status;
  assert.equal(status.code, 0);
  await output.cancel();
  await child.stderr.cancel();
  // The KV file was created where configured, so data survives restarts.
  assert.ok((await Deno.stat(`${dir}/data/websocks.kv`)).isFile);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("[ws] a client that reconnects after a server restart catches up from the file KV", async () => {
  const dir = await Deno.makeTempDir();
  const env = { KV_PATH: `${dir}/websocks.kv` };
  const first = await startTestServer(env);
  const user = await signUp(first);
  const ws = await openWs(`${first.wsUrl}?token=${user.token}`);
  const before = await postWebhook(user.webhookUrl, '{"n":1}');
  const lastSeen = (await before.json()).id;
  assert.equal((await ws.next()).id, lastSeen);
  await first.shutdown();
  await ws.closed;
  // While no server runs nothing can be posted; a new server on the same KV has the log.
  const second = await startTestServer(env);
  const url = user.webhookUrl.replace(first.url, second.url);
  const after = await (await postWebhook(url, '{"n":2}')).json();
  const again = await openWs(`${second.wsUrl}?token=${user.token}&lastEventId=${lastSeen}`);
  const message = await again.next();
  assert.equal(message.id, after.id);
  assert.deepEqual(message.payload, { n: 2 });
  await again.close();
  await second.shutdown();
  await Deno.remove(dir, { recursive: true });
});
