/**
 * Deno.serve against node:http in Deno, for issue 15's idle-SSE target (≤ 30 KiB per connection):
 * a go/no-go experiment outside the server code, each server in its own process.
 *
 * - `bodies`: RSS per idle streaming response for every body source cheaply available on
 *   Deno.serve (the 32 KiB ring of ext/web/stream_resource.rs, see RESULTS.md "Idle streams"),
 *   a resource-backed body (a Unix socket's `readable`), and node:http's res.write() for
 *   reference. A FIFO's `readable` was tried too and left out: each idle one parks a
 *   blocking-pool thread in read(2), and new streams stall once ~31 are open.
 * - `idle`: RSS per idle SSE and per idle WebSocket connection on four servers. `deno` and
 *   `node`: one small Hono app (SSE built as lib/fanout/sse.ts builds it, a WebSocket through
 *   `Deno.upgradeWebSocket`, a POST route) on `Deno.serve(app.fetch)`, and on node:http through
 *   an adapter (IncomingMessage → Request → fetch → Response written to `res`; WebSockets through
 *   node:http's `upgrade` and the npm `ws` package behind a `Deno.upgradeWebSocket` look-alike).
 *   `relay-deno` and `relay-node`: the whole relay (main.ts) as it is, and unchanged with
 *   `Deno.serve` and `Deno.upgradeWebSocket` swapped for those look-alikes (one port, one URL
 *   space); a fresh user's token, `/api/events/stream` and `/`.
 * - `ingest`: `wrk -t1 -c50 -d<seconds>` POSTing 1 KiB JSON after 2 s of warm-up, server pinned
 *   to core 0 and wrk to core 1, servers interleaved round by round: requests/s and server CPU µs
 *   per request (utime + stime of all its threads, /proc), medians. Servers as above plus
 *   `raw-deno`/`raw-node` (the small app's POST work in a bare handler: the transports alone).
 *   The relay's POST is `/api/in/<slug>`. `--profile` adds one profiled run per server (the
 *   main thread, through the inspector): shares by area and by function.
 * - `check`: the relay on a server delivers one webhook to a WebSocket and an SSE client.
 *
 * Usage: deno run -A bench/serve_compare.ts <bodies|idle|ingest|check> [--n=10000]
 *          [--modes=serve-hwm0,node-sse] [--servers=deno,node,raw-deno,raw-node,relay-deno,relay-node]
 *          [--seconds=5] [--rounds=3] [--profile] [--v8=--max-semi-space-size=8] [--deno=PATH]
 * e.g. `idle --servers=relay-deno,relay-node`, `ingest --rounds=5 --servers=relay-deno,relay-node`.
 * Servers run with the relay's V8 flag (`--v8=` replaces it) and `--expose-gc`. `--deno=` runs the
 * servers under another Deno, e.g. 2.5.7: `npx -y deno@2.5.7 --version` once, then
 * `--deno=~/.npm/_npx/<hash>/node_modules/deno/deno`; the driver stays on this one.
 * The script re-runs itself as the server: `--serve=<mode>`.
 */
import { Buffer } from "node:buffer";
import { Hono } from "hono";
import { freePort, portFromOutput, relayEnv, signUpUser } from "./procs.ts";
import { analyze, connectInspector, type CpuProfile } from "./profile.ts";
import { floorBody, GREETING, stats } from "./stream_floor.ts";

