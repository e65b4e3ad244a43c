/**
 * A seeded fuzz run over everything an outsider or a hostile account can send: ingest requests
 * of any method, path, header, query and body; the JSON and form APIs with mutated bodies;
 * WebSocket messages; Last-Event-ID values. It fails on any 5xx and on any fault the server logs
 * (`console.error`), naming the request that caused it and the seed that reproduces it
 * (`FUZZ_SEED=<n> deno test -A tests/fuzz_test.ts`).
 */
import assert from "node:assert/strict";
import { openWs, signUp, startTestServer, type TestServer, type TestUser } from "./helpers.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261201);
const ROUNDS = Number(Deno.env.get("FUZZ_ROUNDS") ?? 2500);

/** mulberry32: small, fast, and the same sequence for the same seed on every machine. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Gen {
  int(max: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
  string(max?: number): string;
  bytes(max: number): Uint8Array<ArrayBuffer>;
  json(depth?: number): unknown;
}

function generator(random: () => number): Gen {
  const tricky = [
    "",
    " ",
    "%",
    "%ff",
    "%00",
    "%%s%d",
    "..",
    "../..",
    "\u0000",
    "\r\n",
    "é",
    "💥",
    "\ud800",
    "null",
    "__proto__",
    "constructor",
    "<script>alert(1)</script>",
    "'\"`",
    "a".repeat(300),
    // Over KV's 2 KiB key: a lookup with it throws unless the code refuses it first.
    "k".repeat(2100),
    "01J0000000000000000000000Z",
    "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
  ];
  const gen: Gen = {
    int: (max) => Math.floor(random() * max),
    pick: (items) => items[Math.floor(random() * items.length)],
    chance: (p) => random() < p,
    string(max = 40) {
      if (gen.chance(0.4)) return gen.pick(tricky);
      let out = "";
      const length = gen.int(max);
      for (let i = 0; i < length; i++) {
        out += gen.chance(0.9)
          ? String.fromCharCode(32 + gen.int(95))
          : String.fromCharCode(gen.int(0xffff));
      }
      return out;
    },
    bytes(max) {
      const out = new Uint8Array(gen.int(max));
      for (let i = 0; i < out.length; i++) out[i] = gen.int(256);
      return out;
    },
    json(depth = 3): unknown {
      const kind = gen.int(depth > 0 ? 9 : 6);
      switch (kind) {
        case 0:
          return null;
        case 1:
          return gen.chance(0.5);
        case 2:
          return gen.pick([0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, 65536, 999, 200]);
        case 3:
        case 4:
          return gen.string();
        case 5:
          return gen.pick([[], {}, "", 0]);
        case 6:
        case 7: {
          const out: Record<string, unknown> = Object.create(null);
          for (let i = gen.int(5); i > 0; i--) out[gen.string(12)] = gen.json(depth - 1);
          return out;
        }
        default:
          return Array.from({ length: gen.int(4) }, () => gen.json(depth - 1));
      }
    },
  };
  return gen;
}

/** Mutates a valid value: drops, swaps or retypes fields, so schemas see near-misses too. */
function mutate(gen: Gen, value: Record<string, unknown>): unknown {
  if (gen.chance(0.1)) return gen.json();
  // No prototype, so a generated "__proto__" is an ordinary key, as it is in JSON.
  const out: Record<string, unknown> = Object.assign(Object.create(null), value);
  for (const key of Object.keys(out)) {
    if (gen.chance(0.3)) out[key] = gen.json(1);
    else if (gen.chance(0.1)) delete out[key];
  }
  if (gen.chance(0.3)) out[gen.string(10)] = gen.json(1);
  return out;
}

const INGEST_METHODS = ["POST", "POST", "POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "application/vnd.api+json",
  "application/x-www-form-urlencoded",
  "text/plain",
  "application/octet-stream",
  "multipart/form-data; boundary=x",
  "",
  ";;;",
  "application/json; charset=latin1",
];

function ingestBody(gen: Gen, type: string): BodyInit | null {
  switch (gen.int(8)) {
    case 0:
      return null;
    case 1:
      return gen.bytes(3000);
    case 2:
      return "[".repeat(gen.int(5000)) + "]".repeat(gen.int(5000));
    case 3:
      return type.includes("form") ? `${gen.string()}=${gen.string()}&a=1&a=2` : gen.string(200);
    case 4:
      return "\ufeff" + JSON.stringify(gen.json(4));
    default:
      return JSON.stringify(gen.json(4));
  }
}

function randomPath(gen: Gen): string {
  if (gen.chance(0.01)) return "/" + "p".repeat(gen.pick([16_000, 40_000, 65_000]));
  const parts = [];
  for (let i = gen.int(4); i > 0; i--) parts.push(enc(gen.string(20)));
  if (gen.chance(0.2)) parts.push(gen.pick(["%ff", "%", "%2e%2e", "%00", "a%2Fb"]));
  return parts.length ? "/" + parts.join("/") : "";
}

