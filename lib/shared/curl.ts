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

/**
 * Bodies up to this many UTF-8 bytes may go on the command line; larger ones go on stdin. Linux
 * refuses any one argument over 128 KiB (MAX_ARG_STRLEN), so this leaves room to spare.
 */
export const MAX_ARGUMENT_BODY_BYTES = 64 * 1024;

/** Ends the here-document of a body sent on stdin; base64 has no `_`, so no line can match. */
const BODY_END = "WEBSOCKS_BODY";
const BASE64_LINE = 76;

/**
 * True when text can be a quoted argument that a person pastes into a terminal unchanged: no
 * control characters but newline (a pasted tab completes, a pasted CR turns into a newline, and
 * others drive the terminal), and no leading `@`, which makes curl read a local file instead.
 */
function isArgumentSafe(text: string): boolean {
  // deno-lint-ignore no-control-regex
  return !text.startsWith("@") && !/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.test(text);
}

/** True when the text's UTF-8 bytes are within MAX_ARGUMENT_BODY_BYTES. */
function fitsArgument(text: string): boolean {
  // A UTF-16 unit is at most 3 UTF-8 bytes, so short text needs no encoding to decide.
  return text.length * 3 <= MAX_ARGUMENT_BODY_BYTES ||
    new TextEncoder().encode(text).byteLength <= MAX_ARGUMENT_BODY_BYTES;
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  // In slices: spreading a large body into one call would overflow the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/**
 * A header as one argument. A value with control characters (a sender's tab, or C1 controls
 * such as U+009B, which drive some terminals) is not pasted as is: `printf` writes its bytes
 * from octal escapes, so the command holds none and curl still sends the exact bytes. Header
 * values are Latin-1, one byte a character.
 */
function headerArgument(name: string, value: string): string {
  const header = `${name}: ${value}`;
  if (!/[^\u0020-\u007e]/.test(value)) return shellQuote(header);
  const octal = (byte: number) => `\\${byte.toString(8).padStart(3, "0")}`;
  let format = "";
  for (const char of header) {
    const code = char.codePointAt(0)!;
    // Past Latin-1 (not from a real header): its UTF-8 bytes.
    if (code > 0xff) { for (const byte of new TextEncoder().encode(char)) format += octal(byte); }
    // A leading "-" would read as an option of printf.
    else if (code < 0x20 || code >= 0x7f || (char === "-" && format === "")) format += octal(code);
    else if (char === "\\") format += "\\\\";
    else if (char === "%") format += "%%";
    else format += char;
  }
  return `"$(printf ${shellQuote(format)})"`;
}

/** A method is written bare when it is a plain word, quoted otherwise (senders choose it). */
const methodArgument = (method: string) =>
  /^[A-Za-z0-9_-]+$/.test(method) ? method : shellQuote(method);

/**
 * The curl command reproducing the request at `publicUrl` (a POSIX shell command line, for bash,
 * dash and zsh). A short plain-text body is a quoted argument; any other body (large, binary,
 * with control characters, or starting with `@`) goes to `--data-binary @-` on stdin, from a
 * here-document of base64 lines, so no argument or line nears a limit and the bytes arrive exact.
 * The command always ends with curl's own line, so flags can be appended.
 */
export function curlCommand(envelope: WebhookEnvelope, options: { publicUrl: string }): string {
  const lines: string[] = [];
  const text = envelope.bodyBase64 === undefined ? envelope.body ?? "" : null;
  const inline = text !== null && (text === "" || (fitsArgument(text) && isArgumentSafe(text)));
  let head = `curl -X ${methodArgument(envelope.method)} ${
    shellQuote(envelopeUrl(envelope, options.publicUrl))
  }`;
  if (!inline) {
    // A here-document keeps the shell out of the bytes; a brace group puts it before curl.
    const base64 = envelope.bodyBase64 ?? toBase64(new TextEncoder().encode(text ?? ""));
    const body: string[] = [];
    for (let i = 0; i < base64.length; i += BASE64_LINE) {
      body.push(base64.slice(i, i + BASE64_LINE));
    }
    head = `{ base64 -d <<'${BODY_END}'\n${body.join("\n")}\n${BODY_END}\n} | ${head}`;
  }
  lines.push(head);
  for (const [name, value] of Object.entries(envelope.headers)) {
    if (!SKIPPED_HEADERS.has(name.toLowerCase())) lines.push(`-H ${headerArgument(name, value)}`);
  }
  // Without it curl reads [1-3] or {a,b} in a sender's path as a pattern of many URLs.
  lines.push("--globoff");
  if (!inline) lines.push("--data-binary @-");
  else if (text) lines.push(`--data-binary ${shellQuote(text)}`);
  return lines.join(" \\\n  ");
}
