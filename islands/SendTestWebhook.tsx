/// <reference lib="dom" />
/**
 * "Send a test webhook": a form that the server handles without JavaScript; with it, the
 * browser posts the sample straight to the webhook URL, as any sender would, and shows the answer.
 */
import { useSignal } from "@preact/signals";

/** Props: where to send, the endpoint's slug (for the form fallback) and the sample body. */
export interface SendTestWebhookProps {
  url: string;
  slug: string;
  body: string;
}

type Outcome = { kind: "idle" } | { kind: "sending" } | { kind: "done"; ok: boolean; text: string };

/** The button and its outcome line. */
export default function SendTestWebhook(props: SendTestWebhookProps) {
  const outcome = useSignal<Outcome>({ kind: "idle" });
  const send = async (event: SubmitEvent) => {
    event.preventDefault();
    outcome.value = { kind: "sending" };
    try {
      const response = await fetch(props.url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: props.body,
      });
      const answer = await response.json().catch(() => ({}));
      outcome.value = response.ok
        ? { kind: "done", ok: true, text: `Sent: ${response.status}, event ${answer.id}` }
        : {
          kind: "done",
          ok: false,
          text: `Not accepted: ${response.status} ${answer.error ?? response.statusText}`,
        };
    } catch (error) {
      outcome.value = { kind: "done", ok: false, text: `Cannot send: ${String(error)}` };
    }
  };
  const current = outcome.value;
  return (
    <form method="post" action="/dashboard/test-webhook" class="inline-form" onSubmit={send}>
      <input type="hidden" name="slug" value={props.slug} />
      <button type="submit" class="button" disabled={current.kind === "sending"}>
        Send a test webhook
      </button>
      <span
        class={`outcome${current.kind === "done" && !current.ok ? " error-text" : ""}`}
        role="status"
      >
        {current.kind === "sending" ? "Sending…" : current.kind === "done" ? current.text : ""}
      </span>
    </form>
  );
}
