/**
 * Clients of the relay, run inside the benchmark driver: a counting WebSocket subscriber, fan-out
 * clients of both transports that report which webhook (`seq`) they got, and idle connections.
 *
 * Envelopes are scanned with indexOf rather than JSON.parse so that the client side stays cheap:
 * the generator writes `{"t":<send time>,"w":<0|1>,"seq":<n>,...}` as the body, and the relay
 * puts that text verbatim in the envelope's `"payload":` field.
 */
import { wallClock } from "./clock.ts";
import { sleep } from "./procs.ts";
import { NumberList } from "./stats.ts";

const PAYLOAD = '"payload":{"t":';

/** Where smee.io's SSE `data:` puts the webhook's body: `{…,"body":{"t":…`. */
export const SMEE_BODY = '"body":{"t":';

/**
 * Reads `t`, `w` and `seq` from an envelope's payload (or from what follows `marker`, e.g.
 * SMEE_BODY); null when it is not one of ours.
 */
export function readStamp(
  json: string,
  marker = PAYLOAD,
): { t: number; w: number; seq: number } | null {
  const at = json.indexOf(marker);
  if (at === -1) return null;
  const tStart = at + marker.length;
  const tEnd = json.indexOf(",", tStart);
  // `,"w":1,"seq":123,`
  const w = json.charCodeAt(tEnd + 5) - 48;
  const seqStart = tEnd + 13;
  const seqEnd = json.indexOf(",", seqStart);
  return {
    t: Number(json.slice(tStart, tEnd)),
    w,
    seq: Number(json.slice(seqStart, seqEnd)),
  };
}

/** Opens a WebSocket and waits until it is open. */
export function openSocket(url: string, timeoutMs = 10_000): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`WebSocket ${url} did not open within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.onopen = () => {
      clearTimeout(timer);
      resolve(socket);
    };
    socket.onerror = (event) => {
      clearTimeout(timer);
      reject(new Error(`WebSocket ${url} failed: ${(event as ErrorEvent).message ?? "error"}`));
    };
  });
}

/** One WebSocket that counts every webhook and times the measured ones (`w` = 1). */
export class Subscriber {
  delivered = 0;
  /** POST→client latency of measured webhooks, ms. */
  readonly latencies = new NumberList();
  #socket: WebSocket;

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const now = wallClock();
      const stamp = readStamp(event.data as string);
      if (!stamp) return;
      this.delivered++;
      if (stamp.w === 1) this.latencies.push(now - stamp.t);
    };
  }

  static async open(url: string): Promise<Subscriber> {
    return new Subscriber(await openSocket(url));
  }

  /** Waits until `count` webhooks have arrived, at most `timeoutMs`; true when they did. */
  async waitFor(count: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.delivered < count && Date.now() < deadline) await sleep(20);
    return this.delivered >= count;
  }

  close(): void {
    this.#socket.close();
  }
}

/**
 * One WebSocket of part "consumers" that records which webhooks (`seq`) it got, counting
 * repeats, and with `ack` acks each one as it arrives (what a group member must do before it is
 * sent the next). Several consumers may share `seen` to check a group delivers each event once.
 */
export class Consumer {
  delivered = 0;
  /** Webhooks whose `seq` had already arrived, at this consumer or one sharing `seen`. */
  repeats = 0;
  /** Deliveries with `"attempt"` above 1 (a group's redeliveries). */
  retries = 0;
  /** Deliveries between `windowOpen` and `windowClose` (delivered/s in the measured window). */
  inWindow = 0;
  counting = false;
  /** POST→client latency of measured webhooks, ms. */
  readonly latencies = new NumberList();
  #socket: WebSocket;

  private constructor(socket: WebSocket, seen: Set<number>, ack: boolean) {
    this.#socket = socket;
    socket.onmessage = (event) => {
      const now = wallClock();
      const json = event.data as string;
      const stamp = readStamp(json);
      if (!stamp) return;
      if (ack) {
        // The envelope's own id comes before its payload: the first "id" is the event's.
        const at = json.indexOf('"id":"') + 6;
        socket.send(`{"type":"ack","id":"${json.slice(at, json.indexOf('"', at))}"}`);
        if (!json.startsWith('{"type":"webhook","attempt":1,')) this.retries++;
      }
      this.delivered++;
      if (this.counting) this.inWindow++;
      if (seen.has(stamp.seq)) this.repeats++;
      else seen.add(stamp.seq);
      if (stamp.w === 1) this.latencies.push(now - stamp.t);
    };
  }

  static async open(url: string, seen: Set<number>, ack = false): Promise<Consumer> {
    return new Consumer(await openSocket(url), seen, ack);
  }

  close(): void {
    this.#socket.close();
  }
}

