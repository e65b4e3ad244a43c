/**
 * Providers' URL handshakes answered by the relay. STUB: the real answers come from branch
 * i12-sig at merge; this file only fixes the interface.
 */
import type { Provider, Verdict } from "./signatures.ts";

/** The relay's answer to a provider's handshake, or null when the request is not one (stub). */
export function answerHandshake(_input: {
  provider: Provider;
  method: string;
  url: URL;
  headers: Headers;
  body: Uint8Array;
  text: string | null;
  verifyToken: string | null;
  secrets: string[];
  verdict: Verdict | null;
}): Promise<Response | null> {
  return Promise.resolve(null);
}
