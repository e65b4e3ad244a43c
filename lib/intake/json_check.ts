/**
 * A streaming JSON syntax check over UTF-8 bytes, for bodies too large to hold for JSON.parse:
 * it accepts exactly what JSON.parse accepts (RFC 8259 text, no BOM) and reports the first byte
 * that makes the text invalid as soon as it arrives. Nesting lives on an explicit bit stack, so
 * a body of 25 MiB of `[` costs 3 MiB and no recursion. Bytes of 0x80 and up are accepted only
 * inside strings; whether they are valid UTF-8 is the decoder's check, not this one's.
 */

/** Feeds bytes to a JSON syntax check; each call returns an error or null while still valid. */
export interface JsonCheck {
  /** Checks the next bytes; the first error found (and every later call returns it too). */
  write(bytes: Uint8Array): string | null;
  /** The input is complete: an error when it is not one whole JSON value. */
  end(): string | null;
}

// What the next byte may be.
const VALUE = 0; // a value (after `[`-less start, `:` or `,` in an array)
const VALUE_OR_CLOSE = 1; // a value or `]` (just after `[`)
const KEY_OR_CLOSE = 2; // a key string or `}` (just after `{`)
const KEY = 3; // a key string (after `,` in an object)
const COLON = 4; // `:` after a key
const AFTER_VALUE = 5; // `,` or the closing bracket of the container, or the end at top level
const STRING = 6;
const ESCAPE = 7; // after a backslash
const UNICODE = 8; // inside \uXXXX (hexLeft digits to go)
const MINUS = 9; // after `-`: a digit
const ZERO = 10; // after a leading 0: `.`, `e` or the end of the number
const INT = 11;
const DOT = 12; // after `.`: a digit
const FRAC = 13;
const EXP_MARK = 14; // after `e`: a sign or a digit
const EXP_SIGN = 15; // after the exponent's sign: a digit
const EXP = 16;
const LITERAL = 17; // inside true/false/null
const DONE = 18; // the top-level value is complete: only whitespace may follow

const TRUE = new TextEncoder().encode("true");
const FALSE = new TextEncoder().encode("false");
const NULL = new TextEncoder().encode("null");

const isSpace = (b: number) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

/** Names a byte for a message: the character when printable ASCII, else its hex value. */
function describe(b: number): string {
  return b >= 0x21 && b <= 0x7e
    ? `"${String.fromCharCode(b)}"`
    : `byte 0x${b.toString(16).padStart(2, "0")}`;
}

