/**
 * What an unauthenticated client can hold of one serving isolate, and how the isolate sheds
 * load before the process runs out of memory or file descriptors.
 *
 * - Requests in flight, per client address and in total: over the address's share the request
 *   gets 429 at once, over the total 503. An address is the peer, or the proxy's last
 *   X-Forwarded-For entry with TRUST_PROXY=1; an IPv6 one counts by its /64 (addressKey).
 * - Request bodies: read with an idle timeout and an overall deadline (408), at most the caller's
 *   size limit (413), and within a budget of bytes all bodies being received may hold together
 *   (503), of which one address may hold only a share (429). A body's declared Content-Length
 *   is reserved before the first byte is read, so bodies held open one byte short of the limit
 *   are refused rather than buffered.
 * - Pressure: sampled once a second, the process's RSS against MAX_RSS_MB and its open file
 *   descriptors against the soft limit. Under pressure requests that bring a body or open a
 *   stream get 503; pages and small reads keep answering, so `/` stays up.
 *
 * What it cannot see: connections that have not finished their request headers. Deno.serve
 * (2.9) has no header read timeout and gives no handle on such connections; see server.ts for
 * how the listener survives running out of descriptors.
 */
import type { Config } from "../runtime/config.ts";
import { HttpError } from "./http_error.ts";
import { log } from "../observe/log.ts";

/** The buffer a streamed body is read into, piece by piece (a sink copies each piece). */
const SCRATCH_BYTES = 64 * 1024;
/** How often pressure is sampled and stalled bodies are timed out. */
const SWEEP_MS = 1000;
/** While under pressure, how stale a sample may be before a refusal samples again. */
const RESAMPLE_MS = 100;

/** A body being received, watched by the sweeper. */
interface BodyRead {
  startedAt: number;
  lastDataAt: number;
  /** Bytes received so far. */
  bytes: number;
  /**
   * The declared length of a body streamed into storage, which reserves it all of the staging
   * budget from the start: it must then come on time (see `behind`); else null.
   */
  staged: number | null;
  fail(error: HttpError): void;
}

/** One isolate's load guard; see the module comment. */
export interface LoadGuard {
  /**
   * Admits a request from `address`, or throws the HttpError that refuses it. The returned
   * function must be called once the handler has produced its response.
   */
  admit(request: Request, address: string): () => void;
  /** What the guard currently holds, for tests and operators. */
  stats(): LoadStats;
  /** Stops the sampler. */
  close(): void;
}

/** A snapshot of the guard's counters. */
export interface LoadStats {
  requests: number;
  addresses: number;
  bodies: number;
  bodyBytes: number;
  rssBytes: number;
  openFiles: number | null;
  fileLimit: number | null;
  pressure: string | null;
}

/** The limits the guard applies, taken from Config. */
type GuardConfig = Pick<
  Config,
  | "maxRequestsPerAddress"
  | "maxRequests"
  | "bodyIdleTimeoutMs"
  | "bodyTimeoutMs"
  | "maxBufferedBodyBytes"
  | "maxBufferedBodyBytesPerAddress"
  | "maxStagingBytes"
  | "maxStagingBytesPerAddress"
  | "maxRssBytes"
  | "minFreeFilesPercent"
>;

/** The guard of the server a request arrived at, and its address, so body readers find budgets. */
const guardOf = new WeakMap<Request, { state: GuardState; address: string }>();

interface GuardState {
  config: GuardConfig;
  bodies: Set<BodyRead>;
  /** Bytes of bodies held in memory. */
  memory: Budget;
  /** Bytes of bodies being streamed into storage. */
  disk: Budget;
}

/** Bytes reserved against one of the guard's budgets, in all and per client address. */
interface Budget {
  total: number;
  /** Only addresses holding some. */
  byAddress: Map<string, number>;
}

/** What a budget allows, and how its refusals read (`{mib}` is its limit in MiB). */
interface BudgetRule {
  max: number;
  maxPerAddress: number;
  retryAfter: string;
  /** 503 over the total, 429 over the address's share: "Cannot <action>: " + this. */
  full: string;
  share: string;
}

/**
 * One request's reservation against `budget`: moving it to `bytes` takes or gives back the
 * difference, or throws the refusal (503 over the total, 429 over the address's share). No budget
 * (a request that came through no guarded server): a no-op.
 */
