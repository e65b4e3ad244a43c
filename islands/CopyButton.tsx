/// <reference lib="dom" />
/** A button that copies a value (a URL, a token, a snippet) and says that it did. */
import { useSignal } from "@preact/signals";
import { useRef } from "preact/hooks";
import { copyText } from "./clipboard.ts";

/** Props: the text to copy and what it is, for the button's accessible name. */
export interface CopyButtonProps {
  text: string;
  /** What is copied, e.g. "webhook URL": assistive tech hears "Copy webhook URL". */
  what: string;
}

/** Copy button; hidden without JavaScript, where the text stays selectable beside it. */
export default function CopyButton(props: CopyButtonProps) {
  const state = useSignal<"idle" | "copied" | "failed">("idle");
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const copy = async () => {
    state.value = await copyText(props.text) ? "copied" : "failed";
    clearTimeout(timer.current);
    timer.current = setTimeout(() => state.value = "idle", 2000);
  };
  const label = { idle: "Copy", copied: "Copied", failed: "Copy failed" }[state.value];
  return (
    <button
      type="button"
      class={`button small needs-js${state.value === "copied" ? " done" : ""}`}
      onClick={copy}
    >
      <span aria-live="polite">{label}</span>
      <span class="visually-hidden">{` ${props.what}`}</span>
    </button>
  );
}
