/**
 * The docs' Node.js clients, run verbatim with the machine's `node` against a real server: the
 * "Node.js Example" (npm package `ws`) and the SSE example on the `eventsource` package the docs
 * recommend (`npm install --save eventsource`). Each script is the docs' code with only the URL and
 * token swapped, followed by a few harness lines that print the payload as JSON and close the
 * client after one webhook, so the process ends by itself.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { forServer, NODE_WS_EXAMPLE, SSE_BROWSER_EXAMPLE } from "./docs_examples.ts";
import { postWebhook, signUp, startTestServer, type TestServer, type TestUser } from "./helpers.ts";

const NODE_MODULES = fileURLToPath(new URL("../node_modules", import.meta.url));
const TIMEOUT_MS = 15_000;
const HARNESS_MARK = "HARNESS payload ";
const PAYLOAD = { event: "user.signup", email: "test@example.com" };

/** What a finished script did. */
interface NodeRun {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** The `payload` the harness printed, parsed. */
  harnessPayload: unknown;
}

/**
 * Writes `source` to a temporary .cjs file and runs it with node (NODE_PATH at the repository's
 * node_modules so `require` finds ws and eventsource). Once stdout shows `readyLine`, `whenReady`
 * runs; then the script must exit by itself within the timeout, or it is killed.
 */
async function runNodeScript(
  source: string,
  options: { readyLine: string; whenReady: () => Promise<void> },
): Promise<NodeRun> {
  const dir = await Deno.makeTempDir({ prefix: "websocks-node-" });
  try {
    const file = join(dir, "example.cjs");
    await Deno.writeTextFile(file, source);
    const child = new Deno.Command("node", {
      args: [file],
      cwd: dir,
      env: { NODE_PATH: NODE_MODULES },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, TIMEOUT_MS);
    try {
      let stdout = "";
      let onOutput = () => {};
      const stdoutDone = (async () => {
        for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
          stdout += chunk;
          onOutput();
        }
        onOutput();
      })();
      const stderrDone = new Response(child.stderr).text();
      const ready = new Promise<boolean>((resolve) => {
        onOutput = () => {
          if (stdout.includes(options.readyLine)) resolve(true);
        };
        stdoutDone.then(() => resolve(stdout.includes(options.readyLine)));
      });
      let readyError: unknown = null;
      if (await ready) {
        await options.whenReady().catch((error) => readyError = error);
      }
      const status = await child.status;
      await stdoutDone;
      const stderr = await stderrDone;
      if (readyError) throw readyError;
      if (timedOut) {
        throw new Error(
          `node did not exit within ${TIMEOUT_MS} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`,
        );
      }
      const mark = stdout.split("\n").find((line) => line.startsWith(HARNESS_MARK));
      return {
        code: status.code,
        signal: status.signal,
        stdout,
        stderr,
        harnessPayload: mark === undefined
          ? undefined
          : JSON.parse(mark.slice(HARNESS_MARK.length)),
      };
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** POSTs the docs' Quick Start payload and checks the 200 JSON acknowledgement. */
async function sendQuickStartWebhook(user: TestUser): Promise<string> {
  const response = await postWebhook(user.webhookUrl, JSON.stringify(PAYLOAD));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json\b/);
  const body = await response.json();
  assert.equal(body.ok, true);
  assert.equal(typeof body.id, "string");
  return body.id;
}

function target(server: TestServer, user: TestUser) {
  return { url: server.url, wsUrl: server.wsUrl, token: user.token };
}

Deno.test("[node] docs ws example receives a webhook", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const source = `${forServer(NODE_WS_EXAMPLE, target(server, user))}

// Test harness, after the untouched example: report the payload, then close after one webhook.
ws.on('message', (data) => {
  console.log(${JSON.stringify(HARNESS_MARK)} + JSON.stringify(JSON.parse(data).payload));
  ws.close();
});
`;
  const run = await runNodeScript(source, {
    readyLine: "Connected to WebSocks WebSocket",
    whenReady: async () => void await sendQuickStartWebhook(user),
  });
  const report = `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`;
  assert.equal(run.code, 0, report);
  assert.equal(run.signal, null, report);
  const lines = run.stdout.split("\n");
  assert.equal(lines[0], "Connected to WebSocks WebSocket", report);
  // The example logs the whole envelope with console.log (util.inspect), so check its shape too.
  assert.ok(lines[1].startsWith("Webhook received: {"), report);
  assert.match(run.stdout, /type: 'webhook'/, report);
  assert.match(run.stdout, /payload: \{ event: 'user\.signup', email: 'test@example\.com' \}/);
  assert.deepEqual(run.harnessPayload, PAYLOAD, report);
  assert.match(run.stdout, /\nDisconnected from WebSocks\n$/, report);
  assert.equal(run.stderr, "", report);
});

Deno.test("[node] docs EventSource example on the eventsource package receives a webhook", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  // eventsource v3+ exports the class by name; the docs' browser code then runs unchanged.
  const source = `const { EventSource } = require('eventsource');
${forServer(SSE_BROWSER_EXAMPLE, target(server, user))}

// Test harness, after the untouched example: report the payload, then close after one webhook.
eventSource.addEventListener('message', (event) => {
  console.log(${JSON.stringify(HARNESS_MARK)} + JSON.stringify(JSON.parse(event.data).payload));
  eventSource.close();
});
`;
  const run = await runNodeScript(source, {
    readyLine: "Connected to WebSocks SSE",
    whenReady: async () => void await sendQuickStartWebhook(user),
  });
  const report = `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`;
  assert.equal(run.code, 0, report);
  assert.equal(run.signal, null, report);
  assert.equal(
    run.stdout,
    "Connected to WebSocks SSE\n" +
      "Webhook received: { event: 'user.signup', email: 'test@example.com' }\n" +
      `${HARNESS_MARK}${JSON.stringify(PAYLOAD)}\n`,
    report,
  );
  assert.deepEqual(run.harnessPayload, PAYLOAD, report);
  assert.equal(run.stderr, "", report);
});
