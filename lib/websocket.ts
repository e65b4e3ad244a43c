/**
 * The WebSocket transport. The server sends webhook envelopes; the client may send
 * `{type:"ping"}` and `{type:"replay", after}`. A malformed message gets an error reply and the
 * socket stays open. Dead peers are found by protocol pings (`idleTimeout`), which never reach
 * the client's `onmessage`, so the docs' examples see webhooks only.
 */
import { z } from "zod";
import type { Connection, Connections, Sink } from "./connections.ts";
import type { LiveEvent } from "./events.ts";
import { answerHeaders, type Responses } from "./responses.ts";
import { isId } from "./ids.ts";

const eventId = z.string().refine(isId, "must be an event id");
const clientMessage = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ping") }),
  z.object({
    type: z.literal("ack"),
    id: eventId,
    status: z.number().int().min(0).max(999).nullable().optional(),
  }),
  z.object({
    type: z.literal("response"),
    id: eventId,
    status: z.number().int().min(200, "must be 200–599").max(599, "must be 200–599"),
    headers: z.record(z.string(), z.string()).optional(),
    body: z.string().optional(),
    bodyBase64: z.string().optional(),
  }),
  z.object({
    type: z.literal("replay"),
    after: z.string().refine(isId, "must be an event id").nullable().optional(),
  }),
]);

/** Where a socket hands what clients send back: acknowledgements and respond-mode answers. */
export interface ClientReplies {
  ack(options: { connection: Connection; eventId: string; status: number | null }): Promise<void>;
  responses: Responses;
}

/**
 * One socket's sink and event listener in one object: its methods live on the prototype, so an
 * idle connection costs no closures (memory per idle connection is a benchmark target).
 */
class WebSocketSink implements Sink {
  /** Events published between the upgrade and `open` wait here, so none is missed. */
  pending: string[] | null = [];
  connection: Connection | null = null;

  constructor(
    readonly socket: WebSocket,
    readonly connections: Connections,
    readonly wantsNotices: boolean,
    readonly replies: ClientReplies,
  ) {}

  send(event: LiveEvent): void {
    if (this.pending) this.pending.push(event.json);
    else if (this.socket.readyState === WebSocket.OPEN) this.socket.send(event.json);
  }

  backlog(): number {
    return this.socket.bufferedAmount;
  }

  heartbeat(): void {}

  notice(_name: string, json: string): void {
    // Only clients that connected with `?notices=1` get notices: the docs' examples treat every
    // message as a webhook.
    if (this.wantsNotices && this.socket.readyState === WebSocket.OPEN) this.socket.send(json);
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
      const queued = this.pending ?? [];
      this.pending = null;
      for (const text of queued) this.socket.send(text);
    } else if (event.type === "message") {
      handleClientMessage(this.connections, {
        connection,
        socket: this.socket,
        message: event as MessageEvent,
        replies: this.replies,
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
  },
): Response {
  const { socket, response } = Deno.upgradeWebSocket(request, {
    idleTimeout: options.idleTimeoutSeconds,
  });
  const sink = new WebSocketSink(socket, connections, options.wantsNotices, options.replies);
  sink.connection = connections.open({
    userId: options.userId,
    credential: options.credential,
    transport: "ws",
    sink,
    after: options.after ?? undefined,
  });
  for (const type of ["open", "message", "close"]) socket.addEventListener(type, sink);
  return response;
}

function handleClientMessage(
  connections: Connections,
  context: {
    connection: Connection;
    socket: WebSocket;
    message: MessageEvent;
    replies: ClientReplies;
  },
): void {
  const { connection, socket, message } = context;
  const reply = (value: unknown) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(value));
  };
  if (typeof message.data !== "string") {
    return reply({ type: "error", message: "Cannot read message: send JSON text, not binary" });
  }
  let json: unknown;
  try {
    json = JSON.parse(message.data);
  } catch {
    return reply({ type: "error", message: "Cannot read message: it is not valid JSON" });
  }
  const parsed = clientMessage.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length ? ` (${issue.path.join(".")})` : "";
    return reply({
      type: "error",
      message: `Cannot read message${where}: ${issue.message}; expected {"type":"ping"}, ` +
        `{"type":"replay","after":"<event id>"}, {"type":"ack","id":…} or ` +
        `{"type":"response","id":…,"status":…}`,
    });
  }
  const command = parsed.data;
  connection.lastSeenAt = new Date().toISOString();
  if (command.type === "ping") return reply({ type: "pong" });
  if (command.type === "ack") {
    context.replies.ack({ connection, eventId: command.id, status: command.status ?? null })
      .catch(() => reply({ type: "error", message: "Cannot record ack: storing it failed" }));
    return;
  }
  if (command.type === "response") {
    let body: Uint8Array;
    try {
      body = command.bodyBase64 !== undefined
        ? Uint8Array.fromBase64(command.bodyBase64)
        : new TextEncoder().encode(command.body ?? "");
    } catch {
      return reply({ type: "error", message: "Cannot read response: bodyBase64 is not base64" });
    }
    const checked = answerHeaders(command.headers ?? {});
    if ("problem" in checked) {
      return reply({
        type: "error",
        message: `Cannot respond to ${command.id}: ${checked.problem}`,
      });
    }
    const delivery = context.replies.responses.deliver(command.id, connection.userId, {
      status: command.status,
      headers: checked.headers,
      body,
    });
    if (delivery === "late") {
      reply({
        type: "error",
        message: `Cannot respond to ${command.id}: no sender is waiting (answered or timed out)`,
      });
    } else if (delivery === "not_yours") {
      reply({
        type: "error",
        message: `Cannot respond to ${command.id}: it is not an event of this account`,
      });
    }
    return;
  }
  const after = command.after ?? null;
  connections.replay(connection, after).then(
    (count) => reply({ type: "replayed", after, count }),
    () => reply({ type: "error", message: "Cannot replay: reading the event log failed" }),
  );
}