function randomQuery(gen: Gen): string {
  if (gen.chance(0.5)) return "";
  const pairs = [];
  for (let i = gen.int(4); i >= 0; i--) {
    pairs.push(
      gen.chance(0.2)
        ? gen.pick(["%", "%zz", "=", "&&", "a=%ff"])
        : `${enc(gen.string(10))}=${enc(gen.string(20))}`,
    );
  }
  return "?" + pairs.join("&");
}

function randomHeaders(gen: Gen): Record<string, string> {
  const headers: Record<string, string> = {};
  for (let i = gen.int(4); i > 0; i--) {
    const name = "x-" + gen.string(10).replace(/[^a-z0-9-]/gi, "") + i;
    headers[name] = gen.string(60).replace(/[\r\n\0]/g, "").replace(/[^\x20-\x7e]/g, "?");
  }
  if (gen.chance(0.1)) headers["Last-Event-ID"] = gen.string(30).replace(/[^\x20-\x7e]/g, "");
  if (gen.chance(0.1)) {
    headers["Authorization"] = `Bearer ${gen.string(40)}`.replace(/[^\x20-\x7e]/g, "");
  }
  return headers;
}

/** encodeURIComponent that takes lone surrogates too (they become U+FFFD). */
const enc = (value: string) => encodeURIComponent(value.toWellFormed());

interface Outcome {
  what: string;
  status: number;
}

/** Requests of the JSON APIs, valid shapes mutated, with a token or the session cookie. */
function apiRequest(
  gen: Gen,
  server: TestServer,
  user: TestUser,
  spareSlug: string,
): { what: string; url: string; init: RequestInit } {
  const auth: Record<string, string> = gen.chance(0.8)
    ? { Authorization: `Bearer ${user.token}` }
    : { Cookie: user.cookie, Origin: server.url };
  const json = (value: unknown) => ({
    body: gen.chance(0.1) ? gen.string(50) : JSON.stringify(value),
    headers: { ...auth, "Content-Type": "application/json" },
  });
  const id = gen.chance(0.5) ? gen.string(30) : "01J" + "0".repeat(23);
  const choices: [string, string, RequestInit][] = [
    ["POST", "/api/tokens", json(mutate(gen, { name: "fuzz" }))],
    ["POST", "/api/endpoints", json(mutate(gen, { name: "fuzz" }))],
    // A spare endpoint: respond mode switched on at random must not slow the ingest traffic.
    ["PATCH", `/api/endpoints/${spareSlug}`, json(mutate(gen, { respond: false }))],
    ["PATCH", `/api/endpoints/${enc(gen.string())}`, json({ respond: false })],
    ["PUT", "/api/billing/cap", json(mutate(gen, { monthlyCap: 5000 }))],
    ["GET", `/api/events?limit=${enc(gen.string(5))}&cursor=${id}`, { headers: auth }],
    ["GET", `/api/events/${enc(id)}`, { headers: auth }],
    ["GET", `/api/events/${enc(id)}/deliveries`, { headers: auth }],
    ["POST", `/api/events/${enc(id)}/redeliver`, { headers: auth }],
    ["DELETE", `/api/tokens/${enc(gen.string())}`, { headers: auth }],
    ["GET", "/api/me", { headers: auth }],
    ["GET", "/api/usage", { headers: auth }],
    ["GET", "/api/clients", { headers: auth }],
    ["POST", "/api/auth/login", json(mutate(gen, { email: user.email, password: "wrong" }))],
    ["POST", "/api/stripe/webhook", {
      body: gen.string(100),
      headers: { "Stripe-Signature": gen.string(40).replace(/[^\x20-\x7e]/g, "") },
    }],
    ["GET", `/api/events/stream?lastEventId=${enc(gen.string(30))}`, {
      headers: { Authorization: `Bearer ${user.token}` },
    }],
    ["GET", `/dashboard/tokens/${enc(gen.string())}/revoke`, {
      headers: { Cookie: user.cookie },
    }],
    ["POST", "/dashboard/usage/cap", {
      body: new URLSearchParams({ monthlyCap: gen.string(10) }),
      headers: { Cookie: user.cookie, Origin: server.url },
    }],
  ];
  const [method, path, init] = gen.pick(choices);
  return { what: `${method} ${path}`, url: server.url + path, init: { ...init, method } };
}

