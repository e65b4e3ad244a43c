/**
 * Event type patterns (`invoice.*`): `*` matches any run of characters, everything else matches
 * itself, anchored at both ends and case-sensitive. Matched without regular expressions, so no
 * pattern a client sends can be read as one, nor make matching backtrack: each pattern is split
 * at its stars and its pieces found left to right. Pure, shared by the server's filters and the
 * forward command's routes.
 */

/** A compiled pattern: the literal pieces between its stars. */
interface Compiled {
  /** The pattern had no star: the type must equal `pieces[0]`. */
  exact: boolean;
  pieces: string[];
}

function compile(pattern: string): Compiled {
  const pieces = pattern.split("*");
  return { exact: pieces.length === 1, pieces };
}

/** Whether `text` matches one compiled pattern: first piece a prefix, last a suffix, the rest in order. */
function matchOne(pattern: Compiled, text: string): boolean {
  const { pieces } = pattern;
  if (pattern.exact) return text === pieces[0];
  const first = pieces[0];
  const last = pieces[pieces.length - 1];
  if (text.length < first.length + last.length) return false;
  if (!text.startsWith(first) || !text.endsWith(last)) return false;
  let at = first.length;
  const end = text.length - last.length;
  // Taking each middle piece at its first occurrence leaves the most room for the rest.
  for (let i = 1; i < pieces.length - 1; i++) {
    if (pieces[i] === "") continue;
    const found = text.indexOf(pieces[i], at);
    if (found === -1 || found + pieces[i].length > end) return false;
    at = found + pieces[i].length;
  }
  return true;
}

/** Whether `pattern` matches `text` (see the module comment). */
export function matchesPattern(pattern: string, text: string): boolean {
  return matchOne(compile(pattern), text);
}

/**
 * A matcher for a set of patterns: true when any matches the event type. A null type (the
 * event names none) matches no pattern, not even `*`.
 */
export function patternMatcher(patterns: readonly string[]): (type: string | null) => boolean {
  const exact = new Set<string>();
  const globs: Compiled[] = [];
  for (const pattern of patterns) {
    const compiled = compile(pattern);
    if (compiled.exact) exact.add(pattern);
    else globs.push(compiled);
  }
  return (type) => {
    if (type === null) return false;
    if (exact.has(type)) return true;
    for (const glob of globs) if (matchOne(glob, type)) return true;
    return false;
  };
}
