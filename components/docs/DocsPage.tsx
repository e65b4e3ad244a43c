/** The /docs page: the API reference and client examples, filled in with the reader's own URL. */
import type { ComponentChildren } from "preact";
import { CodeBlock } from "../Copyable.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";
import type { Snippet } from "../../lib/web/snippets.ts";

const ENVELOPE_EXAMPLE = `{
  "type": "webhook",
  "id": "01M8HNJH7MCXKWG3R0Q63WYBRS",
  "endpoint": "fQ4z20AiIZKhsSNHITWJug",
  "receivedAt": "2026-11-28T18:09:42.641Z",
  "method": "POST",
  "path": "/",
  "query": {},
  "headers": { "content-type": "application/json", "x-github-event": "push" },
  "contentType": "application/json",
  "eventType": "push",
  "payload": { "event": "user.signup" },
  "body": "{\\"event\\": \\"user.signup\\"}"
}`;

const INGEST_STATUSES: [string, string][] = [
  ["200", '{"ok": true, "id": "<event id>"}: stored durably and pushed to connected clients'],
  ["400", "JSON content type (or none) with a body that does not parse"],
  ["401", "the endpoint enforces its provider's signatures and this one does not verify"],
  ["402", "monthly quota used up; rejected requests are not counted"],
  ["404", "no endpoint with this slug (also after a rotate or delete)"],
  ["405", "HEAD: not a webhook (OPTIONS answers CORS preflights with 204)"],
  ["408", "the body stalled or took too long to arrive"],
  ["413", "body over the size limit"],
  ["414", "path, headers and query together over the metadata limit (431: the headers alone)"],
  ["429", "per-endpoint flood, or too many requests from one address, with Retry-After"],
  ["503", "storage unavailable or the server short of memory, with Retry-After; retry later"],
];

const MANAGEMENT: [string, string][] = [
  ["POST /api/auth/signup {email, password}", "201 with user, endpoint and token, and a cookie"],
  ["POST /api/auth/login {email, password}", "200 with the user, and a cookie"],
  ["POST /api/auth/logout", "ends the session on the server"],
  [
    "GET /api/me",
    "user, endpoints, connected clients, this month's usage (null without manage), the token's access",
  ],
  ["GET /api/tokens", "tokens (never their values), each with its scopes and endpoints"],
  [
    "POST /api/tokens {name, scopes, endpoints}",
    '201 with the value, shown this once; scopes "events:read" (streams, history, resend, ' +
    'clients) and "manage" (tokens, endpoints, billing), both by default; endpoints: only ' +
    "those endpoints' events (stream only), all by default; a missing scope is 403",
  ],
  ["DELETE /api/tokens/:id", "revokes; its open streams close within a second"],
  ["GET /api/endpoints", "endpoints with their URLs"],
  ["POST /api/endpoints {name}", "201 new endpoint"],
  [
    "PATCH /api/endpoints/:slug {respond, respondTimeoutSeconds, provider, secret, verifyToken, enforce}",
    "settings; provider is github, stripe, slack, shopify, standard, svix, zoom, meta, twilio or " +
    "null; the secret is never returned, only secretLast4, and a replaced one stays valid 24 h",
  ],
  ["POST /api/endpoints/:slug/rotate", "new slug; the old one answers 404 from then on"],
  ["DELETE /api/endpoints/:slug", "deletes the endpoint"],
  ["GET /api/events?limit=50&cursor=<id>", "retained events, newest first: {events, nextCursor}"],
  ["GET /api/events/:id", "one retained event as its envelope"],
  [
    "GET /api/events/:id/body",
    "the event's exact body bytes, always as a download (application/octet-stream, attachment)",
  ],
  [
    "POST /api/events/:id/resend",
    "resends a retained event to every connected client (/redeliver, its first name, works too)",
  ],
];