const BODY_MODES: Record<string, string> = {
  pending: "Deno.serve, the handler never answers (connection and request alone)",
  "serve-start": "Deno.serve, ReadableStream, default strategy, enqueue in start",
  "serve-hwm0": "Deno.serve, ReadableStream, highWaterMark 0 + byte size (as sse.ts)",
  "serve-bytes": 'Deno.serve, ReadableStream type "bytes", highWaterMark 0',
  "serve-pull": "Deno.serve, pull-based ReadableStream, highWaterMark 0",
  "serve-iter": "Deno.serve, ReadableStream.from(async generator)",
  "serve-transform": "Deno.serve, TransformStream readable, writer held",
  "serve-unix": "Deno.serve, a Unix socket's readable (resource-backed), peer held",
  "node-sse": "node:http, res.write() on an open response",
};
const APP_MODES: Record<string, string> = {
  "app-deno": "Hono app on Deno.serve(app.fetch); WebSocket: Deno.upgradeWebSocket",
  "app-node": "Hono app on node:http through an adapter; WebSocket: node:http upgrade + npm ws",
  "relay-deno": "the relay (main.ts) as it is, on Deno.serve",
  "relay-node":
    "the relay (main.ts) unchanged, Deno.serve and Deno.upgradeWebSocket swapped for node:http + ws",
  "raw-deno": "no Hono, no adapter: the POST's work in a bare Deno.serve handler (ingest only)",
  "raw-node": "no Hono, no adapter: the POST's work in a bare node:http handler (ingest only)",
};

/** Keeps each connection's controller, writer or socket reachable, as a real server would. */
const held: unknown[] = [];
const keep = (value: unknown) => void held.push(value);

// ---------------------------------------------------------------------------------------------
// Part (a): body sources on Deno.serve

let unixListener: Deno.Listener<Deno.Conn, Deno.UnixAddr> | null = null;
let unixTurn: Promise<unknown> = Promise.resolve();

/** The idle streaming body of one request for a Deno.serve body mode. */
async function body(mode: string): Promise<BodyInit> {
  switch (mode) {
    case "serve-unix": {
      // A resource-backed body: Deno.serve reads it in Rust, not through the JS stream channel.
      // (A FIFO's FsFile.readable was tried first: each idle one parks a blocking-pool thread in
      // read(2), and new streams stall once the pool's threads are taken; 31 here.)
      unixListener ??= Deno.listen({ transport: "unix", path: `${Deno.makeTempDirSync()}/s` });
      // One accept at a time (a second concurrent accept throws Busy), paired with its connect.
      const listener = unixListener;
      const pairing = unixTurn.then(() =>
        Promise.all([
          Deno.connect({ transport: "unix", path: listener.addr.path }),
          listener.accept(),
        ])
      );
      unixTurn = pairing.catch(() => {});
      const [conn, peer] = await pairing;
      await peer.write(GREETING);
      keep(peer);
      return conn.readable;
    }
    default:
      return floorBody(mode, keep) ?? "ok";
  }
}

