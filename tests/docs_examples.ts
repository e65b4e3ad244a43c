/**
 * The client examples of the product docs (shared/seed/websocks-docs.txt), copied byte for byte,
 * so tests can run them as a user would paste them. `docs_examples_test.ts` checks that each one
 * still appears verbatim in the docs; `forServer` only swaps the hosted URLs and the token.
 */
import { fileURLToPath } from "node:url";

/** API reference, /api/events/stream: the browser EventSource example. */
export const SSE_BROWSER_EXAMPLE = `const eventSource = new EventSource(
'https://websocks.io/api/events/stream?token=YOUR_TOKEN'
);
eventSource.onopen = () => {
console.log('Connected to WebSocks SSE');
};
eventSource.onmessage = (event) => {
const data = JSON.parse(event.data);
if (data.type === 'webhook') {
console.log('Webhook received:', data.payload);
}
};
eventSource.onerror = (error) => {
console.error('SSE error:', error);
eventSource.close();
};`;

/** API reference, wss://ws.websocks.io: the "Browser Example". */
export const WS_BROWSER_EXAMPLE =
  `const ws = new WebSocket('wss://ws.websocks.io?token=YOUR_TOKEN');
ws.onopen = () => {
console.log('Connected to WebSocks WebSocket');
};
ws.onmessage = (event) => {
const webhook = JSON.parse(event.data);
console.log('Webhook received:', webhook);
};
ws.onerror = (error) => {
console.error('WebSocket error:', error);
};
ws.onclose = () => {
console.log('Disconnected from WebSocks');
};`;

/** API reference, wss://ws.websocks.io: the "Node.js Example" (npm package `ws`). */
export const NODE_WS_EXAMPLE = `const WebSocket = require('ws');
const ws = new WebSocket('wss://ws.websocks.io?token=YOUR_TOKEN');
ws.on('open', () => {
console.log('Connected to WebSocks WebSocket');
});
ws.on('message', (data) => {
const webhook = JSON.parse(data);
console.log('Webhook received:', webhook);
});
ws.on('error', (error) => {
console.error('WebSocket error:', error);
});
ws.on('close', () => {
console.log('Disconnected from WebSocks');
});`;

/** Every example above, by name, for the verbatim check. */
export const DOCS_EXAMPLES: Record<string, string> = {
  SSE_BROWSER_EXAMPLE,
  WS_BROWSER_EXAMPLE,
  NODE_WS_EXAMPLE,
};

/**
 * An example pointed at a test server: the docs' hosted origins become the server's http and ws
 * URLs and YOUR_TOKEN the user's token. Nothing else changes.
 */
export function forServer(
  example: string,
  target: { url: string; wsUrl: string; token: string },
): string {
  const code = example
    .replaceAll("https://websocks.io", target.url)
    .replaceAll("wss://ws.websocks.io", target.wsUrl)
    .replaceAll("YOUR_TOKEN", target.token);
  if (/websocks\.io|YOUR_TOKEN/.test(code)) {
    throw new Error(`forServer left a placeholder in:\n${code}`);
  }
  return code;
}

/** Where the docs live: $WEBSOCKS_DOCS, else shared/ beside the repository (as in CI). */
export function docsPath(): string | null {
  const candidates = [
    Deno.env.get("WEBSOCKS_DOCS"),
    fileURLToPath(new URL("../../shared/seed/websocks-docs.txt", import.meta.url)),
  ];
  for (const candidate of candidates) {
    if (!candidate) continue;
    try {
      if (Deno.statSync(candidate).isFile) return candidate;
    } catch {
      // not there
    }
  }
  return null;
}
