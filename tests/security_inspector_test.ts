/**
 * Issue 10, findings 8 and 9: "copy as curl" and the inspector are safe with any body a sender
 * chooses. The curl commands are run by real bash and dash against a loopback receiver; the
 * inspector is driven in headless Chromium against a real server.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { curlCommand } from "../lib/shared/curl.ts";
import type { WebhookEnvelope } from "../lib/shared/envelope.ts";
import { prettyJson } from "../lib/shared/json_view.ts";
import { fetchRouted, launchChromium, saveScreenshot } from "./chromium.ts";
import { type MessageQueue, messageQueue, signUp, startTestServer } from "./helpers.ts";

const WAIT_MS = 15_000;
/** Linux refuses any single argument longer than this (MAX_ARG_STRLEN). */
const MAX_ARG_STRLEN = 128 * 1024;
const DEPTH = 20_000;

const hasCurl = await new Deno.Command("curl", { args: ["--version"], stdout: "null" }).output()
  .then((r) => r.success, () => false);
if (!hasCurl) console.warn("curl is not installed: the [curl] tests are skipped");

/** One request as the receiver saw it. */
interface Received {
  method: string;
  path: string;
  body: Uint8Array;
  headers: Headers;
}

/** A loopback HTTP server that records each request; closed when disposed. */
function startReceiver() {
  const received = messageQueue<Received>("request at the receiver");
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      received.push({
        method: request.method,
        path: new URL(request.url).pathname,
        body: new Uint8Array(await request.arrayBuffer()),
        headers: request.headers,
      });
      return new Response("received\n");
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    received,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

function envelopeWith(fields: Partial<WebhookEnvelope>): WebhookEnvelope {
  return {
    type: "webhook",
    id: "01JTEST0000000000000000000",
    endpoint: "slug",
    receivedAt: new Date().toISOString(),
    method: "POST",
    path: "/hook",
    query: {},
    headers: { "content-type": "text/plain" },
    contentType: "text/plain",
    payload: null,
    ...fields,
  };
}

/** Runs a command the way a person would paste it: `-c` for short ones, a script file otherwise. */
async function runShell(shell: "bash" | "sh", command: string): Promise<void> {
  // `-c` takes the command as one argument, itself under MAX_ARG_STRLEN; a script file is not.
  const file = command.length < MAX_ARG_STRLEN / 2 ? null : await Deno.makeTempFile();
  try {
    if (file) await Deno.writeTextFile(file, command + "\n");
    const run = await new Deno.Command(shell, {
      args: file ? [file] : ["-c", command],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assert.ok(run.success, `${shell} failed (${run.code}): ${stderr.slice(-2000)}`);
  } finally {
    if (file) await Deno.remove(file);
  }
}

/** Runs the command in bash and in sh (dash); each run must deliver exactly `body`, once. */
async function assertDelivers(envelope: WebhookEnvelope, body: Uint8Array, path = "/hook") {
  await using receiver = startReceiver();
  const command = curlCommand(envelope, { publicUrl: receiver.url });
  for (const shell of ["bash", "sh"] as const) {
    await runShell(shell, command);
    const got = await receiver.received.next(WAIT_MS);
    assert.equal(got.method, envelope.method, shell);
    assert.equal(got.path, `/api/in/slug${path}`, shell);
    assert.equal(got.body.byteLength, body.byteLength, `${shell}: body length`);
    assert.ok(got.body.every((byte, i) => byte === body[i]), `${shell}: body bytes differ`);
  }
  await assertNothingMore(receiver.received);
  return command;
}

/** No further request arrives (curl has exited, so anything it sent is already recorded). */
async function assertNothingMore(received: MessageQueue<Received>) {
  const extra = await received.next(0).then((r) => r.path, () => null);
  assert.equal(extra, null, "the command sent more than one request");
}

function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 65_536) crypto.getRandomValues(bytes.subarray(i, i + 65_536));
  return bytes;
}

Deno.test({
  name: "[curl] a body starting with @ is sent as those bytes, not as a local file (bash, sh)",
  ignore: !hasCurl,
  fn: async () => {
    for (const text of ["@/etc/passwd", "@-", "@/etc/hostname\nsecond line"]) {
      const command = await assertDelivers(
        envelopeWith({ body: text }),
        new TextEncoder().encode(text),
      );
      assert.ok(!command.includes(`'${text}`), command);
    }
  },
});

Deno.test({
  name: "[curl] a 1 MiB body, text or binary, makes a command that runs (bash, sh)",
  ignore: !hasCurl,
  fn: async () => {
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 '\"$`\\{}[]!\n";
    const text = Array.from(randomBytes(1024 * 1024), (b) => alphabet[b % alphabet.length])
      .join("");
    const binary = randomBytes(1024 * 1024);
    for (
      const [envelope, bytes] of [
        [envelopeWith({ body: text }), new TextEncoder().encode(text)],
        [envelopeWith({ bodyBase64: binary.toBase64() }), binary],
      ] as const
    ) {
      const command = await assertDelivers(envelope, bytes);
      // Pasted into a terminal line by line, so no line is anywhere near an argument's limit.
      const longest = Math.max(...command.split("\n").map((line) => line.length));
      assert.ok(longest < 1000, `a line of ${longest} characters`);
    }
  },
});

Deno.test({
  name: "[curl] sender-chosen text survives: tabs, carriage returns, trailing newlines, empty",
  ignore: !hasCurl,
  fn: async () => {
    for (const text of ["a\tb\r\nc\n\n", '{"x": 1}', "é ✓ 'quoted'", "\u0085 C1 control"]) {
      await assertDelivers(envelopeWith({ body: text }), new TextEncoder().encode(text));
    }
    await assertDelivers(envelopeWith({ body: "" }), new Uint8Array());
    // A path with curl's glob characters is sent as one request to that literal path.
    await assertDelivers(
      envelopeWith({ body: "x", path: "/range[1-3]" }),
      new TextEncoder().encode("x"),
      "/range[1-3]",
    );
  },
});

Deno.test("[curl] small plain text stays readable on the command line; odd methods are quoted", () => {
  const command = curlCommand(envelopeWith({ body: '{"a": "it\'s"}' }), {
    publicUrl: "https://hooks.example.com",
  });
  assert.match(command, /^curl -X POST 'https:\/\/hooks\.example\.com\/api\/in\/slug\/hook'/);
  assert.ok(command.includes(`--data-binary '{"a": "it'\\''s"}'`), command);
  const odd = curlCommand(envelopeWith({ method: "A|`id`", body: "" }), {
    publicUrl: "https://hooks.example.com",
  });
  assert.match(odd, /^curl -X 'A\|`id`' /);
});

Deno.test("[json view] pretty text equals JSON.stringify with 2 spaces for ordinary payloads", () => {
  const values: unknown[] = [
    { event: "order.paid", order: { id: 42, items: ["sock", "sock"], empty: {}, none: [] } },
    [1, -0, 1.5e300, 'quote " and \\ and \n and \u2028', true, false, null, [[], [{}]]],
    { "": "", "10": "integer keys first", b: { c: { d: [1, { e: null }] } } },
    { fields: ["a", "b"], single: "x" },
    "just a string",
    7,
    [],
    {},
  ];
  for (const value of values) {
    const shown = prettyJson(value, { maxDepth: 100, maxChars: 1_000_000 });
    assert.equal(shown.text, JSON.stringify(value, null, 2));
    assert.equal(shown.cut, false);
    assert.equal(shown.deep, false);
  }
});

Deno.test("[json view] 20,000 nested arrays render, pretty to the depth limit, then on one line", () => {
  const body = "[".repeat(DEPTH) + "]".repeat(DEPTH);
  const value = JSON.parse(body);
  assert.throws(() => JSON.stringify(value, null, 2), RangeError); // what the inspector used
  const shown = prettyJson(value, { maxDepth: 100, maxChars: 1_000_000 });
  assert.equal(shown.deep, true);
  assert.equal(shown.cut, false);
  const lines = shown.text.split("\n");
  // 100 opening lines, the 101st level and below on one line, 100 closing lines.
  assert.equal(lines.length, 201);
  assert.equal(lines[99], `${"  ".repeat(99)}[`);
  assert.equal(lines[100], "  ".repeat(100) + "[".repeat(DEPTH - 100) + "]".repeat(DEPTH - 100));
  assert.equal(lines[200], "]");
  // It is still the same JSON.
  assert.equal(JSON.stringify(JSON.parse(shown.text)), body);
  // Objects too, and far deeper than any stack.
  const deeper = JSON.parse('{"a":'.repeat(200_000) + "1" + "}".repeat(200_000));
  const text = prettyJson(deeper, { maxDepth: 3, maxChars: 10_000_000 }).text;
  assert.equal(text.split("\n").length, 7);
});

Deno.test("[json view] long output is cut at maxChars", () => {
  const value = Array.from({ length: 100_000 }, (_, i) => ({ i }));
  const shown = prettyJson(value, { maxDepth: 100, maxChars: 5000 });
  assert.equal(shown.cut, true);
  assert.equal(shown.text, JSON.stringify(value, null, 2).slice(0, 5000));
});

/** A signed-in dashboard page in Chromium; fails on any page error or console error. */
async function withInspector(
  name: string,
  body: (t: { page: Page; webhookUrl: string; serverUrl: string }) => Promise<void>,
) {
  await using server = await startTestServer();
  const user = await signUp(server);
  let browser: Browser | null = null;
  let page: Page | null = null;
  const problems: string[] = [];
  try {
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(WAIT_MS);
    await context.addCookies(
      user.cookie.split("; ").map((pair) => {
        const at = pair.indexOf("=");
        return { name: pair.slice(0, at), value: pair.slice(at + 1), url: server.url };
      }),
    );
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console error: ${message.text()}`);
    });
    await page.goto(`${server.url}/dashboard`);
    await page.locator(".status[data-status=live]").waitFor();
    await body({ page, webhookUrl: user.webhookUrl, serverUrl: server.url });
    assert.deepEqual(problems, [], "the page reported errors");
  } catch (error) {
    if (page) await saveScreenshot(page, name);
    if (problems.length) console.error(problems.join("\n"));
    throw error;
  } finally {
    await browser?.close();
  }
}

async function post(url: string, body: string): Promise<string> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body,
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  return (await response.json()).id;
}

Deno.test("[inspector] a 20,000-deep JSON body is shown, and the inspector keeps working", async () => {
  await withInspector("inspector deep json", async ({ page, webhookUrl }) => {
    const deepBody = "[".repeat(DEPTH) + "]".repeat(DEPTH);
    const deepId = await post(`${webhookUrl}/deep`, deepBody);
    await page.locator(`.event-row[data-id="${deepId}"]`).click();
    await page.getByText("Values nested deeper than 100 levels are shown on one line.").waitFor();
    assert.equal(await page.getByTestId("raw-body").innerText(), deepBody);
    const payload = await page.getByTestId("payload").innerText();
    assert.equal(payload.split("\n").length, 201);
    assert.equal(JSON.stringify(JSON.parse(payload)), deepBody);

    // Another, ordinary webhook arrives and opens as usual; the deep one opens again too.
    const id = await post(`${webhookUrl}/normal`, '{"ok":true,"n":[1,2]}');
    await page.locator(`.event-row[data-id="${id}"]`).click();
    await page.getByTestId("payload").getByText('"ok": true').waitFor();
    assert.equal(
      await page.getByTestId("payload").innerText(),
      JSON.stringify({ ok: true, n: [1, 2] }, null, 2),
    );
    await page.locator(`.event-row[data-id="${deepId}"]`).click();
    await page.getByText("Values nested deeper than 100 levels are shown on one line.").waitFor();
  });
});

Deno.test("[inspector] an event whose details cannot be shown breaks only its own pane", async () => {
  await withInspector("inspector bad event", async ({ page, webhookUrl, serverUrl }) => {
    const badId = await post(`${webhookUrl}/bad`, '{"bad":true}');
    const goodId = await post(`${webhookUrl}/good`, '{"good":true}');
    // Loaded from history, the envelopes are fetched on selection; one comes back malformed.
    await page.route(`${serverUrl}/api/events/${badId}`, async (route) => {
      const response = await fetchRouted(route);
      const envelope = await response.json();
      await route.fulfill({ status: response.status, json: { ...envelope, headers: null } });
    });
    await page.reload();
    await page.locator(".status[data-status=live]").waitFor();
    await page.locator(`.event-row[data-id="${badId}"]`).click();
    await page.getByText(/Cannot show this event's details/).waitFor();
    assert.equal(await page.getByTestId("raw-body").innerText(), '{"bad":true}');
    await page.locator(`.event-row[data-id="${goodId}"]`).click();
    await page.getByTestId("payload").getByText('"good": true').waitFor();
  });
});

Deno.test({
  name:
    "[curl] header values with control characters are pasted as escapes and sent exact (bash, sh)",
  ignore: !hasCurl,
  fn: async () => {
    // A stranger's webhook chose these header values; the owner pastes the command into a
    // terminal, where C1 controls (CSI, OSC) and tabs act before the shell sees them.
    const values = {
      "X-Controls": "a\u009d52;c\u009c\u009b2J\tb",
      "X-Latin": "caf\u00e9 50% \\n",
      "-Dash": "x\ty",
    };
    const command = curlCommand(envelopeWith({ headers: values }), { publicUrl: "http://x" });
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(command.replaceAll("\n", ""), /[\u0000-\u001f\u007f-\u009f]/);
    await using receiver = startReceiver();
    const live = curlCommand(envelopeWith({ headers: values }), { publicUrl: receiver.url });
    for (const shell of ["bash", "sh"] as const) {
      await runShell(shell, live);
      const got = await receiver.received.next(WAIT_MS);
      for (const [name, value] of Object.entries(values)) {
        assert.equal(got.headers.get(name), value, `${shell}: ${name}`);
      }
    }
  },
});
