/**
 * The client library (client/websocks.js) against a real server: over WebSocket and SSE, through
 * a server killed and restarted on the same KV file, and unchanged in Node and in Chromium.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  fileStorage,
  memoryStorage,
  type Notice,
  type State,
  subscribe,
  type SubscribeOptions,
  type WebhookEnvelope,
  WebSocksError,
} from "../client/websocks.js";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import { postWebhook, signUp, startTestServer, type TestServer, waitFor } from "./helpers.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
/** Quick reconnects, so the tests wait for conditions rather than for backoff. */
const FAST = { minDelayMs: 50, maxDelayMs: 400 };

/** Posts `{seq}` webhooks `from`..`to` (exclusive) one after another; returns their ids. */
async function postSeq(url: string, from: number, to: number): Promise<string[]> {
  const ids: string[] = [];
  for (let seq = from; seq < to; seq++) {
    const response = await postWebhook(url, JSON.stringify({ type: `seq.${seq}`, seq }));
    assert.equal(response.status, 200);
    ids.push((await response.json()).id);
  }
  return ids;
}

/** A subscription recording what it handled and every state it went through. */
function recorder(
  options: Omit<SubscribeOptions, "onWebhook" | "onState"> & {
    onWebhook?: SubscribeOptions["onWebhook"];
  },
) {
  const handled: WebhookEnvelope[] = [];
  const states: State[] = [];
  const errors: Error[] = [];
  const subscription = subscribe({
    ...FAST,
    ...options,
    onState: (state) => states.push(state),
    onError: (error) => errors.push(error),
    onWebhook: async (envelope) => {
      const result = await options.onWebhook?.(envelope);
      handled.push(envelope);
      return result;
    },
  });
  return { subscription, handled, states, errors, ids: () => handled.map((e) => e.id) };
}