Deno.test("[fuzz] no request, message or resume point makes a 5xx or a logged fault", async () => {
  const faults: string[] = [];
  const originalError = console.error;
  console.error = (...args: unknown[]) => {
    faults.push(args.map((a) => a instanceof Error ? a.stack : String(a)).join(" "));
  };
  const gen = generator(prng(SEED));
  await using server = await startTestServer({
    INGEST_RATE_PER_SECOND: "0",
    FREE_MONTHLY_LIMIT: "1000000",
  });
  const users = [await signUp(server), await signUp(server)];
  const spares = new Map<TestUser, string>();
  for (const user of users) {
    const created = await fetch(`${server.url}/api/endpoints`, {
      method: "POST",
      headers: { Authorization: `Bearer ${user.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "spare" }),
    });
    assert.equal(created.status, 201);
    spares.set(user, (await created.json()).endpoint.slug);
  }
  // The second user answers in respond mode, with fuzzed answers from a client of theirs.
  const respondUser = users[1];
  const settings = await fetch(`${server.url}/api/endpoints/${respondUser.slug}`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${respondUser.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ respond: true, respondTimeoutSeconds: 1 }),
  });
  assert.equal(settings.status, 200);
  const answerer = new WebSocket(`${server.wsUrl}/?token=${respondUser.token}`);
  answerer.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type !== "webhook" || !message.respond) return;
    const headers: Record<string, unknown> = Object.create(null);
    for (let i = gen.int(4); i > 0; i--) {
      headers[gen.pick(["content-type", "set-cookie", "location", gen.string(12)])] = gen.string(
        30,
      );
    }
    const answer = { type: "response", id: message.id, status: 200, headers, body: gen.string() };
    answerer.send(JSON.stringify(gen.chance(0.3) ? mutate(gen, answer) : answer));
  };
  await new Promise((resolve) => answerer.onopen = resolve);
  const outcomes: Outcome[] = [];
  const failures: string[] = [];
  const check = (what: string, response: Response) => {
    outcomes.push({ what, status: response.status });
    // 503 and 504 are respond mode's documented answers (no client, no answer in time).
    if (response.status >= 500 && response.status !== 503 && response.status !== 504) {
      failures.push(`${response.status} for ${what}`);
    }
  };

  try {
    // Two WebSockets a user, sent fuzzed messages between the requests.
    const sockets = await Promise.all(
      users.map((user) => openWs(`${server.wsUrl}/?token=${user.token}`)),
    );
    for (let round = 0; round < ROUNDS; round++) {
      const user = gen.pick(users);
      const roll = gen.int(10);
      if (roll < 5) {
        const method = gen.pick(INGEST_METHODS);
        const type = gen.pick(CONTENT_TYPES);
        // Mostly the plain endpoint: respond mode's answers take a round trip (or a timeout).
        const target = gen.chance(0.95) ? users[0] : respondUser;
        const slug = gen.chance(0.9) ? target.slug : enc(gen.string(20)) || "x";
        const url = `${server.url}/api/in/${slug}${randomPath(gen)}${randomQuery(gen)}`;
        const body = method === "GET" || method === "HEAD" ? null : ingestBody(gen, type);
        const headers = randomHeaders(gen);
        if (type) headers["Content-Type"] = type;
        const response = await fetch(url, { method, headers, body });
        await response.body?.cancel();
        check(`${method} ${url.slice(server.url.length, 200)} (${type})`, response);
      } else if (roll < 8) {
        const request = apiRequest(gen, server, user, spares.get(user)!);
        const controller = new AbortController();
        const response = await fetch(request.url, { ...request.init, signal: controller.signal });
        check(request.what.slice(0, 200), response);
        if (response.headers.get("Content-Type")?.startsWith("text/event-stream")) {
          controller.abort();
        } else {
          await response.body?.cancel();
        }
      } else {
        const socket = gen.pick(sockets);
        const message = gen.pick<() => unknown>([
          () => ({ type: "ping" }),
          () => mutate(gen, { type: "ack", id: "01J" + "0".repeat(23), status: 200 }),
          () => mutate(gen, { type: "replay", after: gen.string(26) }),
          () => mutate(gen, { type: "response", id: gen.string(26), status: 200, body: "x" }),
          () => gen.json(3),
          () => gen.string(100),
        ])();
        if (socket.socket.readyState === WebSocket.OPEN) {
          socket.send(typeof message === "string" ? message : JSON.stringify(message));
        }
      }
    }
    // Every socket still answers (or was closed by the server with a reason, not crashed).
    for (const socket of sockets) {
      if (socket.socket.readyState !== WebSocket.OPEN) continue;
      socket.send({ type: "ping" });
      let message;
      do message = await socket.next(5000); while (message.type !== "pong");
      await socket.close();
    }
    // Senders that give up half-way through their body are the client's fault, not ours.
    for (let i = 0; i < 20; i++) {
      const controller = new AbortController();
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode('{"partial": '));
          setTimeout(() => controller.abort(), 5);
        },
      });
      const url = gen.chance(0.5)
        ? `${server.url}/api/in/${users[0].slug}`
        : `${server.url}/api/auth/login`;
      await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Origin: server.url },
        body,
        signal: controller.signal,
      }).then((r) => r.body?.cancel(), () => {});
    }
    answerer.close();
    const home = await fetch(server.url + "/");
    await home.body?.cancel();
    check("GET / after the run", home);
  } finally {
    console.error = originalError;
  }
  const statuses = new Map<number, number>();
  for (const { status } of outcomes) statuses.set(status, (statuses.get(status) ?? 0) + 1);
  console.log(
    `fuzz seed ${SEED}: ${outcomes.length} requests, statuses ${
      JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))
    }`,
  );
  assert.deepEqual(
    { serverErrors: failures.slice(0, 10), faultsLogged: faults.slice(0, 5) },
    { serverErrors: [], faultsLogged: [] },
    `seed ${SEED}`,
  );
});
