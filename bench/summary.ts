/** The closing table of a benchmark run: the headline figures next to their targets. */
import { fmt } from "./report.ts";
import { type Settings, STEADY_RATE, TARGETS } from "./settings.ts";
import { median, type Summary } from "./stats.ts";

/** Prints the summary table from the figures the parts recorded. */
export function printSummary(results: Readonly<Record<string, unknown>>, settings: Settings): void {
  console.log("\n## summary");
  const rows: [string, string, string][] = [];
  const ceiling = results.ceiling as { rps: number } | undefined;
  const load = results.load as {
    rps: number;
    latency: Summary;
    delivered: number;
    accepted: number;
  } | undefined;
  const steady = results.steady as { latency: Summary } | undefined;
  const fanout = results.fanout as { toLast: Summary } | undefined;
  const rss = results.rss as Record<string, { kibPerConnection: number }> | undefined;
  if (ceiling) rows.push(["generator ceiling (trivial server), req/s", fmt(ceiling.rps, 0), "—"]);
  const wrk = results.wrk as { rps: number; delivered: number; accepted: number } | undefined;
  if (wrk) {
    rows.push([
      "accepted webhooks/s, c=50, 1 KiB, wrk",
      `${fmt(wrk.rps, 0)} (${wrk.delivered}/${wrk.accepted} delivered)`,
      `≥ ${TARGETS.throughput.toLocaleString("en-US")}`,
    ]);
  }
  if (load) {
    rows.push([
      "accepted webhooks/s, c=50, 1 KiB, our generator",
      `${fmt(load.rps, 0)} (${load.delivered}/${load.accepted} delivered)`,
      `≥ ${TARGETS.throughput.toLocaleString("en-US")}`,
    ]);
    rows.push([
      "POST→client p50 / p99 under load, ms",
      `${fmt(load.latency.p50)} / ${fmt(load.latency.p99)}`,
      `p99 < ${TARGETS.p99Load}`,
    ]);
  }
  const peers = results.peers as
    | Record<
      string,
      {
        rounds: Record<string, { rps: number; cpuUsPerWebhook: number }>[];
        sse: { rate: number[]; medianRate: number; medianCpu: number };
        ws: { rate: number[]; medianRate: number; medianCpu: number };
      }
    >
    | undefined;
  for (const [generator, { rounds, sse, ws }] of Object.entries(peers ?? {})) {
    const rps = (key: string) => median(rounds.map((round) => round[key].rps));
    const cpu = (key: string) => median(rounds.map((round) => round[key].cpuUsPerWebhook));
    // `websocks` is the SSE subscriber (smee.io's transport); `websocksWs` a WebSocket one.
    for (
      const [label, kind, ratios] of [["SSE", "websocks", sse], ["WS", "websocksWs", ws]] as const
    ) {
      rows.push([
        `WebSocks (${label}) vs smee.io, ${generator}: accepted/s (medians); rate ratio`,
        `${fmt(rps(kind), 0)} vs ${fmt(rps("smee"), 0)}; median ${fmt(ratios.medianRate)}× (${
          ratios.rate.map((r) => fmt(r)).join(", ")
        })`,
        label === "SSE" ? "≥ 1.5×" : "—",
      ]);
      rows.push([
        `WebSocks (${label}) vs smee.io, ${generator}: server CPU µs per webhook (medians)`,
        `${fmt(cpu(kind), 1)} vs ${fmt(cpu("smee"), 1)}; median ratio ${fmt(ratios.medianCpu)}×`,
        "—",
      ]);
    }
  }
  const consumers = results.consumers as
    | Record<string, { rps: number; latency: Summary; distinct: number; expected: number }>
    | undefined;
  for (const [key, figures] of Object.entries(consumers ?? {})) {
    rows.push([
      `consumers/${key}: accepted/s; POST→client p50 / p99, ms`,
      `${fmt(figures.rps, 0)} (${figures.distinct}/${figures.expected} delivered); ${
        fmt(figures.latency.p50)
      } / ${fmt(figures.latency.p99)}`,
      "—",
    ]);
  }
  if (steady) {
    rows.push([
      `POST→client p50 / p99 at ${STEADY_RATE}/s, ms`,
      `${fmt(steady.latency.p50)} / ${fmt(steady.latency.p99)}`,
      `p99 < ${TARGETS.p99Steady}`,
    ]);
  }
  if (fanout) {
    rows.push([
      `fan-out to ${settings.fanout} WS + ${settings.fanout} SSE, POST→last p50 / p99, ms`,
      `${fmt(fanout.toLast.p50)} / ${fmt(fanout.toLast.p99)}`,
      "—",
    ]);
  }
  if (rss) {
    for (const kind of ["sse", "ws"]) {
      const value = rss[kind];
      if (!value) continue;
      const floor = rss[`${kind}Floor`];
      rows.push([
        `RSS per idle ${kind === "ws" ? "WebSocket" : "SSE"} connection, KiB`,
        `${fmt(value.kibPerConnection, 1)} (${fmt((value.kibPerConnection * 1000) / 1024, 1)} MiB` +
        ` per 1,000${floor ? `; bare Deno.serve: ${fmt(floor.kibPerConnection, 1)}` : ""}` +
        (kind === "sse" && rss.sseSmee
          ? `; smee.io: ${fmt(rss.sseSmee.kibPerConnection, 1)}`
          : "") +
        ")",
        `≤ ${kind === "sse" ? TARGETS.idleSseKiB : TARGETS.idleWsKiB}`,
      ]);
    }
  }
  const fanrate = results.fanrate as
    | {
      rate: number;
      clients: number;
      deliveriesPerSecond: number;
      toLast: Summary;
      missing: number;
      repeats: number;
    }
    | undefined;
  if (fanrate) {
    rows.push([
      `fan-out ${fanrate.rate}/s to ${fanrate.clients} WS: deliveries/s; POST→last p99, ms`,
      `${fmt(fanrate.deliveriesPerSecond, 0)}; ${
        fmt(fanrate.toLast.p99)
      } (missing ${fanrate.missing}, repeated ${fanrate.repeats})`,
      "≥ 100,000",
    ]);
  }
  const scale = results.scale as
    | {
      asked: number;
      opened: number;
      gibAtAsked: number;
      extrapolated: boolean;
      serverOpenFiles: { soft: number };
    }
    | undefined;
  if (scale) {
    rows.push([
      `RSS with ${scale.asked.toLocaleString("en-US")} idle connections, GiB`,
      `${fmt(scale.gibAtAsked)}${
        scale.extrapolated
          ? ` (extrapolated from ${
            scale.opened.toLocaleString("en-US")
          }; descriptor limit ${scale.serverOpenFiles.soft})`
          : ""
      }`,
      "≤ 2",
    ]);
  }
  const cold = results.cold as
    | { toFirst200: Summary; restartToFirst200?: Summary }
    | undefined;
  if (cold) {
    rows.push([
      "cold start to first 200 on /, fresh KV file, median, ms",
      fmt(cold.toFirst200.p50, 0),
      "< 300",
    ]);
    if (cold.restartToFirst200) {
      rows.push([
        "cold start to first 200 on /, restart (same KV file), median, ms",
        fmt(cold.restartToFirst200.p50, 0),
        "< 300",
      ]);
    }
  }
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), 8));
  console.log(
    `| ${"figure".padEnd(widths[0])} | ${"measured".padEnd(widths[1])} | ${
      "target".padEnd(widths[2])
    } |`,
  );
  console.log(`| ${"-".repeat(widths[0])} | ${"-".repeat(widths[1])} | ${"-".repeat(widths[2])} |`);
  for (const row of rows) {
    console.log(
      `| ${row[0].padEnd(widths[0])} | ${row[1].padEnd(widths[1])} | ${row[2].padEnd(widths[2])} |`,
    );
  }
}
