/** A confirmation page for a change that cannot be undone: works with or without JavaScript. */
import type { ComponentChildren } from "preact";

/** The question, what will happen, and the two ways out. */
export function Confirm(props: {
  title: string;
  action: string;
  confirmLabel: string;
  cancelHref: string;
  children: ComponentChildren;
}) {
  return (
    <section class="narrow confirm" aria-labelledby="confirm-title">
      <h1 id="confirm-title">{props.title}</h1>
      <div class="warning" role="note">{props.children}</div>
      <form method="post" action={props.action} class="actions">
        <button type="submit" class="button danger">{props.confirmLabel}</button>
        <a href={props.cancelHref} class="button">Cancel</a>
      </form>
    </section>
  );
}
