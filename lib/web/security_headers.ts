/** The security headers of every HTML page, derived from where the app and ingest live. */
import type { Config } from "../runtime/config.ts";
import { ingestBase } from "../endpoints/urls.ts";

/** Headers every page carries: no inline script or style can run, no framing, no sniffing. */
export function pageSecurityHeaders(config: Config): Record<string, string> {
  // The test button posts to the webhook URL, which may sit on another origin behind a proxy,
  // or on INGEST_URL's host.
  const origins = new Set([config.publicUrl, ingestBase(config)].map((u) => new URL(u).origin));
  return {
    "Content-Security-Policy": [
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      "img-src 'self' data:",
      `connect-src 'self' ${[...origins].join(" ")}`,
      "base-uri 'none'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join("; "),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    // Served over https: browsers keep to it for a year (a proxy in front may say so too).
    ...(new URL(config.publicUrl).protocol === "https:"
      ? { "Strict-Transport-Security": "max-age=31536000" }
      : {}),
  };
}
