/**
 * Two sides of one WebSocks deployment, and the suite every broker transport must pass.
 *
 * A side is where a request lands: one of two isolates of a `WORKERS=2` process (told apart by
 * the X-WebSocks-Isolate header, and reached by pinning a connection to it), or one of two
 * instances sharing one KV store with `BROKER=kv`. Every case puts the sender on one side and
 * clients on both, so a message that fails to cross shows as a missing event.
 */
import assert from "node:assert/strict";
import NodeWebSocket from "ws";
import {
  messageQueue,
  openSse,
  type SseStream,
  startTestServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";

/** 0 or 1. */
export type Side = 0 | 1;

/** A WebSocket client with a message queue. */
export interface WsClient {
  /** The isolate that holds it, when the deployment says. */
  isolate: string | null;
  next(timeoutMs?: number): Promise<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
  send(value: unknown): void;
  close(): Promise<void>;
}

/** A deployment with two sides. */
export interface Sides {
  name: string;
  /** Base URL to reach `side`. */
  base(side: Side): string;
  /** An HTTP request answered by `side` (asserted). */
  fetch(side: Side, path: string, init?: RequestInit): Promise<Response>;
  openSse(side: Side, path: string, headers?: Record<string, string>): Promise<SseStream>;
  openWs(side: Side, path: string): Promise<WsClient>;
  close(): Promise<void>;
}

/** Opens a WebSocket with the `ws` package, which shows the upgrade's response headers. */
function openNodeWs(url: string): Promise<WsClient> {
  const socket = new NodeWebSocket(url);
  const messages = messageQueue<Record<string, unknown>>("WebSocket message");
  let isolate: string | null = null;
  socket.on("upgrade", (response: { headers: Record<string, unknown> }) => {
    isolate = (response.headers["x-websocks-isolate"] as string | undefined) ?? null;
  });
  socket.on("message", (data: unknown) => messages.push(JSON.parse(String(data))));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on("close", (code: number, reason: unknown) => resolve({ code, reason: String(reason) }))
  );
  return new Promise((resolve, reject) => {
    socket.on("error", (error: Error) => reject(error));
    socket.on("open", () =>
      resolve({
        isolate,
        closed,
        next: messages.next,
        send(value) {
          socket.send(typeof value === "string" ? value : JSON.stringify(value));
        },
        async close() {
          if (socket.readyState !== NodeWebSocket.CLOSED) {
            socket.close();
            await closed;
          }
        },
      }));
  });
}

/** Resolves as `promise` does, or fails naming `what` after `ms`. */
export function within<T>(promise: Promise<T>, options: { ms: number; what: string }): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${options.what}: not within ${options.ms} ms`)),
      options.ms,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Starts `main.ts` in its own process with two Workers on a temporary KV file. */
export async function startClusterProcess(env: Record<string, string> = {}): Promise<
  {
    base: string;
    child: Deno.ChildProcess;
    log(): string;
    stop(signal?: Deno.Signal): Promise<number>;
  }
> {
  const dir = await Deno.makeTempDir({ prefix: "websocks-cluster-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    env: {
      PORT: "0",
      HOST: "127.0.0.1",
      KV_PATH: `${dir}/websocks.kv`,
      WORKERS: "2",
      SHUTDOWN_DRAIN_SECONDS: "0",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  const stderr = new Response(child.stderr).text();
  const output = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  while (!log.includes("listening")) {
    const { value, done } = await output.read();
    if (done) {
      throw new Error(`main.ts exited (${(await child.status).code}):\n${await stderr}`);
    }
    log += value;
  }
  const draining = (async () => {
    for (;;) {
      const { value, done } = await output.read();
      if (done) return;
      log += value;
    }
  })();
  const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log)?.[1]);
  assert.ok(port > 0, `no port in the start-up line: ${log}`);
  let status: Promise<number> | null = null;
  return {
    base: `http://127.0.0.1:${port}`,
    child,
    log: () => log,
    stop(signal = "SIGTERM") {
      status ??= (async () => {
        try {
          child.kill(signal);
        } catch {
          // already gone
        }
        const { code } = await child.status;
        await draining;
        await stderr;
        await Deno.remove(dir, { recursive: true });
        return code;
      })();
      return status;
    },
  };
}