/** Runs the server of one body mode until killed. */
async function serveBodies(mode: string, listening: (port: number) => void): Promise<void> {
  if (mode.startsWith("node-")) {
    const http = await import("node:http");
    const server = http.createServer((request, response) => {
      if (request.url === "/stats") return response.end(JSON.stringify(stats()));
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      response.write(GREETING);
      keep(response);
    });
    server.listen(0, "127.0.0.1", () => listening((server.address() as { port: number }).port));
    return;
  }
  Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: (addr) => listening(addr.port) },
    async (request) => {
      if (new URL(request.url).pathname === "/stats") return Response.json(stats());
      if (mode === "pending") return new Promise<Response>(() => {});
      return new Response(await body(mode), { headers: { "Content-Type": "text/event-stream" } });
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Part (b): one app, two servers

/** The app both servers serve: idle SSE as lib/fanout/sse.ts streams it, a WebSocket, a POST. */
function buildApp(): Hono {
  const app = new Hono();
  app.get("/stats", (c) => c.json(stats()));
  app.get("/sse", () => {
    const stream = new ReadableStream<Uint8Array>(
      { start: (c) => void (c.enqueue(GREETING), keep(c)) },
      { highWaterMark: 0, size: (chunk) => chunk.byteLength },
    );
    return new Response(stream, {
      headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache" },
    });
  });
  app.get("/ws", (c) => {
    const { socket, response } = Deno.upgradeWebSocket(c.req.raw);
    // The relay's sink listens the same way (lib/fanout/websocket.ts).
    const sink = { handleEvent: (_event: Event) => {} };
    for (const type of ["open", "message", "close"]) socket.addEventListener(type, sink);
    keep(socket);
    return response;
  });
  let counter = 0;
  app.post("/hooks/:slug", async (c) => {
    // Read, parse and answer as the ingest route does in outline, without storage.
    const text = await c.req.text();
    const parsed = JSON.parse(text) as Record<string, unknown>;
    const id = `${Date.now().toString(36)}-${(counter++).toString(36)}`;
    return c.json({ id, slug: c.req.param("slug"), keys: Object.keys(parsed).length }, 202);
  });
  return app;
}

/** Response types streamed to node:http as they come; any other body is read whole first. */
const STREAMED_TYPES = /^(text\/event-stream|application\/x-ndjson|application\/octet-stream)/;
/** Request bodies up to this size are read whole before the handler runs (no stream). */
const BUFFERED_REQUEST_BYTES = 64 * 1024;
/** Responses that mean "switch this request to the WebSocket made for it". */
const upgraded = new WeakSet<Response>();

type NodeHttp = typeof import("node:http");
type NodeRequest = import("node:http").IncomingMessage;
type NodeResponse = import("node:http").ServerResponse;
type NodeSocket = import("node:stream").Duplex;

/** A fetch Request for a node:http request; `body` when already read. */
function toRequest(req: NodeRequest, body: Uint8Array | ReadableStream | null): Request {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
  const url = `http://${req.headers.host ?? "localhost"}${req.url ?? "/"}`;
  const init: RequestInit & { duplex?: string } = { method: req.method, headers };
  if (body) {
    init.body = body as BodyInit;
    if (body instanceof ReadableStream) init.duplex = "half";
  }
  return new Request(url, init);
}

/** Reads a small request body whole, or wraps a large one as a stream. */
function requestBody(req: NodeRequest): Promise<Uint8Array | ReadableStream | null> {
  if (req.method === "GET" || req.method === "HEAD") return Promise.resolve(null);
  const length = Number(req.headers["content-length"] ?? NaN);
  if (!(length <= BUFFERED_REQUEST_BYTES)) {
    return Promise.resolve(
      new ReadableStream<Uint8Array>({
        start(c) {
          req.on("data", (chunk: Uint8Array) => c.enqueue(chunk));
          req.on("end", () => c.close());
          req.on("error", (error) => c.error(error));
        },
      }),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    req.on("end", () => {
      if (chunks.length === 1) return resolve(chunks[0]);
      const whole = new Uint8Array(chunks.reduce((sum, c) => sum + c.byteLength, 0));
      let at = 0;
      for (const c of chunks) whole.set(c, (at += c.byteLength) - c.byteLength);
      resolve(whole);
    });
    req.on("error", reject);
  });
}

/** Headers of a Response as node:http takes them (Set-Cookie kept apart). */
function toNodeHeaders(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  headers.forEach((value, name) => {
    if (name !== "set-cookie") out[name] = value;
  });
  const cookies = headers.getSetCookie();
  if (cookies.length) out["set-cookie"] = cookies;
  return out;
}

/** Writes a Response to `res`: streamed for event streams, read whole otherwise. */
async function writeResponse(response: Response, res: NodeResponse): Promise<void> {
  const headers = toNodeHeaders(response.headers);
  // Not `response.body` here: that getter builds a ReadableStream, which a string or bytes body
  // read whole never needs (measured: 1.1 % of samples, plus its garbage).
  if (!STREAMED_TYPES.test(response.headers.get("content-type") ?? "")) {
    const whole = new Uint8Array(await response.arrayBuffer());
    headers["content-length"] = String(whole.byteLength);
    res.writeHead(response.status, headers);
    return void res.end(whole);
  }
  res.writeHead(response.status, headers);
  res.flushHeaders();
  if (response.body === null) return void res.end();
  const reader = response.body.getReader();
  // The client left: cancel the stream, as Deno.serve does, so the app's cancel() runs.
  res.on("close", () => void reader.cancel().catch(() => {}));
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      // Backpressure: wait for the socket to drain before the next read.
      if (!res.write(read.value)) await new Promise((resolve) => res.once("drain", resolve));
    }
    res.end();
  } catch {
    res.destroy();
  }
}

