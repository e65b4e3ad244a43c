/** The landing page: what WebSocks does, the three steps, and a quick start. */
import { CodeBlock } from "../Copyable.tsx";
import { Layout, type LayoutUser } from "../Layout.tsx";

/** What the landing page promises. */
const FEATURES = [
  {
    title: "Byte-exact",
    text: "The original body is kept and delivered as received, so X-Hub-Signature-256, " +
      "Stripe-Signature and friends still verify on your side.",
  },
  {
    title: "Nothing lost, nothing twice",
    text: "Events live in a durable log. A client that reconnects with its last event id gets " +
      "everything it missed, in order, then live events.",
  },
  {
    title: "Honest liveness",
    text: "Streams carry heartbeats and WebSockets are pinged, so a dead connection is found " +
      "and closed instead of looking connected.",
  },
  {
    title: "Honest answers",
    text: "Senders get a real status: 200 with the event id once it is durable, 402 over " +
      "quota, 413 over the body limit, 429 when flooding.",
  },
];

/** `/`; the quick start uses this server's URLs. */
export function HomePage(props: {
  user?: LayoutUser | null;
  /** The webhook URL of a placeholder slug. */
  sendUrl: string;
  /** The WebSocket URL, without a token. */
  websocketUrl: string;
}) {
  return (
    <Layout title="WebSocks: webhooks, delivered live" user={props.user} section="home">
      <section class="hero">
        <h1>Webhooks, delivered live.</h1>
        <p class="lead">
          Point any sender at your WebSocks URL. Every request is stored durably and pushed within
          milliseconds to your clients over Server-Sent Events or WebSocket, byte for byte, so
          signatures still verify. Clients that were away catch up when they reconnect.
        </p>
        <p class="actions">
          {props.user
            ? <a class="button primary large" href="/dashboard">Open your dashboard</a>
            : (
              <>
                <a class="button primary large" href="/signup">Sign up free</a>
                <a class="button large" href="/login">Log in</a>
              </>
            )}
        </p>
      </section>
      <section aria-labelledby="steps-title">
        <h2 id="steps-title">From sign-up to a webhook on screen in a minute</h2>
        <ol class="steps">
          <li>
            <strong>Sign up</strong>
            <span>An email and a password. Your webhook URL is ready at once.</span>
          </li>
          <li>
            <strong>Copy your URL</strong>
            <span>
              Paste it into GitHub, Stripe, Slack or any sender, or press "Send a test".
            </span>
          </li>
          <li>
            <strong>Watch it arrive</strong>
            <span>
              The dashboard lists each request live: headers, payload, raw body, resend.
            </span>
          </li>
        </ol>
      </section>
      <section aria-labelledby="features-title">
        <h2 id="features-title">Built for production traffic</h2>
        <ul class="features">
          {FEATURES.map((feature) => (
            <li key={feature.title}>
              <h3>{feature.title}</h3>
              <p>{feature.text}</p>
            </li>
          ))}
        </ul>
      </section>
      <section aria-labelledby="quick-title">
        <h2 id="quick-title">Quick start</h2>
        <CodeBlock
          title="Send a webhook"
          code={`curl -X POST ${props.sendUrl} \\
  -H "Content-Type: application/json" \\
  -d '{"event": "user.signup", "email": "test@example.com"}'`}
        />
        <CodeBlock
          title="Receive it in your app"
          code={`const ws = new WebSocket("${props.websocketUrl}?token=YOUR_TOKEN");
ws.onmessage = (event) => console.log(JSON.parse(event.data));`}
        />
        <p>
          More clients (EventSource, Python, Go) and every API call are in the{" "}
          <a href="/docs">docs</a>.
        </p>
      </section>
    </Layout>
  );
}