const ISOLATE = "x-websocks-isolate";
const MAX_PIN_ATTEMPTS = 60;

/** Two isolates of one `WORKERS=2` process: each side is one Worker. */
export async function clusterSides(env: Record<string, string> = {}): Promise<Sides> {
  const cluster = await startClusterProcess(env);
  const base = cluster.base;
  const wsBase = base.replace(/^http/, "ws");
  const pinned = new Map<Side, Deno.HttpClient>();
  const opened: Deno.HttpClient[] = [];

  /** A client whose pooled connection is held by `side`'s isolate. */
  async function clientFor(side: Side): Promise<Deno.HttpClient> {
    for (let attempt = 0; attempt < MAX_PIN_ATTEMPTS; attempt++) {
      const client = Deno.createHttpClient({});
      opened.push(client);
      const probe = await fetch(`${base}/api/me`, { client });
      await probe.body?.cancel();
      if (probe.headers.get(ISOLATE) === String(side)) return client;
    }
    throw new Error(`no connection reached isolate ${side} in ${MAX_PIN_ATTEMPTS} attempts`);
  }

  return {
    name: "cluster",
    base: () => base,
    async fetch(side, path, init = {}) {
      let client = pinned.get(side);
      if (!client) pinned.set(side, client = await clientFor(side));
      const response = await fetch(`${base}${path}`, { ...init, client });
      assert.equal(response.headers.get(ISOLATE), String(side), `${path} answered elsewhere`);
      return response;
    },
    async openSse(side, path, headers = {}) {
      // A stream holds its connection, so each gets a client of its own.
      const stream = await openSse(`${base}${path}`, headers, { client: await clientFor(side) });
      assert.equal(stream.response.headers.get(ISOLATE), String(side));
      return stream;
    },
    async openWs(side, path) {
      for (let attempt = 0; attempt < MAX_PIN_ATTEMPTS; attempt++) {
        const ws = await openNodeWs(`${wsBase}${path}`);
        if (ws.isolate === String(side)) return ws;
        await ws.close();
      }
      throw new Error(`no WebSocket reached isolate ${side} in ${MAX_PIN_ATTEMPTS} attempts`);
    },
    async close() {
      for (const client of opened) client.close();
      const code = await cluster.stop();
      assert.equal(code, 0, `the cluster exited with ${code}:\n${cluster.log()}`);
    },
  };
}

/** Two instances in this process sharing one KV file, with the shared-KV transport. */
export async function instanceSides(env: Record<string, string> = {}): Promise<
  Sides & { servers: [TestServer, TestServer] }
> {
  const dir = await Deno.makeTempDir({ prefix: "websocks-instances-" });
  const shared = { KV_PATH: `${dir}/shared.kv`, BROKER: "kv", ...env };
  const servers: [TestServer, TestServer] = [
    await startTestServer(shared),
    await startTestServer(shared),
  ];
  return {
    name: "instances",
    servers,
    base: (side) => servers[side].url,
    fetch: (side, path, init) => fetch(`${servers[side].url}${path}`, init),
    openSse: (side, path, headers) => openSse(`${servers[side].url}${path}`, headers),
    openWs: (side, path) => openNodeWs(`${servers[side].wsUrl}${path}`),
    async close() {
      await Promise.all(servers.map((server) => server.shutdown()));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A user signed up on side 0. */
export interface SidesUser {
  token: string;
  tokenId: string;
  slug: string;
  auth: { Authorization: string };
}

/** Signs a user up through side 0. */
export async function signUpOn(sides: Sides): Promise<SidesUser> {
  const response = await sides.fetch(0, "/api/auth/signup", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      email: `${crypto.randomUUID().slice(0, 8)}@example.com`,
      password: "correct horse battery",
    }),
  });
  assert.equal(response.status, 201);
  const body = await response.json();
  return {
    token: body.token.value,
    tokenId: body.token.id,
    slug: body.endpoint.slug,
    auth: { Authorization: `Bearer ${body.token.value}` },
  };
}