/** What `Deno.upgradeWebSocket` returns for a request node:http is upgrading. */
interface PendingUpgrade {
  ws: import("ws").WebSocket | null;
}
const pendingUpgrades = new WeakMap<Request, PendingUpgrade>();

/** A handler as Deno.serve takes it. */
type ServeHandler = (
  request: Request,
  info: Deno.ServeHandlerInfo<Deno.NetAddr>,
) => Response | Promise<Response>;

/**
 * Serves `handler` through node:http, shaped like Deno.serve's server (addr, finished,
 * shutdown); WebSockets through node:http's `upgrade` and npm ws. `addr` is only right at once
 * for an explicit port (node:http binds asynchronously).
 */
async function serveNode(
  options: { port?: number; hostname?: string; signal?: AbortSignal; onListen?: unknown },
  handler: ServeHandler,
  listening?: (port: number) => void,
) {
  const http: NodeHttp = await import("node:http");
  const { createHash } = await import("node:crypto");
  const info = (req: NodeRequest): Deno.ServeHandlerInfo<Deno.NetAddr> => ({
    remoteAddr: {
      transport: "tcp",
      hostname: req.socket.remoteAddress ?? "",
      port: req.socket.remotePort ?? 0,
    },
    completed: Promise.resolve(),
  });
  const server = http.createServer(async (req, res) => {
    try {
      await writeResponse(await handler(toRequest(req, await requestBody(req)), info(req)), res);
    } catch {
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    }
  });
  server.on("upgrade", async (req: NodeRequest, socket: NodeSocket, head: Uint8Array) => {
    socket.on("error", () => socket.destroy());
    const request = toRequest(req, null);
    const pending: PendingUpgrade = { ws: null };
    pendingUpgrades.set(request, pending);
    const response = await handler(request, info(req));
    if (!upgraded.has(response) || !pending.ws) {
      const text = await response.text();
      socket.end(
        `HTTP/1.1 ${response.status} ${response.statusText}\r\nConnection: close\r\n` +
          `Content-Length: ${new TextEncoder().encode(text).byteLength}\r\n\r\n${text}`,
      );
      return;
    }
    const accept = createHash("sha1")
      .update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest("base64");
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const ws = pending.ws as unknown as {
      setSocket(socket: NodeSocket, head: Uint8Array, options: object): void;
      emit(type: string): void;
    };
    ws.setSocket(socket, head, { maxPayload: 100 * 1024 * 1024, skipUTF8Validation: false });
    // Deno fires "open" once the 101 is sent; the server side of ws does not.
    ws.emit("open");
  });
  let closed!: () => void;
  const finished = new Promise<void>((resolve) => (closed = resolve));
  server.on("close", () => closed());
  options.signal?.addEventListener("abort", () => {
    server.close();
    server.closeAllConnections();
  });
  const port = options.port ?? 0;
  const hostname = options.hostname ?? "0.0.0.0";
  server.listen(port, hostname, () => {
    const bound = (server.address() as { port: number }).port;
    listening?.(bound);
  });
  return {
    addr: { transport: "tcp" as const, hostname, port },
    finished,
    shutdown: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

/**
 * Makes app code that calls Deno.serve and Deno.upgradeWebSocket run on node:http unchanged:
 * Deno.serve(options, handler) serves through serveNode; Deno.upgradeWebSocket, for a request
 * node:http is upgrading, returns a ws WebSocket not yet connected (its listeners are added
 * before the handshake, as with Deno) and a marker response.
 */
async function installNodeServe(): Promise<void> {
  const { WebSocket } = await import("ws");
  const originalUpgrade = Deno.upgradeWebSocket;
  Deno.upgradeWebSocket = ((request: Request, options?: Deno.UpgradeWebSocketOptions) => {
    const pending = pendingUpgrades.get(request);
    if (!pending) return originalUpgrade(request, options);
    // Deno's idleTimeout (pings) is not reproduced: one sweep over all sockets would do it.
    pending.ws = new WebSocket(null, undefined, { autoPong: true });
    const response = new Response(null, { status: 200 });
    upgraded.add(response);
    return { socket: pending.ws as unknown as WebSocket, response };
  }) as typeof Deno.upgradeWebSocket;
  // Deno.serve must return its server synchronously: node:http is loaded first, here.
  await import("node:http");
  await import("node:crypto");
  let serving: ReturnType<typeof serveNode> extends Promise<infer T> ? T : never;
  (Deno as { serve: unknown }).serve = (options: Deno.ServeTcpOptions, handler: ServeHandler) => {
    let server!: typeof serving;
    // serveNode only awaits modules already loaded; its body runs before this returns.
    const started = serveNode(options, handler).then((s) => (server = s));
    void started;
    return {
      get addr() {
        return { transport: "tcp", hostname: options.hostname ?? "0.0.0.0", port: options.port };
      },
      get finished() {
        return started.then((s) => s.finished);
      },
      shutdown: () => started.then((s) => s.shutdown()),
      ref() {},
      unref() {},
      [Symbol.asyncDispose]: () => started.then((s) => s.shutdown()),
      get server() {
        return server;
      },
    };
  };
}

/** The POST route's work without Hono: parse the body, answer an id. */
let rawCounter = 0;
function rawAnswer(text: string, slug: string): string {
  const parsed = JSON.parse(text) as Record<string, unknown>;
  const id = `${Date.now().toString(36)}-${(rawCounter++).toString(36)}`;
  return JSON.stringify({ id, slug, keys: Object.keys(parsed).length });
}

/** Runs the app server of one mode until killed. */
async function serveApp(mode: string, listening: (port: number) => void): Promise<void> {
  if (mode === "raw-node") {
    const http = await import("node:http");
    const server = http.createServer((req, res) => {
      const chunks: Uint8Array[] = [];
      req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
      req.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        const answer = rawAnswer(text, req.url!.split("/")[2]);
        res.writeHead(202, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(answer),
        });
        res.end(answer);
      });
    });
    server.listen(0, "127.0.0.1", () => listening((server.address() as { port: number }).port));
    return;
  }
  if (mode === "raw-deno") {
    Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: (addr) => listening(addr.port) },
      async (request) => {
        const slug = new URL(request.url).pathname.split("/")[2];
        // wrk hangs up mid-request when it stops: not worth a logged error.
        const text = await request.text().catch(() => null);
        if (text === null) return new Response(null, { status: 499 });
        return new Response(rawAnswer(text, slug), {
          status: 202,
          headers: { "content-type": "application/json" },
        });
      },
    );
    return;
  }
  if (mode === "relay-deno" || mode === "relay-node") {
    // The whole relay (main.ts) unchanged; on node:http through the look-alikes above.
    if (mode === "relay-node") await installNodeServe();
    await import("../main.ts");
    return listening(Number(Deno.env.get("PORT")));
  }
  const app = buildApp();
  if (mode === "app-node") {
    await installNodeServe();
    return void await serveNode({ port: 0, hostname: "127.0.0.1" }, app.fetch, listening);
  }
  Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: (addr) => listening(addr.port) },
    app.fetch,
  );
}

