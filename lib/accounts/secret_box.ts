/**
 * Secrets the relay must read back (providers' signing secrets, verify tokens), sealed with
 * AES-GCM under one key: SECRETS_KEY, or a key generated once into the data folder on a local
 * run, so a copy of the KV file alone reveals none of them.
 */
import { joinPath, parentOf } from "../runtime/paths.ts";

/** Bytes of the AES-256 key. */
const KEY_BYTES = 32;
/** Bytes of the random nonce sealed with each secret. */
const IV_BYTES = 12;
/** Marks the sealing scheme, so it can change later without guessing. */
const PREFIX = "v1:";
/** The generated key's file, in the folder that holds the KV file. */
export const SECRETS_KEY_FILE = "secrets.key";

/** Decodes base64 SECRETS_KEY text to its 32 bytes, or null when it is not that. */
export function decodeSecretsKey(text: string): Uint8Array | null {
  try {
    const bytes = Uint8Array.from(atob(text.trim()), (c) => c.charCodeAt(0));
    return bytes.byteLength === KEY_BYTES ? bytes : null;
  } catch {
    return null;
  }
}

function importKey(raw: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", raw as BufferSource, "AES-GCM", false, [
    "encrypt",
    "decrypt",
  ]);
}

/**
 * The key secrets are sealed with: SECRETS_KEY when set; a per-process key for an in-memory
 * store (nothing outlives the process); else the key file next to the KV file, created on first
 * start (mode 0600) and reused. A public https server must be given SECRETS_KEY, so a lost data
 * folder cannot silently make every stored secret unreadable.
 */
export async function loadSecretsKey(
  options: { secretsKey: string | null; kvPath: string; publicUrl: string },
): Promise<CryptoKey> {
  if (options.secretsKey) {
    const raw = decodeSecretsKey(options.secretsKey);
    if (!raw) throw new Error("Invalid configuration: SECRETS_KEY must be base64 of 32 bytes");
    return importKey(raw);
  }
  if (options.kvPath === ":memory:") {
    return importKey(crypto.getRandomValues(new Uint8Array(KEY_BYTES)));
  }
  if (options.publicUrl.startsWith("https:")) {
    throw new Error(
      "Cannot start: SECRETS_KEY is required when PUBLIC_URL is https (base64 of 32 random " +
        "bytes, e.g. `openssl rand -base64 32`); it seals endpoints' signing secrets",
    );
  }
  return importKey(await keyFile(joinPath(parentOf(options.kvPath), SECRETS_KEY_FILE)));
}

/** Reads the key file, creating it when absent; several isolates may start at once. */
async function keyFile(path: string): Promise<Uint8Array> {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      const raw = decodeSecretsKey(await Deno.readTextFile(path));
      if (raw) return raw;
      // Another isolate is writing it this very moment: read again shortly.
      await new Promise((resolve) => setTimeout(resolve, 20));
      continue;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    const raw = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
    try {
      await Deno.writeTextFile(path, btoa(String.fromCharCode(...raw)) + "\n", {
        createNew: true,
        mode: 0o600,
      });
      return raw;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
  }
  throw new Error(`Cannot start: the secrets key file ${path} is not base64 of 32 bytes`);
}

/** Seals a secret: "v1:" and base64 of a random nonce followed by the AES-GCM ciphertext. */
export async function sealSecret(key: CryptoKey, secret: string): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, new TextEncoder().encode(secret)),
  );
  const out = new Uint8Array(IV_BYTES + sealed.byteLength);
  out.set(iv);
  out.set(sealed, IV_BYTES);
  return PREFIX + out.toBase64();
}

/** Opens a sealed secret; throws when it was sealed under another key or altered. */
export async function openSecret(key: CryptoKey, sealed: string): Promise<string> {
  if (!sealed.startsWith(PREFIX)) throw new Error("Cannot open secret: unknown sealing scheme");
  const bytes = Uint8Array.fromBase64(sealed.slice(PREFIX.length));
  const plain = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: bytes.subarray(0, IV_BYTES) },
    key,
    bytes.subarray(IV_BYTES),
  );
  return new TextDecoder().decode(plain);
}