function reservation(
  budget: Budget | null,
  rule: BudgetRule,
  context: { address: string; action: string },
): (bytes: number) => void {
  let held = 0;
  const mib = (bytes: number) => String(Math.round(bytes / 2 ** 20));
  return (bytes) => {
    if (!budget || bytes === held) return;
    const more = bytes - held;
    const { address, action } = context;
    const headers = { "Retry-After": rule.retryAfter, Connection: "close" };
    if (more > 0 && budget.total + more > rule.max) {
      throw new HttpError(
        503,
        `Cannot ${action}: ${rule.full.replace("{mib}", mib(rule.max))}`,
        headers,
      );
    }
    const mine = budget.byAddress.get(address) ?? 0;
    if (more > 0 && mine + more > rule.maxPerAddress) {
      const share = rule.share.replace("{address}", address).replace(
        "{mib}",
        mib(rule.maxPerAddress),
      );
      throw new HttpError(429, `Cannot ${action}: ${share}`, headers);
    }
    budget.total += more;
    if (mine + more > 0) budget.byAddress.set(address, mine + more);
    else budget.byAddress.delete(address);
    held = bytes;
  };
}

/** The soft limit of open files (Linux), or null where it cannot be read. */
function fileLimit(): number | null {
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const soft = /^Max open files\s+(\d+)/m.exec(limits)?.[1];
    return soft ? Number(soft) : null;
  } catch {
    return null;
  }
}

/** Open file descriptors of this process (Linux), or null where they cannot be counted. */
function openFiles(): number | null {
  try {
    // Linux 6.2 and later give the count as the folder's size: no entry is read. Listing it
    // instead made an object per descriptor each sweep, 2–3 MB a second at 20,000 streams.
    const { size } = Deno.statSync("/proc/self/fd");
    if (size > 0) return size;
    let count = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) count++;
    return count;
  } catch {
    // Counting needs a descriptor itself: failing to get one is the answer.
    return null;
  }
}

/** Requests that would take memory or a descriptor for long: a body, a WebSocket, SSE. */
function isHeavy(request: Request): boolean {
  if (request.body !== null) return true;
  const headers = request.headers;
  return headers.get("Upgrade") !== null ||
    (headers.get("Accept")?.includes("text/event-stream") ?? false);
}

/** Creates the guard of one serving isolate. */
export function createLoadGuard(config: GuardConfig): LoadGuard {
  const state: GuardState = {
    config,
    bodies: new Set(),
    memory: { total: 0, byAddress: new Map() },
    disk: { total: 0, byAddress: new Map() },
  };
  const perAddress = new Map<string, number>();
  let requests = 0;
  const limit = fileLimit();
  let files: number | null = null;
  let rss = 0;
  let pressure: string | null = null;

  let sampledAt = 0;
  const sample = () => {
    sampledAt = Date.now();
    rss = Deno.memoryUsage().rss;
    files = openFiles();
    const reserve = limit === null ? 0 : Math.ceil(limit * config.minFreeFilesPercent / 100);
    if (config.maxRssBytes > 0 && rss > config.maxRssBytes) {
      pressure = `short of memory (${Math.round(rss / 2 ** 20)} MiB in use, limit ${
        Math.round(config.maxRssBytes / 2 ** 20)
      } MiB)`;
    } else if (limit !== null && (files === null || files > limit - reserve)) {
      pressure = `short of file descriptors (${files ?? limit} of ${limit} open)`;
    } else pressure = null;
  };
  /**
   * A body streamed into storage holds its whole declared length of the staging budget, so
   * that one let in always fits; a byte every few seconds then held 25 MiB of it until the
   * body's timeout (a hundred such requests held it all). Past the idle timeout's grace it
   * must be on course to arrive within the body's timeout, so holding costs real bandwidth.
   */
  const behind = (read: BodyRead, now: number) => {
    const grace = config.bodyIdleTimeoutMs;
    const elapsed = now - read.startedAt;
    if (read.staged === null || elapsed <= grace || config.bodyTimeoutMs <= grace) return false;
    return read.bytes < read.staged * (elapsed - grace) / (config.bodyTimeoutMs - grace);
  };
  const timeOutBodies = () => {
    const now = Date.now();
    for (const read of state.bodies) {
      if (now - read.startedAt > config.bodyTimeoutMs) {
        read.fail(
          new HttpError(408, `body not received within ${config.bodyTimeoutMs / 1000} s`, {
            Connection: "close",
          }),
        );
      } else if (behind(read, now)) {
        const rate = Math.floor(read.bytes / ((now - read.startedAt) / 1000));
        read.fail(
          new HttpError(
            408,
            `body arriving at ${rate} bytes a second, too slowly for its ${read.staged} bytes ` +
              `to arrive within ${config.bodyTimeoutMs / 1000} s`,
            { Connection: "close" },
          ),
        );
      } else if (now - read.lastDataAt > config.bodyIdleTimeoutMs) {
        read.fail(
          new HttpError(
            408,
            `body not received within ${config.bodyIdleTimeoutMs / 1000} s ` +
              "(no data arrived for that long)",
            { Connection: "close" },
          ),
        );
      }
    }
  };
  const sweep = () => {
    sample();
    timeOutBodies();
  };
  const timer = setInterval(sweep, SWEEP_MS);
  Deno.unrefTimer(timer);
  sample();

  return {
    admit(request, address) {
      // Under pressure look again before refusing: load falls faster than once a second.
      if (pressure !== null && Date.now() - sampledAt > RESAMPLE_MS) sample();
      if (pressure !== null && isHeavy(request)) {
        throw new HttpError(503, `Server busy: ${pressure}; retry shortly`, {
          "Retry-After": "5",
          Connection: "close",
        });
      }
      const mine = perAddress.get(address) ?? 0;
      if (mine >= config.maxRequestsPerAddress) {
        throw new HttpError(
          429,
          `Too many requests in progress from ${address} (limit ${config.maxRequestsPerAddress}); ` +
            "wait for some to finish",
          { "Retry-After": "1", Connection: "close" },
        );
      }
      if (requests >= config.maxRequests) {
        throw new HttpError(
          503,
          `Server busy: ${config.maxRequests} requests in progress; retry shortly`,
          { "Retry-After": "1", Connection: "close" },
        );
      }
      requests++;
      perAddress.set(address, mine + 1);
      guardOf.set(request, { state, address });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        requests--;
        const left = perAddress.get(address)! - 1;
        if (left === 0) perAddress.delete(address);
        else perAddress.set(address, left);
      };
    },
    stats: () => ({
      requests,
      addresses: perAddress.size,
      bodies: state.bodies.size,
      bodyBytes: state.memory.total,
      rssBytes: rss,
      openFiles: files,
      fileLimit: limit,
      pressure,
    }),
    close() {
      clearInterval(timer);
    },
  };
}