// ---------------------------------------------------------------------------------------------
// The driver

/** A server process of one mode, and how to read its memory. */
interface Server {
  port: number;
  pid: number;
  /** Query string that authenticates a stream (the relay's token), or "". */
  auth: string;
  /** Where a webhook is POSTed. */
  postPath: string;
  stats(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

/** Starts the server of `mode` in its own process, pinned to `cpus` when given. */
async function startServer(mode: string, cpus?: string, inspectPort?: number): Promise<Server> {
  const flags = ["--expose-gc", args.v8 ?? "--max-semi-space-size=8"].filter(Boolean).join(",");
  const serverArgs = [
    "run",
    "-A",
    `--v8-flags=${flags}`,
    ...(inspectPort ? [`--inspect=127.0.0.1:${inspectPort}`] : []),
    new URL(import.meta.url).pathname,
    `--serve=${mode}`,
  ];
  const deno = args.deno ?? Deno.execPath();
  const relay = mode.startsWith("relay-");
  const kvDir = relay ? Deno.makeTempDirSync({ prefix: "serve-compare-" }) : null;
  const env = relay ? relayEnv(freePort(), `${kvDir}/bench.kv`) : undefined;
  const child = new Deno.Command(cpus ? "taskset" : deno, {
    args: cpus ? ["-c", cpus, deno, ...serverArgs] : serverArgs,
    stdout: "piped",
    stderr: relay ? "null" : "inherit",
    env,
    cwd: new URL("..", import.meta.url).pathname,
  }).spawn();
  const port = await portFromOutput(child, /compare listening on (\d+)/, `the ${mode} server`);
  let auth = "";
  let postPath = "/hooks/bench";
  if (relay) {
    let user;
    for (let attempt = 0; !user; attempt++) {
      try {
        user = await signUpUser(`http://127.0.0.1:${port}`);
      } catch (error) {
        if (attempt > 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    auth = `?token=${user.token}`;
    postPath = `/api/in/${user.slug}`;
  }
  return {
    port,
    pid: child.pid,
    auth,
    postPath,
    // The relay has no such route: its RSS only (no forced GC, no heap figures).
    stats: async () =>
      relay
        ? { rssKiB: rssOf(child.pid), heapUsed: NaN, heapTotal: NaN }
        : await (await fetch(`http://127.0.0.1:${port}/stats`)).json(),
    async stop() {
      child.kill();
      await child.status;
      if (kvDir) await Deno.remove(kvDir, { recursive: true }).catch(() => {});
    },
  };
}

/** RSS of a process, KiB. */
function rssOf(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]);
}

/** Opens one idle connection: a WebSocket, or a GET whose response is read as it comes. */
async function connect(
  kind: "sse" | "ws" | "pending",
  port: number,
  auth: string,
): Promise<{ close(): void }> {
  if (kind === "ws") {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/${auth ? auth : "ws"}`);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    return socket;
  }
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const path = auth ? `/api/events/stream${auth}` : "/sse";
  await conn.write(
    new TextEncoder().encode(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`,
    ),
  );
  if (kind === "pending") return conn;
  const buffer = new Uint8Array(4096);
  const first = await conn.read(buffer);
  const text = new TextDecoder().decode(buffer.subarray(0, first ?? 0));
  if (!text.startsWith("HTTP/1.1 200")) throw new Error(`unexpected answer: ${text.slice(0, 80)}`);
  (async () => {
    try {
      while (await conn.read(buffer) !== null);
    } catch {
      // Closed by the driver.
    }
  })();
  return conn;
}

/** `count` connections, 100 opening at a time. */
async function openMany(
  kind: "sse" | "ws" | "pending",
  port: number,
  count: number,
  auth = "",
) {
  const opened: { close(): void }[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 100 }, async () => {
    while (next < count) {
      next++;
      opened.push(await connect(kind, port, auth));
    }
  }));
  return opened;
}

