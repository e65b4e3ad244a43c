import assert from "node:assert/strict";
import { dechunker, Tally, tallySse } from "../bench/clients.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("[bench clients] dechunker gives back the body whatever the pieces' boundaries", () => {
  const wire = "5\r\nhello\r\n7;name=x\r\n, world\r\n1A \r\n" + "abcdefghijklmnopqrstuvwxyz" +
    "\r\n0\r\n\r\n";
  const bytes = encoder.encode(wire);
  for (const step of [1, 2, 3, 7, bytes.length]) {
    let body = "";
    const feed = dechunker((piece) => body += decoder.decode(piece));
    for (let at = 0; at < bytes.length; at += step) feed(bytes.subarray(at, at + step));
    assert.equal(body, "hello, worldabcdefghijklmnopqrstuvwxyz", `pieces of ${step}`);
  }
});

Deno.test("[bench clients] tallySse counts every event of a chunked stream once, split anywhere", async () => {
  const events = Array.from(
    { length: 50 },
    (_, seq) => `id: ${seq}\ndata: {"payload":{"t":1.000,"w":0,"seq":${seq},"pad":"x"}}\n\n`,
  );
  const wire = encoder.encode("retry: 2000\n: connected\n\n" + events.join(""));
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, () => {
    // Odd-sized chunks, so events and stamps straddle the chunked framing.
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < wire.length; at += 37) controller.enqueue(wire.slice(at, at + 37));
      },
    });
    return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
  });
  const tally = new Tally();
  const client = await tallySse(`http://127.0.0.1:${server.addr.port}/stream?token=t`, tally);
  try {
    assert.equal(await tally.waitFor(50, 5000), true);
    assert.equal(tally.delivered, 50);
    assert.equal(tally.distinct, 50);
    assert.equal(tally.repeats, 0);
  } finally {
    client.close();
    await server.shutdown();
  }
});
