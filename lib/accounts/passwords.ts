/**
 * Password hashing with PBKDF2-SHA256 (OWASP 2023: at least 600,000 iterations) via WebCrypto.
 * Stored form: `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`, so the cost can rise later
 * without breaking existing hashes.
 *
 * Each hash takes a core for a fifth of a second, so only a few run at once (per isolate): a
 * flood of log-ins or sign-ups queues behind them, and past the queue is answered 503, instead
 * of every core hashing while webhooks wait.
 */
import { HttpError } from "../http/http_error.ts";
import { timingSafeEqual, toHex } from "./secrets.ts";

/** The shortest password sign-up accepts (the API, the form and its hint). */
export const PASSWORD_MIN_LENGTH = 10;

const ITERATIONS = 600_000;

const slots = { concurrency: 1, queue: 50, running: 0, waiting: [] as (() => void)[] };

/** Sets how many hashes run at once and how many may wait (from the configuration). */
export function limitPasswordHashing(options: { concurrency: number; queue: number }): void {
  slots.concurrency = options.concurrency;
  slots.queue = options.queue;
}

async function withHashSlot<T>(work: () => Promise<T>): Promise<T> {
  if (slots.running < slots.concurrency) {
    slots.running++;
  } else {
    if (slots.waiting.length >= slots.queue) {
      throw new HttpError(
        503,
        "Server busy: too many passwords are being checked at once; try again in a few seconds",
        { "Retry-After": "5" },
      );
    }
    // The slot is handed over by the finishing hash, so `running` stays as it is.
    await new Promise<void>((resolve) => slots.waiting.push(resolve));
  }
  try {
    return await work();
  } finally {
    const next = slots.waiting.shift();
    if (next) next();
    else slots.running--;
  }
}

function derive(password: string, salt: Uint8Array, iterations: number): Promise<string> {
  return withHashSlot(() => deriveNow(password, salt, iterations));
}

async function deriveNow(password: string, salt: Uint8Array, iterations: number): Promise<string> {
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

/**
 * A stored hash that no password matches, verified against on unknown emails so timing reveals
 * nothing: same scheme and iterations as a real one, so checking it costs the same. Random bytes,
 * not a hash of a random password, because hashing at import held every start up by ~100 ms.
 */
export const DUMMY_HASH = `pbkdf2-sha256$${ITERATIONS}$${
  toHex(crypto.getRandomValues(new Uint8Array(16)))
}$${toHex(crypto.getRandomValues(new Uint8Array(32)))}`;
