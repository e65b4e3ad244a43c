/** The one place errors become responses: `{"error": message}` with the error's status. */
import { HttpError } from "../lib/http_error.ts";
import { isStorageUnavailable, storageUnavailableError } from "../lib/kv.ts";

/** Maps any thrown value to a JSON response; real faults are logged once with a reference. */
export function errorResponse(
  error: unknown,
  request: { method: string; path: string },
  extraHeaders: Record<string, string> = {},
): Response {
  // A full or failing store is a condition to report, not a fault of this request.
  if (isStorageUnavailable(error)) error = storageUnavailableError(error, "save");
  if (error instanceof HttpError) {
    return Response.json({ error: error.message, ...error.details }, {
      status: error.status,
      headers: { ...extraHeaders, ...error.headers },
    });
  }
  const reference = crypto.randomUUID();
  console.error(`[${reference}] ${request.method} ${request.path} failed:`, error);
  return Response.json({ error: `Internal error; reference ${reference}` }, {
    status: 500,
    headers: extraHeaders,
  });
}
