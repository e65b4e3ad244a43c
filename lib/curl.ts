/** "Copy as curl": a shell command that sends a stored webhook again, headers and exact body. */
import { envelopeUrl, type WebhookEnvelope } from "./envelope.ts";

/** Headers curl sets itself or that describe the original connection, not the request. */
const SKIPPED_HEADERS = new Set([
  "host",
  "content-length",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "accept-encoding",
  "expect",
  "upgrade",
]);

/** Quotes a string for POSIX shells: single quotes, each `'` written as `'\''`. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** True when text survives a shell argument unchanged (no NUL or other control characters). */
function isArgumentSafe(text: string): boolean {
  // deno-lint-ignore no-control-regex
  return !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text);
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  // In slices: spreading a large body into one call would overflow the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The curl command reproducing the request at `publicUrl` (a POSIX shell command line). */
export function curlCommand(envelope: WebhookEnvelope, options: { publicUrl: string }): string {
  const lines: string[] = [];
  const text = envelope.body;
  const binary = envelope.bodyBase64 !== undefined ||
    (text !== undefined && !isArgumentSafe(text));
  let head = `curl -X ${envelope.method} ${shellQuote(envelopeUrl(envelope, options.publicUrl))}`;
  if (binary) {
    // Bytes that are not plain text go through base64 so the shell never sees them.
    const base64 = envelope.bodyBase64 ?? toBase64(new TextEncoder().encode(text ?? ""));
    head = `printf %s ${shellQuote(base64)} | base64 -d | ${head}`;
  }
  lines.push(head);
  for (const [name, value] of Object.entries(envelope.headers)) {
    if (!SKIPPED_HEADERS.has(name.toLowerCase())) {
      lines.push(`-H ${shellQuote(`${name}: ${value}`)}`);
    }
  }
  if (binary) lines.push("--data-binary @-");
  else if (text) lines.push(`--data-binary ${shellQuote(text)}`);
  return lines.join(" \\\n  ");
}
