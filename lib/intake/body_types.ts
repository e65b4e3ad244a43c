/**
 * Body types: how a request's body is understood at ingest (JSON, form, other), its text when it
 * is UTF-8, and form fields. Used when accepting a webhook and when building its envelope.
 */

/** How a body was understood at ingest. */
export type BodyKind = "json" | "form" | "other";

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decodes UTF-8 exactly (a BOM is kept), or returns null for bytes that are not UTF-8. */
export function decodeText(bytes: Uint8Array): string | null {
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

/** The media type of a Content-Type header, lowercased, without parameters. */
export function mediaType(contentType: string | null): string | null {
  if (!contentType) return null;
  return contentType.split(";", 1)[0].trim().toLowerCase() || null;
}

/** True for application/json and any +json type. */
export function isJsonType(type: string | null): boolean {
  return type === "application/json" || (type?.endsWith("+json") ?? false);
}

/** Parses a form body (or a URL's search parameters) into fields; repeated names become arrays. */
export function parseForm(input: string | URLSearchParams): Record<string, string | string[]> {
  // A Map, then fromEntries: a field named "__proto__" stays data (an assignment would hit the
  // prototype setter and drop it).
  const fields = new Map<string, string | string[]>();
  for (const [name, value] of new URLSearchParams(input)) {
    const prior = fields.get(name);
    fields.set(
      name,
      prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value],
    );
  }
  return Object.fromEntries(fields);
}
