/**
 * One serving isolate of the cluster (see cluster.ts): HTTP, live connections and reads run
 * here; each webhook goes to the main isolate, the process's one KV writer, to be committed.
 */
/// <reference lib="deno.worker" />
import { broadcastTransport } from "./broker.ts";
import type { FromWorker, ToWorker } from "./cluster.ts";
import type { Ingest, IngestResult } from "./ingest.ts";
import { type RunningServer, startServer } from "./server.ts";

const post = (message: FromWorker) => self.postMessage(message);

/** An Ingest that hands each webhook to the main isolate and waits for its commit. */
function forwardingIngest(): Ingest & { settle(message: ToWorker): void } {
  const waiting = new Map<number, { resolve(r: IngestResult): void; reject(e: Error): void }>();
  let seq = 0;
  return {
    submit(webhook) {
      return new Promise((resolve, reject) => {
        const id = ++seq;
        waiting.set(id, { resolve, reject });
        post({ type: "submit", seq: id, webhook });
      });
    },
    handleJob() {
      throw new Error("Delivery jobs are handled by the main isolate");
    },
    settle(message) {
      if (message.type !== "submitted" && message.type !== "submit_failed") return;
      const waiter = waiting.get(message.seq);
      waiting.delete(message.seq);
      if (message.type === "submitted") waiter?.resolve(message.result);
      else waiter?.reject(new Error(message.message));
    },
  };
}

const ingest = forwardingIngest();
let server: RunningServer | null = null;

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "start") {
    try {
      server = await startServer(message.config, {
        reusePort: true,
        isolate: String(message.index),
        processId: message.processId,
        transports: [broadcastTransport({ channel: message.channel, peers: message.peers })],
        ingest,
      });
      post({ type: "listening", url: server.url });
    } catch (error) {
      post({ type: "failed", message: (error as Error).message });
    }
  } else if (message.type === "shutdown") {
    await server?.shutdown();
    post({ type: "stopped" });
    self.close();
  } else {
    ingest.settle(message);
  }
};

// Messages that arrive while modules still evaluate are dropped, so say when we listen.
post({ type: "ready" });
