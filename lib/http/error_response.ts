/** The one place errors become responses: `{"error": message}` with the error's status. */
import { CLIENT_CLOSED_MESSAGE, CLIENT_CLOSED_STATUS, isClientDisconnect } from "./disconnect.ts";
import { HttpError } from "./http_error.ts";
import { isStorageUnavailable, storageUnavailableError } from "../store/kv.ts";
import { log } from "../observe/log.ts";
import { requestIdOf } from "../observe/request_context.ts";

/** Maps any thrown value to a JSON response; real faults are logged once with a reference. */
export function errorResponse(
  error: unknown,
  /** `request`, when given, names the request id in the fault's log line. */
  request: { method: string; path: string; request?: Request },
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
  log.error(`[${reference}] ${request.method} ${request.path} failed:`, error, {
    requestId: request.request ? requestIdOf(request.request) : undefined,
  });
  return Response.json({ error: `Internal error; reference ${reference}` }, {
    status: 500,
    headers: extraHeaders,
  });
}