for (const transport of ["websocket", "sse"] as const) {
  Deno.test(`[client] ${transport}: catch-up then live, in order, one at a time; filters, state and storage`, async () => {
    await using server = await startTestServer();
    const user = await signUp(server);
    const auth = { Authorization: `Bearer ${user.token}` };
    const before = await postSeq(user.webhookUrl, 0, 3);
    const storage = memoryStorage(before[0]);
    let running = 0;
    let overlapped = false;
    const client = recorder({
      url: server.url,
      token: user.token,
      transport,
      storage,
      // Filters go to the server: only `seq.*` types of this endpoint.
      endpoint: user.slug,
      event: ["seq.*"],
      onWebhook: async () => {
        overlapped ||= ++running > 1;
        await new Promise((resolve) => setTimeout(resolve, 2));
        running--;
        return { status: 202 };
      },
    });
    try {
      // Caught up after the stored id: the two later ones, and nothing before.
      await waitFor(() => client.handled.length === 2, { what: "the catch-up" });
      assert.deepEqual(client.ids(), before.slice(1));
      assert.equal(client.subscription.state, "live");
      const other = await postWebhook(user.webhookUrl, JSON.stringify({ type: "other" }));
      assert.equal(other.status, 200);
      await other.body?.cancel();
      const live = await postSeq(user.webhookUrl, 3, 23);
      await waitFor(() => client.ids().includes(live.at(-1)!), { what: "the live events" });
      assert.deepEqual(client.ids(), [...before.slice(1), ...live]);
      assert.equal(overlapped, false, "onWebhook never runs twice at once");
      // Stored once onWebhook resolved, a moment after the recorder saw it.
      await waitFor(() => client.subscription.lastEventId === live.at(-1), { what: "stored" });
      assert.equal(await storage.get(), live.at(-1));
      if (transport === "websocket") {
        // Acked after onWebhook resolved, with the status it returned.
        await waitFor(async () => {
          const response = await fetch(`${server.url}/api/events/${live[0]}/deliveries`, {
            headers: auth,
          });
          assert.equal(response.status, 200);
          return (await response.json()).deliveries.length === 1;
        }, { what: "the ack" });
        const response = await fetch(`${server.url}/api/events/${live[0]}/deliveries`, {
          headers: auth,
        });
        assert.equal((await response.json()).deliveries[0].status, 202);
      }
    } finally {
      await client.subscription.close();
    }
    assert.equal(client.subscription.state, "closed");
    assert.deepEqual(client.states, ["connecting", "live", "closed"]);
    assert.deepEqual(client.errors, []);
  });

  Deno.test(`[client] ${transport}: a bad token or a bad filter at connect is final, not retried`, async () => {
    await using server = await startTestServer();
    const user = await signUp(server);
    let attempts = 0;
    const counting: typeof fetch = (input, init) => {
      if (String(input).includes("/api/events/stream")) attempts++;
      return fetch(input, init);
    };
    // Pages of other sites can read the stream's answers, refusals included.
    const refused = await fetch(`${server.url}/api/events/stream?token=wsk_wrong`);
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get("content-type")!, /^application\/json/);
    assert.equal(refused.headers.get("access-control-allow-origin"), "*");
    assert.match((await refused.json()).error, /^Unauthorized/);
    for (
      const [options, status, pattern] of [
        [{ token: "wsk_wrong" }, 401, /HTTP 401/],
        [{ token: user.token, path: "no-slash" }, 400, /path: must start with "\/"/],
      ] as const
    ) {
      attempts = 0;
      const client = recorder({
        url: server.url,
        transport,
        fetch: counting,
        onWebhook: () => {},
        ...options,
      });
      await client.subscription.closed;
      assert.equal(client.subscription.state, "closed");
      const error = client.subscription.error;
      assert.ok(error instanceof WebSocksError);
      assert.equal(error.status, status);
      assert.equal(error.fatal, true);
      assert.match(error.message, pattern);
      assert.deepEqual(client.states, ["connecting", "closed"]);
      assert.deepEqual(client.errors, [error], "onError hears it too");
      assert.equal(attempts, 1, "one look at the stream, no retry loop");
    }
  });

  Deno.test(`[client] ${transport}: a token revoked while connected closes it for good`, async () => {
    await using server = await startTestServer();
    const user = await signUp(server);
    const client = recorder({ url: server.url, token: user.token, transport });
    await waitFor(() => client.subscription.state === "live", { what: "live" });
    const revoked = await fetch(`${server.url}/api/tokens/${user.tokenId}`, {
      method: "DELETE",
      headers: { Cookie: user.cookie, Origin: server.url },
    });
    assert.equal(revoked.status, 200);
    await revoked.body?.cancel();
    await client.subscription.closed;
    assert.equal(client.subscription.error?.status, 401);
    assert.equal(client.subscription.error?.fatal, true);
    assert.equal(client.subscription.state, "closed");
  });

  Deno.test(`[client] ${transport}: a handler that throws gets the same event again, nothing skipped`, async () => {
    await using server = await startTestServer();
    const user = await signUp(server);
    let failures = 0;
    const client = recorder({
      url: server.url,
      token: user.token,
      transport,
      onWebhook: (envelope) => {
        if ((envelope.payload as { seq: number }).seq === 1 && failures < 2) {
          failures++;
          throw new Error("not yet");
        }
      },
    });
    try {
      await waitFor(() => client.subscription.state === "live", { what: "live" });
      const ids = await postSeq(user.webhookUrl, 0, 4);
      await waitFor(() => client.ids().includes(ids[3]), { what: "every event" });
      assert.deepEqual(client.ids(), ids);
      assert.equal(failures, 2);
      assert.equal(client.errors.length, 2);
      assert.match(client.errors[0].message, /onWebhook failed for \S+: not yet/);
      assert.ok(client.states.includes("backing-off"));
    } finally {
      await client.subscription.close();
    }
  });

  Deno.test(`[client] ${transport}: quota notices reach onNotice, a resend reaches onRepeat, neither onWebhook`, async () => {
    // A limit of 5: the fourth webhook crosses 80%, so a `quota` notice comes with it.
    await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "5" });
    const user = await signUp(server);
    const notices: Notice[] = [];
    const repeats: string[] = [];
    const client = recorder({
      url: server.url,
      token: user.token,
      transport,
      onNotice: (notice) => {
        notices.push(notice);
      },
      onRepeat: (envelope) => {
        repeats.push(envelope.id);
      },
    });
    try {
      await waitFor(() => client.subscription.state === "live", { what: "live" });
      const ids = await postSeq(user.webhookUrl, 0, 4);
      await waitFor(() => client.ids().length === 4, { what: "every event" });
      await waitFor(() => notices.some((n) => n.type === "quota"), { what: "the quota notice" });
      const quota = notices.find((n) => n.type === "quota")!;
      assert.equal(quota.level, 80);
      assert.equal(quota.used, 4);
      // A resend of a handled event: heard as a repeat, not handled (or acked) again.
      await waitFor(() => client.subscription.lastEventId === ids[3], { what: "all handled" });
      const resent = await fetch(`${server.url}/api/events/${ids[1]}/resend`, {
        method: "POST",
        headers: { Authorization: `Bearer ${user.token}` },
      });
      assert.equal(resent.status, 200);
      await resent.body?.cancel();
      await waitFor(() => repeats.length === 1, { what: "the repeat" });
      assert.deepEqual(repeats, [ids[1]]);
      assert.deepEqual(client.ids(), ids);
      assert.deepEqual(client.errors, []);
    } finally {
      await client.subscription.close();
    }
  });
}

