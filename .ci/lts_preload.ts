/**
 * Preloaded by `.ci/run` for the suite under Deno 2.5 (the LTS): that version's test sanitizers
 * count a fetch response body left unread, or an op that ends just after a test, as a leak; later
 * versions do not, and the suite relies on that (a test that checks a status leaves the body).
 * Leaks stay checked under the pinned version; under the LTS the suite checks the server's
 * behaviour.
 */
type Definition = Deno.TestDefinition;
type Fn = Deno.TestDefinition["fn"];

/**
 * Tests of behaviour Deno 2.5 does not have, and why; they run under the pinned version. Each is
 * a documented difference (README, Supported Deno versions), not a failure to hide.
 */
const NOT_ON_LTS = new Map([[
  "[limits] a process with 256 descriptors survives 2,000 idle, slowloris and half-sent connections",
  "2.5's Deno.serve does not end its accept loop when descriptors run out, so the server cannot " +
  "close idle connections to recover: it accepts again once connections holding them close",
]]);

const define = Deno.test;
const relaxed = { sanitizeOps: false, sanitizeResources: false };

/** Deno.test with every overload turned into one definition, sanitizers off. */
function test(...args: unknown[]): void {
  const definition = toDefinition(args);
  const reason = NOT_ON_LTS.get(definition.name);
  if (reason) console.log(`not run on Deno ${Deno.version.deno}: ${definition.name}: ${reason}`);
  return define({ ...definition, ...relaxed, ...(reason ? { ignore: true } : {}) });
}

/** The one definition every overload of Deno.test stands for. */
function toDefinition(args: unknown[]): Definition {
  const [first, second, third] = args;
  if (typeof first === "function") {
    return { name: first.name, fn: first as Fn };
  }
  if (typeof first === "string") {
    if (typeof second === "function") return { name: first, fn: second as Fn };
    return { ...(second as Partial<Definition>), name: first, fn: third as Fn };
  }
  if (typeof second === "function") {
    return { ...(first as Omit<Definition, "fn">), fn: second as Fn };
  }
  return first as Definition;
}

Object.assign(test, { ignore: define.ignore, only: define.only });
// Deno.test is read-only in the types only: assigning it is how a preload swaps it.
(Deno as { test: unknown }).test = test;
