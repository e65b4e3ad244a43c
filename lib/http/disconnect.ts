/**
 * Recognises a client that went away mid-request (closed the connection while its body was
 * being read). That is the client's doing, not a fault of ours: answered, never logged as one.
 */

/** The status for a request whose client left (nginx's "client closed request"). */
export const CLIENT_CLOSED_STATUS = 499;

/** The message of that answer, which nobody will read. */
export const CLIENT_CLOSED_MESSAGE =
  "Cannot read request: the client closed the connection before sending all of it";

const DISCONNECT_ERRORS = [
  Deno.errors.ConnectionReset,
  Deno.errors.ConnectionAborted,
  Deno.errors.BrokenPipe,
  Deno.errors.UnexpectedEof,
  Deno.errors.Interrupted,
];

/** True when `error` (or its cause) says the client closed the connection. */
export function isClientDisconnect(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (DISCONNECT_ERRORS.some((type) => e instanceof type)) return true;
    // Reading a body whose connection is gone; other BadResource errors (a closed store) stay
    // faults.
    if (e instanceof Deno.errors.BadResource && /\bbody\b/i.test(e.message)) return true;
    if (
      e instanceof Deno.errors.Http &&
      /connection closed before message completed|connection reset|body write aborted/i.test(
        e.message,
      )
    ) return true;
  }
  return false;
}
