/** Test support: a real server on a random loopback port with in-memory KV, and real clients. */
import { type Config, loadConfig } from "../lib/runtime/config.ts";
import { type RunningServer, startServer } from "../lib/http/server.ts";
import { createHandler } from "../routes/_app.ts";

/** A running test server plus helpers bound to it. */
export interface TestServer extends RunningServer {
  config: Config;
  wsUrl: string;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a server on 127.0.0.1 with a random port and `:memory:` KV; env overrides apply. */
export async function startTestServer(
  env: Record<string, string> = {},
  options: { now?: () => Date } = {},
): Promise<TestServer> {
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    KV_PATH: ":memory:",
    // Test files run side by side in one process, so its RSS is every file's: one file moving
    // 25 MiB bodies must not make another's server refuse work. Tests of the guard set it.
    MAX_RSS_MB: "0",
    // Tests stop servers at once; the shutdown drain's own tests set it.
    SHUTDOWN_DRAIN_SECONDS: "0",
    // Every answer is checked against its declaration in routes/_api.ts: a drift fails the test.
    API_RESPONSE_CHECK: "1",
    ...env,
  });
  const server = await startServer(config, createHandler, options);
  // The public URL must be the real address so signup returns usable URLs.
  config.publicUrl = server.url;
  return {
    ...server,
    config,
    wsUrl: server.url.replace(/^http/, "ws"),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** A signed-up user with its first endpoint and token. */
export interface TestUser {
  id: string;
  email: string;
  slug: string;
  webhookUrl: string;
  token: string;
  tokenId: string;
  cookie: string;
}

let counter = 0;

/** Switches the user's first endpoint to respond mode, senders waiting `timeoutSeconds`. */
export async function respondMode(
  server: TestServer,
  user: TestUser,
  timeoutSeconds = 5,
): Promise<void> {
  const response = await fetch(`${server.url}/api/endpoints/${user.slug}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ respond: true, respondTimeoutSeconds: timeoutSeconds }),
  });
  if (response.status !== 200) throw new Error(`respond mode: ${response.status}`);
  await response.body?.cancel();
}

/** Signs up a fresh user through the API. */
export async function signUp(server: TestServer, email?: string): Promise<TestUser> {
  email ??= `user${++counter}-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const response = await fetch(`${server.url}/api/auth/signup`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password: "correct horse battery" }),
  });
  if (response.status !== 201) {
    throw new Error(`signup failed: ${response.status} ${await response.text()}`);
  }
  const body = await response.json();
  // The session only: tests that need the log-in device cookie read it themselves.
  const cookie = response.headers.getSetCookie().map((c) => c.split(";")[0])
    .filter((c) => !c.startsWith("websocks_device=")).join("; ");
  return {
    id: body.user.id,
    email,
    slug: body.endpoint.slug,
    webhookUrl: body.endpoint.url,
    token: body.token.value,
    tokenId: body.token.id,
    cookie,
  };
}

/**
 * Marks a user's address verified, as following the mailed link would (mail_test.ts tests the
 * link): for tests of what a verified address allows, such as upgrading to Pro.
 */
export async function markEmailVerified(server: TestServer, userId: string): Promise<void> {
  const { kv } = server.services;
  const entry = await kv.get<{ emailVerifiedAt?: string | null }>(["users", userId]);
  if (!entry.value) throw new Error(`no user ${userId}`);
  await kv.set(entry.key, { ...entry.value, emailVerifiedAt: new Date().toISOString() });
}

/** POSTs a webhook and returns the response. */
export async function postWebhook(
  url: string,
  body: BodyInit | null,
  headers: Record<string, string> = { "Content-Type": "application/json" },
): Promise<Response> {
  return await fetch(url, { method: "POST", headers, body });
}

/** One parsed SSE event. */
export interface SseMessage {
  id: string | null;
  event: string | null;
  data: string;
}

/** Messages waiting for a reader, or readers waiting for messages, with a time limit each. */
export interface MessageQueue<T> {
  push(message: T): void;
  /** No more messages: waiting and later reads fail with `reason`. */
  end(reason: string): void;
  next(timeoutMs?: number): Promise<T>;
}

/** Creates a queue; `what` names the source in the timeout error. */
export function messageQueue<T>(what: string): MessageQueue<T> {
  const queue: T[] = [];
  const waiters: ((m: T | null) => void)[] = [];
  let ended: string | null = null;
  return {
    push(message) {
      const waiter = waiters.shift();
      if (waiter) waiter(message);
      else queue.push(message);
    },
    end(reason) {
      ended = reason;
      for (const waiter of waiters.splice(0)) waiter(null);
    },
    next(timeoutMs = 5000) {
      if (queue.length > 0) return Promise.resolve(queue.shift()!);
      if (ended) return Promise.reject(new Error(ended));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(done), 1);
          reject(new Error(`no ${what} within ${timeoutMs} ms`));
        }, timeoutMs);
        const done = (m: T | null) => {
          clearTimeout(timer);
          if (m !== null) resolve(m);
          else reject(new Error(ended ?? `${what} ended`));
        };
        waiters.push(done);
      });
    },
  };
}