Deno.test("[client] where it starts: after the later of the stored id and lastEventId; with neither, after the newest event", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ids = await postSeq(user.webhookUrl, 0, 3);
  const streams: URL[] = [];
  const watching: typeof fetch = (input, init) => {
    const url = new URL(String(input));
    if (url.pathname === "/api/events/stream") streams.push(url);
    return fetch(input, init);
  };
  const cases = [
    { storage: memoryStorage(ids[1]), lastEventId: ids[0], after: ids[1] },
    { storage: memoryStorage(ids[0]), lastEventId: ids[1], after: ids[1] },
    { storage: memoryStorage(), lastEventId: ids[0], after: ids[0] },
    // Nothing known: from the newest event on, so a first connection dropping loses nothing.
    { storage: memoryStorage(), lastEventId: null, after: ids[2] },
  ];
  for (const { storage, lastEventId, after } of cases) {
    streams.length = 0;
    const client = recorder({
      url: server.url,
      token: user.token,
      transport: "sse",
      fetch: watching,
      storage,
      lastEventId,
    });
    try {
      await waitFor(() => client.subscription.state === "live", { what: "live" });
      assert.equal(streams[0].searchParams.get("lastEventId"), after);
      await waitFor(() => client.ids().includes(ids[2]) || after === ids[2], {
        what: "the catch-up",
      });
      assert.deepEqual(client.ids(), ids.slice(ids.indexOf(after) + 1));
    } finally {
      await client.subscription.close();
    }
  }
});

