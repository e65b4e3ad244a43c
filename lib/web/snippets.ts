/**
 * Client snippets for the docs page, copied verbatim from README.md (a test keeps them equal),
 * written against http://localhost:8000 and filled in with the reader's own server and URL.
 */
import { websocketUrl } from "../endpoints/urls.ts";

/** One example: what it shows, how to install what it needs, and its code. */
export interface Snippet {
  id: string;
  title: string;
  language: "sh" | "js" | "python" | "go";
  install: string;
  code: string;
}

/** The README's origin, replaced by the server's own in `fillSnippets`. */
export const README_ORIGIN = "http://localhost:8000";

/** The language examples exactly as README.md has them. */
export const README_SNIPPETS: Snippet[] = [
  {
    id: "client",
    title: "The client library in a browser page",
    language: "js",
    install: "Nothing: the relay serves it at /client/websocks.js (no dependencies, typed)",
    code:
      `import { localStorageStorage, subscribe } from "http://localhost:8000/client/websocks.js";

const subscription = subscribe({
  url: "http://localhost:8000",
  token: "YOUR_TOKEN",
  event: ["invoice.*"], // optional filters: endpoint, event, method, path
  storage: localStorageStorage("websocks-last-id"),
  onState: (state, info) => console.log("connection:", state, info.error?.message ?? ""),
  onWebhook: async (webhook) => {
    console.log("Webhook received:", webhook.id, webhook.payload);
    // For an endpoint in respond mode, the sender gets what this returns.
    if (webhook.respond) return { status: 200, body: { ok: true } };
  },
});
// subscription.state; await subscription.close();`,
  },
  {
    id: "eventsource",
    title: "JavaScript (browser EventSource)",
    language: "js",
    install:
      "Nothing in the browser; in Node.js, npm install eventsource and take EventSource from it",
    code:
      `const source = new EventSource("http://localhost:8000/api/events/stream?token=YOUR_TOKEN");
source.onmessage = (event) => {
  const webhook = JSON.parse(event.data);
  console.log("Webhook received:", webhook.payload);
};
// EventSource reconnects by itself and sends Last-Event-ID, so nothing is missed.`,
  },
  {
    id: "ws",
    title: "JavaScript with ws, resuming after a drop",
    language: "js",
    install: `npm install ws`,
    code: `const WebSocket = require("ws");
let lastId = null;
function connect() {
  const resume = lastId ? \`&lastEventId=\${lastId}\` : "";
  const ws = new WebSocket(\`ws://localhost:8000/?token=YOUR_TOKEN\${resume}\`);
  ws.on("message", (data) => {
    const message = JSON.parse(data);
    if (message.type !== "webhook") return;
    lastId = message.id;
    console.log("Webhook received:", message.payload);
  });
  ws.on("close", () => setTimeout(connect, 1000));
}
connect();`,
  },
  {
    id: "sseclient",
    title: "Python with sseclient-py",
    language: "python",
    install: `pip install sseclient-py requests`,
    code: `import json
import requests
import sseclient

response = requests.get(
    "http://localhost:8000/api/events/stream",
    params={"token": "YOUR_TOKEN"},
    stream=True,
    headers={"Accept": "text/event-stream"},
)
for event in sseclient.SSEClient(response).events():
    if event.event == "message":
        webhook = json.loads(event.data)
        print("Webhook received:", webhook["payload"])`,
  },
  {
    id: "websocket-client",
    title: "Python with websocket-client",
    language: "python",
    install: `pip install websocket-client`,
    code: `import json
import websocket

def on_message(ws, message):
    webhook = json.loads(message)
    if webhook["type"] == "webhook":
        print("Webhook received:", webhook["payload"])

ws = websocket.WebSocketApp("ws://localhost:8000/?token=YOUR_TOKEN", on_message=on_message)
ws.run_forever(reconnect=5)`,
  },
  {
    id: "gorilla",
    title: "Go with gorilla/websocket",
    language: "go",
    install: `go get github.com/gorilla/websocket`,
    code: `package main

import (
	"encoding/json"
	"log"

	"github.com/gorilla/websocket"
)

func main() {
	conn, _, err := websocket.DefaultDialer.Dial("ws://localhost:8000/?token=YOUR_TOKEN", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			log.Fatal(err)
		}
		var webhook struct {
			Type    string          \`json:"type"\`
			ID      string          \`json:"id"\`
			Payload json.RawMessage \`json:"payload"\`
			Body    string          \`json:"body"\`
		}
		if err := json.Unmarshal(data, &webhook); err == nil && webhook.Type == "webhook" {
			log.Printf("Webhook received: %s %s", webhook.ID, webhook.Payload)
		}
	}
}`,
  },
  {
    id: "verify",
    title: "Verifying a GitHub signature (Node.js)",
    language: "js",
    install: "",
    code: `const crypto = require("node:crypto");
const expected = "sha256=" +
  crypto.createHmac("sha256", process.env.GITHUB_SECRET).update(webhook.body, "utf8").digest("hex");
const ok = crypto.timingSafeEqual(
  Buffer.from(expected),
  Buffer.from(webhook.headers["x-hub-signature-256"]),
);`,
  },
];

/** The curl examples: send to the webhook URL, listen on the SSE stream. */
function curlSnippets(): Snippet[] {
  return [
    {
      id: "curl-send",
      title: "Send a webhook with curl",
      language: "sh",
      install: "",
      code: `curl -X POST ${README_ORIGIN}/api/in/YOUR_SLUG \\
  -H "Content-Type: application/json" \\
  -d '{"event": "user.signup", "email": "test@example.com"}'`,
    },
    {
      id: "curl-listen",
      title: "Listen with curl (Server-Sent Events)",
      language: "sh",
      install: "",
      code: `curl -N "${README_ORIGIN}/api/events/stream?token=YOUR_TOKEN"`,
    },
  ];
}

/**
 * Every snippet pointed at `publicUrl` (webhook URLs at `ingestUrl` when set), with `slug` for
 * YOUR_SLUG when the reader has one.
 */
export function fillSnippets(
  options: { publicUrl: string; ingestUrl?: string | null; slug: string | null },
): Snippet[] {
  const wsOrigin = README_ORIGIN.replace(/^http/, "ws");
  const ingest = `${options.ingestUrl ?? options.publicUrl}/api/in/`;
  return [...curlSnippets(), ...README_SNIPPETS].map((snippet) => {
    let code = snippet.code
      .replaceAll(`${README_ORIGIN}/api/in/`, ingest)
      .replaceAll(wsOrigin, websocketUrl(options.publicUrl))
      .replaceAll(README_ORIGIN, options.publicUrl);
    if (options.slug) code = code.replaceAll("YOUR_SLUG", options.slug);
    return { ...snippet, code };
  });
}
