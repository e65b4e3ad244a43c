/** The streaming JSON syntax check agrees with JSON.parse, whole or fed in pieces. */
import assert from "node:assert/strict";
import { createJsonCheck } from "../lib/intake/json_check.ts";

const encoder = new TextEncoder();

/** The check's verdict on `bytes` fed in pieces cut at `cuts`: null when valid. */
function check(bytes: Uint8Array, cuts: number[] = []): string | null {
  const json = createJsonCheck();
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    const error = json.write(bytes.subarray(from, cut));
    if (error !== null) return error;
    from = cut;
  }
  return json.end();
}

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function agree(text: string, cuts: number[] = []): void {
  const bytes = encoder.encode(text);
  const error = check(bytes, cuts.filter((cut) => cut <= bytes.length).sort((a, b) => a - b));
  assert.equal(
    error === null,
    parses(text),
    `${JSON.stringify(text.slice(0, 200))}: JSON.parse ${parses(text) ? "accepts" : "refuses"}, ` +
      `the check says ${error ?? "valid"}`,
  );
}

const HAND_CASES = [
  "",
  " ",
  "\n\t\r ",
  "{}",
  "[]",
  "[1,]",
  '{"a":1,}',
  "[,1]",
  "{,}",
  "[1 2]",
  '{"a" 1}',
  '{"a":}',
  "{a:1}",
  "{'a':1}",
  "01",
  "-",
  "-0",
  "-01",
  "1.",
  ".5",
  "1e",
  "1e+",
  "1E-2",
  "1.5e3",
  "0.0",
  "00",
  "-.5",
  "+1",
  "1e5.5",
  "Infinity",
  "NaN",
  "tru",
  "true",
  "truex",
  "nul",
  "null null",
  "false",
  "[true,false,null]",
  '"\\u12"',
  '"\\u12zz"',
  '"\\uD800"',
  '"\\udc00\\ud800"',
  '"\\x41"',
  '"\\/"',
  '"\\b\\f\\n\\r\\t\\"\\\\"',
  '"a\tb"',
  '"a\nb"',
  '"\u007f"',
  '"\u0000"',
  '"unterminated',
  '"é ☃ 😀"',
  "\uFEFF{}",
  "{}\uFEFF",
  "1 2",
  "{} {}",
  "[] x",
  '"a" ',
  " 1 ",
  "[1]]",
  "[[1]",
  '{"a":[{"b":{}}]}',
  '{"a":1,"a":2}',
  "é",
  "[é]",
  '{"é":"é"}',
  "123abc",
  "1-2",
  "-e1",
  "1e1e1",
  "[1,2,3,4,5]",
  '{"":""}',
  '["\\""]',
  '"\\',
  '["a","b"',
  '{"a"',
  '{"a":',
  "\u00a0{}",
  "{}\u00a0",
  "[1\u00a0]",
  "\f{}",
  "{}\v",
];

Deno.test("[json-check] hand cases agree with JSON.parse", () => {
  for (const text of HAND_CASES) {
    agree(text);
    // Split at every position too: state must carry across pieces.
    for (let cut = 0; cut <= text.length; cut++) agree(text, [cut]);
  }
});

Deno.test("[json-check] deep nesting needs no recursion", () => {
  const depth = 2_000_000;
  const open = new Uint8Array(depth).fill(0x5b);
  const close = new Uint8Array(depth).fill(0x5d);
  const json = createJsonCheck();
  assert.equal(json.write(open), null);
  assert.equal(json.write(close), null);
  assert.equal(json.end(), null);
  const unbalanced = createJsonCheck();
  unbalanced.write(open);
  assert.match(unbalanced.end()!, /unexpected end of input at byte 2000000/);
  const objects = '{"a":'.repeat(100_000) + "1" + "}".repeat(100_000);
  agree(objects);
  assert.match(check(encoder.encode("[".repeat(1000) + "}"))!, /at byte 1000/);
});

Deno.test("[json-check] errors name what and where", () => {
  assert.equal(check(encoder.encode("[1,]")), 'unexpected "]" at byte 3');
  assert.equal(check(encoder.encode('{"a":1 "b"}')), 'expected "," or "}", found """ at byte 7');
  assert.equal(check(encoder.encode("\uFEFF{}")), "unexpected byte 0xef at byte 0");
  assert.equal(check(encoder.encode("[01]")), 'expected "," or "]", found "1" at byte 2');
  assert.equal(
    check(encoder.encode('"a\u0001"')),
    "unescaped control character byte 0x01 in a string at byte 2",
  );
  assert.equal(check(encoder.encode("{} x")), 'unexpected "x" after the JSON value at byte 3');
});

/** A small seeded generator (mulberry32): the same cases on every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  "{",
  "}",
  "[",
  "]",
  ",",
  ":",
  " ",
  "\n",
  '"',
  "\\",
  "\\u",
  "00",
  "0",
  "1",
  "9",
  "-",
  "+",
  ".",
  "e",
  "E",
  "true",
  "false",
  "null",
  "tru",
  "a",
  "é",
  "\u0001",
  "\t",
  "\\n",
  "\\u00e9",
  "\\uD83D",
  "\\x",
  "1.5",
  "-0",
  "1e9",
];

function generate(next: () => number, depth: number): string {
  const pick = next();
  if (depth > 4 || pick < 0.3) {
    const scalars = [
      "0",
      "-1",
      "12.5e-3",
      "true",
      "false",
      "null",
      '""',
      '"a\\"b"',
      '"\\u00e9é😀"',
      "1E+2",
      '"\\/"',
      "-0.0",
    ];
    return scalars[Math.floor(next() * scalars.length)];
  }
  const n = Math.floor(next() * 4);
  const space = () => (next() < 0.2 ? " \n\t\r"[Math.floor(next() * 4)] : "");
  if (pick < 0.65) {
    return "[" + Array.from({ length: n }, () => space() + generate(next, depth + 1) + space())
      .join(",") +
      "]";
  }
  return "{" + Array.from(
    { length: n },
    (_, i) => `${space()}"k${i}"${space()}:${space()}${generate(next, depth + 1)}`,
  ).join(",") + "}";
}

/** A valid text with a few random edits: an insertion, a deletion or a replacement. */
function mutate(text: string, next: () => number): string {
  let out = text;
  const edits = 1 + Math.floor(next() * 3);
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(next() * (out.length + 1));
    const piece = PIECES[Math.floor(next() * PIECES.length)];
    const kind = next();
    if (kind < 0.4) out = out.slice(0, at) + piece + out.slice(at);
    else if (kind < 0.7) out = out.slice(0, at) + out.slice(at + 1);
    else out = out.slice(0, at) + piece + out.slice(at + piece.length);
  }
  return out;
}

Deno.test("[json-check] 20,000 seeded valid and mutated texts agree with JSON.parse", () => {
  const next = random(12);
  let valid = 0;
  for (let i = 0; i < 20_000; i++) {
    const base = generate(next, 0);
    const text = i % 4 === 0 ? base : mutate(base, next);
    if (parses(text)) valid++;
    const cuts = Array.from({ length: 3 }, () => Math.floor(next() * (text.length + 1)));
    agree(text, cuts);
  }
  // Both sides are exercised: plenty of valid and of invalid texts.
  assert.ok(valid > 5000 && valid < 15000, `${valid} valid`);
});
