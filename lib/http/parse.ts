/** Validating input with a zod schema: a 400 that names the first problem, else the typed value. */
import type { z } from "zod";
import { HttpError } from "./http_error.ts";

/** Validates a value with a zod schema; 400 naming the first problem otherwise. */
export function parseWith<T extends z.ZodType>(
  value: unknown,
  options: { schema: T; action: string },
): z.infer<T> {
  const parsed = options.schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue.path.length ? `${issue.path.join(".")}: ` : "";
  throw new HttpError(400, `Cannot ${options.action}: ${field}${issue.message}`);
}
