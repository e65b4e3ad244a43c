/**
 * What every request gets on its way through the server: an `X-Request-Id` (the proxy's when
 * TRUST_PROXY=1 and it is sane, else a fresh one) on its response, whatever answered it (the
 * ingest hot path, Hono, the load guard's refusals, SSE, WebSocket upgrades), and, with
 * LOG_REQUESTS=1, one log line with the path's secrets redacted.
 */
import { errorResponse } from "../http/error_response.ts";
import { log, redactQuery } from "./log.ts";
import { requestUserOf, setRequestId } from "./request_context.ts";

/** A request handler, as Deno.serve takes it (the same shape as server.ts's `Handler`). */
type Handler = (
  request: Request,
  info: Deno.ServeHandlerInfo,
) => Response | Promise<Response>;

/** The header carrying a request's id, both ways. */
export const REQUEST_ID_HEADER = "X-Request-Id";

/** A proxy's id is kept when it is 1 to 200 printable ASCII characters, nothing else. */
const SANE_REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** Sets the id on `response`, copying it first when its headers are immutable. */
function withId(response: Response, id: string): Response {
  try {
    response.headers.set(REQUEST_ID_HEADER, id);
    return response;
  } catch {
    // Response.redirect() and fetch() responses have immutable headers.
    const copy = new Response(response.body, response);
    copy.headers.set(REQUEST_ID_HEADER, id);
    return copy;
  }
}

/** Takes a request in (the load guard): returns its release, or throws the refusal. */
type Admit = (request: Request, info: Deno.ServeHandlerInfo) => () => void;

/** Nothing to release: requests served without an admission step. */
const NOTHING = () => {};

/**
 * Wraps the server's handler: ids in and out, a fault's 500 carries the id too, and with
 * `logRequests` one line per request (method, path with secrets redacted, status, duration,
 * request id, user id). With `admit`, each request is admitted first (a refusal is answered,
 * with its id) and released once answered: one continuation per request does both, where a
 * wrapper each cost the hot path a promise and closures more per webhook.
 */
export function withRequestIds(
  handler: Handler,
  options: { trustProxy: boolean; logRequests: boolean; admit?: Admit },
): Handler {
  const { trustProxy, logRequests, admit } = options;
  /** Releases the admission, stamps the id and logs: for answers and faults alike. */
  const finish = (
    request: Request,
    response: Response,
    id: string,
    started: number,
    release: () => void,
  ): Response => {
    release();
    const answered = withId(response, id);
    if (logRequests) logRequest(request, answered.status, started, id);
    return answered;
  };
  const fault = (request: Request, error: unknown): Response =>
    errorResponse(error, { method: request.method, path: pathOnly(request.url), request });
  return (request, info) => {
    const started = logRequests ? performance.now() : 0;
    const proxied = trustProxy ? request.headers.get(REQUEST_ID_HEADER) : null;
    const id = proxied !== null && SANE_REQUEST_ID.test(proxied) ? proxied : crypto.randomUUID();
    setRequestId(request, id);
    let release = NOTHING;
    let answer: Response | Promise<Response>;
    try {
      if (admit) release = admit(request, info);
      answer = handler(request, info);
    } catch (error) {
      return finish(request, fault(request, error), id, started, release);
    }
    if (!(answer instanceof Promise)) return finish(request, answer, id, started, release);
    return answer.then(
      (response) => finish(request, response, id, started, release),
      (error) => finish(request, fault(request, error), id, started, release),
    );
  };
}

/** The path and query of a URL, without scheme and host. */
function pathOf(url: string): string {
  return url.slice(url.indexOf("/", url.indexOf("//") + 2));
}

/** The path of a URL without its query (where secrets may be). */
function pathOnly(url: string): string {
  const path = pathOf(url);
  const query = path.indexOf("?");
  return query === -1 ? path : path.slice(0, query);
}

function logRequest(request: Request, status: number, started: number, requestId: string): void {
  // Tokens travel in query strings (SSE and WebSocket clients): never in the log.
  const path = redactQuery(pathOf(request.url));
  const durationMs = Math.round((performance.now() - started) * 10) / 10;
  log.info(`${request.method} ${path} ${status} ${durationMs}ms`, {
    requestId,
    userId: requestUserOf(request),
    method: request.method,
    path,
    status,
    durationMs,
  });
}