/** An open SSE stream read message by message. */
export interface SseStream {
  response: Response;
  next(timeoutMs?: number): Promise<SseMessage>;
  close(): void;
}

/**
 * A minimal spec-following SSE reader over fetch, for tests that need headers (Last-Event-ID)
 * and exact frames; browser EventSource is exercised in the Chromium tests.
 */
export async function openSse(
  url: string,
  headers: Record<string, string> = {},
  options: { client?: Deno.HttpClient } = {},
): Promise<SseStream> {
  const controller = new AbortController();
  const response = await fetch(url, { headers, signal: controller.signal, client: options.client });
  const messages = messageQueue<SseMessage>("SSE message");
  if (response.body) {
    (async () => {
      // ignoreBOM: Deno's decoder drops a U+FEFF at the start of every chunk (client/websocks.js).
      const reader = response.body!.pipeThrough(new TextDecoderStream("utf-8", { ignoreBOM: true }))
        .getReader();
      // The unfinished line's pieces: a 30 MiB line comes in many reads, and appending each to
      // one string that is searched again would copy it over and over.
      let pieces: string[] = [];
      /** The last read ended in \r: a \n opening the next one belongs to that line break. */
      let afterCr = false;
      let id: string | null = null;
      let event: string | null = null;
      let data: string[] = [];
      const lineBreak = /\r\n|\r|\n/g;
      const onLine = (line: string) => {
        if (line === "") {
          if (data.length > 0) {
            messages.push({ id, event, data: data.join("\n") });
          }
          event = null;
          data = [];
          return;
        }
        if (line.startsWith(":")) return;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "id") id = value;
        else if (field === "event") event = value;
      };
      try {
        while (true) {
          const { value, done } = await reader.read();
          if (done) break;
          let from: number = afterCr && value.startsWith("\n") ? 1 : 0;
          afterCr = false;
          lineBreak.lastIndex = from;
          let found: RegExpExecArray | null;
          while ((found = lineBreak.exec(value)) !== null) {
            pieces.push(value.slice(from, found.index));
            onLine(pieces.join(""));
            pieces = [];
            from = found.index + found[0].length;
            afterCr = found[0] === "\r" && from === value.length;
          }
          if (from < value.length) pieces.push(value.slice(from));
        }
      } catch {
        // aborted
      } finally {
        messages.end("SSE stream ended");
      }
    })();
  }
  return {
    response,
    next: messages.next,
    close() {
      controller.abort();
    },
  };
}

/** A WebSocket with a message queue, opened and ready. */
export async function openWs(url: string): Promise<{
  socket: WebSocket;
  next(timeoutMs?: number): Promise<Record<string, unknown>>;
  closed: Promise<CloseEvent>;
  send(value: unknown): void;
  close(): Promise<void>;
}> {
  const socket = new WebSocket(url);
  const messages = messageQueue<Record<string, unknown>>("WebSocket message");
  socket.onmessage = (event) => messages.push(JSON.parse(event.data));
  const closed = new Promise<CloseEvent>((resolve) => socket.addEventListener("close", resolve));
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error(`WebSocket to ${url} failed`));
  });
  return {
    socket,
    closed,
    next: messages.next,
    send(value) {
      socket.send(typeof value === "string" ? value : JSON.stringify(value));
    },
    async close() {
      if (socket.readyState !== WebSocket.CLOSED) {
        socket.close();
        await closed;
      }
    },
  };
}

/** GitHub's X-Hub-Signature-256 over raw bytes. */
export async function githubSignature(secret: string, body: Uint8Array): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, body as BufferSource));
  return "sha256=" + Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The session cookie an answer sets, as a Cookie header ("" when it sets none). */
export function sessionCookieOf(response: Response): string {
  return response.headers.getSetCookie().map((c) => c.split(";")[0])
    .filter((c) => c.startsWith("websocks_session=")).join("; ");
}

/**
 * Holds every stream that joins a consumer group at its preparation (past its credential check,
 * not yet registered) until `release()`; disposing releases them and restores `prepare`.
 */
export function holdGroupJoins(server: TestServer) {
  const { groups } = server.services;
  const prepare = groups.prepare;
  let held = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  groups.prepare = async (...args) => {
    held++;
    await gate;
    return await prepare.apply(groups, args);
  };
  return {
    held: () => held,
    release: () => release(),
    [Symbol.dispose]() {
      groups.prepare = prepare;
      release();
    },
  };
}

/**
 * Polls `condition` until it holds, failing after `timeoutMs` with `what` named: tests wait for
 * what they need, never for a fixed time.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: { what: string; timeoutMs?: number; intervalMs?: number },
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${options.what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 10));
  }
}

/** Random bytes of any length (getRandomValues fills at most 64 KiB at a time). */
export function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(length, at + 65_536)));
  }
  return bytes;
}
