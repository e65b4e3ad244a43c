/**
 * The test-only response check (API_RESPONSE_CHECK=1): an answer that differs from its route's
 * declaration (an undeclared status, another content type, a body its schema refuses, a field
 * the schema does not name) becomes a 500 naming the difference, and is logged as a fault, so
 * the test that produced it fails and the description cannot drift from the code. It reads a
 * copy of every JSON body: never on in production.
 */
import type { z } from "zod";
import { log } from "../observe/log.ts";
import type { ApiRoute } from "./openapi.ts";

/**
 * What is wrong with an answer to a request for `route`, or null when it is as declared; `body`
 * is the answer's text when it is JSON (else null: streams and downloads are checked by status
 * and content type only).
 */
export function responseProblem(
  route: ApiRoute,
  response: { status: number; contentType: string | null; body: string | null },
  errorSchema: z.ZodType,
): string | null {
  const status = response.status;
  const declared = route.responses[status] ??
    (status >= 400 ? { description: "an error", schema: errorSchema } : undefined);
  if (!declared) return `status ${status} is not declared`;
  // Bodiless answers (101, 204) have nothing more to check.
  if (status === 101 || status === 204) return null;
  const expected = declared.contentType ?? "application/json";
  const actual = (response.contentType ?? "").split(";")[0].trim();
  if (actual !== expected) return `content type is ${actual || "absent"}, not ${expected}`;
  if (!declared.schema || response.body === null) return null;
  let json: unknown;
  try {
    json = JSON.parse(response.body);
  } catch {
    return "the body is not JSON";
  }
  const parsed = declared.schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return `${issue.path.join(".") || "body"}: ${issue.message}`;
  }
  const extra = undeclaredField(json, parsed.data, "");
  return extra === null ? null : `${extra}: the schema does not declare this field`;
}

/**
 * The first field of `sent` the schema dropped (zod objects strip undeclared keys, so what the
 * parse left out is what the schema does not name), or null.
 */
function undeclaredField(sent: unknown, parsed: unknown, path: string): string | null {
  if (Array.isArray(sent) && Array.isArray(parsed)) {
    for (let i = 0; i < sent.length; i++) {
      const found = undeclaredField(sent[i], parsed[i], `${path}[${i}]`);
      if (found !== null) return found;
    }
    return null;
  }
  if (!isRecord(sent) || !isRecord(parsed)) return null;
  for (const [key, value] of Object.entries(sent)) {
    const at = path ? `${path}.${key}` : key;
    if (!(key in parsed)) return at;
    const found = undeclaredField(value, parsed[key], at);
    if (found !== null) return found;
  }
  return null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The answer as declared (a JSON answer is read whole and handed on with the same status,
 * headers and bytes), else a 500 naming the route and the problem, logged as any fault is.
 */
export async function checkedResponse(
  route: ApiRoute,
  response: Response,
  errorSchema: z.ZodType,
): Promise<Response> {
  const contentType = response.headers.get("Content-Type");
  const isJson = /^application\/json\b/i.test(contentType ?? "");
  const bytes = isJson && response.body !== null ? await response.arrayBuffer() : null;
  const problem = responseProblem(route, {
    status: response.status,
    contentType,
    body: bytes === null ? null : new TextDecoder().decode(bytes),
  }, errorSchema);
  if (problem === null) return bytes === null ? response : new Response(bytes, response);
  const message = `Response check: ${route.method.toUpperCase()} ${route.path} answered ` +
    `${response.status}, which differs from its declaration: ${problem}`;
  log.error(`[response check] ${message}`);
  if (bytes === null) await response.body?.cancel();
  return Response.json({ error: message }, { status: 500 });
}
