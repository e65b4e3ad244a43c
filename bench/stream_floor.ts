/**
 * Where an idle streaming response's memory goes in Deno, without the relay: one server process
 * per body source holds N idle connections, and its RSS, live JS heap and heap size per
 * connection are printed, before and after a forced GC. The figures behind "Idle streams: Deno's
 * floor" in bench/RESULTS.md (an upstream-style report).
 *
 * Usage: deno run -A bench/stream_floor.ts [--n=5000] [--modes=pending,serve-start,node-sse]
 *        [--v8=--max-semi-space-size=8]
 * (the script re-runs itself as the server: `--serve=<mode>`).
 */
import { portFromOutput } from "./procs.ts";

const MODES: Record<string, string> = {
  pending: "Deno.serve, the handler never answers (the connection and request alone)",
  finished: "Deno.serve, a finished response on a kept-alive connection",
  "serve-start": "Deno.serve, ReadableStream enqueuing in start (the default strategy)",
  "serve-hwm0": "Deno.serve, ReadableStream with highWaterMark 0 and a byte size (sse.ts)",
  "serve-bytes": 'Deno.serve, ReadableStream type "bytes", highWaterMark 0',
  "serve-pull": "Deno.serve, a pull-based ReadableStream waiting on a promise",
  "serve-iter": "Deno.serve, ReadableStream.from(an async generator)",
  "serve-transform": "Deno.serve, a TransformStream's readable, its writer held",
  "node-sse": "node:http, res.write() on an open response",
  "node-bridge": "node:http, a web ReadableStream read and written into res (an adapter)",
  "serve-ws": "Deno.serve, Deno.upgradeWebSocket, no listener",
};

/** The first bytes of every idle stream. */
export const GREETING = new TextEncoder().encode("retry: 2000\n: connected\n\n");
/** Keeps each connection's controller, writer or socket reachable, as a real server would. */
const held: unknown[] = [];

/**
 * The idle streaming body of one request for a Deno.serve body mode (`serve-start` … `serve-transform`;
 * null for any other), opened with GREETING; `keep` holds what must stay reachable.
 */
export function floorBody(mode: string, keep: (value: unknown) => void): BodyInit | null {
  switch (mode) {
    case "serve-start":
      return new ReadableStream<Uint8Array>({ start: (c) => void (c.enqueue(GREETING), keep(c)) });
    case "serve-hwm0":
      return new ReadableStream<Uint8Array>(
        { start: (c) => void (c.enqueue(GREETING), keep(c)) },
        { highWaterMark: 0, size: (chunk) => chunk.byteLength },
      );
    case "serve-bytes":
      return new ReadableStream({
        type: "bytes",
        start: (c) => void (c.enqueue(GREETING.slice()), keep(c)),
      }, { highWaterMark: 0 });
    case "serve-pull": {
      let first = true;
      return new ReadableStream<Uint8Array>({
        pull(c) {
          if (!first) return new Promise((resolve) => keep(resolve));
          first = false;
          c.enqueue(GREETING);
        },
      }, { highWaterMark: 0 });
    }
    case "serve-iter":
      return ReadableStream.from((async function* () {
        yield GREETING;
        await new Promise((resolve) => keep(resolve));
      })());
    case "serve-transform": {
      const pair = new TransformStream<Uint8Array, Uint8Array>();
      const writer = pair.writable.getWriter();
      writer.write(GREETING);
      keep(writer);
      return pair.readable;
    }
    default:
      return null;
  }
}

/** The idle streaming body of one request for a Deno.serve mode. */
function body(mode: string): BodyInit {
  return floorBody(mode, (value) => held.push(value)) ?? "ok";
}

/** Memory figures of this process, after a forced GC when `gc` is exposed. */
export function stats(): Record<string, number> {
  (globalThis as { gc?: () => void }).gc?.();
  const usage = Deno.memoryUsage();
  const status = Deno.readTextFileSync("/proc/self/status");
  return {
    rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)![1]),
    heapUsed: usage.heapUsed,
    heapTotal: usage.heapTotal,
  };
}

