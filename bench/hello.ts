/**
 * A trivial server, the floor the relay is compared with:
 * - any POST: reads the body and answers the same small JSON the relay answers webhooks with
 *   (the load generator's ceiling is measured against this);
 * - GET /sse: an endless, idle `text/event-stream` response (Deno's own cost of an SSE stream);
 * - GET /ws: a WebSocket upgrade that does nothing (Deno's own cost of a WebSocket).
 *
 * Usage: PORT=<port> deno run -A bench/hello.ts
 */
const port = Number(Deno.env.get("PORT") ?? "0");
const reply = '{"ok":true,"id":"01JBENCHBENCHBENCHBENCHBENC"}';
const greeting = new TextEncoder().encode("retry: 2000\n: connected\n\n");
Deno.serve(
  {
    port,
    hostname: "127.0.0.1",
    onListen: (addr) => console.log(`hello listening on ${addr.port}`),
  },
  async (request) => {
    const path = new URL(request.url).pathname;
    if (request.method === "GET" && path === "/ws") {
      const { response } = Deno.upgradeWebSocket(request);
      return response;
    }
    if (request.method === "GET" && path === "/sse") {
      const body = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(greeting) });
      return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
    }
    await request.arrayBuffer();
    return new Response(reply, { headers: { "Content-Type": "application/json" } });
  },
);
