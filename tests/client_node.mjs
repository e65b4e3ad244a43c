/**
 * The client library in Node, for tests/client_test.ts: subscribes with the transport given and
 * prints one JSON line per state change and per handled event, until `count` are handled.
 * Usage: node client_node.mjs <server url> <token> <websocket|sse> <count> <state file>
 */
import { fileStorage, subscribe } from "../client/websocks.js";

const [url, token, transport, count, file] = process.argv.slice(2);
const print = (value) => console.log(JSON.stringify(value));
let handled = 0;
const subscription = subscribe({
  url,
  token,
  transport,
  storage: fileStorage(file),
  minDelayMs: 50,
  maxDelayMs: 500,
  connectTimeoutMs: 2000,
  onState: (state, info) => print({ state, error: info.error?.message }),
  onError: (error) => print({ error: error.message }),
  onWebhook: async (envelope) => {
    // A turn of the event loop, as real work would take: the next event must still wait.
    await new Promise((resolve) => setTimeout(resolve, 1));
    print({ handled: envelope.id, payload: envelope.payload });
    if (++handled === Number(count)) setTimeout(() => subscription.close(), 0);
    return envelope.respond ? { status: 201, body: { node: process.version } } : undefined;
  },
});
await subscription.closed;
print({ done: subscription.lastEventId });