/** Runs the server of one mode on a free port until killed; prints the port. */
async function serve(mode: string): Promise<void> {
  const listening = (port: number) => console.log(`floor listening on ${port}`);
  if (mode.startsWith("node-")) {
    const http = await import("node:http");
    http.createServer((request, response) => {
      if (request.url === "/stats") return response.end(JSON.stringify(stats()));
      response.writeHead(200, { "Content-Type": "text/event-stream" });
      if (mode === "node-sse") {
        response.write(GREETING);
        return void held.push(response);
      }
      const stream = new ReadableStream<Uint8Array>({
        start: (c) => void (c.enqueue(GREETING), held.push(c)),
      }, { highWaterMark: 0, size: (chunk) => chunk.byteLength });
      const reader = stream.getReader();
      (async () => {
        for (let read = await reader.read(); !read.done; read = await reader.read()) {
          response.write(read.value);
        }
        response.end();
      })();
    }).listen(0, "127.0.0.1", function (this: { address(): { port: number } }) {
      listening(this.address().port);
    });
    return;
  }
  Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: (addr) => listening(addr.port) },
    (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/stats") return Response.json(stats());
      if (mode === "serve-ws") {
        const { socket, response } = Deno.upgradeWebSocket(request);
        held.push(socket);
        return response;
      }
      if (mode === "pending") return new Promise<Response>(() => {});
      return new Response(body(mode), { headers: { "Content-Type": "text/event-stream" } });
    },
  );
}

/** Opens one idle connection of `mode` to the server: a WebSocket, or a GET read as it comes. */
async function connect(mode: string, port: number): Promise<{ close(): void }> {
  if (mode === "serve-ws") {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    return socket;
  }
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode("GET /sse HTTP/1.1\r\nHost: floor\r\n\r\n"));
  if (mode === "pending") return conn;
  const buffer = new Uint8Array(4096);
  await conn.read(buffer);
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
async function openMany(mode: string, port: number, count: number) {
  const opened: { close(): void }[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 100 }, async () => {
    while (next < count) {
      next++;
      opened.push(await connect(mode, port));
    }
  }));
  return opened;
}

/** Measures one mode in its own server process; prints one line. */
async function measure(mode: string, n: number, v8: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `--v8-flags=--expose-gc${v8 ? `,${v8}` : ""}`,
      new URL(import.meta.url).pathname,
      `--serve=${mode}`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const port = await portFromOutput(child, /floor listening on (\d+)/, `the ${mode} server`);
  const read = async () => await (await fetch(`http://127.0.0.1:${port}/stats`)).json();
  const rss = () =>
    Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${child.pid}/status`))![1]);
  for (const connection of await openMany(mode, port, 100)) connection.close();
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const before = await read();
  const opened = await openMany(mode, port, n);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const natural = rss();
  const after = await read();
  const per = (value: number) => (value / n).toFixed(1).padStart(6);
  console.log(
    `${mode.padEnd(16)} RSS ${per(natural - before.rssKiB)}  after GC ${
      per(after.rssKiB - before.rssKiB)
    }  live heap ${per((after.heapUsed - before.heapUsed) / 1024)}  heap size ${
      per((after.heapTotal - before.heapTotal) / 1024)
    }  KiB/conn   ${MODES[mode]}`,
  );
  for (const connection of opened) connection.close();
  child.kill();
  await child.status;
}

/** `--name=value` arguments. */
const args: Record<string, string | undefined> = Object.fromEntries(
  Deno.args.map((arg) => /^--([^=]+)=(.*)$/.exec(arg)?.slice(1) ?? [arg, ""]),
);
if (!import.meta.main) {
  // Imported for floorBody (bench/serve_compare.ts): nothing runs.
} else if (args.serve) {
  await serve(args.serve);
} else {
  const n = Number(args.n ?? 5000);
  const modes = args.modes ? args.modes.split(",") : Object.keys(MODES);
  console.log(
    `${n} idle connections per mode, Deno ${Deno.version.deno}, V8 flags: ${args.v8 || "default"}`,
  );
  for (const mode of modes) await measure(mode, n, args.v8 ?? "");
  Deno.exit(0);
}
