/**
 * The WebSocket transport. The server sends webhook envelopes; the client may send
 * `{type:"ping"}`, `{type:"replay", after}` (catch up from the log; the wire keeps its first
 * name), `{type:"subscribe", endpoint, event, method, path}` (replace the connection's filters,
 * see filters.ts), and acks and respond-mode answers of events it was sent. A malformed message
 * gets an error reply and the socket stays open. Dead peers are found by
 * protocol pings (`idleTimeout`), which never reach the client's `onmessage`, so the docs'
 * examples see webhooks only.
 *
 * What a client sends is bounded: messages per second per connection (a token bucket; one
 * warning, then close 1008), message size (close 1009), and acks written per second per account.
 * The first ack and answer of each event sent are free, so a client catching up on a backlog is
 * never closed for acking it.
 */
import { z } from "zod";
import {
  CLOSE,
  type Connection,
  type Connections,
  queuedLargeBytes,
  replyDue,
  type Sink,
  takeReply,
} from "./connections.ts";
import type { LargeEvent, LiveEvent } from "../log/envelope_json.ts";
import { envelopeMemory } from "../log/envelope_stream.ts";
import type { SendBudget } from "./send_budget.ts";
import type { RateLimiter } from "../intake/rate_limit.ts";
import { answerHeaders, type Responses } from "./respond_waiters.ts";
import { isId } from "../store/ids.ts";
import { HttpError } from "../http/http_error.ts";
import {
  compileFilter,
  describeFilter,
  type Filter,
  filterFields,
  outsideLimit,
} from "./filters.ts";
import { log } from "../observe/log.ts";

const eventId = z.string().refine(isId, "must be an event id");
/**
 * What a WebSocket client may send (the OpenAPI document shows it). Strict: a misspelt key
 * (`lastEventID`) is an error naming it, not silently ignored.
 */
export const wsClientMessageSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("ping") }),
  z.strictObject({
    type: z.literal("ack"),
    id: eventId,
    status: z.number().int().min(0).max(999).nullable().optional(),
  }),
  z.strictObject({
    type: z.literal("response"),
    id: eventId,
    status: z.number().int().min(200, "must be 200–599").max(599, "must be 200–599"),
    headers: z.record(z.string(), z.string()).optional(),
    body: z.string().optional(),
    bodyBase64: z.string().optional(),
  }),
  z.strictObject({
    type: z.literal("replay"),
    after: z.string().refine(isId, "must be an event id").nullable().optional(),
    // The name of the query parameter and the SSE header, accepted here too.
    lastEventId: z.string().refine(isId, "must be an event id").nullable().optional(),
  }),
  // Replaces every filter: a parameter left out is "any".
  z.strictObject({ type: z.literal("subscribe"), ...filterFields }),
]);
type ClientMessage = z.infer<typeof wsClientMessageSchema>;

/** Where a socket hands what clients send back: acknowledgements and respond-mode answers. */
export interface ClientReplies {
  ack(options: { connection: Connection; eventId: string; status: number | null }): Promise<void>;
  responses: Responses;
}

/** What one server allows a WebSocket client to send (see Config); shared by all sockets. */
export interface ClientLimits {
  messagesPerSecond: number;
  messagesBurst: number;
  maxMessageBytes: number;
  acksPerSecond: number;
  /** Acks recorded per account (keyed by user id). */
  acks: RateLimiter;
  /** Memory for building large events' messages, shared by every socket of the isolate. */
  largeSends: SendBudget;
}

/**
 * A large message must be written at this many bytes a second or better (10 s at least), and
 * make some progress every 5 s, or its client is closed as too slow: it holds part of the
 * isolate's large-send budget meanwhile.
 */
const LARGE_SEND_MIN_BYTES_PER_SECOND = 1024 * 1024;
const LARGE_SEND_MIN_MS = 10_000;
const LARGE_SEND_STALL_MS = 5_000;
/** How often a large message's progress out of the socket is looked at. */
const LARGE_SEND_POLL_MS = 10;

