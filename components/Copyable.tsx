/** Values people copy: a read-only field or a code block, each with a copy button. */
import { Island } from "./Island.tsx";

/** A read-only, selectable value (a URL, a token) with a copy button beside it. */
export function CopyField(
  props: { id: string; label: string; value: string; hideLabel?: boolean },
) {
  return (
    <div class="copy-field">
      <label for={props.id} class={props.hideLabel ? "visually-hidden" : undefined}>
        {props.label}
      </label>
      <div class="copy-row">
        <input id={props.id} class="mono" readOnly value={props.value} spellcheck={false} />
        <Island name="CopyButton" props={{ text: props.value, what: props.label }} />
      </div>
    </div>
  );
}

/** A titled code sample with a copy button. */
export function CodeBlock(props: { title: string; code: string; note?: string; id?: string }) {
  return (
    <figure class="code-block" id={props.id}>
      <figcaption>
        <span>{props.title}</span>
        <Island name="CopyButton" props={{ text: props.code, what: `${props.title} code` }} />
      </figcaption>
      {props.note ? <p class="code-note">{props.note}</p> : null}
      <pre><code>{props.code}</code></pre>
    </figure>
  );
}
