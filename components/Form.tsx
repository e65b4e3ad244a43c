/** Form parts: labelled fields with their error next to them, and form-level messages. */
import type { ComponentChildren } from "preact";

/** A labelled input; `error` is shown under it and tied to it for assistive tech. */
export function Field(props: {
  name: string;
  label: string;
  type?: "text" | "email" | "password";
  value?: string;
  error?: string;
  hint?: string;
  autocomplete?: string;
  /** The on-screen keyboard to offer, e.g. "numeric" for a count typed as text. */
  inputMode?: "numeric";
  required?: boolean;
  minLength?: number;
  maxLength?: number;
  autofocus?: boolean;
}) {
  const id = `field-${props.name}`;
  const described = [props.hint ? `${id}-hint` : "", props.error ? `${id}-error` : ""]
    .filter(Boolean).join(" ");
  return (
    <div class={`field${props.error ? " invalid" : ""}`}>
      <label for={id}>{props.label}</label>
      <input
        id={id}
        name={props.name}
        // Preact's types tie some attributes to one input type; these three share all we set.
        type={(props.type ?? "text") as "text"}
        value={props.value}
        autocomplete={props.autocomplete}
        inputMode={props.inputMode}
        required={props.required}
        minLength={props.minLength}
        maxLength={props.maxLength}
        autofocus={props.autofocus}
        aria-invalid={props.error ? "true" : undefined}
        aria-describedby={described || undefined}
      />
      {props.hint ? <p id={`${id}-hint`} class="hint">{props.hint}</p> : null}
      {props.error ? <p id={`${id}-error`} class="field-error">{props.error}</p> : null}
    </div>
  );
}

/** A message about the whole form (e.g. rate limiting), announced when the page loads. */
export function FormAlert(props: { children: ComponentChildren }) {
  return <p class="form-alert" role="alert">{props.children}</p>;
}

/** The card that creates something named (a token, an endpoint), with its form and errors. */
export function CreateNamedCard(props: {
  id: string;
  title: string;
  action: string;
  button: string;
  hint: string;
  name?: string;
  error?: string;
}) {
  return (
    <section class="card" aria-labelledby={props.id}>
      <h2 id={props.id}>{props.title}</h2>
      <form method="post" action={props.action} class="inline-fields" novalidate>
        <Field
          name="name"
          label="Name"
          value={props.name}
          error={props.error}
          hint={props.hint}
          required
          maxLength={100}
        />
        <button type="submit" class="button primary">{props.button}</button>
      </form>
    </section>
  );
}