const encoder = new TextEncoder();

/** What a waiting item counts for in the backlog: a text's length, a large event's weight. */
function weight(item: string | LargeEvent): number {
  return typeof item === "string" ? item.length : queuedLargeBytes(item);
}

/** Whether a message is over `max` bytes (UTF-8), encoding only when its length cannot tell. */
function exceeds(data: unknown, max: number): boolean {
  if (typeof data === "string") {
    if (data.length * 3 <= max) return false;
    return data.length > max || encoder.encode(data).byteLength > max;
  }
  if (data instanceof ArrayBuffer) return data.byteLength > max;
  if (data instanceof Blob) return data.size > max;
  return false;
}

/**
 * One socket's sink and event listener in one object: its methods live on the prototype, so an
 * idle connection costs no closures (memory per idle connection is a benchmark target).
 */
class WebSocketSink implements Sink {
  /**
   * What waits to be sent, in order: everything until `open`, then what follows a large event
   * while its message is built and written. Null when nothing waits.
   */
  waiting: (string | LargeEvent)[] | null = [];
  /** Characters of the texts in `waiting`, and what its large events count for (backlog). */
  waitingChars = 0;
  /** A large event's message is being built or written; `largeBytes` of it are in the socket. */
  sendingLarge = false;
  largeBytes = 0;
  connection: Connection | null = null;
  /** The message bucket: tokens left, when last refilled, and whether the client was warned. */
  tokens: number;
  refilledAt = performance.now();
  warned = false;

  constructor(
    readonly socket: WebSocket,
    readonly connections: Connections,
    readonly wantsNotices: boolean,
    readonly replies: ClientReplies,
    readonly limits: ClientLimits,
  ) {
    this.tokens = limits.messagesBurst;
  }

  /**
   * Takes a token for one client message: false when there is none, after which the first such
   * message gets a warning and the next one closes the socket with 1008.
   */
  takeToken(): boolean {
    const { messagesPerSecond, messagesBurst } = this.limits;
    const now = performance.now();
    this.tokens = Math.min(
      messagesBurst,
      this.tokens + ((now - this.refilledAt) / 1000) * messagesPerSecond,
    );
    this.refilledAt = now;
    if (this.tokens >= messagesBurst) this.warned = false; // calm again: the next burst is new
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    const limit = `over ${messagesPerSecond} a second (WS_MESSAGES_PER_SECOND)`;
    if (this.warned) {
      this.connections.close(this.connection!, {
        code: 1008,
        reason: `Too many messages: ${limit}`,
      });
    } else {
      this.warned = true;
      this.reply({
        type: "error",
        message: `Too many messages: ${limit}; this one was dropped, and the next one over the ` +
          "limit closes the connection",
      });
    }
    return false;
  }

  send(event: LiveEvent): void {
    if (this.waiting === null && !event.large) {
      // Nothing waits only once the socket has opened (see `flush`), and a closing or closed
      // socket's send does nothing: no readyState check on the fan-out's hottest line.
      this.socket.send(event.json);
      return;
    }
    this.wait(event.large ? event : event.json);
  }

  /** Queues behind what already waits, and sends what can go. */
  wait(item: string | LargeEvent): void {
    (this.waiting ??= []).push(item);
    this.waitingChars += weight(item);
    this.flush();
  }

  /** Sends what waits, in order, until a large event: the rest follows once it is written. */
  flush(): void {
    const waiting = this.waiting;
    if (waiting === null || this.sendingLarge) return;
    if (this.socket.readyState === WebSocket.CONNECTING) return;
    if (this.socket.readyState !== WebSocket.OPEN) {
      this.waiting = null;
      this.waitingChars = 0;
      return;
    }
    while (waiting.length > 0) {
      const item = waiting.shift()!;
      this.waitingChars -= weight(item);
      if (typeof item === "string") {
        this.socket.send(item);
        continue;
      }
      this.sendingLarge = true;
      this.sendLarge(item).finally(() => {
        this.sendingLarge = false;
        this.flush();
      });
      return;
    }
    this.waiting = null;
  }

