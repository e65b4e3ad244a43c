/**
 * One serving isolate of the cluster (see cluster.ts): HTTP, live connections and reads run
 * here; each webhook goes to the main isolate, the process's one KV writer, to be committed.
 * The Worker's module is the entry point (main.ts), which calls `serveInWorker` with the routes'
 * handler: a Worker cannot be handed a function, and lib/ does not import routes/.
 */
/// <reference lib="deno.worker" />
import {
  broadcastTransport,
  type BrokerMessage,
  fromWire,
  type Transport,
} from "../fanout/broker.ts";
import type { FailedOutcome, FromWorker, SubmittedWebhook, ToWorker } from "./cluster.ts";
import { gatherPerTurn } from "./per_turn.ts";
import { HttpError } from "../http/http_error.ts";
import type { Ingest, IngestResult, Refusal } from "../intake/group_commit.ts";
import { type HandlerFactory, type RunningServer, startServer } from "../http/server.ts";
import { type IsolateMetrics, isolateMetrics, setMetricsGatherer } from "../observe/metrics.ts";

const post = (message: FromWorker) => self.postMessage(message);

/** The main isolate's error back as it was thrown there: an HttpError stays one. */
function errorOf(outcome: FailedOutcome): Error {
  return outcome.status
    ? new HttpError(outcome.status, outcome.error, outcome.headers)
    : new Error(outcome.error);
}

/**
 * An Ingest that hands webhooks to the main isolate and waits for their commit. The webhooks
 * of one turn of the event loop go together, in one message; none waits here for others to be
 * committed first, so the group commit's turns between accounts decide who goes first.
 */
function forwardingIngest(): Ingest & { settle(message: ToWorker): void } {
  const waiting = new Map<number, { resolve(r: IngestResult): void; reject(e: Error): void }>();
  const admitting = new Map<
    number,
    { resolve(r: Refusal | null): void; reject(e: Error): void }
  >();
  let admitSeq = 0;
  let seq = 0;
  const hand = gatherPerTurn<SubmittedWebhook>((webhooks) => post({ type: "submit", webhooks }));
  return {
    submit(webhook) {
      return new Promise((resolve, reject) => {
        const id = ++seq;
        waiting.set(id, { resolve, reject });
        hand({ seq: id, webhook });
      });
    },
    admit(endpoint) {
      return new Promise((resolve, reject) => {
        const id = ++admitSeq;
        admitting.set(id, { resolve, reject });
        post({ type: "admit", seq: id, endpoint });
      });
    },
    settle(message) {
      if (message.type === "admitted") {
        const { outcome } = message;
        const waiter = admitting.get(outcome.seq);
        admitting.delete(outcome.seq);
        if ("refusal" in outcome) waiter?.resolve(outcome.refusal);
        else waiter?.reject(errorOf(outcome));
        return;
      }
      if (message.type !== "submitted") return;
      for (const outcome of message.outcomes) {
        const waiter = waiting.get(outcome.seq);
        waiting.delete(outcome.seq);
        if ("result" in outcome) waiter?.resolve(outcome.result);
        else waiter?.reject(errorOf(outcome));
      }
    },
  };
}

/** Messages the main isolate published, arriving on this Worker's port; nothing goes back. */
function fromMainIsolate(): Transport & { receive(message: ToWorker): void } {
  let hear: (message: BrokerMessage) => void = () => {};
  return {
    send() {},
    start(receive) {
      hear = receive;
    },
    peers: () => 0,
    follow(userId) {
      // Connections register before they read the log, so an event committed meanwhile is
      // in the catch-up if not live; nothing falls between.
      post({ type: "follow", userId });
      return () => post({ type: "unfollow", userId });
    },
    close() {},
    receive(message) {
      if (message.type === "broker") hear(fromWire(message.message));
    },
  };
}

/** Serves this Worker with `createHandler`'s handler once the main isolate says start. */
export function serveInWorker(createHandler: HandlerFactory): void {
  const ingest = forwardingIngest();
  const mainIsolate = fromMainIsolate();
  let server: RunningServer | null = null;
  // A scrape answered here asks the main isolate, which gathers every isolate's metrics.
  let gatherSeq = 0;
  const gathering = new Map<number, (metrics: IsolateMetrics[]) => void>();
  setMetricsGatherer(() =>
    new Promise((resolve) => {
      const seq = ++gatherSeq;
      gathering.set(seq, resolve);
      post({ type: "gather", seq });
    })
  );

  self.onmessage = async (event: MessageEvent<ToWorker>) => {
    const message = event.data;
    if (message.type === "start") {
      try {
        server = await startServer(message.config, createHandler, {
          reusePort: true,
          isolate: String(message.index),
          processId: message.processId,
          transports: [
            broadcastTransport({ channel: message.channel, peers: message.peers }),
            mainIsolate,
          ],
          ingest,
        });
        post({ type: "listening" });
      } catch (error) {
        post({ type: "failed", message: (error as Error).message });
      }
    } else if (message.type === "shutdown") {
      await server?.shutdown();
      post({ type: "stopped" });
      self.close();
    } else if (message.type === "broker") {
      mainIsolate.receive(message);
    } else if (message.type === "drain") {
      server?.drain();
    } else if (message.type === "metrics") {
      post({ type: "metrics", seq: message.seq, metrics: await isolateMetrics() });
    } else if (message.type === "gathered") {
      gathering.get(message.seq)?.(message.metrics);
      gathering.delete(message.seq);
    } else {
      ingest.settle(message);
    }
  };

  // Messages that arrive while modules still evaluate are dropped, so say when we listen.
  post({ type: "ready" });
}
