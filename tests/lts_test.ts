/**
 * Running on every supported Deno (2.5 LTS to the pinned 2.9): platform APIs that are not stable
 * everywhere are feature-detected, and a start serves prebuilt island bundles instead of running
 * `deno bundle`. `.ci/run` runs the whole suite under 2.5.7 as well.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { cronUnavailable, detectPlatform, isolatesFor } from "../lib/runtime/platform.ts";
import { bundlesStaleness, writeBundles } from "../lib/web/bundles.ts";
import { ISLAND_MODULES } from "../islands/_registry.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Starts `module` (relative to the project) as a child; resolves with it and its log once it listens. */
async function startChild(module: string, env: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", module],
    cwd: ROOT,
    env: { PORT: "0", HOST: "127.0.0.1", KV_PATH: ":memory:", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const errors = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (stderr += chunk) }),
  );
  const output = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  while (!log.includes("listening")) {
    const { value, done } = await output.read();
    if (done) {
      await errors;
      throw new Error(
        `${module} exited (${(await child.status).code}) before listening:\n${stderr}`,
      );
    }
    log += value;
  }
  const url = /listening on (http:\/\/[\w.:]+)/.exec(log)?.[1];
  assert.ok(url, `no URL in the start-up line: ${log}`);
  return {
    url,
    log: () => log,
    stderr: () => stderr,
    /** SIGTERM, then the exit code once the streams are drained. */
    async stop(): Promise<number> {
      child.kill("SIGTERM");
      const rest = (async () => {
        for (let read = await output.read(); !read.done; read = await output.read()) {
          log += read.value;
        }
      })();
      const { code } = await child.status;
      await Promise.all([rest, errors]);
      return code;
    },
  };
}

Deno.test("[lts] WORKERS > 1 without BroadcastChannel serves with one isolate and says why", async () => {
  const dir = await Deno.makeTempDir();
  try {
    writeBundles(dir, ISLAND_MODULES);
    const server = await startChild("tests/without_broadcast_channel.ts", {
      WORKERS: "2",
      ISLANDS_DIR: dir,
    });
    const page = await fetch(`${server.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    // One isolate: no cluster, so no X-WebSocks-Isolate naming which one answered.
    assert.equal(page.headers.get("x-websocks-isolate"), null);
    await page.body?.cancel();
    assert.equal(await server.stop(), 0);
    assert.match(server.stderr(), /WORKERS=2 needs BroadcastChannel .*serving with one isolate/);
    assert.match(server.log(), /WebSocks starting 1 isolate\n/);
    assert.match(server.log(), /1 isolate, broker process/);
    // Prebuilt and current: the start never ran the bundler.
    assert.doesNotMatch(server.log() + server.stderr(), /deno bundle|out of date/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[lts] platform detection: one isolate when BroadcastChannel or a shared port is missing", () => {
  const here = detectPlatform();
  // The suite runs with deno.json's unstable flags, on 2.5 and on the pinned version.
  assert.deepEqual(
    { broadcastChannel: here.broadcastChannel, sharedPort: here.sharedPort, cron: here.cron },
    { broadcastChannel: true, sharedPort: true, cron: true },
  );
  assert.equal(here.kv, true);
  assert.equal(here.deno, Deno.version.deno);

  const bare = detectPlatform({}, { version: { deno: "2.5.7" } });
  assert.deepEqual(bare, {
    deno: "2.5.7",
    broadcastChannel: false,
    sharedPort: false,
    cron: false,
    kv: false,
  });
  assert.deepEqual(isolatesFor(4, here), { workers: 4, warning: null });
  assert.deepEqual(isolatesFor(1, bare), { workers: 1, warning: null });
  const fallback = isolatesFor(4, { ...here, broadcastChannel: false, deno: "2.5.7" });
  assert.equal(fallback.workers, 1);
  assert.match(fallback.warning ?? "", /^WORKERS=4 needs BroadcastChannel .* Deno 2\.5\.7 /);
  assert.doesNotMatch(fallback.warning ?? "", /--unstable-net/);
  assert.match(isolatesFor(2, { ...here, sharedPort: false }).warning ?? "", /--unstable-net/);
  assert.equal(cronUnavailable(here), null);
  assert.match(cronUnavailable(bare) ?? "", /Deno\.cron is not available in Deno 2\.5\.7/);
});

Deno.test("[lts] prebuilt bundles are stale when their manifest, an island or a source changes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.match(bundlesStaleness(dir, ISLAND_MODULES) ?? "", /has no manifest\.json/);
    writeBundles(dir, ISLAND_MODULES);
    assert.equal(bundlesStaleness(dir, ISLAND_MODULES), null);
    const manifestPath = `${dir}/manifest.json`;
    const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
    // What the bundles were built from: the islands, what they import, the build's settings.
    for (const file of ["islands/_hydrate.ts", "lib/shared/envelope.ts", "package-lock.json"]) {
      assert.ok(manifest.sources.files.includes(file), file);
    }
    assert.ok(!manifest.sources.files.some((file: string) => file.startsWith("node_modules")));

    const rewrite = (changed: object) =>
      Deno.writeTextFileSync(manifestPath, JSON.stringify({ ...manifest, ...changed }));
    // A source edited since the build: its hash no longer matches.
    rewrite({ sources: { ...manifest.sources, hash: "0".repeat(64) } });
    assert.match(bundlesStaleness(dir, ISLAND_MODULES) ?? "", /built from other sources/);
    // A source gone (renamed or deleted).
    rewrite({ sources: { ...manifest.sources, files: [...manifest.sources.files, "gone.ts"] } });
    assert.match(bundlesStaleness(dir, ISLAND_MODULES) ?? "", /built from other sources/);
    // An island added since the build.
    const { CopyButton: _, ...entries } = manifest.entries;
    rewrite({ entries });
    assert.match(bundlesStaleness(dir, ISLAND_MODULES) ?? "", /has no bundle of CopyButton/);
    // A manifest from before sources were recorded.
    rewrite({ sources: undefined });
    assert.match(bundlesStaleness(dir, ISLAND_MODULES) ?? "", /does not say what it was built/);
    rewrite({});
    assert.equal(bundlesStaleness(dir, ISLAND_MODULES), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("[lts] build --if-stale builds once, then leaves current bundles alone", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A file of an older build, and one that is not a build's: only the first goes.
    await Deno.writeTextFile(`${dir}/chunk-OLD0OLD0.js`, "old");
    await Deno.writeTextFile(`${dir}/notes.js`, "mine");
    const build = async () => {
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "build.ts", dir, "--if-stale"],
        cwd: ROOT,
      }).output();
      assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
      return new TextDecoder().decode(result.stdout);
    };
    assert.match(await build(), /Building island bundles: .*has no manifest\.json/);
    const files = async () => {
      const names = [];
      for await (const item of Deno.readDir(dir)) names.push(item.name);
      return names.sort();
    };
    const built = await files();
    assert.ok(!built.includes("chunk-OLD0OLD0.js"));
    assert.ok(built.includes("notes.js"));
    const mtime = (await Deno.stat(`${dir}/manifest.json`)).mtime;
    assert.match(await build(), /Island bundles in .* are up to date/);
    assert.deepEqual(await files(), built);
    assert.deepEqual((await Deno.stat(`${dir}/manifest.json`)).mtime, mtime);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
