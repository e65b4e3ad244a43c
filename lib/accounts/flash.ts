/**
 * Flash notices: one message a form handler leaves for the page it redirects to, so forms can
 * answer with 303 (no resubmit on reload) and still say what happened. A new token's value
 * travels this way once; it stays in KV for minutes at most and is deleted when read.
 *
 * The notice is sealed (AES-GCM) under a key derived (HKDF) from the session id. KV holds only
 * the id's hash, so whoever reads the store (a backup, an operator, another tenant's bug) cannot
 * open it: only the request carrying the session cookie can.
 */
import { flashKey } from "../store/kv_keys.ts";
import { sha256Hex } from "./secrets.ts";

/** A notice for the next page, with an optional secret to show once (a new token's value). */
export interface Flash {
  kind: "success" | "info" | "error";
  message: string;
  secret?: { label: string; value: string };
}

/** What KV stores: the notice encrypted, readable only with the session id. */
interface SealedFlash {
  iv: Uint8Array;
  sealed: Uint8Array;
}

const FLASH_TTL_MS = 10 * 60_000;
const encoder = new TextEncoder();
const SALT = encoder.encode("websocks flash v1");

async function sealingKey(sessionId: string): Promise<CryptoKey> {
  const material = await crypto.subtle.importKey(
    "raw",
    encoder.encode(sessionId),
    "HKDF",
    false,
    ["deriveKey"],
  );
  return await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: SALT, info: encoder.encode("flash") },
    material,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

/** Leaves a notice for the session's next page, replacing any unread one. */
export async function setFlash(kv: Deno.Kv, sessionId: string, flash: Flash): Promise<void> {
  const hash = await sha256Hex(sessionId);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      // Bound to its key, so a sealed notice moved to another session's key does not open.
      { name: "AES-GCM", iv, additionalData: encoder.encode(hash) },
      await sealingKey(sessionId),
      encoder.encode(JSON.stringify(flash)),
    ),
  );
  await kv.set(flashKey(hash), { iv, sealed } satisfies SealedFlash, { expireIn: FLASH_TTL_MS });
}

/** Reads and deletes the session's notice; only one reader ever gets it. */
export async function takeFlash(kv: Deno.Kv, sessionId: string): Promise<Flash | null> {
  const hash = await sha256Hex(sessionId);
  const key = flashKey(hash);
  const entry = await kv.get<SealedFlash>(key);
  if (!entry.value) return null;
  const result = await kv.atomic().check(entry).delete(key).commit();
  if (!result.ok) return null;
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: entry.value.iv as BufferSource, additionalData: encoder.encode(hash) },
      await sealingKey(sessionId),
      entry.value.sealed as BufferSource,
    );
    return JSON.parse(new TextDecoder().decode(plain)) as Flash;
  } catch {
    return null; // not sealed for this session (or from before notices were sealed)
  }
}