/**
 * The client's address as per-address limits key it (addressKey): the peer, or the proxy's last
 * X-Forwarded-For entry when trusted. The one rule for both the load guard and the routes
 * (log-in and sign-up limits); without connection info (a request handed to the app directly)
 * it is "unknown".
 */
export function requestAddress(
  request: Request,
  info: { remoteAddr?: Deno.Addr } | undefined,
  trustProxy: boolean,
): string {
  if (trustProxy) {
    const forwarded = request.headers.get("X-Forwarded-For")?.split(",").at(-1)?.trim();
    if (forwarded) return addressKey(forwarded);
  }
  const address = info?.remoteAddr;
  return address && "hostname" in address ? addressKey(address.hostname) : "unknown";
}

/**
 * What a per-address limit counts one sender as: an IPv4 address as it is (also when written
 * IPv4-mapped, `::ffff:192.0.2.1`), an IPv6 address by its /64 (`2001:db8:1:2::/64`), since one
 * host is routinely given a whole /64 and would otherwise have 2^64 addresses to spread over.
 * Text that is no address is returned trimmed.
 */
export function addressKey(address: string): string {
  const text = address.trim();
  if (!text.includes(":")) return text;
  const hextets = ipv6Hextets(text.replace(/^\[(.*)\]$/, "$1").replace(/%.*$/, ""));
  if (!hextets) return text;
  if (hextets.slice(0, 5).every((h) => h === 0) && hextets[5] === 0xffff) {
    return [hextets[6] >> 8, hextets[6] & 255, hextets[7] >> 8, hextets[7] & 255].join(".");
  }
  return `${hextets.slice(0, 4).map((h) => h.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address (`::` expanded, a trailing IPv4 part read), or null. */
function ipv6Hextets(text: string): number[] | null {
  let rest = text;
  const tail: number[] = [];
  const ipv4 = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(rest);
  if (ipv4) {
    const bytes = ipv4.slice(2).map(Number);
    if (bytes.some((b) => b > 255)) return null;
    tail.push((bytes[0] << 8) | bytes[1], (bytes[2] << 8) | bytes[3]);
    // What precedes it keeps its separator: "::" is an elision to keep, a lone ":" is not.
    rest = ipv4[1].endsWith("::") ? ipv4[1] : ipv4[1].slice(0, -1);
  }
  const halves = rest.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string) => (part === "" ? [] : part.split(":"));
  const head = groups(halves[0]);
  const after = halves.length === 2 ? groups(halves[1]) : [];
  if (![...head, ...after].every((group) => /^[0-9a-f]{1,4}$/i.test(group))) return null;
  const known = head.length + after.length + tail.length;
  const missing = 8 - known;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  return [
    ...head.map((group) => parseInt(group, 16)),
    ...Array(halves.length === 2 ? missing : 0).fill(0),
    ...after.map((group) => parseInt(group, 16)),
    ...tail,
  ];
}

/**
 * Where a body larger than the caller's `streamOver` goes as it arrives, instead of memory.
 * `capacity` is what the sink may hold in memory at most: the body budget reserves that, not
 * the body's length.
 */
export interface BodySink<T> {
  readonly capacity: number;
  /** Takes a piece; reading waits for the promise, so a slow sink slows the sender. */
  write(piece: Uint8Array): Promise<void>;
  /** The body is complete; its result (an HttpError thrown here refuses the body). */
  close(): Promise<T>;
  /** The body was abandoned (the sender left, a limit or a check refused it): undo the writes. */
  abort(): Promise<void>;
}

/**
 * Reads a request body of at most `maxBytes`: 413 as soon as it is known to be larger, 408 when
 * it stalls or takes too long, 503 when the isolate's body budget is spent. `action` starts the
 * messages ("Cannot log in: …"). Requests that did not come through a guarded server (unit
 * tests) are read with the size limit only.
 */
export async function readBody(
  request: Request,
  options: { maxBytes: number; action: string },
): Promise<Uint8Array<ArrayBuffer>> {
  const read = await receiveBody<never>(request, { ...options, streamOver: Infinity });
  return read.body!;
}

/**
 * Reads a body as readBody does, except that one larger than `streamOver` goes to the sink
 * `open` returns: from the first byte when its Content-Length says so, else once that much has
 * arrived (what was buffered is handed over first). Only what is held in memory is reserved
 * from the body budget; time limits and the size limit apply throughout. Any failure aborts the
 * sink. `open` may throw an HttpError to refuse the body before any of it is streamed.
 */
export async function receiveBody<T>(
  request: Request,
  options: {
    maxBytes: number;
    action: string;
    streamOver: number;
    open?: (declared: number | null) => Promise<BodySink<T>>;
  },
): Promise<{ body: Uint8Array<ArrayBuffer>; streamed: null } | { body: null; streamed: T }> {
  const { maxBytes, action } = options;
  const tooLarge = () =>
    new HttpError(413, `Cannot ${action}: body is larger than the limit of ${maxBytes} bytes`, {
      Connection: "close",
    });
  const declaredHeader = request.headers.get("Content-Length");
  const declared = declaredHeader === null ? null : Number(declaredHeader);
  if (declared !== null && declared > maxBytes) throw tooLarge();
  if (!request.body || declared === 0) return { body: new Uint8Array(), streamed: null };
  const guard = guardOf.get(request);
  const state = guard?.state;
  const address = guard?.address ?? "";
  // Reserve what the sender announced, so a body held open short of its length is refused
  // before it is buffered; chunked bodies reserve what arrives, streamed ones what is held.
  const reserve = reservation(state?.memory ?? null, {
    max: state?.config.maxBufferedBodyBytes ?? 0,
    maxPerAddress: state?.config.maxBufferedBodyBytesPerAddress ?? 0,
    retryAfter: "1",
    full: "the server is receiving too many bodies at once ({mib} MiB in flight); retry shortly",
    share: "{address} is sending too many bodies at once ({mib} MiB in flight); wait for some " +
      "to finish",
  }, { address, action });
  // Disk, not memory: what bodies being streamed into storage may take before any is accepted.
  // The declared length is reserved before a byte is staged; a body without one, as it grows.
  const reserveStaging = reservation(state?.disk ?? null, {
    max: state?.config.maxStagingBytes ?? 0,
    maxPerAddress: state?.config.maxStagingBytesPerAddress ?? 0,
    retryAfter: "5",
    full: "the server is storing too many large bodies at once ({mib} MiB in flight); retry " +
      "shortly",
    share: "{address} is sending too many large bodies at once ({mib} MiB in flight); wait " +
      "for some to finish",
  }, { address, action });
  const stream = request.body;
  let reader: ReadableStreamDefaultReader<Uint8Array<ArrayBuffer>> | ReadableStreamBYOBReader =
    stream.getReader();
  /** Once streaming, pieces are read into this one buffer (see readIntoScratch). */
  let scratch: Uint8Array<ArrayBuffer> | null = null;
  /**
   * A streamed body is read into one reused buffer where the stream allows it (Deno's request
   * bodies do): a fresh array per piece is garbage that V8 collects only after tens of MiB per
   * isolate, which twenty 25 MiB senders would otherwise all hold at once.
   */
  const readIntoScratch = () => {
    reader.releaseLock();
    try {
      reader = stream.getReader({ mode: "byob" });
      scratch = new Uint8Array(SCRATCH_BYTES);
    } catch {
      reader = stream.getReader();
    }
  };
  // The sweeper's timeout, and the wait it interrupts. Not a race against one long-lived
  // promise: each race would leave a reaction on it holding that read's piece until the end.
  let timedOut: HttpError | null = null;
  let interrupt: ((error: HttpError) => void) | null = null;
  const now = Date.now();
  const read: BodyRead = {
    startedAt: now,
    lastDataAt: now,
    bytes: 0,
    staged: null,
    fail(error) {
      timedOut ??= new HttpError(error.status, `Cannot ${action}: ${error.message}`, error.headers);
      interrupt?.(timedOut);
    },
  };
  const withDeadline = <V>(promise: Promise<V>): Promise<V> => {
    if (!state) return promise;
    if (timedOut) {
      promise.catch(() => {});
      return Promise.reject(timedOut);
    }
    return new Promise<V>((resolve, reject) => {
      interrupt = reject;
      promise.then(resolve, reject);
    }).finally(() => interrupt = null);
  };
  // Told apart from a sink's own failures (a store error stays what it is).
  const connectionClosed = Symbol("connection closed");
  const nextPiece = async (): Promise<ReadableStreamReadResult<Uint8Array<ArrayBuffer>>> => {
    try {
      if (!scratch) {
        return await (reader as ReadableStreamDefaultReader<Uint8Array<ArrayBuffer>>).read();
      }
      const result = await (reader as ReadableStreamBYOBReader).read(scratch);
      // The buffer was transferred to the view returned; the next read reuses it whole.
      if (result.value) scratch = new Uint8Array(result.value.buffer);
      return result;
    } catch {
      throw connectionClosed;
    }
  };
  let parts: Uint8Array<ArrayBuffer>[] = [];
  let total = 0;
  let sink: BodySink<T> | null = null;
  const streamTo = async (piece: Uint8Array) => {
    // Held: the sink's buffer, and this piece until the sink has copied it.
    reserve(sink!.capacity + piece.byteLength);
    reserveStaging(Math.max(declared ?? 0, total));
    await withDeadline(sink!.write(piece));
    reserve(sink!.capacity);
  };
  try {
    state?.bodies.add(read);
    const streams = declared !== null && declared > options.streamOver && options.open;
    if (streams) {
      reserveStaging(declared);
      sink = await withDeadline(options.open!(declared));
      read.staged = declared;
      readIntoScratch();
    } else if (declared !== null) reserve(declared);
    for (;;) {
      const { value, done } = await withDeadline(nextPiece());
      if (done) break;
      total += value.byteLength;
      read.bytes = total;
      if (total > maxBytes) throw tooLarge();
      read.lastDataAt = Date.now();
      if (sink) {
        await streamTo(value);
      } else {
        if (declared === null || total > declared) reserve(total);
        parts.push(value);
        if (total > options.streamOver && options.open) {
          // No length was declared, and the body has outgrown memory: stream from here on.
          reserveStaging(total);
          sink = await withDeadline(options.open(null));
          readIntoScratch();
          const held = parts;
          parts = [];
          for (const part of held) await streamTo(part);
        }
      }
      // Time spent waiting on the store is not the sender's idleness.
      read.lastDataAt = Date.now();
    }
    if (sink) {
      const streamed = await withDeadline(sink.close());
      return { body: null, streamed };
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    if (sink) await sink.abort().catch((cause) => log.error("aborting a body failed", cause));
    if (error !== connectionClosed) throw error;
    // The connection went away mid-body (the client left, or the listener was aborted).
    throw new HttpError(
      400,
      `Cannot ${action}: the connection closed before the body was complete`,
      { Connection: "close" },
    );
  } finally {
    state?.bodies.delete(read);
    reserve(0);
    reserveStaging(0);
  }
  // A lone part may be a view into a larger buffer; KV would serialise the whole buffer.
  if (parts.length === 1 && parts[0].byteLength === parts[0].buffer.byteLength) {
    return { body: parts[0], streamed: null };
  }
  const body = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    body.set(part, offset);
    offset += part.byteLength;
  }
  return { body, streamed: null };
}
