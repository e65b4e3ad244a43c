/**
 * Flash notices: one message a form handler leaves for the page it redirects to, so forms can
 * answer with 303 (no resubmit on reload) and still say what happened. A new token's value
 * travels this way once; it stays in KV for minutes at most and is deleted when read.
 */
import { flashKey } from "./kv_keys.ts";
import { sha256Hex } from "./secrets.ts";

/** A notice for the next page, with an optional secret to show once (a new token's value). */
export interface Flash {
  kind: "success" | "info" | "error";
  message: string;
  secret?: { label: string; value: string };
}

const FLASH_TTL_MS = 10 * 60_000;

/** Leaves a notice for the session's next page, replacing any unread one. */
export async function setFlash(kv: Deno.Kv, sessionId: string, flash: Flash): Promise<void> {
  await kv.set(flashKey(await sha256Hex(sessionId)), flash, { expireIn: FLASH_TTL_MS });
}

/** Reads and deletes the session's notice; only one reader ever gets it. */
export async function takeFlash(kv: Deno.Kv, sessionId: string): Promise<Flash | null> {
  const key = flashKey(await sha256Hex(sessionId));
  const entry = await kv.get<Flash>(key);
  if (!entry.value) return null;
  const result = await kv.atomic().check(entry).delete(key).commit();
  return result.ok ? entry.value : null;
}