/** A client that can be closed. */
export interface FanoutClient {
  close(): void;
}

/**
 * Opens a raw TCP connection, sends an HTTP GET and reads the response head; returns the bytes
 * that followed the head in the same read. Throws unless the status line starts with `expect`.
 */
async function rawGet(
  options: { port: number; path: string; headers?: string; expect: string },
): Promise<{ conn: Deno.TcpConn; rest: Uint8Array; head: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: options.port });
  // A server out of file descriptors may never answer: give up after a while.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, 10_000);
  try {
    await writeAll(
      conn,
      new TextEncoder().encode(
        `GET ${options.path} HTTP/1.1\r\nHost: 127.0.0.1:${options.port}\r\n${
          options.headers ?? ""
        }\r\n`,
      ),
    );
    let head = new Uint8Array(0);
    while (true) {
      const buffer = new Uint8Array(16 * 1024);
      const n = await conn.read(buffer);
      if (n === null) throw new Error(`${options.path}: connection closed before the answer`);
      const joined = new Uint8Array(head.length + n);
      joined.set(head);
      joined.set(buffer.subarray(0, n), head.length);
      head = joined;
      const text = new TextDecoder().decode(head);
      const end = text.indexOf("\r\n\r\n");
      if (end === -1) continue;
      if (!text.startsWith(options.expect)) {
        throw new Error(`${options.path}: unexpected answer ${text.split("\r\n")[0]}`);
      }
      // The head is ASCII, so its character count is its byte count.
      clearTimeout(timer);
      return { conn, rest: head.subarray(end + 4), head: text.slice(0, end) };
    }
  } catch (error) {
    clearTimeout(timer);
    if (timedOut) throw new Error(`${options.path}: no answer within 10 s`);
    conn.close();
    throw error;
  }
}

/** Runs `onBytes` on everything the connection reads until it ends. */
function pump(conn: Deno.TcpConn, first: Uint8Array, onBytes: (bytes: Uint8Array) => void) {
  (async () => {
    try {
      if (first.length > 0) onBytes(first);
      const buffer = new Uint8Array(64 * 1024);
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) return;
        onBytes(buffer.subarray(0, n));
      }
    } catch {
      // closed
    }
  })();
}

function closer(conn: Deno.TcpConn): FanoutClient {
  let closed = false;
  return {
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
  };
}

/**
 * A lean SSE client on raw TCP: it never decodes text, it only finds line ends, and calls
 * `onEvent` at each blank line that ends an event with a `data:` line (webhooks, not
 * heartbeats or the greeting). HTTP chunk-size lines never form a blank line, so the chunked
 * framing can be left in place.
 */
export async function leanSse(
  options: { port: number; path: string; onEvent: () => void },
): Promise<FanoutClient> {
  const { conn, rest } = await rawGet({
    port: options.port,
    path: options.path,
    headers: "Accept: text/event-stream\r\n",
    expect: "HTTP/1.1 200",
  });
  let lineLength = 0;
  let lineFirst = -1;
  let hasData = false;
  pump(conn, rest, (bytes) => {
    let pos = 0;
    while (pos <= bytes.length) {
      const newline = bytes.indexOf(10, pos);
      const end = newline === -1 ? bytes.length : newline;
      if (end > pos && lineLength === 0) lineFirst = bytes[pos];
      lineLength += end - pos;
      if (newline === -1) break;
      if (lineLength === 0) {
        if (hasData) options.onEvent();
        hasData = false;
      } else if (lineFirst === 100 /* d */) hasData = true;
      lineLength = 0;
      lineFirst = -1;
      pos = newline + 1;
    }
  });
  return closer(conn);
}

/**
 * A lean WebSocket client on raw TCP: parses frame headers only, calls `onMessage` at the end of
 * every text message, answers pings; payloads are never decoded.
 */
