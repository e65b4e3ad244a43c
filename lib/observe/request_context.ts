/**
 * What is known about a request on its way through: its id and the account it acts for. A leaf
 * module (requests.ts sets them, error logs and the auth middleware read or add), so error
 * handling can name the request without importing the wrapper that calls it.
 */

/** Request ids by request, so error logs deep in a handler can name theirs. */
const ids = new WeakMap<Request, string>();
/** The account a request acted for, once authentication knows it. */
const users = new WeakMap<Request, string>();

/** Remembers the id given to `request` (requests.ts). */
export function setRequestId(request: Request, id: string): void {
  ids.set(request, id);
}

/** The id given to `request`, if it came through `withRequestIds`. */
export function requestIdOf(request: Request): string | undefined {
  return ids.get(request);
}

/** Notes the account `request` acts for, so its log line names it. */
export function noteRequestUser(request: Request, userId: string): void {
  users.set(request, userId);
}

/** The account `request` acted for, when authentication noted it. */
export function requestUserOf(request: Request): string | undefined {
  return users.get(request);
}
