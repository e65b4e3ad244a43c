/**
 * Part "large": bodies of MAX_BODY_BYTES (25 MiB). Twenty senders post one each at once; the
 * server's RSS is sampled throughout (the target: a rise of about 100 MiB at most). Then
 * one more goes to a connected SSE client and a WebSocket client: time until each has it whole.
 */
import type { PartContext } from "../part.ts";
import { rssKiB, signUpUser, sleep, startRelay } from "../procs.ts";
import { fmt } from "../report.ts";

const MIB = 2 ** 20;
const SENDERS = 20;
const BODY_BYTES = 25 * MIB;

/** Random bytes (getRandomValues fills at most 64 KiB at a time). */
function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(length, at + 65_536)));
  }
  return bytes;
}

/** Samples a process's RSS every 20 ms until stopped; returns the highest, in KiB. */
function sampleRss(pid: number): { stop(): number } {
  let peak = rssKiB(pid);
  const timer = setInterval(() => peak = Math.max(peak, rssKiB(pid)), 20);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rssKiB(pid));
    },
  };
}

/** Figures under `large`. */
export async function run(context: PartContext): Promise<void> {
  console.log(`\n## large: ${SENDERS} senders × 25 MiB at once, then one to SSE and WebSocket`);
  // Default body settings: what a deployment gets (the bench's raised per-address share off).
  const server = await startRelay({ env: { MAX_BUFFERED_BODY_MB_PER_ADDRESS: "16" } });
  try {
    const pid = server.child.pid;
    const user = await signUpUser(server.url);
    const body = randomBytes(BODY_BYTES);
    const post = () =>
      fetch(user.webhookUrl, {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream" },
        body,
      }).then(async (response) => {
        await response.body?.cancel();
        return response.status;
      });
    // Warm the path once, so the baseline holds compiled code and KV's caches.
    await post();
    await sleep(1500);
    const before = rssKiB(pid);
    const sampler = sampleRss(pid);
    const started = performance.now();
    const statuses = await Promise.all(Array.from({ length: SENDERS }, post));
    const seconds = (performance.now() - started) / 1000;
    const peak = sampler.stop();
    const ok = statuses.filter((s) => s === 200).length;
    const rise = (peak - before) / 1024;
    console.log(
      `  ${ok} of ${SENDERS} accepted (${
        statuses.filter((s) => s !== 200).join(", ") || "no refusals"
      }) in ${fmt(seconds, 2)} s (${fmt((SENDERS * BODY_BYTES) / MIB / seconds, 0)} MiB/s); ` +
        `RSS ${fmt(before / 1024, 1)} → peak ${fmt(peak / 1024, 1)} MiB: +${fmt(rise, 1)} MiB ` +
        `(target ≤ ~100)`,
    );

    const sse = await fetch(`${server.url}/api/events/stream?token=${user.token}`);
    const reader = sse.body!.getReader();
    await reader.read();
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}/?token=${user.token}`);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    await sleep(500);
    const deliveryBefore = rssKiB(pid);
    const deliverySampler = sampleRss(pid);
    const sent = performance.now();
    const wsArrived = new Promise<number>((resolve) => {
      socket.onmessage = () => resolve(performance.now() - sent);
    });
    const sseArrived = (async () => {
      // The frame ends with a blank line; count bytes until it has come whole.
      let bytes = 0;
      let tail = "";
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the SSE stream ended");
        bytes += value.byteLength;
        tail = (tail + decoder.decode(value, { stream: true })).slice(-2);
        if (bytes > BODY_BYTES && tail === "\n\n") return performance.now() - sent;
      }
    })();
    const status = await post();
    const [wsMs, sseMs] = await Promise.all([wsArrived, sseArrived]);
    const deliveryPeak = deliverySampler.stop();
    console.log(
      `  one more (${status}) to 1 SSE + 1 WebSocket client: whole at SSE in ${
        fmt(sseMs, 0)
      } ms, ` +
        `WebSocket in ${fmt(wsMs, 0)} ms; RSS +${
          fmt((deliveryPeak - deliveryBefore) / 1024, 1)
        } MiB at the peak`,
    );
    socket.close();
    await reader.cancel();
    context.record("large", {
      senders: SENDERS,
      bodyBytes: BODY_BYTES,
      accepted: ok,
      seconds,
      rssBeforeMiB: before / 1024,
      rssPeakMiB: peak / 1024,
      rssRiseMiB: rise,
      sseMs,
      wsMs,
      deliveryRssRiseMiB: (deliveryPeak - deliveryBefore) / 1024,
    });
  } finally {
    await server.stop();
  }
}
