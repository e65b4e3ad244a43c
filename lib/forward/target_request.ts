/**
 * The request sent to the local target for one envelope: the target URL joined with the
 * envelope's path and query, the original headers minus hop-by-hop ones, the body's exact bytes.
 */
import { envelopeBytes, queryParams, type WebhookEnvelope } from "../shared/envelope.ts";

// Hop-by-hop headers describe one connection, not the message; `host` and `content-length`
// must match the new request, which fetch sets itself.
const DROPPED_HEADERS = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "trailers",
  "host",
  "content-length",
]);

/** The headers to send on: the original ones minus hop-by-hop ones. */
export function forwardHeaders(original: Record<string, string>): Headers {
  // Names listed in Connection are hop-by-hop too (RFC 9110 §7.6.1).
  const listed = (original["connection"] ?? "").split(",").map((s) => s.trim().toLowerCase());
  const headers = new Headers();
  for (const [name, value] of Object.entries(original)) {
    const lower = name.toLowerCase();
    if (DROPPED_HEADERS.has(lower) || lower.startsWith("proxy-") || listed.includes(lower)) {
      continue;
    }
    headers.append(name, value);
  }
  return headers;
}

/**
 * The target URL for an envelope: target path + envelope path, then the query. Throws for an
 * envelope path with dot segments, however encoded: they could take it outside the target's path.
 */
export function targetUrl(
  target: string,
  path: string,
  query: WebhookEnvelope["query"],
): string {
  const url = new URL(target);
  const base = url.pathname.replace(/\/+$/, "");
  // The envelope path is the raw (still percent-encoded) suffix, so it is joined as text.
  if (path !== "/" && path !== "") {
    url.pathname = base + (path.startsWith("/") ? path : `/${path}`);
    // Anyone may post to the ingest URL, and the developer chose the target's path: a stranger's
    // path must stay below it, as URL parsing resolves it ("..", "%2e%2e") and as the local
    // server may (decoding "..%2f" to "../", "\" as "/", Tomcat's "..;").
    if (
      (url.pathname !== base && !url.pathname.startsWith(`${base}/`)) ||
      path.split("/").some(climbs)
    ) {
      throw new Error(
        `Cannot forward: the path ${path} has "." or ".." segments (however encoded), which ` +
          `could leave the target's path ${base || "/"}`,
      );
    }
  }
  // Appended, so a query the target URL already has is kept.
  for (const [name, value] of queryParams(query)) url.searchParams.append(name, value);
  return url.toString();
}

/**
 * Whether a raw path segment, once decoded by a server, could climb out of its folder. Each
 * `%XX` is decoded on its own, as lenient decoders do (Python's `unquote` leaves `%zz` and
 * decodes the rest), and twice, for servers that decode twice.
 */
function climbs(segment: string): boolean {
  let decoded = segment;
  for (let round = 0; round < 2; round++) {
    decoded = decoded.replace(
      /%([0-9a-f]{2})/gi,
      (_, hex) => String.fromCharCode(parseInt(hex, 16)),
    );
    // Each part a server might see once it decodes "%2f" or "%5c", or takes "\\" for "/".
    const climbing = decoded.split(/[\\/]/).some((part) => {
      const name = part.split(";")[0];
      return name === "." || name === "..";
    });
    if (climbing) return true;
  }
  return false;
}

/** The request to send to `url` (targetUrl's, for this envelope) for one envelope. */
export function targetRequest(url: string, envelope: WebhookEnvelope): Request {
  const method = envelope.method.toUpperCase();
  const body = method === "GET" || method === "HEAD" ? null : envelopeBytes(envelope);
  return new Request(url, {
    method,
    headers: forwardHeaders(envelope.headers),
    body: body as BodyInit | null,
    // A redirect is the target's answer; following it would send the body somewhere else.
    redirect: "manual",
  });
}