/** A two-column reference table; keys are code unless `code` is false. */
function Table(props: { head: [string, string]; rows: [string, string][]; code?: boolean }) {
  return (
    <div class="table-wrap">
      <table class="list">
        <thead>
          <tr>
            <th scope="col">{props.head[0]}</th>
            <th scope="col">{props.head[1]}</th>
          </tr>
        </thead>
        <tbody>
          {props.rows.map(([key, text]) => (
            <tr key={key}>
              <th scope="row">{props.code === false ? key : <code>{key}</code>}</th>
              <td>{text}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** A section of the page, reachable from the table of contents. */
function Section(props: { id: string; title: string; children: ComponentChildren }) {
  return (
    <section id={props.id} aria-labelledby={`${props.id}-title`}>
      <h2 id={`${props.id}-title`}>{props.title}</h2>
      {props.children}
    </section>
  );
}

/** The limits this server applies that the docs state (from the configuration). */
export interface DocsLimits {
  wsMessagesPerSecond: number;
  wsMessagesBurst: number;
  /** 0: no limit. */
  maxConnectionsPerToken: number;
}

/** /docs; `slug` is the reader's first endpoint, null when logged out or without one. */
export function DocsPage(props: {
  user?: LayoutUser | null;
  slug: string | null;
  webhookUrl: string;
  base: string;
  websocketUrl: string;
  snippets: Snippet[];
  limits: DocsLimits;
}) {
  const { slug, webhookUrl, base, limits } = props;
  const byId = Object.fromEntries(props.snippets.map((s) => [s.id, s]));
  const example = (id: string) => (
    <CodeBlock
      id={`example-${id}`}
      title={byId[id].title}
      code={byId[id].code}
      note={byId[id].install || undefined}
    />
  );
  return (
    <Layout title="Docs: WebSocks" user={props.user} section="docs">
      <h1>Docs</h1>
      <div class="card intro">
        {slug
          ? (
            <p>
              The examples below use your webhook URL{" "}
              <code class="break">{webhookUrl}</code>. Replace <code>YOUR_TOKEN</code>{" "}
              with one of your <a href="/dashboard/tokens">API tokens</a>.
            </p>
          )
          : props.user
          ? (
            <p>
              You have no endpoint yet: <a href="/dashboard/endpoints">create one</a>{" "}
              and the examples fill in its URL. Replace <code>YOUR_TOKEN</code> with an{" "}
              <a href="/dashboard/tokens">API token</a>.
            </p>
          )
          : (
            <p>
              Replace <code>YOUR_SLUG</code> with your endpoint's slug and <code>YOUR_TOKEN</code>
              {" "}
              with an API token. <a href="/login">Log in</a>{" "}
              and the examples are filled in with your own URL.
            </p>
          )}
      </div>
      <nav aria-label="On this page" class="toc">
        <a href="#sending">Sending</a>
        <a href="#envelope">The envelope</a>
        <a href="#sse">SSE</a>
        <a href="#websocket">WebSocket</a>
        <a href="#client-library">Client library</a>
        <a href="#management">Management</a>
        <a href="#examples">Client examples</a>
        <a href="/docs/api">Full API reference (OpenAPI)</a>
      </nav>

      <Section id="sending" title="Sending webhooks">
        <p>
          <code>POST {webhookUrl}</code>, or GET, PUT, PATCH or DELETE: each is a webhook, stored,
          counted and delivered with its <code>method</code> (a GET has no body, so{" "}
          <code>payload: null</code>; its query is in{" "}
          <code>query</code>). Any path below the slug works too, such as{" "}
          <code>/github</code>, and is sent on as{" "}
          <code>path</code>. Every answer for an existing endpoint carries{" "}
          <code>X-Quota-Limit</code>, <code>X-Quota-Remaining</code> and <code>X-Quota-Reset</code>.
        </p>
        <Table head={["Status", "When"]} rows={INGEST_STATUSES} />
        <p>
          JSON bodies are checked and become{" "}
          <code>payload</code>; form bodies become fields; any other type is accepted with{" "}
          <code>payload: null</code>. The raw body is always kept exactly.
        </p>
        {example("curl-send")}
      </Section>

      <Section id="envelope" title="The envelope">
        <p>
          SSE and WebSocket send the same JSON envelope. <code>body</code>{" "}
          is the raw body when it is UTF-8 text; otherwise <code>bodyBase64</code>{" "}
          carries the exact bytes. Ids are unique and sort by arrival, as strings. When the endpoint
          names a provider, <code>verified</code> is{" "}
          <code>{'{"provider": "github", "ok": true}'}</code> or carries <code>"ok": false</code>
          {" "}
          and a{" "}
          <code>reason</code>; a provider's URL handshake that the relay answered itself is marked
          {" "}
          <code>"handshake": true</code> and is not counted against the quota.{" "}
          <code>eventType</code> is the event's type as its provider names it, or null: GitHub's
          {" "}
          <code>X-GitHub-Event</code> plus <code>.action</code>{" "}
          (<code>issues.opened</code>), Shopify's <code>X-Shopify-Topic</code>, Slack's{" "}
          <code>event.type</code>, else the JSON <code>type</code> (Stripe, Standard Webhooks) or
          {" "}
          <code>event</code> field.
        </p>
        <CodeBlock title="Envelope" code={ENVELOPE_EXAMPLE} />
      </Section>

      <Section id="sse" title="Server-Sent Events">
        <p>
          <code>GET {base}/api/events/stream?token=YOUR_TOKEN</code> (or{" "}
          <code>Authorization: Bearer</code>). Each webhook is an unnamed event with{" "}
          <code>id:</code> set to the event id. A reconnect with <code>Last-Event-ID</code>{" "}
          (EventSource sends it by itself) or <code>?lastEventId=</code>{" "}
          first catches up: every retained event after that id, then live ones. When the server
          closes a stream it sends a named <code>close</code> event with a reason.
        </p>
        <p>
          Filters narrow a stream (SSE and WebSocket alike), each repeatable:{" "}
          <code>endpoint=&lt;slug&gt;</code>, <code>event=&lt;pattern&gt;</code> matched against
          {" "}
          <code>eventType</code> with <code>*</code>{" "}
          for any run of characters (<code>invoice.*</code>), <code>method=POST</code> and{" "}
          <code>path=/github</code>{" "}
          (a prefix of the path after the slug). They apply to catch-up too: a stream resuming after
          an id gets exactly the matching events it missed, in order. At most 20 values of 200
          characters each; a bad one gets 400 naming it.
        </p>
        {example("curl-listen")}
      </Section>

      <Section id="websocket" title="WebSocket">
        <p>
          <code>{props.websocketUrl}/?token=YOUR_TOKEN</code> (also <code>/ws</code>). Add{" "}
          <code>&amp;lastEventId=&lt;id&gt;</code> to resume. The client may send{" "}
          <code>{`{"type": "ping"}`}</code> (answered with <code>pong</code>) and{" "}
          <code>{`{"type": "replay", "after": "<id>"}`}</code>{" "}
          to catch up from the log after that id, answered with <code>replayed</code>{" "}
          once done (<code>lastEventId</code> works as well as <code>after</code>);{" "}
          <code>{`{"type": "subscribe", "event": ["invoice.*"]}`}</code>{" "}
          replaces the connection's filters (answered with{" "}
          <code>subscribed</code>; what is already queued still arrives); acks and respond-mode
          answers are accepted only for events sent to that connection. An unknown key is an error
          naming it. A client may send {limits.wsMessagesPerSecond} messages a second (bursts of
          {" "}
          {limits.wsMessagesBurst}; the first ack and answer of each event do not count): past that
          it gets one warning, then the socket is closed. Close codes: <code>1001</code>{" "}
          shutting down, <code>1008</code> too many messages, <code>1009</code> message too large,
          {" "}
          <code>4001</code> token revoked, <code>4004</code>{" "}
          consumer group deleted as it joined (and no room to make it again), <code>4008</code>{" "}
          client too slow. {limits.maxConnectionsPerToken === 0
            ? "A token may hold any number of open streams."
            : `One token may hold ${limits.maxConnectionsPerToken} open streams (429 beyond).`}
        </p>
      </Section>

      <Section id="client-library" title="Client library">
        <p>
          <code>{base}/client/websocks.js</code>{" "}
          is a module with no dependencies, typed (<code>websocks.d.ts</code>{" "}
          beside it), for browsers, Node 22 and Deno. Over WebSocket or SSE, it reconnects with
          jittered backoff, resumes after the last event your handler finished (kept in memory,{" "}
          <code>localStorage</code>{" "}
          or a file), hands events over one at a time and in order, never twice, acks each once your
          handler resolves, answers respond-mode senders with its return value, and reports its
          state: <code>connecting</code>, <code>live</code>, <code>backing-off</code>,{" "}
          <code>closed</code>. A refused token or a bad filter closes it rather than retrying. A
          handler that throws gets the same event again after a backoff.
        </p>
        {example("client")}
      </Section>

      <Section id="management" title="Accounts and management">
        <p>
          Management calls take the dashboard's session cookie or{" "}
          <code>Authorization: Bearer YOUR_TOKEN</code>. Errors are JSON:{" "}
          <code>{`{"error": "<what failed and why>"}`}</code>.
        </p>
        <Table head={["Call", "Result"]} rows={MANAGEMENT} />
      </Section>

      <Section id="examples" title="Client examples">
        {["eventsource", "ws", "sseclient", "websocket-client", "gorilla", "verify"].map(example)}
      </Section>
    </Layout>
  );
}
