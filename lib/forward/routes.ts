/**
 * Which target an event goes to: the first `--route` whose pattern matches its event type, else
 * the `--target`, else none (the event is skipped, acked, and a line says so).
 */
import { patternMatcher } from "../shared/event_pattern.ts";
import type { ForwardOptions } from "./options.ts";

/** Where one event goes, and the route pattern that chose it (null: the default target). */
export interface Destination {
  target: string;
  pattern: string | null;
}

/** Builds the chooser once: each route's pattern compiled. */
export function createRouter(
  options: Pick<ForwardOptions, "routes" | "target">,
): (eventType: string | null) => Destination | null {
  const routes = options.routes.map((route) => ({
    ...route,
    match: patternMatcher([route.pattern]),
  }));
  return (eventType) => {
    for (const route of routes) {
      if (route.match(eventType)) return { target: route.target, pattern: route.pattern };
    }
    return options.target ? { target: options.target, pattern: null } : null;
  };
}

/** Parses `pattern=http://…`: the pattern is what precedes the first `=`. */
export function parseRoute(text: string): { pattern: string; target: string } | null {
  const at = text.indexOf("=");
  if (at <= 0) return null;
  return { pattern: text.slice(0, at), target: text.slice(at + 1) };
}
