/**
 * Subscription filters: which of a user's events a connection receives. `endpoint=<slug>`,
 * `event=<pattern>` (`*` wildcards, see lib/shared/event_pattern.ts), `method=` and `path=`
 * (a prefix of the path after the slug), each repeatable: an event passes when, for every
 * parameter given, it matches one of its values. Given as query parameters of the SSE and
 * WebSocket URLs, and in the WebSocket `subscribe` message.
 *
 * Matching reads only the facts carried on live events and stored records (EventFacts), never
 * an envelope. An unfiltered connection holds a null filter and pays one null check per event.
 * A token limited to some endpoints adds its EndpointLimit: matched by endpoint id (so a rotated
 * slug keeps matching), intersected with whatever `endpoint=` the client asks for, and kept when
 * a WebSocket `subscribe` replaces the rest. Anything that hands out events (say, to one member
 * of a group) asks `matches` first.
 */
import { z } from "zod";
import type { EventFacts } from "../log/envelope_json.ts";
import { patternMatcher } from "../shared/event_pattern.ts";

/** Values one filter parameter may have. */
export const MAX_FILTER_VALUES = 20;
/** Characters of one filter value. */
export const MAX_FILTER_VALUE_LENGTH = 200;

/** The filter parameters a client gives; `[]` means "any". */
export interface FilterSpec {
  endpoint: string[];
  event: string[];
  method: string[];
  path: string[];
}

/**
 * The endpoints a token may see: `ids` decide, `slugs` are those endpoints' slugs when the
 * connection opened, what a client may name in `endpoint=`.
 */
export interface EndpointLimit {
  ids: ReadonlySet<string>;
  slugs: ReadonlySet<string>;
}

/** A compiled filter; null stands for "everything", so unfiltered connections cost nothing. */
export interface Filter {
  spec: FilterSpec;
  /** The token's endpoints, whatever the spec says; null: no limit. */
  limit: EndpointLimit | null;
  endpoints: Set<string> | null;
  event: ((type: string | null) => boolean) | null;
  /** Uppercase. */
  methods: Set<string> | null;
  paths: string[] | null;
}

const value = (name: string) =>
  z.string().min(1, `${name}: a value must not be empty`).max(
    MAX_FILTER_VALUE_LENGTH,
    `${name}: a value must be at most ${MAX_FILTER_VALUE_LENGTH} characters`,
  );

const values = (name: string) =>
  z.array(value(name)).max(
    MAX_FILTER_VALUES,
    `${name}: at most ${MAX_FILTER_VALUES} values`,
  );

/** One parameter as a query gives it (repeated) or a message does (a string or a list). */
const param = (name: string) =>
  z.preprocess(
    (given) => given === undefined ? [] : typeof given === "string" ? [given] : given,
    values(name),
  );

/** The four filter parameters, each a string or a list of them; absent means "any". */
export const filterFields = {
  endpoint: param("endpoint"),
  event: param("event"),
  method: param("method").refine(
    (list) => list.every((one) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(one)),
    "method: must be an HTTP method name, e.g. POST",
  ),
  path: param("path").refine(
    (list) => list.every((one) => one.startsWith("/")),
    'path: must start with "/" (it is the path after the endpoint\'s slug)',
  ),
};

/** The filter parameters of a stream URL's query; unknown parameters are not filters. */
export const filterQuerySchema = z.object(filterFields);

/** The filter parameters named in a query, for `filterQuerySchema` (others are ignored). */
export function filterQuery(
  queries: (name: string) => string[] | undefined,
): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const name of Object.keys(filterFields)) {
    const list = queries(name);
    if (list !== undefined) out[name] = list;
  }
  return out;
}

/** The first problem of a failed filter parse, naming the parameter. */
export function filterProblem(error: z.ZodError): string {
  const issue = error.issues[0];
  const name = String(issue.path[0] ?? "filter");
  // The messages of this module name their parameter already; zod's own ones do not.
  return issue.message.startsWith(`${name}:`) ? issue.message : `${name}: ${issue.message}`;
}

/**
 * The first `endpoint=` value outside a token's limit, or null when every one is inside (or
 * there is no limit): the caller refuses it (403) rather than silently sending nothing.
 */
export function outsideLimit(spec: FilterSpec, limit: EndpointLimit | null): string | null {
  if (limit === null) return null;
  return spec.endpoint.find((slug) => !limit.slugs.has(slug)) ?? null;
}

/** Compiles a spec within a token's endpoint limit; null when together they filter nothing. */
export function compileFilter(spec: FilterSpec, limit: EndpointLimit | null = null): Filter | null {
  const { endpoint, event, method, path } = spec;
  if (limit === null && endpoint.length + event.length + method.length + path.length === 0) {
    return null;
  }
  return {
    spec,
    limit,
    endpoints: endpoint.length ? new Set(endpoint) : null,
    event: event.length ? patternMatcher(event) : null,
    methods: method.length ? new Set(method.map((one) => one.toUpperCase())) : null,
    paths: path.length ? path : null,
  };
}

/** Whether an event passes a filter (always, for null). */
export function matches(filter: Filter | null, event: EventFacts): boolean {
  if (filter === null) return true;
  // An event without an endpoint id (never, since ids were added) passes no limit.
  if (filter.limit && !filter.limit.ids.has(event.endpointId ?? "")) return false;
  if (filter.endpoints && !filter.endpoints.has(event.endpoint)) return false;
  if (filter.methods && !filter.methods.has(event.method.toUpperCase())) return false;
  if (filter.paths && !filter.paths.some((prefix) => event.path.startsWith(prefix))) return false;
  if (filter.event && !filter.event(event.eventType)) return false;
  return true;
}

/** A filter as a client sees it echoed back: every parameter, `[]` for "any". */
export function describeFilter(filter: Filter | null): FilterSpec {
  return filter?.spec ?? { endpoint: [], event: [], method: [], path: [] };
}