/** Measures `n` idle connections of `kind` on a fresh server of `mode`; one table row. */
async function measureIdle(mode: string, kind: "sse" | "ws" | "pending", n: number) {
  const server = await startServer(mode);
  try {
    const auth = server.auth;
    for (const connection of await openMany(kind, server.port, 100, auth)) connection.close();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const before = await server.stats();
    const opened = await openMany(kind, server.port, n, auth);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const natural = rssOf(server.pid);
    const after = await server.stats();
    const per = (value: number) => (value / n).toFixed(1);
    const row = {
      mode,
      kind,
      rss: per(natural - before.rssKiB),
      rssAfterGc: per(after.rssKiB - before.rssKiB),
      liveHeap: per((after.heapUsed - before.heapUsed) / 1024),
      heapSize: per((after.heapTotal - before.heapTotal) / 1024),
    };
    for (const connection of opened) connection.close();
    return row;
  } finally {
    await server.stop();
  }
}

/** Prints rows as a Markdown table. */
function table(rows: Record<string, string>[], what: Record<string, string>) {
  console.log(
    "| server / body | conn | RSS KiB/conn | after GC | live heap | heap size | what |\n" +
      "| --- | --- | ---: | ---: | ---: | ---: | --- |",
  );
  for (const r of rows) {
    console.log(
      `| ${r.mode} | ${r.kind} | ${r.rss} | ${r.rssAfterGc} | ${r.liveHeap} | ${r.heapSize} | ${
        what[r.mode]
      } |`,
    );
  }
}

