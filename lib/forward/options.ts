/** The forwarder's settings, exit codes and output sink; `forward.ts` fills the options. */

/** Everything the forwarder needs; `forward.ts` fills it from flags and environment. */
export interface ForwardOptions {
  /** WebSocks server base URL (http or https). */
  url: string;
  token: string;
  /**
   * Where webhooks go when no route matches; the envelope's path is appended. Without it, an
   * event no route takes is skipped (acked, with a line saying so).
   */
  target?: string;
  /** Only these endpoints' webhooks (`endpoint=` filters on the server); empty: all. */
  endpoints: string[];
  /** Only events whose type matches one of these patterns (`event=` filters); empty: all. */
  events: string[];
  /** `--route pattern=url`, in order: an event goes to the first whose pattern matches its type. */
  routes: { pattern: string; target: string }[];
  /** Resume state: by default one file per server and filter set in the user's state folder. */
  stateFile: string;
  /** Attempts per event before it is reported as failed. */
  attempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** A connection silent this long is replaced; the client library pings at a third of it. */
  heartbeatTimeoutMs: number;
  /** Per-attempt timeout for the target, so a hung target cannot stall the stream forever. */
  requestTimeoutMs: number;
}

/** Defaults for the tuning knobs. */
export const DEFAULTS = {
  attempts: 6,
  retryBaseMs: 500,
  retryMaxMs: 30_000,
  heartbeatTimeoutMs: 30_000,
  requestTimeoutMs: 30_000,
} as const;

/** Exit codes a script can rely on. */
export const EXIT = { ok: 0, badArguments: 2, unauthorized: 3, unreachable: 4 } as const;

/** Where the output goes; injectable so tests of the pure parts need no process. */
export interface Output {
  line(text: string): void;
  error(text: string): void;
}

/** Output to the console: lines to stdout, errors to stderr. */
export const consoleOutput: Output = {
  line: (text) => console.log("%s", text),
  error: (text) => console.error("%s", text),
};

/** Counts for the summary line. */
export interface Totals {
  forwarded: number;
  rejected: number;
  failed: number;
  /** Events no route took, with no `--target` to fall back on. */
  skipped: number;
}
