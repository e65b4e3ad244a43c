/** The one place errors become responses: `{"error": message}` with the error's status. */
import { CLIENT_CLOSED_MESSAGE, CLIENT_CLOSED_STATUS, isClientDisconnect } from "./disconnect.ts";
import { HttpError } from "./http_error.ts";
import { isStorageUnavailable, storageUnavailableError } from "../store/kv.ts";

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
  if (isClientDisconnect(error)) {
    return Response.json({ error: CLIENT_CLOSED_MESSAGE }, {
      status: CLIENT_CLOSED_STATUS,
      headers: extraHeaders,
    });
  }
  const reference = crypto.randomUUID();
  // The path is the client's input: never part of the format string.
  console.error("[%s] %s %s failed:", reference, request.method, request.path, error);
  return Response.json({ error: `Internal error; reference ${reference}` }, {
    status: 500,
    headers: extraHeaders,
  });
}