Deno.test("[client] websocket: respond mode answers the waiting sender with onWebhook's result", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const patch = await fetch(`${server.url}/api/endpoints/${user.slug}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: '{"respond": true}',
  });
  assert.equal(patch.status, 200);
  await patch.body?.cancel();
  const client = recorder({
    url: server.url,
    token: user.token,
    onWebhook: (envelope) => {
      const { n } = envelope.payload as { n: number };
      if (n === 1) return { status: 201, headers: { "x-answer": "yes" }, body: { doubled: 2 } };
      if (n === 2) return { status: 200, body: new Uint8Array([0, 255, 1]) };
      return undefined;
    },
  });
  try {
    await waitFor(() => client.subscription.state === "live", { what: "live" });
    const first = await postWebhook(user.webhookUrl, '{"n": 1}');
    assert.equal(first.status, 201);
    assert.equal(first.headers.get("content-type"), "application/json");
    assert.equal(first.headers.get("x-answer"), "yes");
    assert.deepEqual(await first.json(), { doubled: 2 });
    const second = await postWebhook(user.webhookUrl, '{"n": 2}');
    assert.equal(second.status, 200);
    assert.deepEqual(new Uint8Array(await second.arrayBuffer()), new Uint8Array([0, 255, 1]));
    const third = await postWebhook(user.webhookUrl, '{"n": 3}');
    assert.equal(third.status, 200);
    assert.equal(await third.text(), "");
  } finally {
    await client.subscription.close();
  }
  assert.deepEqual(client.errors, []);
});

Deno.test("[client] the relay serves the module and its types, importable from any site", async () => {
  await using server = await startTestServer();
  for (const name of ["websocks.js", "websocks.d.ts"]) {
    const response = await fetch(`${server.url}/client/${name}`);
    assert.equal(response.status, 200);
    assert.match(
      response.headers.get("content-type")!,
      name.endsWith(".js") ? /^text\/javascript/ : /^text\/plain/,
    );
    assert.equal(response.headers.get("access-control-allow-origin"), "*");
    assert.equal(await response.text(), await Deno.readTextFile(`${ROOT}/client/${name}`));
  }
  // The docs page shows the import from the reader's own server.
  const docs = await fetch(`${server.url}/docs`);
  assert.equal(docs.status, 200);
  assert.match(docs.headers.get("content-type")!, /^text\/html/);
  const html = await docs.text();
  assert.ok(html.includes(`from &quot;${server.url}/client/websocks.js&quot;`), "the docs example");
  assert.ok(html.includes('id="client-library"'));
  const missing = await fetch(`${server.url}/client/nope.js`);
  assert.equal(missing.status, 404);
  assert.match(missing.headers.get("content-type")!, /^application\/json/);
  assert.match((await missing.json()).error, /no client file nope\.js/);
});

/** A stand-in server: what the client sends it is recorded; its answers are the test's. */
function fakeServer(handlers: {
  sse?: (request: Request) => Response;
  ws?: (socket: WebSocket) => void;
}) {
  const requests: URL[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const url = new URL(request.url);
    requests.push(url);
    if (url.pathname === "/api/events/stream" && handlers.sse) return handlers.sse(request);
    if (url.pathname === "/ws" && handlers.ws) {
      const { socket, response } = Deno.upgradeWebSocket(request);
      handlers.ws(socket);
      return response;
    }
    return Response.json({ error: "Not found" }, { status: 404 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, requests, server };
}

Deno.test("[client] sse: the event-stream format to the letter, and a silent stream replaced, resuming after the last handled id", async () => {
  const encoder = new TextEncoder();
  const accent = encoder.encode("é");
  // Frames cut at awkward places: a BOM, CRLF and lone CR line ends split across chunks, a
  // multi-byte character split in two, comments, a named event, data on two lines.
  const chunks: Uint8Array[] = [
    encoder.encode("\uFEFF: hello\r\n\r\nretry: 2000\r"),
    encoder.encode('\nid: 01A\r\ndata: {"type":"webhook","id":"01A","n":1,"s":"'),
    accent.subarray(0, 1),
    accent.subarray(1),
    encoder.encode('"}\r'),
    encoder.encode('\n\r\nevent: quota\ndata: {"type":"quota"}\n\n: heartbeat\n\n'),
    encoder.encode('data: {"type":"webhook","id":"01B",\r\ndata: "n":2}\r\r'),
    encoder.encode('data: {"type":"webhook","id":"01C","n":3}\n\n'),
  ];
  let streams = 0;
  const fake = fakeServer({
    sse: () => {
      // The first stream says its piece and falls silent; later ones stay silent.
      const first = streams++ === 0;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          if (first) { for (const chunk of chunks) controller.enqueue(chunk); }
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    },
  });
  const client = recorder({
    url: fake.url,
    token: "wsk_test",
    transport: "sse",
    idleTimeoutMs: 300,
    endpoint: ["a", "b"],
    event: "x.*",
    group: "workers",
  });
  try {
    await waitFor(() => streams >= 2, { what: "the silent stream to be replaced" });
    assert.deepEqual(
      client.handled.map((e) => [e.id, (e as unknown as { n: number }).n]),
      [["01A", 1], ["01B", 2], ["01C", 3]],
    );
    assert.equal((client.handled[0] as unknown as { s: string }).s, "é");
    const opened = fake.requests.filter((url) => url.pathname === "/api/events/stream");
    assert.equal(opened[0].searchParams.get("lastEventId"), null);
    assert.equal(opened[1].searchParams.get("lastEventId"), "01C");
    // Filters and the group go as query parameters, on every connection.
    for (const url of opened) {
      assert.equal(url.searchParams.get("token"), "wsk_test");
      assert.deepEqual(url.searchParams.getAll("endpoint"), ["a", "b"]);
      assert.deepEqual(url.searchParams.getAll("event"), ["x.*"]);
      assert.equal(url.searchParams.get("group"), "workers");
    }
    assert.match(client.errors.map((e) => e.message).join("\n"), /^$/);
    assert.ok(client.states.includes("backing-off"));
  } finally {
    await client.subscription.close();
    await fake.server.shutdown();
  }
});

Deno.test("[client] websocket: a server that stops answering is pinged, then left and reconnected to", async () => {
  const received: string[] = [];
  let sockets = 0;
  const fake = fakeServer({
    ws: (socket) => {
      sockets++;
      // Says nothing back, ever: as a half-open connection would.
      socket.onmessage = (event) => received.push(event.data);
    },
  });
  const client = recorder({ url: fake.url, token: "wsk_test", idleTimeoutMs: 300 });
  try {
    await waitFor(() => sockets >= 2, { what: "a second connection" });
    assert.ok(received.includes('{"type":"ping"}'), received.join("\n"));
    assert.ok(client.states.includes("backing-off"));
  } finally {
    await client.subscription.close();
    await fake.server.shutdown();
  }
});

Deno.test("[client] websocket: a handler far behind drops the connection, resumes, and still hands each event over once", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  // The socket class is the caller's to give: this one tells when the client hangs up.
  let hungUp = 0;
  class Watched extends WebSocket {
    override close(code?: number, reason?: string) {
      hungUp++;
      super.close(code, reason);
    }
  }
  const client = recorder({
    url: server.url,
    token: user.token,
    maxQueued: 3,
    WebSocket: Watched,
    onWebhook: async () => {
      await gate;
    },
  });
  try {
    await waitFor(() => client.subscription.state === "live", { what: "live" });
    const ids = await postSeq(user.webhookUrl, 0, 10);
    // The first event is still in hand while more than 3 wait: the client lets go of the socket.
    await waitFor(() => hungUp === 1, { what: "the client to drop the connection" });
    assert.equal(client.handled.length, 0);
    release();
    await waitFor(() => client.states.includes("backing-off"), { what: "the backoff" });
    await waitFor(() => client.ids().includes(ids[9]), { what: "every event" });
    assert.deepEqual(client.ids(), ids);
    assert.deepEqual(client.errors, []);
  } finally {
    release();
    await client.subscription.close();
  }
});

// Large enough to be streamed from storage and to make a quadratic line reader crawl; smaller
// than the 25 MiB limit (tested in sse_test.ts and forward_test.ts) because test files share one
// process's memory, which the servers of the other files' tests guard.
Deno.test("[client] sse: a large (8 MiB) binary body arrives whole, byte-exact", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const client = recorder({ url: server.url, token: user.token, transport: "sse" });
  try {
    await waitFor(() => client.subscription.state === "live", { what: "live" });
    const body = new Uint8Array(8 * 2 ** 20);
    for (let at = 0; at < body.byteLength; at += 65_536) {
      crypto.getRandomValues(body.subarray(at, at + 65_536));
    }
    const response = await postWebhook(user.webhookUrl, body, {
      "Content-Type": "application/octet-stream",
    });
    assert.equal(response.status, 200);
    const { id } = await response.json();
    await waitFor(() => client.handled.length === 1, {
      what: "the large event",
      timeoutMs: 60_000,
    });
    assert.equal(client.handled[0].id, id);
    const received = Uint8Array.fromBase64(client.handled[0].bodyBase64!);
    assert.equal(received.byteLength, body.byteLength);
    assert.equal(received.findIndex((byte, i) => byte !== body[i]), -1);
  } finally {
    await client.subscription.close();
  }
});

Deno.test("[client] sse: a large text body that starts with U+FEFF arrives byte-exact", async () => {
  // Deno's TextDecoderStream drops a U+FEFF at the start of every chunk, not only the stream's
  // first: a large event's body is written as its own chunks, so its leading BOM was lost and
  // a signature over the original bytes no longer verified.
  await using server = await startTestServer();
  const user = await signUp(server);
  const client = recorder({ url: server.url, token: user.token, transport: "sse" });
  try {
    await waitFor(() => client.subscription.state === "live", { what: "live" });
    const text = '\ufeff<?xml version="1.0"?>' + "x".repeat(2 * 2 ** 20);
    const response = await postWebhook(user.webhookUrl, text, { "Content-Type": "text/plain" });
    assert.equal(response.status, 200);
    await response.body?.cancel();
    await waitFor(() => client.handled.length === 1, { what: "the large event" });
    assert.equal(client.handled[0].body?.length, text.length);
    assert.equal(client.handled[0].body, text);
  } finally {
    await client.subscription.close();
  }
});

/** main.ts as its own process on a fixed port and a KV file, as an operator runs it. */
async function spawnServer(env: Record<string, string>) {
  // The Deno running the tests: under .ci/run's LTS pass, the server runs on the LTS too.
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    cwd: ROOT,
    env: { SHUTDOWN_DRAIN_SECONDS: "0", ...env },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.then(() => (exited = true));
  const errors = new Response(child.stderr).text();
  await waitFor(async () => {
    if (exited) throw new Error(`the server exited: ${await errors}`);
    try {
      const response = await fetch(`${env.PUBLIC_URL}/`);
      await response.body?.cancel();
      return response.status === 200;
    } catch {
      return false;
    }
  }, { what: "the server to answer /", timeoutMs: 30_000, intervalMs: 50 });
  return {
    async kill() {
      if (!exited) child.kill("SIGKILL");
      await status;
      await errors;
    },
  };
}

Deno.test("[client] a server killed and restarted on its KV file: both transports end with every id once, in order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websocks-client-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const url = `http://127.0.0.1:${port}`;
  const env = {
    PORT: String(port),
    HOST: "127.0.0.1",
    PUBLIC_URL: url,
    KV_PATH: `${dir}/relay.kv`,
    WORKERS: "1",
    LOG_REQUESTS: "0",
  };
  let server = await spawnServer(env);
  const clients: ReturnType<typeof recorder>[] = [];
  try {
    const user = await signUp({ url } as TestServer);
    for (const transport of ["websocket", "sse"] as const) {
      clients.push(recorder({
        url,
        token: user.token,
        transport,
        storage: fileStorage(`${dir}/${transport}.json`),
      }));
    }
    await waitFor(() => clients.every((c) => c.subscription.state === "live"), { what: "live" });
    const first = await postSeq(user.webhookUrl, 0, 10);
    await waitFor(() => clients.every((c) => c.ids().length === 10), { what: "the first ten" });

    await server.kill();
    await waitFor(
      () => clients.every((c) => c.states.at(-1) === "backing-off"),
      { what: "both clients to notice" },
    );
    server = await spawnServer(env);
    const second = await postSeq(user.webhookUrl, 10, 20);
    await waitFor(
      () => clients.every((c) => c.ids().includes(second.at(-1)!)),
      { what: "the events after the restart" },
    );
    for (const client of clients) {
      assert.deepEqual(client.ids(), [...first, ...second]);
      assert.ok(client.states.includes("backing-off"));
    }
    // The last handled id is on disk for the next run of the program (stored just after the
    // handler resolved, so it may land a moment after the test saw it handled).
    for (const transport of ["websocket", "sse"]) {
      await waitFor(async () => {
        const saved = JSON.parse(await Deno.readTextFile(`${dir}/${transport}.json`));
        return saved.lastEventId === second.at(-1);
      }, { what: `${transport}'s last id on disk` });
    }
  } finally {
    await Promise.all(clients.map((c) => c.subscription.close()));
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[client] the same module runs in Node: both transports, acks and respond mode", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const respondMode = async (on: boolean) => {
    const patch = await fetch(`${server.url}/api/endpoints/${user.slug}`, {
      method: "PATCH",
      headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ respond: on }),
    });
    assert.equal(patch.status, 200);
    await patch.body?.cancel();
  };
  const dir = await Deno.makeTempDir();
  // Node 22 has WebSocket on by default; Node 20 behind this flag.
  const version = new TextDecoder().decode(
    (await new Deno.Command("node", { args: ["--version"] }).output()).stdout,
  );
  const flags = Number(version.match(/^v(\d+)/)?.[1]) < 22 ? ["--experimental-websocket"] : [];
  try {
    for (const transport of ["websocket", "sse"] as const) {
      // Respond mode needs a WebSocket client's answer: SSE has no way back.
      await respondMode(transport === "websocket");
      const child = new Deno.Command("node", {
        args: [
          ...flags,
          `${ROOT}/tests/client_node.mjs`,
          server.url,
          user.token,
          transport,
          "2",
          `${dir}/${transport}.json`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines: Record<string, unknown>[] = [];
      const reading = (async () => {
        let buffer = "";
        for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
          buffer += text;
          const parts = buffer.split("\n");
          buffer = parts.pop()!;
          lines.push(...parts.map((line) => JSON.parse(line)));
        }
      })();
      const errors = new Response(child.stderr).text();
      try {
        await waitFor(() => lines.some((l) => l.state === "live"), {
          what: `node (${transport}) to go live`,
          timeoutMs: 20_000,
        });
        const answered = await postWebhook(user.webhookUrl, '{"n": 1}');
        if (transport === "websocket") {
          assert.equal(answered.status, 201);
          assert.match(answered.headers.get("content-type")!, /^application\/json/);
          assert.match((await answered.json()).node, /^v\d+/);
        } else {
          assert.equal(answered.status, 200);
          await answered.body?.cancel();
        }
        const again = await postWebhook(user.webhookUrl, '{"n": 2}');
        await again.body?.cancel();
        assert.equal((await child.status).code, 0, await errors);
      } finally {
        try {
          child.kill();
        } catch {
          // exited
        }
        await reading;
      }
      const handled = lines.filter((l) => "handled" in l);
      assert.deepEqual(handled.map((l) => l.payload), [{ n: 1 }, { n: 2 }]);
      assert.deepEqual(lines.filter((l) => "error" in l && l.error), []);
      assert.equal(lines.at(-1)!.done, handled[1].handled);
      const saved = JSON.parse(await Deno.readTextFile(`${dir}/${transport}.json`));
      assert.equal(saved.lastEventId, handled[1].handled);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** `node` with the flags this version needs for a global WebSocket (Node 22: none). */
async function nodeFlags(): Promise<string[]> {
  const version = new TextDecoder().decode(
    (await new Deno.Command("node", { args: ["--version"] }).output()).stdout,
  );
  return Number(version.match(/^v(\d+)/)?.[1]) < 22 ? ["--experimental-websocket"] : [];
}

Deno.test("[client] in Node, through a server killed and restarted: every id once, in order, both transports", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websocks-client-node-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const url = `http://127.0.0.1:${port}`;
  const env = {
    PORT: String(port),
    HOST: "127.0.0.1",
    PUBLIC_URL: url,
    KV_PATH: `${dir}/relay.kv`,
    WORKERS: "1",
    LOG_REQUESTS: "0",
  };
  let server = await spawnServer(env);
  const flags = await nodeFlags();
  const children: { lines: Record<string, unknown>[]; done: Promise<number> }[] = [];
  try {
    const user = await signUp({ url } as TestServer);
    for (const transport of ["websocket", "sse"] as const) {
      const child = new Deno.Command("node", {
        args: [
          ...flags,
          `${ROOT}/tests/client_node.mjs`,
          url,
          user.token,
          transport,
          "20",
          `${dir}/${transport}.json`,
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const lines: Record<string, unknown>[] = [];
      const reading = (async () => {
        let buffer = "";
        for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
          buffer += text;
          const parts = buffer.split("\n");
          buffer = parts.pop()!;
          lines.push(...parts.map((line) => JSON.parse(line)));
        }
      })();
      children.push({ lines, done: child.status.then(async (s) => (await reading, s.code)) });
    }
    const live = (c: { lines: Record<string, unknown>[] }) =>
      c.lines.some((l) => l.state === "live");
    await waitFor(() => children.every(live), { what: "node to go live", timeoutMs: 20_000 });
    const handled = (c: { lines: Record<string, unknown>[] }) =>
      c.lines.filter((l) => "handled" in l).map((l) => l.handled as string);
    const first = await postSeq(user.webhookUrl, 0, 10);
    await waitFor(() => children.every((c) => handled(c).length === 10), {
      what: "the first ten in node",
      timeoutMs: 20_000,
    });
    await server.kill();
    await waitFor(
      () => children.every((c) => c.lines.at(-1)?.state === "backing-off"),
      { what: "node to notice", timeoutMs: 20_000 },
    );
    server = await spawnServer(env);
    const second = await postSeq(user.webhookUrl, 10, 20);
    for (const child of children) {
      assert.equal(await child.done, 0, JSON.stringify(child.lines.slice(-4)));
    }
    for (const child of children) {
      assert.deepEqual(handled(child), [...first, ...second]);
      assert.equal(child.lines.at(-1)!.done, second.at(-1));
    }
  } finally {
    await server.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[client] the same module runs in Chromium from another origin: both transports, localStorage, a refused token", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  // A site of its own, as a page using the library would be: another origin than the server,
  // importing the module from the relay, which serves it.
  const site = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    return new Response("<!doctype html><title>site</title>", {
      headers: { "content-type": "text/html" },
    });
  });
  const module = `${server.url}/client/websocks.js`;
  const browser = await launchChromium();
  const page = await browser.newPage();
  try {
    await page.goto(`http://127.0.0.1:${site.addr.port}/`);
    for (const transport of ["websocket", "sse"]) {
      await page.evaluate(async ({ url, token, transport, module }) => {
        const websocks = await import(module);
        const record = { handled: [] as string[], states: [] as string[] };
        (globalThis as Record<string, unknown>).record = record;
        (globalThis as Record<string, unknown>).subscription = websocks.subscribe({
          url,
          token,
          transport,
          storage: websocks.localStorageStorage(`websocks:${transport}`),
          onState: (state: string) => record.states.push(state),
          onWebhook: (envelope: { id: string }) => {
            record.handled.push(envelope.id);
          },
        });
      }, { url: server.url, token: user.token, transport, module });
      await page.waitForFunction(() =>
        (globalThis as unknown as { record: { states: string[] } }).record.states.includes("live")
      );
      const ids = await postSeq(user.webhookUrl, 0, 3);
      await page.waitForFunction(
        (n) =>
          (globalThis as unknown as { record: { handled: string[] } }).record.handled.length === n,
        3,
      );
      const result = await page.evaluate(async (transport) => {
        const scope = globalThis as unknown as {
          record: { handled: string[]; states: string[] };
          subscription: { close(): Promise<void> };
        };
        await scope.subscription.close();
        return { ...scope.record, stored: localStorage.getItem(`websocks:${transport}`) };
      }, transport);
      assert.deepEqual(result.handled, ids, transport);
      assert.equal(result.stored, ids[2]);
      assert.deepEqual(result.states, ["connecting", "live", "closed"]);
    }
    // Cross-origin too, a refused token is told apart from a network failure: final.
    const refused = await page.evaluate(async ({ url, module }) => {
      const websocks = await import(module);
      const subscription = websocks.subscribe({
        url,
        token: "wsk_wrong",
        onWebhook: () => {},
        onError: () => {},
      });
      await subscription.closed;
      return { state: subscription.state, status: subscription.error?.status };
    }, { url: server.url, module });
    assert.deepEqual(refused, { state: "closed", status: 401 });
  } catch (error) {
    await saveScreenshot(page, "client-chromium");
    throw error;
  } finally {
    await browser.close();
    await site.shutdown();
  }
});
