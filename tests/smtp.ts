/** A real SMTP server in the test process (smtp-server), with mails parsed by mailparser. */
import { SMTPServer } from "smtp-server";
import { type ParsedMail, simpleParser } from "mailparser";
import type { AddressObject } from "mailparser";
import { waitFor } from "./helpers.ts";

/** A received mail, parsed, with its recipient and the first link of its text. */
export interface ReceivedMail {
  parsed: ParsedMail;
  to: string;
  subject: string;
  text: string;
  html: string;
  messageId: string;
  /** The first http(s) link of the plain text. */
  link: string | null;
}

/** A running SMTP server collecting mails. */
export interface TestSmtp {
  port: number;
  /** SMTP_URL for the server under test. */
  url: string;
  mails: ReceivedMail[];
  /** Waits for a mail to `to` (the first not yet taken) and takes it. */
  next(to: string, timeoutMs?: number): Promise<ReceivedMail>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const toAddress = (to: AddressObject | AddressObject[] | undefined) =>
  (Array.isArray(to) ? to : to ? [to] : []).flatMap((a) => a.value.map((v) => v.address ?? ""))
    .join(",");

/** Starts a plain SMTP server (no STARTTLS, no auth) on 127.0.0.1, on `port` or a free one. */
export async function startSmtp(options: { port?: number } = {}): Promise<TestSmtp> {
  const mails: ReceivedMail[] = [];
  const taken = new Set<ReceivedMail>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    logger: false,
    onData(stream, _session, callback) {
      simpleParser(stream).then((parsed) => {
        const text = parsed.text ?? "";
        mails.push({
          parsed,
          to: toAddress(parsed.to),
          subject: parsed.subject ?? "",
          text,
          html: typeof parsed.html === "string" ? parsed.html : "",
          messageId: parsed.messageId ?? "",
          link: text.match(/https?:\/\/\S+/)?.[0] ?? null,
        });
        callback();
      }, (error) => callback(error));
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => {
      const address = server.server.address();
      resolve(typeof address === "object" && address ? address.port : 0);
    });
  });
  // smtp-server's close waits for every socket; on Deno 2.5 its callback may never come once a
  // client (nodemailer) has hung up, and nothing then keeps the loop alive, so the runner
  // abandons the test ("Promise resolution is still pending"). The close is awaited for at most
  // a second, on a timer that keeps the loop alive, and cleared as soon as the callback comes.
  const close = () =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      server.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    mails,
    async next(to, timeoutMs = 15_000) {
      let found: ReceivedMail | undefined;
      await waitFor(() => {
        found = mails.find((m) => m.to === to && !taken.has(m));
        return !!found;
      }, { what: `a mail to ${to}`, timeoutMs, intervalMs: 20 });
      taken.add(found!);
      return found!;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A port nobody listens on (bound and released at once): an SMTP server that is down. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
