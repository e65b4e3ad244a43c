/**
 * The one logger of the server (lib/, routes/, main.ts). Text by default, as readable as the
 * `console` lines it replaces; with LOG_FORMAT=json one JSON object per line, so a platform's
 * log pipeline can index request ids, statuses and durations without parsing prose.
 */

/** How lines are written: readable text or one JSON object per line. */
export type LogFormat = "text" | "json";

/** Severity of a line: info goes to stdout, warn and error to stderr. */
export type LogLevel = "info" | "warn" | "error";

/** Structured fields a line may carry; undefined ones are left out. */
export interface LogFields {
  requestId?: string;
  userId?: string;
  method?: string;
  /** The request's path, query strings already redacted (see `redactQuery`). */
  path?: string;
  status?: number;
  durationMs?: number;
  /** The isolate that wrote the line, when the process runs several (WORKERS > 1). */
  isolate?: string;
  [field: string]: string | number | boolean | undefined;
}

let format: LogFormat = "text";
let isolate: string | undefined;

/** Sets the format for this isolate (each Worker sets its own from the same configuration). */
export function configureLog(options: { format: LogFormat; isolate?: string }): void {
  format = options.format;
  isolate = options.isolate;
}

/** The current format, for code that must choose how to print (tests, the entry point). */
export function logFormat(): LogFormat {
  return format;
}

/** An error as one line of text: its stack when it has one (a fault's cause), else its text. */
function describe(error: unknown): string {
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  return String(error);
}

/** Fields a text line's message already says (a request line: "GET /path 200 3.1ms"). */
const IN_TEXT_MESSAGE = new Set(["method", "path", "status", "durationMs"]);

function write(level: LogLevel, message: string, error: unknown, fields?: LogFields): void {
  const out = level === "info" ? console.log : level === "warn" ? console.warn : console.error;
  if (format === "json") {
    const line: Record<string, unknown> = { time: new Date().toISOString(), level, message };
    if (isolate !== undefined) line.isolate = isolate;
    if (fields) {
      for (const [name, value] of Object.entries(fields)) {
        if (value !== undefined) line[name] = value;
      }
    }
    if (error !== undefined) line.error = describe(error);
    out(JSON.stringify(line));
    return;
  }
  let text = message;
  if (fields) {
    for (const [name, value] of Object.entries(fields)) {
      if (value !== undefined && !IN_TEXT_MESSAGE.has(name)) text += ` ${name}=${value}`;
    }
  }
  // "%s" keeps client input (paths, messages) out of the format string.
  if (error === undefined) out("%s", text);
  else out("%s", text, error);
}

/** The logger: `log.info(message, fields)`, `log.error(message, error, fields)`. */
export const log = {
  /** A line about normal operation (start-up, shutdown, requests with LOG_REQUESTS=1). */
  info(message: string, fields?: LogFields): void {
    write("info", message, undefined, fields);
  },
  /** Something degraded that the server works around; `error` is the cause if any. */
  warn(message: string, error?: unknown, fields?: LogFields): void {
    write("warn", message, error, fields);
  },
  /** A fault: something failed that should not have. */
  error(message: string, error?: unknown, fields?: LogFields): void {
    write("error", message, error, fields);
  },
};

/** Query parameters whose values are secrets: any name containing "token", "key" or "secret". */
const SECRET_PARAM = /([?&][^=&#]*(?:token|key|secret|password)[^=&#]*=)[^&#]*/gi;

/**
 * The path and query as logged: values of secret-looking parameters (`?token=wsk_…` of SSE and
 * WebSocket clients, reset and verification links) replaced with "REDACTED".
 */
export function redactQuery(pathAndQuery: string): string {
  return pathAndQuery.indexOf("?") === -1
    ? pathAndQuery
    : pathAndQuery.replace(SECRET_PARAM, "$1REDACTED");
}
