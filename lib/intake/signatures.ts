/**
 * Signature checks per provider. STUB: the real checks come from branch i12-sig at merge; this
 * file only fixes the interface so the ingest path compiles and runs.
 */

/** Providers an endpoint may name. */
export const PROVIDERS = [
  "github",
  "stripe",
  "slack",
  "shopify",
  "standard",
  "svix",
  "zoom",
  "meta",
  "twilio",
] as const;

/** One of PROVIDERS. */
export type Provider = typeof PROVIDERS[number];

/** The outcome of checking one webhook's signature. */
export type Verdict = { ok: true } | { ok: false; reason: string };

/** Checks a webhook's signature on its raw bytes with the provider's rule (stub: never ok). */
export function verifyWebhook(_input: {
  provider: Provider;
  secrets: string[];
  headers: Headers;
  body: Uint8Array;
  url: string;
  now: number;
}): Promise<Verdict> {
  return Promise.resolve({ ok: false, reason: "not implemented" });
}
