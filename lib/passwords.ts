/**
 * Password hashing with PBKDF2-SHA256 (OWASP 2023: at least 600,000 iterations) via WebCrypto.
 * Stored form: `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`, so the cost can rise later
 * without breaking existing hashes.
 */
import { timingSafeEqual, toHex } from "./secrets.ts";

const ITERATIONS = 600_000;

async function derive(password: string, salt: Uint8Array, iterations: number): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(password),
    "PBKDF2",
    false,
    ["deriveBits"],
  );
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt: salt as BufferSource, iterations },
    key,
    256,
  );
  return toHex(new Uint8Array(bits));
}

/** Hashes a password with a fresh random salt. */
export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  return `pbkdf2-sha256$${ITERATIONS}$${toHex(salt)}$${await derive(password, salt, ITERATIONS)}`;
}

/** True when `password` matches a hash made by `hashPassword`. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, iterations, saltHex, hash] = stored.split("$");
  if (scheme !== "pbkdf2-sha256" || !saltHex || !hash) return false;
  const salt = new Uint8Array(saltHex.match(/../g)!.map((h) => parseInt(h, 16)));
  return timingSafeEqual(await derive(password, salt, Number(iterations)), hash);
}

/** A hash of a random password, verified against on unknown emails so timing reveals nothing. */
export const DUMMY_HASH = await hashPassword(crypto.randomUUID());
