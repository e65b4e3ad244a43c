/**
 * Idle connections in their own process, for part "scale": `count` connections to the relay from
 * source address `localAddress` (node:net binds it; Deno.connect cannot), even ones SSE and odd
 * ones WebSocket. Each reads and drops what comes; WebSockets answer pings. Prints
 * `READY <opened> <failed> <first error>` once done opening and holds them until killed.
 *
 * One process per source address: each (source address, server port) pair has only ~28k
 * ephemeral ports, and each process only as many descriptors as its limit allows.
 *
 * Usage: deno run -A bench/idle_clients.ts '{"port":…,"token":"…","count":10000,"localAddress":"127.0.0.2"}'
 */
import net from "node:net";
import { Buffer } from "node:buffer";
import { openMany } from "./clients.ts";

/** What the driver asks of this process. */
export interface IdleClientsOptions {
  port: number;
  token: string;
  count: number;
  localAddress: string;
}

/** Answers the server's pings on a WebSocket whose handshake is done; drops everything else. */
function answerPings(socket: net.Socket): (bytes: Uint8Array) => void {
  let pending = new Uint8Array(0);
  return (bytes) => {
    const joined = new Uint8Array(pending.length + bytes.length);
    joined.set(pending);
    joined.set(bytes, pending.length);
    let pos = 0;
    while (joined.length - pos >= 2) {
      const short = joined[pos + 1] & 0x7f;
      const head = short === 126 ? 4 : short === 127 ? 10 : 2;
      if (joined.length - pos < head) break;
      const length = short === 126
        ? (joined[pos + 2] << 8) | joined[pos + 3]
        : short === 127
        ? Number(new DataView(joined.buffer, pos + 2, 8).getBigUint64(0))
        : short;
      if (joined.length - pos < head + length) break;
      if ((joined[pos] & 0x0f) === 9) {
        // Pong with the ping's payload, masked with a zero key as clients must mask.
        const payload = joined.subarray(pos + head, pos + head + length);
        socket.write(new Uint8Array([0x8a, 0x80 | payload.length, 0, 0, 0, 0, ...payload]));
      }
      pos += head + length;
    }
    pending = joined.slice(pos);
  };
}

/** Opens one idle connection; resolves once the server answered 200 (SSE) or 101 (WebSocket). */
function openIdle(options: IdleClientsOptions, ws: boolean): Promise<{ close(): void }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: "127.0.0.1",
      port: options.port,
      localAddress: options.localAddress,
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("no answer within 10 s"));
    }, 10_000);
    let answered = false;
    let onFrames: ((bytes: Uint8Array) => void) | null = null;
    socket.on("connect", () => {
      const key = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64");
      socket.write(
        ws
          ? `GET /?token=${options.token} HTTP/1.1\r\nHost: 127.0.0.1:${options.port}\r\n` +
            `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
            "Sec-WebSocket-Version: 13\r\n\r\n"
          : `GET /api/events/stream?token=${options.token} HTTP/1.1\r\nHost: 127.0.0.1:${options.port}\r\n` +
            "Accept: text/event-stream\r\n\r\n",
      );
    });
    socket.on("data", (buffer: Buffer) => {
      const data = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.length);
      if (answered) {
        onFrames?.(data);
        return;
      }
      answered = true;
      clearTimeout(timer);
      const head = buffer.toString("latin1", 0, Math.min(buffer.length, 16));
      if (!head.startsWith(ws ? "HTTP/1.1 101" : "HTTP/1.1 200")) {
        socket.destroy();
        reject(new Error(`unexpected answer ${head}`));
        return;
      }
      if (ws) {
        onFrames = answerPings(socket);
        const end = buffer.indexOf("\r\n\r\n");
        if (end !== -1 && end + 4 < data.length) onFrames(data.subarray(end + 4));
      }
      resolve({ close: () => socket.destroy() });
    });
    socket.on("error", (error: Error) => {
      clearTimeout(timer);
      if (!answered) reject(error);
    });
  });
}

if (import.meta.main) {
  const options = JSON.parse(Deno.args[0]) as IdleClientsOptions;
  const opened = await openMany(options.count, {
    parallel: 100,
    deadline: Date.now() + 120_000,
    open: (i) => openIdle(options, i % 2 === 1),
  });
  console.log(`READY ${opened.opened.length} ${opened.failed} ${opened.firstError ?? ""}`);
  // Held until the driver stops this process.
  setInterval(() => {}, 60_000);
}