  /**
   * Builds a large event's message within the isolate's budget, sends it, and keeps the budget
   * until the socket has written it (closing a client too slow to take it).
   */
  async sendLarge(event: LargeEvent): Promise<void> {
    const connection = this.connection!;
    const release = await this.limits.largeSends.take(envelopeMemory(event), connection.userId);
    try {
      if (connection.closed) return;
      const pieces: string[] = [];
      for await (const piece of this.connections.envelopePieces(event)) {
        if (connection.closed) return;
        pieces.push(piece);
      }
      const text = pieces.join("");
      pieces.length = 0;
      if (this.socket.readyState !== WebSocket.OPEN) return;
      const before = this.socket.bufferedAmount;
      this.socket.send(text);
      const bytes = this.socket.bufferedAmount - before;
      this.largeBytes = bytes;
      const deadline = Date.now() +
        Math.max(LARGE_SEND_MIN_MS, (bytes / LARGE_SEND_MIN_BYTES_PER_SECOND) * 1000);
      let left = this.socket.bufferedAmount;
      let movedAt = Date.now();
      // Messages leave in order: while this one is unwritten, at least its bytes are buffered.
      while (this.socket.readyState === WebSocket.OPEN && this.socket.bufferedAmount >= bytes) {
        const now = Date.now();
        if (this.socket.bufferedAmount < left) {
          left = this.socket.bufferedAmount;
          movedAt = now;
        }
        if (now > deadline || now - movedAt > LARGE_SEND_STALL_MS) {
          return this.connections.close(connection, CLOSE.slow);
        }
        await new Promise((resolve) => setTimeout(resolve, LARGE_SEND_POLL_MS));
      }
    } catch (error) {
      // Its body could not be read (chunks expired, the store failing): the client resumes.
      log.error("sending a large event failed", error);
      this.connections.close(connection, {
        code: 1011,
        reason: "Could not read an event; reconnect to resume",
      });
    } finally {
      this.largeBytes = 0;
      release();
    }
  }

  /** A reply to the client's message, in order after what was queued before it ("replayed"). */
  reply(value: unknown): void {
    const text = JSON.stringify(value);
    if (this.waiting !== null) this.wait(text);
    else if (this.socket.readyState === WebSocket.OPEN) this.socket.send(text);
  }

  backlog(): number {
    // A large message being written is the budget's to bound, not the client's backlog: a
    // healthy client takes a moment to read 30 MiB.
    return Math.max(0, this.socket.bufferedAmount - this.largeBytes) + this.waitingChars;
  }

  heartbeat(): void {}

  notice(_name: string, json: string): void {
    // Only clients that connected with `?notices=1` get notices: the docs' examples treat every
    // message as a webhook.
    if (!this.wantsNotices) return;
    if (this.waiting !== null) this.wait(json);
    else if (this.socket.readyState === WebSocket.OPEN) this.socket.send(json);
  }

  close(code: number, reason: string): void {
    const socket = this.socket;
    if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
    else if (socket.readyState === WebSocket.CONNECTING) {
      socket.addEventListener("open", () => socket.close(code, reason));
    }
  }

  handleEvent(event: Event): void {
    const connection = this.connection!;
    if (event.type === "open") {
      this.flush();
    } else if (event.type === "message") {
      const message = event as MessageEvent;
      if (connection.closed) return;
      if (exceeds(message.data, this.limits.maxMessageBytes)) {
        return this.connections.close(connection, {
          code: 1009,
          reason: `Message too large: larger than ${this.limits.maxMessageBytes} bytes ` +
            "(WS_MAX_MESSAGE_BYTES)",
        });
      }
      const read = readClientMessage(message.data);
      const command = "command" in read ? read.command : null;
      const answer = command?.type === "response" ? readAnswer(command) : null;
      // The first ack and valid answer of an event sent here cost nothing: a client catching up
      // on a backlog acks as fast as it works, and the events it was sent bound them anyway. A
      // refused answer leaves the event due, so it pays, or it could be repeated for free.
      const free = (command?.type === "ack" && replyDue(connection, command.id, "ack")) ||
        (command?.type === "response" && answer !== null && !("problem" in answer) &&
          replyDue(connection, command.id, "answer"));
      if (!free && !this.takeToken()) return;
      if ("error" in read) return this.reply({ type: "error", message: read.error });
      handleClientMessage(this.connections, {
        connection,
        command: read.command,
        answer,
        reply: (value) => this.reply(value),
        replies: this.replies,
        limits: this.limits,
      });
    } else {
      // "close" (an error is always followed by close)
      this.connections.remove(connection);
    }
  }
}

