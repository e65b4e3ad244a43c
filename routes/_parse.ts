/** Reading what a request carries: bounded bodies, JSON and forms checked with zod, resume points. */
import type { Context } from "hono";
import { z } from "zod";
import { HttpError } from "../lib/http/http_error.ts";
import { parseWith } from "../lib/http/parse.ts";
import { isId } from "../lib/store/ids.ts";
import { readBody } from "../lib/http/load_guard.ts";
import type { AppEnv } from "./_env.ts";
import {
  compileFilter,
  type EndpointLimit,
  type Filter,
  filterProblem,
  filterQuery,
  filterQuerySchema,
  outsideLimit,
} from "../lib/fanout/filters.ts";
import { ACK_TIMEOUT_SECONDS } from "../lib/fanout/groups.ts";

/**
 * The body of an API or form request: at most API_MAX_BODY_BYTES (413), read with the body
 * timeouts (408); login and sign-up read bodies before anyone is known, so this is all a
 * stranger can make the server hold.
 */
export function readSmallBody(
  c: Context<AppEnv>,
  action: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const { config } = c.get("services");
  return readBody(c.req.raw, { maxBytes: config.apiMaxBodyBytes, action });
}

/** Parses a JSON body with a zod schema; 400 naming the first problem otherwise. */
export async function parseBody<T extends z.ZodType>(
  c: Context<AppEnv>,
  options: { schema: T; action: string },
): Promise<z.infer<T>> {
  const body = await readSmallBody(c, options.action);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw new HttpError(400, `Cannot ${options.action}: body is not valid JSON`);
  }
  return parseWith(json, options);
}

/** The resume point of a stream: `Last-Event-ID` header or `lastEventId` query; 400 if malformed. */
export function resumePoint(c: Context<AppEnv>): string | null {
  const value = c.req.header("Last-Event-ID") ?? c.req.query("lastEventId") ?? null;
  if (value === null || value === "") return null;
  if (!isId(value)) {
    throw new HttpError(400, `Cannot resume: "${value.slice(0, 40)}" is not an event id`);
  }
  return value;
}

/**
 * A stream's filters from its query (`endpoint`, `event`, `method`, `path`, each repeatable),
 * within the token's endpoint `limit`; null when there are none; 400 naming the parameter when
 * one is malformed, 403 for an `endpoint=` outside the limit.
 */
export function streamFilter(c: Context<AppEnv>, limit: EndpointLimit | null): Filter | null {
  const parsed = filterQuerySchema.safeParse(filterQuery((name) => c.req.queries(name)));
  if (!parsed.success) {
    throw new HttpError(400, `Cannot subscribe: ${filterProblem(parsed.error)}`);
  }
  const outside = outsideLimit(parsed.data, limit);
  if (outside !== null) {
    throw new HttpError(
      403,
      `Forbidden: endpoint ${outside.slice(0, 40)} is not one of this token's endpoints`,
    );
  }
  return compileFilter(parsed.data, limit);
}

/**
 * A stream's consumer group from its query (`group`, `ackTimeoutSeconds`); null without
 * `group`; 400 naming the parameter when one is malformed (the name itself is checked when the
 * group is prepared).
 */
export function streamGroup(c: Context<AppEnv>): { name: string; ackTimeoutMs: number } | null {
  const name = c.req.query("group");
  if (name === undefined) return null;
  const given = c.req.query("ackTimeoutSeconds");
  const { min, max } = ACK_TIMEOUT_SECONDS;
  const seconds = given === undefined ? ACK_TIMEOUT_SECONDS.default : Number(given);
  if (!Number.isInteger(seconds) || seconds < min || seconds > max) {
    throw new HttpError(
      400,
      `Cannot join group: ackTimeoutSeconds must be a whole number of seconds from ${min} to ${max}`,
    );
  }
  return { name, ackTimeoutMs: seconds * 1000 };
}

/** The form that creates something named (a token, an endpoint). */
export const nameForm = z.object({
  name: z.string().trim().min(1, "Name is required").max(
    100,
    "Name must be at most 100 characters",
  ),
});

/** A form's fields as strings, and either the parsed data or per-field problems. */
export type FormResult<T> =
  | { ok: true; data: T; values: Record<string, string>; lists: Record<string, string[]> }
  | {
    ok: false;
    errors: Record<string, string>;
    values: Record<string, string>;
    lists: Record<string, string[]>;
  };

/**
 * Reads an urlencoded or multipart form and validates it; problems are keyed by field. Fields
 * named in `lists` (checkboxes) reach the schema as every value given, in order; `values`
 * keeps the last one of each field.
 */
export async function readForm<T extends z.ZodType>(
  c: Context<AppEnv>,
  schema: T,
  options: { lists?: readonly string[] } = {},
): Promise<FormResult<z.infer<T>>> {
  const bytes = await readSmallBody(c, "read form");
  const type = c.req.header("Content-Type") ?? "";
  const values: Record<string, string> = {};
  const lists: Record<string, string[]> = {};
  for (const name of options.lists ?? []) lists[name] = [];
  if (/^(application\/x-www-form-urlencoded|multipart\/form-data)/i.test(type)) {
    let form: FormData;
    try {
      form = await new Response(bytes, { headers: { "Content-Type": type } }).formData();
    } catch {
      throw new HttpError(400, "Cannot read form: the body is not a form");
    }
    for (const [name, value] of form) {
      if (typeof value !== "string") continue;
      values[name] = value;
      lists[name]?.push(value);
    }
  }
  const parsed = schema.safeParse({ ...values, ...lists });
  if (parsed.success) return { ok: true, data: parsed.data, values, lists };
  const errors: Record<string, string> = {};
  for (const issue of parsed.error.issues) {
    const field = String(issue.path[0] ?? "form");
    errors[field] ??= issue.message;
  }
  return { ok: false, errors, values, lists };
}
