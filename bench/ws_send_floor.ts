/**
 * The floor of WebSocket fan-out on Deno: a trivial Deno.serve that sends one text message (by
 * default ~1.1 KB; part "fanrate" asks for its envelopes' own size) to each of `clients`
 * WebSockets, `rate` times a second for `seconds`, and nothing else (no KV, no envelope, no
 * bookkeeping). Prints the server's CPU per delivery, user and system apart, beside what part
 * "fanrate" measures for WebSocks, so the share that is Deno's own `WebSocket.send` (one frame,
 * one write per message) is known.
 *
 * Usage: deno run -A bench/ws_send_floor.ts [clients=1000] [rate=100] [seconds=8] [bytes]
 *        deno run -A bench/ws_send_floor.ts --serve <port>   (the server, spawned by the above)
 */
import { leanWs, openMany } from "./clients.ts";
import { cpuSplit, freePort, portFromOutput } from "./procs.ts";
import { fmt } from "./report.ts";

/** The floor's message when no size is asked for: ~1.1 KB. */
const DEFAULT_PAD = 1024;

/** A webhook-like text message of `bytes` (at least its frame of fields, ~70 bytes). */
export function floorMessage(bytes?: number): string {
  const frame = (pad: number) =>
    JSON.stringify({
      type: "webhook",
      id: "01JTESTTESTTESTTESTTESTTEST",
      body: { text: "x".repeat(pad) },
    });
  return frame(bytes === undefined ? DEFAULT_PAD : Math.max(0, bytes - frame(0).length));
}

if (import.meta.main && Deno.args[0] === "--serve") {
  const sockets = new Set<WebSocket>();
  Deno.serve({ port: Number(Deno.args[1]), hostname: "127.0.0.1", onListen() {} }, (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/fire") {
      const rate = Number(url.searchParams.get("rate"));
      const total = Number(url.searchParams.get("total"));
      const bytes = url.searchParams.get("bytes");
      const message = floorMessage(bytes === null ? undefined : Number(bytes));
      let sent = 0;
      const started = performance.now();
      const tick = () => {
        const due = Math.min(total, Math.floor((performance.now() - started) * rate / 1000) + 1);
        for (; sent < due; sent++) for (const socket of sockets) socket.send(message);
        if (sent < total) setTimeout(tick, 1);
      };
      tick();
      return new Response("firing");
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => sockets.add(socket);
    socket.onclose = () => sockets.delete(socket);
    return response;
  });
  console.log(`ws floor listening on ${Deno.args[1]}`);
}

/** Server CPU per delivery of a trivial Deno.serve sending to `clients` WebSockets. */
export interface WsSendFloor {
  clients: number;
  /** Length of the message sent, bytes. */
  messageBytes: number;
  deliveries: number;
  expected: number;
  deliveriesPerSecond: number;
  usPerDelivery: number;
  userUsPerDelivery: number;
  systemUsPerDelivery: number;
}

/** Runs the floor: spawns the trivial server, opens the clients, sends, reads its CPU. */
export async function measureWsSendFloor(
  options: {
    clients: number;
    rate: number;
    seconds: number;
    /** The message's length (as WebSocks' envelopes measure); default ~1.1 KB. */
    messageBytes?: number;
  },
): Promise<WsSendFloor> {
  const { clients, rate, seconds } = options;
  const messageBytes = floorMessage(options.messageBytes).length;
  const port = freePort();
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--serve", String(port)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    await portFromOutput(server, /ws floor listening on (\d+)/, "the trivial WebSocket server");
    let deliveries = 0;
    const { opened } = await openMany(clients, {
      parallel: 50,
      deadline: Date.now() + 60_000,
      open: () => leanWs({ port, path: "/", onMessage: () => deliveries++ }),
    });
    const total = rate * seconds;
    const expected = opened.length * total;
    const before = cpuSplit(server.pid);
    const started = performance.now();
    await (await fetch(
      `http://127.0.0.1:${port}/fire?rate=${rate}&total=${total}&bytes=${messageBytes}`,
    )).text();
    while (deliveries < expected && performance.now() - started < seconds * 4000) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const elapsed = (performance.now() - started) / 1000;
    const after = cpuSplit(server.pid);
    for (const client of opened) client.close();
    const user = after.user - before.user;
    const system = after.system - before.system;
    return {
      clients: opened.length,
      messageBytes,
      deliveries,
      expected,
      deliveriesPerSecond: deliveries / elapsed,
      usPerDelivery: ((user + system) / deliveries) * 1e6,
      userUsPerDelivery: (user / deliveries) * 1e6,
      systemUsPerDelivery: (system / deliveries) * 1e6,
    };
  } finally {
    server.kill("SIGKILL");
    await server.status;
  }
}

/** The floor's line, as parts print it. */
export function floorLine(floor: WsSendFloor, rate: number): string {
  return `  floor, trivial Deno.serve sending a ${floor.messageBytes} B message to ${floor.clients} ` +
    `WebSockets at ${rate}/s: ` +
    `${
      fmt(floor.deliveriesPerSecond, 0)
    } deliveries/s (${floor.deliveries} of ${floor.expected}); ` +
    `server CPU per delivery ${fmt(floor.usPerDelivery, 2)} µs (user ${
      fmt(floor.userUsPerDelivery, 2)
    }, system ${fmt(floor.systemUsPerDelivery, 2)}: one write(2) per message)`;
}

if (import.meta.main && Deno.args[0] !== "--serve") {
  const [clients = 1000, rate = 100, seconds = 8, messageBytes] = Deno.args.map(Number);
  console.log(floorLine(await measureWsSendFloor({ clients, rate, seconds, messageBytes }), rate));
}