/** Upgrades an authenticated request to a WebSocket bound to the user's events. */
export function openWebSocket(
  request: Request,
  connections: Connections,
  options: {
    userId: string;
    credential: string;
    after: string | null;
    idleTimeoutSeconds: number;
    wantsNotices: boolean;
    replies: ClientReplies;
    limits: ClientLimits;
    filter?: Filter | null;
    /** Joins a consumer group (groups.ts); `after` is then ignored. */
    group?: { name: string; ackTimeoutMs: number } | null;
    /** Whether the credential still stands, once registered (see Connections.open). */
    stands?: () => Promise<boolean>;
    /** Whether the credential may see the account's usage: quota notices. */
    seesUsage?: boolean;
  },
): Response {
  const { socket, response } = Deno.upgradeWebSocket(request, {
    idleTimeout: options.idleTimeoutSeconds,
  });
  const sink = new WebSocketSink(
    socket,
    connections,
    options.wantsNotices,
    options.replies,
    options.limits,
  );
  sink.connection = connections.open({
    userId: options.userId,
    credential: options.credential,
    transport: "ws",
    sink,
    after: options.after ?? undefined,
    filter: options.filter,
    group: options.group,
    seesUsage: options.seesUsage,
    stands: options.stands,
  });
  for (const type of ["open", "message", "close"]) socket.addEventListener(type, sink);
  return response;
}

type ResponseCommand = Extract<ClientMessage, { type: "response" }>;
type Answer = { body: Uint8Array; headers: Record<string, string> } | { problem: string };

/** A response command's body and allowed headers, or the error message refusing it. */
function readAnswer(command: ResponseCommand): Answer {
  let body: Uint8Array;
  try {
    body = command.bodyBase64 !== undefined
      ? Uint8Array.fromBase64(command.bodyBase64)
      : new TextEncoder().encode(command.body ?? "");
  } catch {
    return { problem: "Cannot read response: bodyBase64 is not base64" };
  }
  const checked = answerHeaders(command.headers ?? {});
  if ("problem" in checked) {
    return { problem: `Cannot respond to ${command.id}: ${checked.problem}` };
  }
  return { body, headers: checked.headers };
}

/** Parses one client message: the command, or what is wrong with it. */
function readClientMessage(data: unknown): { command: ClientMessage } | { error: string } {
  if (typeof data !== "string") {
    return { error: "Cannot read message: send JSON text, not binary" };
  }
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return { error: "Cannot read message: it is not valid JSON" };
  }
  const parsed = wsClientMessageSchema.safeParse(json);
  if (parsed.success) return { command: parsed.data };
  const issue = parsed.error.issues[0];
  const where = issue.path.length ? ` (${issue.path.join(".")})` : "";
  const problem = issue.code === "unrecognized_keys"
    ? `unknown key ${JSON.stringify(issue.keys[0])}`
    : issue.message;
  return {
    error: `Cannot read message${where}: ${problem}; expected {"type":"ping"}, ` +
      `{"type":"replay","after":"<event id>"}, {"type":"subscribe","event":[…],…}, ` +
      `{"type":"ack","id":…} or {"type":"response","id":…,"status":…}`,
  };
}

