/** The dashboard's pure parts: island markup, "copy as curl" (run with real curl), snippets. */
import assert from "node:assert/strict";
import { h } from "preact";
import { render } from "preact-render-to-string";
import { loadConfig } from "../lib/runtime/config.ts";
import { curlCommand, shellQuote } from "../lib/shared/curl.ts";
import type { WebhookEnvelope } from "../lib/shared/envelope.ts";
import { jsonForScript, renderPage } from "../lib/web/islands.ts";
import { Island } from "../components/Island.tsx";
import { fillSnippets, README_SNIPPETS } from "../lib/web/snippets.ts";
import { postWebhook, signUp, startTestServer } from "./helpers.ts";

Deno.test("[islands] props JSON cannot end its script element and reads back the same", () => {
  const props = { text: "</script><script>alert(1)</script><!-- & \u2028 \u2029 'quotes' \"" };
  const json = jsonForScript(props);
  assert.doesNotMatch(json, /[<>&\u2028\u2029]/);
  assert.deepEqual(JSON.parse(json), props);
});

Deno.test("[islands] a page loads the bundles of the islands it rendered, and no others", () => {
  const scripts = (name: string) => ({
    src: `/islands/${name}.hash.js`,
    preload: ["/islands/chunk-shared.js"],
  });
  const page = renderPage(
    h(
      "html",
      null,
      h("head", null),
      h(
        "body",
        null,
        h(Island, { name: "CopyButton", props: { text: "a</script>", what: "one" } }),
        h(Island, { name: "CopyButton", props: { text: "b", what: "two" } }),
      ),
    ),
    { scripts },
  );
  assert.equal(
    page.slice(0, page.indexOf("</head>")),
    '<!doctype html><html><head><link rel="modulepreload" href="/islands/chunk-shared.js">' +
      '<script type="module" src="/islands/CopyButton.hash.js"></script>',
  );
  assert.match(
    page,
    /<script type="application\/json" id="island-props-0">\{"text":"a\\u003c\/script\\u003e","what":"one"\}<\/script><div data-island="CopyButton" data-island-props="island-props-0"><button type="button"/,
  );
  assert.match(page, /id="island-props-1">\{"text":"b","what":"two"\}</);
  const plain = renderPage(h("html", null, h("head", null), h("body", null, "no islands")), {
    scripts,
  });
  assert.equal(plain, "<!doctype html><html><head></head><body>no islands</body></html>");
  // Outside renderPage nobody would load the bundle, so rendering an island there is an error.
  assert.throws(
    () => render(h(Island, { name: "CopyButton", props: { text: "", what: "" } })),
    /Cannot render island CopyButton: not inside renderPage/,
  );
});

Deno.test("[curl] shell quoting survives quotes and newlines", async () => {
  const value = `it's "quoted" \\ $HOME \`cmd\`\nline two`;
  const echo = new Deno.Command("bash", { args: ["-c", `printf %s ${shellQuote(value)}`] });
  assert.equal(new TextDecoder().decode((await echo.output()).stdout), value);
});

const hasCurl = await new Deno.Command("curl", { args: ["--version"], stdout: "null" }).output()
  .then((r) => r.success, () => false);

Deno.test({
  name: "[curl] copy as curl sends the same headers and exact body again (text and binary)",
  ignore: !hasCurl,
  fn: async () => {
    await using server = await startTestServer();
    const user = await signUp(server);
    const auth = { Authorization: `Bearer ${user.token}` };
    const bodies: [string, Uint8Array<ArrayBuffer>][] = [
      ["application/json", new TextEncoder().encode(`{"note": "it's \\"fine\\"",\n "x": "é ✓"}`)],
      ["text/plain", new TextEncoder().encode("control \u0001 char, and a NUL \u0000 too")],
      ["application/octet-stream", new Uint8Array([0, 255, 254, 39, 10, 13, 92, 0])],
    ];
    for (const [type, body] of bodies) {
      const sent = await postWebhook(`${user.webhookUrl}/hook?a=1&a=2&b=x%20y`, body, {
        "Content-Type": type,
        "X-Signature": "sha256=abc'def",
      });
      assert.equal(sent.status, 200);
      const { id } = await sent.json();
      const read = await fetch(`${server.url}/api/events/${id}`, { headers: auth });
      assert.equal(read.status, 200);
      const envelope: WebhookEnvelope = await read.json();
      const command = curlCommand(envelope, { publicUrl: server.url });
      const run = await new Deno.Command("bash", {
        args: ["-c", `${command} --silent --show-error`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(run.success, new TextDecoder().decode(run.stderr));
      const again = JSON.parse(new TextDecoder().decode(run.stdout));
      assert.equal(again.ok, true);
      const reread = await fetch(`${server.url}/api/events/${again.id}`, { headers: auth });
      assert.equal(reread.status, 200);
      const copy: WebhookEnvelope = await reread.json();
      assert.equal(copy.body, envelope.body, type);
      assert.equal(copy.bodyBase64, envelope.bodyBase64, type);
      assert.equal(copy.path, "/hook");
      assert.deepEqual(copy.query, { a: ["1", "2"], b: "x y" });
      assert.equal(copy.headers["x-signature"], "sha256=abc'def");
      assert.equal(copy.headers["content-type"], type);
    }
  },
});

Deno.test("[snippets] the docs page's client examples are README's, verbatim", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  for (const snippet of README_SNIPPETS) {
    assert.ok(readme.includes(`\n${snippet.code}\n\`\`\``), `${snippet.id} differs from README.md`);
  }
  const filled = fillSnippets({ publicUrl: "https://hooks.example.com", slug: "abc" });
  const text = filled.map((s) => s.code).join("\n");
  assert.doesNotMatch(text, /localhost:8000|YOUR_SLUG/);
  assert.match(text, /curl -X POST https:\/\/hooks\.example\.com\/api\/in\/abc/);
  assert.match(text, /wss:\/\/hooks\.example\.com\/\?token=YOUR_TOKEN/);
});

Deno.test("[config] log-in limits default to 5 per account and 20 per address in 15 minutes", () => {
  const config = loadConfig({});
  assert.equal(config.loginFailuresPerAccount, 5);
  assert.equal(config.loginFailuresPerAddress, 20);
  assert.equal(config.loginWindowMs, 15 * 60_000);
  assert.equal(config.trustProxy, false);
  assert.equal(config.islandsDir, null);
  assert.throws(
    () => loadConfig({ LOGIN_FAILURES_PER_ACCOUNT: "0" }),
    /LOGIN_FAILURES_PER_ACCOUNT/,
  );
});
