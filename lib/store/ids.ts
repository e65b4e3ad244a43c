/**
 * Event ids: 26-character ULIDs (Crockford base32, 48-bit millisecond time then 80 random bits).
 * Ids of one millisecond differ by a random step, never by one, so no id tells another's.
 *
 * They sort by arrival as plain strings, which is what makes "everything after X" a single
 * `kv.list` range. `nextId` never returns an id at or below `floor`, so ids of one user stay
 * increasing in commit order even when clocks of several isolates disagree.
 */
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

let lastTime = -1;
let lastRandom: Uint8Array = new Uint8Array(10);

/**
 * Random bytes drawn 4 KiB at a time: one call into the runtime per ~400 ids instead of one per
 * id, which showed in the ingest profile (issue 15). Still the CSPRNG's bytes, each used once.
 */
const POOL_BYTES = 4096;
const pool = new Uint8Array(POOL_BYTES);
let poolAt = POOL_BYTES;

/** The next `n` unused random bytes of the pool, copied into `into` at `offset`. */
function fillRandom(into: Uint8Array, offset: number, n: number): void {
  if (poolAt + n > POOL_BYTES) {
    crypto.getRandomValues(pool);
    poolAt = 0;
  }
  into.set(pool.subarray(poolAt, poolAt + n), offset);
  poolAt += n;
}

/** The time part of the last id made, for the millisecond it was made in. */
let timeText = "";
let timeTextOf = -1;

function encodeTime(ms: number): string {
  if (ms === timeTextOf) return timeText;
  timeTextOf = ms;
  timeText = encodeTimeAfresh(ms);
  return timeText;
}

function encodeTimeAfresh(ms: number): string {
  let out = "";
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[ms % 32] + out;
    ms = Math.floor(ms / 32);
  }
  return out;
}

function encodeRandom(bytes: Uint8Array): string {
  // 80 bits → 16 base32 characters, read 5 bits at a time from the most significant end.
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(buffer >> bits) & 31];
    }
    buffer &= (1 << bits) - 1;
  }
  return out;
}

/**
 * The random part plus a random step between 2^32 and 2^40: ids of one millisecond stay increasing, but
 * the next one (perhaps another user's) cannot be guessed from this one. The top bit is masked
 * when a millisecond starts, so 2^79 of headroom outlasts any number of ids one isolate makes.
 */
function stepRandom(bytes: Uint8Array): Uint8Array {
  const next = bytes.slice();
  const step = new Uint8Array(5);
  fillRandom(step, 0, 5);
  step[0] |= 1; // at least 2^32, so no two ids of one millisecond are near neighbours
  let carry = 0;
  for (let i = next.length - 1; i >= 0; i--) {
    const add = i >= next.length - step.length ? step[i - (next.length - step.length)] : 0;
    const sum = next[i] + add + carry;
    next[i] = sum & 255;
    carry = sum >> 8;
  }
  if (carry) {
    throw new Error("Cannot create id: 80-bit random space exhausted within one millisecond");
  }
  return next;
}

function decodeParts(id: string): { time: number; random: Uint8Array } {
  let time = 0;
  for (let i = 0; i < 10; i++) time = time * 32 + ALPHABET.indexOf(id[i]);
  const random = new Uint8Array(10);
  let buffer = 0;
  let bits = 0;
  let index = 0;
  for (let i = 10; i < 26; i++) {
    buffer = (buffer << 5) | ALPHABET.indexOf(id[i]);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      random[index++] = (buffer >> bits) & 255;
      buffer &= (1 << bits) - 1;
    }
  }
  return { time, random };
}

/** A new id that sorts after every id this isolate made before, and after `floor` if given. */
export function nextId(floor?: string | null): string {
  const now = Date.now();
  if (now > lastTime) {
    lastTime = now;
    lastRandom = new Uint8Array(10);
    fillRandom(lastRandom, 0, 10);
    lastRandom[0] &= 0x7f; // headroom, so steps within one millisecond never overflow
  } else {
    lastRandom = stepRandom(lastRandom);
  }
  let id = encodeTime(lastTime) + encodeRandom(lastRandom);
  if (floor && id <= floor) {
    const parts = decodeParts(floor);
    lastTime = parts.time;
    lastRandom = stepRandom(parts.random);
    id = encodeTime(lastTime) + encodeRandom(lastRandom);
  }
  return id;
}

/** True when `value` has the shape of an event id. */
export function isId(value: string): boolean {
  return ID_PATTERN.test(value);
}

/** The millisecond timestamp encoded in an id. */
export function idTime(id: string): number {
  return decodeParts(id).time;
}

/** The smallest id of millisecond `ms`: a range start for "ids from this time on". */
export function idFloor(ms: number): string {
  return encodeTime(Math.max(0, Math.floor(ms))) + "0".repeat(16);
}