/** CPU seconds (utime + stime, all threads) of a process. */
function cpuSeconds(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** One wrk run of `seconds` against the POST route; requests done and wrk's text. */
async function wrk(
  port: number,
  path: string,
  seconds: number,
): Promise<{ requests: number; text: string }> {
  const script = `${Deno.makeTempDirSync()}/post.lua`;
  const payload = JSON.stringify({ type: "invoice.paid", pad: "x".repeat(990) }).slice(0, 1024);
  Deno.writeTextFileSync(
    script,
    `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n` +
      `wrk.body = ${JSON.stringify(payload)}\n`,
  );
  const out = await new Deno.Command("taskset", {
    args: [
      "-c",
      "1",
      "wrk",
      "-t1",
      "-c50",
      `-d${seconds}s`,
      "-s",
      script,
      `http://127.0.0.1:${port}${path}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? 0);
  if (/Non-2xx/.test(text)) throw new Error(`non-2xx answers:\n${text}`);
  return { requests, text };
}

/** A server name on the command line (deno, node, raw-deno, relay-node…) as its mode. */
function modeOf(name: string): string {
  return /^(raw|relay)-/.test(name) ? name : `app-${name}`;
}

/** `--name=value` arguments. */
const args: Record<string, string | undefined> = Object.fromEntries(
  Deno.args.filter((a) => a.startsWith("--")).map((arg) =>
    /^--([^=]+)=(.*)$/.exec(arg)?.slice(1) ?? [arg.slice(2), ""]
  ),
);
const part = Deno.args.find((a) => !a.startsWith("--"));

if (args.serve) {
  const listening = (port: number) => console.log(`compare listening on ${port}`);
  if (args.serve in APP_MODES) await serveApp(args.serve, listening);
  else await serveBodies(args.serve, listening);
} else {
  const n = Number(args.n ?? 10000);
  const serverDeno = args.deno
    ? new TextDecoder().decode(
      new Deno.Command(args.deno, { args: ["--version"] }).outputSync().stdout,
    ).split("\n")[0]
    : `deno ${Deno.version.deno}`;
  console.log(`servers on ${serverDeno}, V8 flags: ${args.v8 ?? "--max-semi-space-size=8"}`);
  if (part === "bodies") {
    const modes = args.modes ? args.modes.split(",") : Object.keys(BODY_MODES);
    const rows = [];
    for (const mode of modes) {
      // A socket pair costs two more descriptors per connection: fewer fit under the limit.
      const count = mode === "serve-unix" ? Math.min(n, 6000) : n;
      const row = await measureIdle(mode, mode === "pending" ? "pending" : "sse", count);
      rows.push({ ...row, kind: `${row.kind} ×${count}` });
      console.error(JSON.stringify(rows.at(-1)));
    }
    table(rows, BODY_MODES);
  } else if (part === "idle") {
    const servers = (args.servers ?? "deno,node").split(",").map(modeOf);
    const rows = [];
    for (const kind of ["sse", "ws"] as const) {
      for (const mode of servers) {
        rows.push(await measureIdle(mode, kind, n));
        console.error(JSON.stringify(rows.at(-1)));
      }
    }
    table(rows, APP_MODES);
  } else if (part === "ingest") {
    const seconds = Number(args.seconds ?? 5);
    const rounds = Number(args.rounds ?? 3);
    const servers = (args.servers ?? "deno,node").split(",").map(modeOf);
    const results: Record<string, { rate: number; cpuUs: number }[]> = {};
    for (let round = 1; round <= rounds; round++) {
      for (const mode of servers) {
        const server = await startServer(mode, "0");
        try {
          await wrk(server.port, server.postPath, 2); // warm-up, unmeasured
          const cpu0 = cpuSeconds(server.pid);
          const { requests, text } = await wrk(server.port, server.postPath, seconds);
          const cpu = cpuSeconds(server.pid) - cpu0;
          if (!requests) throw new Error(`wrk measured nothing:\n${text}`);
          const result = { rate: requests / seconds, cpuUs: (cpu * 1e6) / requests };
          (results[mode] ??= []).push(result);
          console.log(
            `round ${round} ${mode.padEnd(9)} ${result.rate.toFixed(0).padStart(6)} req/s  ` +
              `server CPU ${result.cpuUs.toFixed(1)} µs/request`,
          );
        } finally {
          await server.stop();
        }
      }
    }
    if ("profile" in args) {
      // One more run per server with the inspector's CPU profiler on the main thread.
      for (const mode of servers) {
        const inspectPort = freePort();
        const server = await startServer(mode, "0", inspectPort);
        try {
          await wrk(server.port, server.postPath, 2);
          const inspector = await connectInspector(inspectPort);
          await inspector.send("Profiler.enable");
          await inspector.send("Profiler.start");
          await wrk(server.port, server.postPath, seconds);
          const { profile } = await inspector.send("Profiler.stop") as { profile: CpuProfile };
          inspector.close();
          const result = analyze(profile, 12);
          const rows = (list: { name: string; percent: number }[]) =>
            list.map((r) => `${r.name} ${r.percent.toFixed(1)}%`).join(", ");
          console.log(`profile ${mode}: idle ${result.idlePercent.toFixed(1)}%`);
          console.log(`  areas: ${rows(result.areas)}`);
          console.log(`  self: ${rows(result.self)}`);
        } finally {
          await server.stop();
        }
      }
    }
    for (const [mode, list] of Object.entries(results)) {
      // Medians: other work on this box moves single runs by 2× or more.
      const median = (pick: (r: { rate: number; cpuUs: number }) => number) => {
        const sorted = list.map(pick).sort((a, b) => a - b);
        const mid = sorted.length >> 1;
        return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
      };
      console.log(
        `${mode.padEnd(10)} median ${median((r) => r.rate).toFixed(0)} req/s, ` +
          `${median((r) => r.cpuUs).toFixed(1)} µs/request (${list.length} runs)`,
      );
    }
  } else if (part === "check") {
    // The relay on node:http delivers: one webhook reaches a WebSocket and an SSE client.
    for (const mode of (args.servers ?? "relay-node").split(",").map(modeOf)) {
      const server = await startServer(mode);
      try {
        const base = `127.0.0.1:${server.port}`;
        const socket = new WebSocket(`ws://${base}/${server.auth}`);
        const wsGot = new Promise<string>((resolve) => {
          socket.onmessage = (event) => {
            if (String(event.data).includes("serve-compare")) resolve(String(event.data));
          };
        });
        await new Promise((resolve, reject) => {
          socket.onopen = resolve;
          socket.onerror = reject;
        });
        const sse = await fetch(`http://${base}/api/events/stream${server.auth}`);
        const sseGot = (async () => {
          let text = "";
          for await (const chunk of sse.body!.pipeThrough(new TextDecoderStream())) {
            text += chunk;
            if (text.includes("serve-compare")) return text;
          }
          return text;
        })();
        const posted = await fetch(`http://${base}${server.postPath}`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ hello: "serve-compare" }),
        });
        await posted.body?.cancel();
        const timeout = (ms: number) =>
          new Promise<string>((resolve) => setTimeout(() => resolve("(nothing)"), ms));
        const [ws, sseText] = await Promise.all([
          Promise.race([wsGot, timeout(5000)]),
          Promise.race([sseGot, timeout(5000)]),
        ]);
        console.log(
          `${mode}: POST ${posted.status}; WebSocket ${
            ws.includes("serve-compare") ? "got it" : "NOTHING"
          }; SSE ${sseText.includes("serve-compare") ? "got it" : "NOTHING"}`,
        );
        socket.close();
        await sse.body?.cancel().catch(() => {});
      } finally {
        await server.stop();
      }
    }
  } else {
    console.error("usage: deno run -A bench/serve_compare.ts <bodies|idle|ingest|check> [options]");
    Deno.exit(2);
  }
  Deno.exit(0);
}