/** Creates a check of one JSON text fed in pieces. */
export function createJsonCheck(): JsonCheck {
  let state = VALUE;
  /** Open containers, one bit each: 1 an object, 0 an array. */
  let stack = new Uint8Array(64);
  let depth = 0;
  let inKey = false; // the string being read is an object key
  let hexLeft = 0;
  let literal: Uint8Array = TRUE;
  let literalAt = 0;
  /** Bytes consumed before the current piece. */
  let offset = 0;
  let error: string | null = null;

  const push = (isObject: boolean) => {
    if (depth >> 3 >= stack.length) {
      const grown = new Uint8Array(stack.length * 2);
      grown.set(stack);
      stack = grown;
    }
    const byte = depth >> 3;
    const bit = 1 << (depth & 7);
    stack[byte] = isObject ? stack[byte] | bit : stack[byte] & ~bit;
    depth++;
  };
  const topIsObject = () => (stack[(depth - 1) >> 3] & (1 << ((depth - 1) & 7))) !== 0;
  /** A value ended: what may follow depends on the container it is in. */
  const valueEnded = () => {
    state = depth === 0 ? DONE : AFTER_VALUE;
  };
  const unexpected = (b: number, at: number) => `unexpected ${describe(b)} at byte ${at}`;

  /** Starts a value at byte `b`; false when `b` cannot start one. */
  const startValue = (b: number): boolean => {
    if (b === 0x7b) {
      push(true);
      state = KEY_OR_CLOSE;
    } else if (b === 0x5b) {
      push(false);
      state = VALUE_OR_CLOSE;
    } else if (b === 0x22) {
      inKey = false;
      state = STRING;
    } else if (b === 0x2d) state = MINUS;
    else if (b === 0x30) state = ZERO;
    else if (isDigit(b)) state = INT;
    else if (b === 0x74 || b === 0x66 || b === 0x6e) {
      literal = b === 0x74 ? TRUE : b === 0x66 ? FALSE : NULL;
      literalAt = 1;
      state = LITERAL;
    } else return false;
    return true;
  };

  /** One byte at absolute position `at`; an error message or null. */
  const step = (b: number, at: number): string | null => {
    switch (state) {
      case STRING:
        if (b === 0x22) {
          if (inKey) state = COLON;
          else valueEnded();
        } else if (b === 0x5c) state = ESCAPE;
        else if (b < 0x20) {
          return `unescaped control character ${describe(b)} in a string at byte ${at}`;
        }
        return null;
      case ESCAPE:
        if (b === 0x75) {
          state = UNICODE;
          hexLeft = 4;
        } else if (
          b === 0x22 || b === 0x5c || b === 0x2f || b === 0x62 || b === 0x66 || b === 0x6e ||
          b === 0x72 || b === 0x74
        ) state = STRING;
        else return `bad escape ${describe(b)} in a string at byte ${at}`;
        return null;
      case UNICODE:
        if (!isHex(b)) return `bad \\u escape: ${describe(b)} at byte ${at}`;
        if (--hexLeft === 0) state = STRING;
        return null;
      case LITERAL:
        if (b !== literal[literalAt]) return unexpected(b, at);
        if (++literalAt === literal.length) valueEnded();
        return null;
      case MINUS:
        if (b === 0x30) state = ZERO;
        else if (isDigit(b)) state = INT;
        else return `no digit after "-" at byte ${at}`;
        return null;
      case DOT:
        if (isDigit(b)) state = FRAC;
        else return `no digit after "." at byte ${at}`;
        return null;
      case EXP_MARK:
        if (b === 0x2b || b === 0x2d) state = EXP_SIGN;
        else if (isDigit(b)) state = EXP;
        else return `no digit in the exponent at byte ${at}`;
        return null;
      case EXP_SIGN:
        if (isDigit(b)) state = EXP;
        else return `no digit in the exponent at byte ${at}`;
        return null;
      case ZERO:
      case INT:
        if (state === INT && isDigit(b)) return null;
        if (b === 0x2e) {
          state = DOT;
          return null;
        }
        if (b === 0x65 || b === 0x45) {
          state = EXP_MARK;
          return null;
        }
        // A digit after a leading zero falls through to AFTER_VALUE and is refused there.
        valueEnded();
        return step(b, at);
      case FRAC:
        if (isDigit(b)) return null;
        if (b === 0x65 || b === 0x45) {
          state = EXP_MARK;
          return null;
        }
        valueEnded();
        return step(b, at);
      case EXP:
        if (isDigit(b)) return null;
        valueEnded();
        return step(b, at);
      default:
        break;
    }
    if (isSpace(b)) return null;
    switch (state) {
      case VALUE:
        return startValue(b) ? null : unexpected(b, at);
      case VALUE_OR_CLOSE:
        if (b === 0x5d) {
          depth--;
          valueEnded();
          return null;
        }
        return startValue(b) ? null : unexpected(b, at);
      case KEY_OR_CLOSE:
        if (b === 0x7d) {
          depth--;
          valueEnded();
          return null;
        }
      // falls through: otherwise a key
      case KEY:
        if (b !== 0x22) return `expected a property name, found ${describe(b)} at byte ${at}`;
        inKey = true;
        state = STRING;
        return null;
      case COLON:
        if (b !== 0x3a) {
          return `expected ":" after a property name, found ${describe(b)} at byte ${at}`;
        }
        state = VALUE;
        return null;
      case AFTER_VALUE: {
        const object = topIsObject();
        if (b === 0x2c) {
          state = object ? KEY : VALUE;
          return null;
        }
        if (b === (object ? 0x7d : 0x5d)) {
          depth--;
          valueEnded();
          return null;
        }
        return `expected "," or "${object ? "}" : "]"}", found ${describe(b)} at byte ${at}`;
      }
      case DONE:
        return `unexpected ${describe(b)} after the JSON value at byte ${at}`;
    }
    return unexpected(b, at);
  };

  return {
    write(bytes) {
      if (error !== null) return error;
      for (let i = 0; i < bytes.length; i++) {
        const b = bytes[i];
        // The common case in long strings, kept out of the switch.
        if (state === STRING && b >= 0x20 && b !== 0x22 && b !== 0x5c) continue;
        const found = step(b, offset + i);
        if (found !== null) {
          error = found;
          return error;
        }
      }
      offset += bytes.length;
      return null;
    },
    end() {
      if (error !== null) return error;
      if (state === ZERO || state === INT || state === FRAC || state === EXP) valueEnded();
      if (state !== DONE) error = `unexpected end of input at byte ${offset}`;
      return error;
    },
  };
}
