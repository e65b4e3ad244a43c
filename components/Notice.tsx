/** The flash notice a form handler left for this page, with its once-only secret if any. */
import type { Flash } from "../lib/accounts/flash.ts";
import { CopyField } from "./Copyable.tsx";

/** Shows a flash; a secret is shown in a read-only field with a copy button. */
export function Notice(props: { flash: Flash | null }) {
  const flash = props.flash;
  if (!flash) return null;
  return (
    <div class={`notice ${flash.kind}`} role={flash.kind === "error" ? "alert" : "status"}>
      <p>{flash.message}</p>
      {flash.secret
        ? <CopyField id="flash-secret" label={flash.secret.label} value={flash.secret.value} />
        : null}
    </div>
  );
}