function handleClientMessage(
  connections: Connections,
  context: {
    connection: Connection;
    command: ClientMessage;
    /** The answer of a response command, when already read. */
    answer: Answer | null;
    /** Sends a reply after whatever was queued for the client before it. */
    reply(value: unknown): void;
    replies: ClientReplies;
    limits: ClientLimits;
  },
): void {
  const { connection, command } = context;
  const reply = context.reply;
  connection.lastSeenAt = new Date().toISOString();
  if (command.type === "ping") return reply({ type: "pong" });
  if (command.type === "ack") {
    const { acks, acksPerSecond } = context.limits;
    // A group member's ack settles an event it was given, one at a time: its writes are bounded
    // by the deliveries, so the account's ack limit (which would cap a group's throughput at
    // ACKS_PER_SECOND events a second) does not apply.
    const member = connection.group !== null;
    // Only the first ack of an event sent here is written: no one else's, none made up.
    if (!takeReply(connection, command.id, "ack")) {
      return reply({
        type: "error",
        message: `Cannot ack ${command.id}: this connection was not sent that event ` +
          "(or acked it already)",
      });
    }
    if (!member && acks.take(connection.userId) > 0) {
      return reply({
        type: "error",
        message: `Cannot ack ${command.id}: more than ${acksPerSecond} acks a second for this ` +
          "account (ACKS_PER_SECOND); this one is not recorded",
      });
    }
    context.replies.ack({ connection, eventId: command.id, status: command.status ?? null })
      .catch((error) =>
        reply({
          type: "error",
          // A consumer group's refusal says why (held by another member, acked already).
          message: error instanceof HttpError
            ? error.message
            : "Cannot record ack: storing it failed",
        })
      );
    return;
  }
  if (command.type === "response") {
    const answer = context.answer ?? readAnswer(command);
    if ("problem" in answer) return reply({ type: "error", message: answer.problem });
    const { body, headers } = answer;
    // Taken only once the answer is valid, so a client can correct a refused answer.
    if (!takeReply(connection, command.id, "answer")) {
      return reply({
        type: "error",
        message: `Cannot respond to ${command.id}: this connection was not sent that event ` +
          "(or answered it already)",
      });
    }
    const outcome = context.replies.responses.answer(command.id, connection.userId, {
      status: command.status,
      headers,
      body,
    });
    if (outcome === "late") {
      reply({
        type: "error",
        message: `Cannot respond to ${command.id}: no sender is waiting (answered or timed out)`,
      });
    } else if (outcome === "not_yours") {
      reply({
        type: "error",
        message: `Cannot respond to ${command.id}: it is not an event of this account`,
      });
    }
    return;
  }
  if (command.type === "subscribe") {
    // From the next event handed to this socket on: what is already queued still goes.
    const { endpoint, event, method, path } = command;
    const spec = { endpoint, event, method, path };
    // The token's endpoint limit stays whatever the client asks.
    const limit = connection.filter?.limit ?? null;
    const outside = outsideLimit(spec, limit);
    if (outside !== null) {
      return reply({
        type: "error",
        message: `Cannot subscribe: endpoint ${outside} is not one of this token's endpoints; ` +
          "the filters are unchanged",
      });
    }
    connection.filter = compileFilter(spec, limit);
    return reply({ type: "subscribed", ...describeFilter(connection.filter) });
  }
  if (command.after && command.lastEventId && command.after !== command.lastEventId) {
    return reply({
      type: "error",
      message: "Cannot catch up: give after or lastEventId, not both",
    });
  }
  if (connection.group !== null) {
    return reply({
      type: "error",
      message:
        `Cannot catch up: this connection is a member of group "${connection.group.name}", ` +
        "which keeps its progress on the server and sends what is due",
    });
  }
  if (connection.catchingUp) {
    // One at a time: queued catch-ups would each hold a read of the log.
    return reply({
      type: "error",
      message: 'Cannot catch up: a catch-up is running; wait for its "replayed" message',
    });
  }
  const after = command.after ?? command.lastEventId ?? null;
  connections.catchUp(connection, after).then(
    (count) => reply({ type: "replayed", after, count }),
    () => reply({ type: "error", message: "Cannot catch up: reading the event log failed" }),
  );
}