/** POSTs a JSON webhook through `side` and returns its status and id. */
export async function postOn(
  sides: Sides,
  options: { side: Side; slug: string; body: string; path?: string },
): Promise<{ status: number; id: string | null; response: Response }> {
  const response = await sides.fetch(options.side, `/api/in/${options.slug}${options.path ?? ""}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: options.body,
  });
  const text = await response.text();
  const id = response.status === 200 ? JSON.parse(text).id : null;
  return { status: response.status, id, response };
}

/** Turns respond mode on for the user's endpoint, through side 0, with a sender timeout. */
export async function respondOn(sides: Sides, user: SidesUser, timeoutSeconds: number) {
  const set = await sides.fetch(0, `/api/endpoints/${user.slug}`, {
    method: "PATCH",
    headers: { ...user.auth, "Content-Type": "application/json" },
    body: JSON.stringify({ respond: true, respondTimeoutSeconds: timeoutSeconds }),
  });
  assert.equal(set.status, 200);
  await set.body?.cancel();
}

/** Registers the shared suite for one kind of deployment. */
export function transportSuite(kind: string, start: () => Promise<Sides>): void {
  const test = (name: string, fn: (sides: Sides) => Promise<void>) =>
    Deno.test(`[${kind}] ${name}`, async () => {
      const sides = await start();
      try {
        await fn(sides);
      } finally {
        await sides.close();
      }
    });

  test("webhooks accepted on either side reach SSE and WebSocket clients on both, once, in order", async (sides) => {
    const user = await signUpOn(sides);
    const streamPath = `/api/events/stream?token=${user.token}`;
    const sse = [await sides.openSse(0, streamPath), await sides.openSse(1, streamPath)];
    const ws = [
      await sides.openWs(0, `/?token=${user.token}`),
      await sides.openWs(1, `/ws?token=${user.token}`),
    ];
    const ids: string[] = [];
    for (let n = 0; n < 6; n++) {
      const side = (n % 2) as Side;
      const posted = await postOn(sides, { side, slug: user.slug, body: `{"n":${n},"ü":"✓"}` });
      assert.equal(posted.status, 200);
      ids.push(posted.id!);
    }
    for (const stream of sse) {
      const got = [];
      for (let n = 0; n < 6; n++) {
        const message = await stream.next();
        got.push(message.id);
        assert.equal(JSON.parse(message.data).body, `{"n":${n},"ü":"✓"}`);
      }
      assert.deepEqual(got, ids);
      stream.close();
    }
    for (const client of ws) {
      const got = [];
      for (let n = 0; n < 6; n++) got.push((await client.next()).id);
      assert.deepEqual(got, ids);
      client.send({ type: "ping" });
      assert.equal((await client.next()).type, "pong", "nothing after the six events");
      await client.close();
    }
  });

  test("filters hold across sides: typed events accepted on either side reach only matching clients", async (sides) => {
    const user = await signUpOn(sides);
    const query = `token=${user.token}&event=invoice.*&path=/stripe`;
    const sse = [
      await sides.openSse(0, `/api/events/stream?${query}`),
      await sides.openSse(1, `/api/events/stream?${query}`),
    ];
    const ws = [await sides.openWs(0, `/ws?${query}`), await sides.openWs(1, `/?${query}`)];
    const sent: { type: string; path: string }[] = [
      { type: "invoice.paid", path: "/stripe" },
      { type: "customer.created", path: "/stripe" },
      { type: "invoice.paid", path: "/other" },
      { type: "invoice.voided", path: "/stripe/x" },
    ];
    const ids: (string | null)[] = [];
    for (const [n, { type, path }] of sent.entries()) {
      const body = JSON.stringify({ type });
      const posted = await postOn(sides, { side: (n % 2) as Side, slug: user.slug, body, path });
      assert.equal(posted.status, 200);
      ids.push(posted.id);
    }
    for (const stream of sse) {
      const got = [(await stream.next()).id, (await stream.next()).id];
      assert.deepEqual(got, [ids[0], ids[3]]);
      stream.close();
    }
    for (const client of ws) {
      const got = [(await client.next()).id, (await client.next()).id];
      assert.deepEqual(got, [ids[0], ids[3]]);
      client.send({ type: "ping" });
      assert.equal((await client.next()).type, "pong", "nothing else");
      await client.close();
    }
  });

  test("a client resuming on the other side gets what it missed, once", async (sides) => {
    const user = await signUpOn(sides);
    const first = await postOn(sides, { side: 0, slug: user.slug, body: '{"n":1}' });
    const stream = await sides.openSse(0, `/api/events/stream?token=${user.token}`);
    const second = await postOn(sides, { side: 0, slug: user.slug, body: '{"n":2}' });
    assert.equal((await stream.next()).id, second.id);
    stream.close();
    const missed = [];
    for (let n = 3; n <= 5; n++) {
      missed.push((await postOn(sides, { side: 0, slug: user.slug, body: `{"n":${n}}` })).id);
    }
    const resumed = await sides.openSse(1, `/api/events/stream?token=${user.token}`, {
      "Last-Event-ID": second.id!,
    });
    const live = await postOn(sides, { side: 0, slug: user.slug, body: '{"n":6}' });
    const got = [];
    for (let n = 0; n < 4; n++) got.push((await resumed.next()).id);
    assert.deepEqual(got, [...missed, live.id]);
    assert.ok(!got.includes(first.id) && !got.includes(second.id));
    resumed.close();
  });

  test("revoking a token closes its connections on both sides", async (sides) => {
    const user = await signUpOn(sides);
    const created = await sides.fetch(0, "/api/tokens", {
      method: "POST",
      headers: { ...user.auth, "Content-Type": "application/json" },
      body: '{"name":"laptop"}',
    });
    assert.equal(created.status, 201);
    const token = (await created.json()).token;
    const ws = [
      await sides.openWs(0, `/?token=${token.value}`),
      await sides.openWs(1, `/?token=${token.value}`),
    ];
    const keeper = await sides.openWs(1, `/?token=${user.token}`);
    const revoked = await sides.fetch(0, `/api/tokens/${token.id}`, {
      method: "DELETE",
      headers: user.auth,
    });
    assert.equal(revoked.status, 200);
    await revoked.body?.cancel();
    for (const client of ws) {
      const closed = await within(client.closed, { ms: 2000, what: "closing the revoked one" });
      assert.equal(closed.code, 4001);
    }
    keeper.send({ type: "ping" });
    assert.equal((await keeper.next()).type, "pong", "the other token's connection stays");
    await keeper.close();
  });

  test("a rotated URL stops working on both sides at once", async (sides) => {
    const user = await signUpOn(sides);
    // Both sides have the endpoint cached before the rotation.
    for (const side of [0, 1] as const) {
      assert.equal((await postOn(sides, { side, slug: user.slug, body: "{}" })).status, 200);
    }
    const rotated = await sides.fetch(0, `/api/endpoints/${user.slug}/rotate`, {
      method: "POST",
      headers: user.auth,
    });
    assert.equal(rotated.status, 200);
    const fresh = (await rotated.json()).endpoint.slug;
    // The KV transport carries the change through a watch, which takes a moment.
    for (const side of [0, 1] as const) {
      await waitFor(
        async () => (await postOn(sides, { side, slug: user.slug, body: "{}" })).status === 404,
        { what: `the old URL refused on side ${side}` },
      );
      assert.equal((await postOn(sides, { side, slug: fresh, body: "{}" })).status, 200);
    }
  });

  test("/api/clients and /api/me see clients on both sides", async (sides) => {
    const user = await signUpOn(sides);
    const here = await sides.openWs(0, `/?token=${user.token}`);
    const there = await sides.openSse(1, `/api/events/stream?token=${user.token}`);
    // Over shared KV the other instance's answer is waited for 250 ms (README: the number of
    // instances is not known), so a busy machine may miss it in one answer: asked until seen.
    for (const side of [0, 1] as const) {
      let transports: string[] = [];
      await waitFor(async () => {
        const clients = await sides.fetch(side, "/api/clients", { headers: user.auth });
        assert.equal(clients.status, 200);
        assert.equal(clients.headers.get("content-type"), "application/json");
        const list: { transport: string }[] = (await clients.json()).clients;
        transports = list.map((c) => c.transport).sort();
        return transports.length === 2;
      }, { what: `both clients listed on side ${side}` });
      assert.deepEqual(transports, ["sse", "ws"]);
      await waitFor(async () => {
        const me = await (await sides.fetch(side, "/api/me", { headers: user.auth })).json();
        return me.connectedClients === 2;
      }, { what: `both clients counted by /api/me on side ${side}` });
    }
    await here.close();
    there.close();
  });

  test("respond mode: a client on one side answers a sender on the other", async (sides) => {
    const user = await signUpOn(sides);
    await respondOn(sides, user, 5);
    // Side 1 knows respond mode is on once it refuses a sender for want of a client.
    await waitFor(
      async () => (await postOn(sides, { side: 1, slug: user.slug, body: "{}" })).status === 503,
      { what: "respond mode on at side 1" },
    );
    const client = await sides.openWs(0, `/?token=${user.token}`);
    const sending = postOn(sides, { side: 1, slug: user.slug, body: '{"challenge":"abc"}' });
    const event = await client.next();
    assert.equal(event.respond, true);
    client.send({
      type: "response",
      id: event.id,
      status: 202,
      headers: { "Content-Type": "text/plain" },
      body: "abc",
    });
    const { response } = await sending;
    assert.equal(response.status, 202);
    assert.equal(response.headers.get("content-type"), "text/plain");
    await client.close();
  });

  test("resending on one side reaches clients on the other", async (sides) => {
    const user = await signUpOn(sides);
    const client = await sides.openWs(1, `/?token=${user.token}`);
    const posted = await postOn(sides, { side: 0, slug: user.slug, body: '{"again":true}' });
    assert.equal((await client.next()).id, posted.id);
    const resent = await sides.fetch(0, `/api/events/${posted.id}/resend`, {
      method: "POST",
      headers: user.auth,
    });
    assert.equal(resent.status, 200);
    assert.equal((await resent.json()).clients, 1);
    const again = await client.next();
    assert.equal(again.id, posted.id);
    assert.deepEqual(again.payload, { again: true });
    await client.close();
  });

  test("consumer groups: members on both sides handle every webhook once", async (sides) => {
    const user = await signUpOn(sides);
    const path = `/?token=${user.token}&group=both`;
    const ws = [
      await sides.openWs(0, path),
      await sides.openWs(0, path),
      await sides.openWs(1, path),
      await sides.openWs(1, path),
    ];
    const sse = await sides.openSse(1, `/api/events/stream?token=${user.token}&group=both`);
    const hello = await sse.next();
    assert.equal(hello.event, "group");
    const sseId = JSON.parse(hello.data).connectionId;
    const got: { side: Side; id: string; attempt: number }[] = [];
    let done = false;
    const readers = [
      ...ws.map(async (client, n) => {
        const side = (n < 2 ? 0 : 1) as Side;
        while (!done) {
          const message = await client.next(100).catch(() => null);
          if (message?.type !== "webhook") continue;
          got.push({ side, id: message.id as string, attempt: message.attempt as number });
          client.send({ type: "ack", id: message.id });
        }
      }),
      (async () => {
        while (!done) {
          const message = await sse.next(100).catch(() => null);
          if (!message || message.event !== null) continue;
          const event = JSON.parse(message.data);
          got.push({ side: 1, id: event.id, attempt: event.attempt });
          // Acked through side 0 for instances; in a cluster wherever the kernel puts it (a
          // pinned client would open a second connection while posts use the first): either
          // way the ack crosses to the isolate holding the stream when it lands elsewhere.
          const acked = await fetch(`${sides.base(0)}/api/groups/both/ack`, {
            method: "POST",
            headers: { ...user.auth, "Content-Type": "application/json" },
            body: JSON.stringify({ connection: sseId, id: event.id }),
          });
          assert.equal(acked.status, 200, await acked.text());
        }
      })(),
    ];
    // Under ACKS_BURST, the account's ack limit.
    const ids: string[] = [];
    await Promise.all([0, 1].map(async (side) => {
      for (let n = 0; n < 30; n++) {
        const posted = await postOn(sides, {
          side: side as Side,
          slug: user.slug,
          body: `{"n":${n}}`,
        });
        assert.equal(posted.status, 200);
        ids.push(posted.id!);
      }
    }));
    await waitFor(() => got.length >= ids.length, {
      what: "every webhook handled",
      timeoutMs: 20_000,
    });
    done = true;
    await Promise.all(readers);
    assert.deepEqual(got.map((one) => one.id).sort(), ids.sort(), "each webhook exactly once");
    assert.ok(got.every((one) => one.attempt === 1));
    // Claims race between the sides: each side wins a share (neither is a leader).
    for (const side of [0, 1] as const) {
      assert.ok(got.some((one) => one.side === side), `members on side ${side} got none`);
    }
    for (const client of ws) await client.close();
    sse.close();
  });

  test("consumer groups: members with different filters on each side get their own events", async (sides) => {
    const user = await signUpOn(sides);
    const path = (event: string) => `/?token=${user.token}&group=typed&event=${event}`;
    const members = [await sides.openWs(0, path("a.*")), await sides.openWs(1, path("b.*"))];
    const sent: Record<string, string[]> = { a: [], b: [] };
    for (let n = 0; n < 10; n++) {
      const kind = n % 2 ? "a" : "b";
      const body = JSON.stringify({ type: `${kind}.${n}` });
      const posted = await postOn(sides, { side: (n % 3 ? 0 : 1) as Side, slug: user.slug, body });
      assert.equal(posted.status, 200);
      sent[kind].push(posted.id!);
    }
    for (const [n, kind] of (["a", "b"] as const).entries()) {
      const got = [];
      while (got.length < 5) {
        const message = await members[n].next(5000);
        assert.equal(message.type, "webhook");
        assert.match(message.eventType as string, new RegExp(`^${kind}\\.`));
        got.push(message.id);
        members[n].send({ type: "ack", id: message.id });
      }
      assert.deepEqual(got, sent[kind], `side ${n} gets its events, in order, once`);
    }
    for (const member of members) {
      member.send({ type: "ping" });
      assert.equal((await member.next()).type, "pong", "nothing else");
      await member.close();
    }
  });

  test("the quota stays exact with 50 concurrent senders over both sides", async (sides) => {
    const user = await signUpOn(sides);
    const cap = await sides.fetch(0, "/api/billing/cap", {
      method: "PUT",
      headers: { ...user.auth, "Content-Type": "application/json" },
      body: '{"monthlyCap": 17}',
    });
    assert.equal(cap.status, 200);
    await cap.body?.cancel();
    const statuses = await Promise.all(Array.from({ length: 50 }, async (_, n) => {
      // A fresh connection each, so a cluster's kernel spreads them over both isolates.
      const client = Deno.createHttpClient({});
      try {
        const response = await fetch(`${sides.base((n % 2) as Side)}/api/in/${user.slug}`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: `{"n":${n}}`,
          client,
        });
        await response.body?.cancel();
        return response.status;
      } finally {
        client.close();
      }
    }));
    assert.equal(statuses.filter((s) => s === 200).length, 17);
    assert.equal(statuses.filter((s) => s === 402).length, 33);
  });
}
