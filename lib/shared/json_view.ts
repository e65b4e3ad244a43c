/**
 * JSON for people, written without recursion. Any sender chooses the payload, and 20,000 nested
 * arrays fit in 40 KB: `JSON.stringify(value, null, 2)` and recursive renderers overflow the
 * stack on them. Here the depth costs heap, not stack; values nested deeper than a limit are
 * written on one line, and the text stops at a character limit, so the page stays usable.
 * Pure, so it runs in the browser too.
 */

/** The text and what was left out of its pretty form. */
export interface PrettyJson {
  text: string;
  /** True when the text stops at `maxChars`. */
  cut: boolean;
  /** True when some value nests deeper than `maxDepth` and is written on one line. */
  deep: boolean;
}

/** One array or object being written: its keys (null for arrays) and how far along it is. */
interface Frame {
  value: unknown[] | Record<string, unknown>;
  keys: string[] | null;
  length: number;
  next: number;
  written: number;
  depth: number;
  compact: boolean;
}

/** True for what JSON.stringify leaves out of objects (and writes as null in arrays). */
const skipped = (value: unknown) =>
  value === undefined || typeof value === "function" || typeof value === "symbol";

/**
 * The value as `JSON.stringify(value, null, 2)` writes it (for values JSON.parse returns),
 * except that arrays and objects at `maxDepth` or deeper are written on one line.
 */
export function prettyJson(
  value: unknown,
  options: { maxDepth: number; maxChars: number },
): PrettyJson {
  const parts: string[] = [];
  let length = 0;
  let deep = false;
  const stack: Frame[] = [];
  const emit = (text: string) => {
    parts.push(text);
    length += text.length;
  };
  // Writes a primitive, or opens a container and leaves its contents to the loop.
  const open = (item: unknown, depth: number) => {
    if (item === null || typeof item !== "object") {
      emit(skipped(item) ? "null" : JSON.stringify(item));
      return;
    }
    const isArray = Array.isArray(item);
    const keys = isArray ? null : Object.keys(item);
    const size = keys ? keys.length : (item as unknown[]).length;
    const compact = depth >= options.maxDepth;
    if (compact && size > 0) deep = true;
    emit(isArray ? "[" : "{");
    stack.push({
      value: item as Frame["value"],
      keys,
      length: size,
      next: 0,
      written: 0,
      depth,
      compact,
    });
  };

  open(value, 0);
  while (stack.length > 0 && length <= options.maxChars) {
    const frame = stack[stack.length - 1];
    if (frame.next < frame.length) {
      const index = frame.next++;
      const key = frame.keys ? frame.keys[index] : null;
      const item = key === null
        ? (frame.value as unknown[])[index]
        : (frame.value as Record<string, unknown>)[key];
      if (key !== null && skipped(item)) continue;
      const comma = frame.written++ > 0 ? "," : "";
      const indent = frame.compact ? "" : `\n${"  ".repeat(frame.depth + 1)}`;
      const name = key === null ? "" : `${JSON.stringify(key)}${frame.compact ? ":" : ": "}`;
      emit(comma + indent + name);
      open(item, frame.depth + 1);
    } else {
      stack.pop();
      const close = frame.keys ? "}" : "]";
      emit(frame.compact || frame.written === 0 ? close : `\n${"  ".repeat(frame.depth)}${close}`);
    }
  }
  const text = parts.join("");
  const cut = text.length > options.maxChars;
  return { text: cut ? text.slice(0, options.maxChars) : text, cut, deep };
}