export async function leanWs(
  options: {
    port: number;
    path: string;
    /**
     * Gets the message's bytes only with `keepPayload` (part "fanrate" reads each `seq`), lent
     * for the call only: they may be a view of the read buffer.
     */
    onMessage: (payload?: Uint8Array) => void;
    keepPayload?: boolean;
  },
): Promise<FanoutClient> {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const { conn, rest } = await rawGet({
    port: options.port,
    path: options.path,
    headers: `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
      "Sec-WebSocket-Version: 13\r\n",
    expect: "HTTP/1.1 101",
  });
  const header = new Uint8Array(14);
  let headerLength = 0;
  let remaining = 0; // payload bytes still to come for the current frame
  let opcode = 0;
  let fin = false;
  let ping: number[] | null = null;
  let parts: Uint8Array[] | null = options.keepPayload ? [] : null;
  const frameDone = (whole?: Uint8Array) => {
    if (opcode === 9 && ping) {
      // Pong, masked with a zero key as clients must mask.
      const pong = new Uint8Array([0x8a, 0x80 | ping.length, 0, 0, 0, 0, ...ping]);
      writeAll(conn, pong).catch(() => {});
    } else if (fin && (opcode === 1 || opcode === 0)) {
      if (!parts) options.onMessage();
      else if (whole) options.onMessage(whole);
      else if (parts.length === 1) {
        options.onMessage(parts[0]);
        parts = [];
      } else {
        const joined = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
        let at = 0;
        for (const part of parts) {
          joined.set(part, at);
          at += part.length;
        }
        parts = [];
        options.onMessage(joined);
      }
    }
    ping = null;
  };
  pump(conn, rest, (bytes) => {
    let pos = 0;
    while (pos < bytes.length) {
      if (remaining > 0) {
        const take = Math.min(remaining, bytes.length - pos);
        if (ping) ping.push(...bytes.subarray(pos, pos + take));
        else if (parts && (opcode === 1 || opcode === 0)) {
          // A message wholly inside this read is lent as a view, without a copy: the client
          // reads it before the next read reuses the buffer.
          if (fin && parts.length === 0 && take === remaining) {
            remaining = 0;
            frameDone(bytes.subarray(pos, pos + take));
            pos += take;
            continue;
          }
          parts.push(bytes.slice(pos, pos + take));
        }
        remaining -= take;
        pos += take;
        if (remaining === 0) frameDone();
        continue;
      }
      header[headerLength++] = bytes[pos++];
      if (headerLength < 2) continue;
      const short = header[1] & 0x7f;
      const need = short === 126 ? 4 : short === 127 ? 10 : 2;
      if (headerLength < need) continue;
      fin = (header[0] & 0x80) !== 0;
      opcode = header[0] & 0x0f;
      remaining = short === 126
        ? (header[2] << 8) | header[3]
        : short === 127
        ? Number(new DataView(header.buffer).getBigUint64(2))
        : short;
      headerLength = 0;
      ping = opcode === 9 ? [] : null;
      if (remaining === 0) frameDone();
    }
  });
  return closer(conn);
}

/**
 * An idle SSE connection over raw TCP: sends the request, checks the status line, then reads and
 * drops whatever comes (the greeting, heartbeats) so the server never blocks on it.
 */
export async function idleSse(
  options: { port: number; path: string },
): Promise<FanoutClient> {
  const { conn, rest } = await rawGet({
    port: options.port,
    path: options.path,
    headers: "Accept: text/event-stream\r\n",
    expect: "HTTP/1.1 200",
  });
  pump(conn, rest, () => {});
  return closer(conn);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** Opens `count` connections with `open`, `parallel` at a time; stops at `deadline`. */
export async function openMany<T>(
  count: number,
  options: { parallel: number; deadline: number; open: (i: number) => Promise<T> },
): Promise<{ opened: T[]; failed: number; firstError?: string }> {
  const opened: T[] = [];
  let failed = 0;
  let firstError: string | undefined;
  let next = 0;
  const lanes = Array.from({ length: options.parallel }, async () => {
    while (next < count && Date.now() < options.deadline) {
      const i = next++;
      try {
        opened.push(await options.open(i));
      } catch (error) {
        failed++;
        firstError ??= String(error);
      }
    }
  });
  await Promise.all(lanes);
  return { opened, failed, firstError };
}

/**
 * Every delivery one subscriber got, by `seq`: how many, how many repeated, and POST→client
 * latency of the measured ones (`w` = 1). Part "peers" shares it between WebSocks and smee.io.
 */
export class Tally {
  delivered = 0;
  repeats = 0;
  readonly latencies = new NumberList();
  readonly #seen = new Set<number>();

  /** Counts one message; `marker` says where the stamped body starts in it. */
  add(text: string, marker?: string): void {
    const now = wallClock();
    const stamp = readStamp(text, marker);
    if (!stamp) return;
    this.delivered++;
    if (this.#seen.has(stamp.seq)) this.repeats++;
    else this.#seen.add(stamp.seq);
    if (stamp.w === 1) this.latencies.push(now - stamp.t);
  }

  /** Distinct webhooks received. */
  get distinct(): number {
    return this.#seen.size;
  }

  /** Waits until `count` distinct webhooks have arrived, at most `timeoutMs`; true when they did. */
  async waitFor(count: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.distinct < count && Date.now() < deadline) await sleep(20);
    return this.distinct >= count;
  }
}

/** A WebSocket subscriber that counts every message into `tally`. */
export async function tallyWs(url: string, tally: Tally): Promise<FanoutClient> {
  const socket = await openSocket(url);
  socket.onmessage = (event) => tally.add(event.data as string);
  return { close: () => socket.close() };
}

/**
 * Undoes HTTP/1.1 chunked framing as bytes arrive: `onData` gets the body's bytes, in order, as
 * views lent for the call only.
 */
export function dechunker(onData: (bytes: Uint8Array) => void): (bytes: Uint8Array) => void {
  /** Body bytes left in the current chunk, or -1 while reading a size line. */
  let left = -1;
  let size = 0;
  /** Past a `;` in a size line: a chunk extension, ignored. */
  let extension = false;
  /** CR LF bytes still to skip after a chunk's data. */
  let skip = 0;
  return (bytes) => {
    let pos = 0;
    while (pos < bytes.length) {
      if (skip > 0) {
        skip--;
        pos++;
      } else if (left > 0) {
        const take = Math.min(left, bytes.length - pos);
        onData(bytes.subarray(pos, pos + take));
        left -= take;
        pos += take;
        if (left === 0) {
          left = -1;
          skip = 2;
        }
      } else {
        // A size line: hex digits (any extension after ';' ignored), then CR LF.
        const byte = bytes[pos++];
        if (byte === 10) {
          left = size > 0 ? size : -1;
          size = 0;
          extension = false;
        } else if (byte === 59) extension = true;
        else if (!extension) {
          // Hex digits only: CR and any padding around the size are skipped, never read as 0.
          const digit = parseInt(String.fromCharCode(byte), 16);
          if (!Number.isNaN(digit)) size = size * 16 + digit;
        }
      }
    }
  };
}

/**
 * An SSE subscriber on raw TCP that counts the `data:` of every event into `tally`, reading the
 * stamp after `marker`. Resolves once the response head arrived. Each event is decoded once and
 * nothing else is: part "peers" gives smee.io and WebSocks this same client, and it must cost the
 * generator's core little (`fetch` with a TextDecoderStream cost ~30 µs an event there).
 */
export async function tallySse(url: string, tally: Tally, marker?: string): Promise<FanoutClient> {
  const { port, pathname, search } = new URL(url);
  const { conn, rest, head } = await rawGet({
    port: Number(port),
    path: pathname + search,
    headers: "Accept: text/event-stream\r\n",
    expect: "HTTP/1.1 200",
  });
  const decoder = new TextDecoder();
  /** Bytes of the event being received, held until its blank line. */
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  /** The last byte seen, across pieces: an LF after an LF ends an event. */
  let last = -1;
  const finish = (tail: Uint8Array) => {
    let event = tail;
    if (pending.length > 0) {
      event = new Uint8Array(pendingBytes + tail.length);
      let at = 0;
      for (const part of pending) {
        event.set(part, at);
        at += part.length;
      }
      event.set(tail, at);
      pending = [];
      pendingBytes = 0;
    }
    const text = decoder.decode(event);
    const data = text.indexOf("data:");
    if (data !== -1) tally.add(text.slice(data), marker);
  };
  const onData = (bytes: Uint8Array) => {
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i];
      if (byte === 10 && last === 10) {
        finish(bytes.subarray(start, i));
        start = i + 1;
      }
      if (byte !== 13) last = byte;
    }
    if (start < bytes.length) {
      // Lent for this call only: keep a copy.
      pending.push(bytes.slice(start));
      pendingBytes += bytes.length - start;
    }
  };
  pump(conn, rest, /transfer-encoding:\s*chunked/i.test(head) ? dechunker(onData) : onData);
  return closer(conn);
}
