import assert from "node:assert/strict";
import { fitOpenFiles, neededOpenFiles, PARTS, readSettings } from "../bench/settings.ts";

const noEnv = () => undefined;

Deno.test("[bench settings] defaults: every part, 10 s, 5,000 idle, 1,000 fan-out, 18,000", () => {
  const settings = readSettings([], noEnv);
  assert.deepEqual(settings, {
    parts: [...PARTS],
    seconds: 10,
    idle: 5000,
    fanout: 1000,
    isolatesIdle: 18_000,
    coldRuns: 10,
    scale: 50_000,
    fanRate: 100,
    fanRateClients: 1000,
    peerRounds: 3,
    consumerVariants: null,
  });
});

Deno.test("[bench settings] flags win over their env forms, which win over defaults", () => {
  const env: Record<string, string> = {
    BENCH_PARTS: "kv",
    BENCH_SECONDS: "4",
    BENCH_IDLE: "300",
    BENCH_FANOUT: "20",
    BENCH_ISOLATES_IDLE: "600",
    BENCH_COLD_RUNS: "3",
    BENCH_SCALE: "900",
    BENCH_FAN_RATE: "10",
    BENCH_FAN_RATE_CLIENTS: "50",
    BENCH_PEER_ROUNDS: "2",
    BENCH_CONSUMERS: "group",
  };
  assert.deepEqual(readSettings([], (name) => env[name]), {
    parts: ["kv"],
    seconds: 4,
    idle: 300,
    fanout: 20,
    isolatesIdle: 600,
    coldRuns: 3,
    scale: 900,
    fanRate: 10,
    fanRateClients: 50,
    peerRounds: 2,
    consumerVariants: ["group"],
  });
  const flags = [
    "--parts=steady, load,steady",
    "--seconds=3",
    "--idle=7",
    "--isolatesIdle=8",
    "--scale=11",
    "--fanRateClients=12",
    "--peerRounds=1",
    "--consumers=group, groupSteady",
  ];
  const settings = readSettings(flags, (name) => env[name]);
  assert.deepEqual(settings.parts, ["steady", "load"]);
  assert.equal(settings.seconds, 3);
  assert.equal(settings.idle, 7);
  assert.equal(settings.fanout, 20);
  assert.deepEqual(settings.consumerVariants, ["group", "groupSteady"]);
  assert.equal(settings.isolatesIdle, 8);
  assert.equal(settings.scale, 11);
  assert.equal(settings.fanRateClients, 12);
  assert.equal(settings.fanRate, 10);
  assert.equal(settings.peerRounds, 1);
});

Deno.test("[bench settings] too few open files shrink idle and fan-out, not the rest", () => {
  const settings = readSettings(["--parts=rss,fanout"], noEnv);
  assert.equal(neededOpenFiles(settings), 5000 + 1000 + 600);
  assert.equal(fitOpenFiles(settings, 100_000), settings);
  assert.deepEqual(fitOpenFiles(settings, 2000), { ...settings, idle: 400, fanout: 700 });
});
