/**
 * Large webhook bodies (over STREAM_BODY_BYTES): admitted before a byte is staged, then written
 * into KV chunks as they arrive while being checked on the way: UTF-8 validity (a streaming
 * fatal decoder) and, for bodies declared JSON or untyped, JSON syntax (json_check.ts). A body
 * refused midway stops being read and its chunks are deleted.
 */
import type { BodySink } from "../http/load_guard.ts";
import { HttpError } from "../http/http_error.ts";
import { createBodyStager, discardBody, readStagedBody } from "../log/events.ts";
import { createJsonCheck } from "./json_check.ts";
import type { StagedWebhookBody } from "./group_commit.ts";
import type { StreamedBody } from "./signatures.ts";
import { log } from "../observe/log.ts";

/** Any character beyond Latin-1. */
const BEYOND_LATIN1 = /[\u0100-\uffff]/;

/** Opens the sink of one large body once `admit` lets it in (admit throws to refuse it). */
export function largeBodySink(
  kv: Deno.Kv,
  options: {
    userId: string;
    expireIn: number;
    /** The body must be JSON (declared so, or untyped): refuse it at the first wrong byte. */
    json: boolean;
    admit: () => Promise<void>;
  },
): () => Promise<BodySink<StagedWebhookBody>> {
  return async () => {
    await options.admit();
    const stager = createBodyStager(kv, { userId: options.userId, expireIn: options.expireIn });
    const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    const json = options.json ? createJsonCheck() : null;
    let utf8 = true;
    /** What building its envelope will take (see LargeBodyFacts in events.ts). */
    let chars = 0;
    let escapedChars = 0;
    let wide = false;
    const measure = (text: string) => {
      if (text === "") return;
      chars += text.length;
      escapedChars += JSON.stringify(text).length - 2;
      wide ||= BEYOND_LATIN1.test(text);
    };
    /** Bytes taken when the decoder refused: the first invalid byte is among them. */
    let invalidWithin = 0;
    const notJson = (detail: string) =>
      new HttpError(400, `Cannot ingest: body is not valid JSON (${detail})`, {
        Connection: "close",
      });
    const notUtf8 = () => notJson(`not UTF-8 text, within its first ${invalidWithin} bytes`);
    return {
      capacity: stager.capacity,
      async write(piece) {
        if (utf8) {
          try {
            measure(decoder.decode(piece, { stream: true }));
          } catch {
            utf8 = false;
            invalidWithin = stager.size + piece.byteLength;
          }
        }
        if (json) {
          // A JSON body must be UTF-8; the syntax check runs on the bytes.
          if (!utf8) throw notUtf8();
          const error = json.write(piece);
          if (error !== null) throw notJson(error);
        }
        await stager.write(piece);
      },
      async close() {
        if (utf8) {
          try {
            measure(decoder.decode());
          } catch {
            utf8 = false;
            invalidWithin = stager.size;
          }
        }
        if (json) {
          if (!utf8) throw notUtf8();
          const error = json.end();
          if (error !== null) throw notJson(error);
        }
        const staged = await stager.finish();
        return utf8 ? { ...staged, utf8, chars, escapedChars, wide } : { ...staged, utf8 };
      },
      abort: () => stager.discard(),
    };
  };
}

/** A staged body as signatures.ts reads it: its size, and its chunks streamed back from KV. */
export function stagedBodyReader(
  kv: Deno.Kv,
  options: { userId: string; staged: StagedWebhookBody },
): StreamedBody {
  return {
    size: options.staged.size,
    read: () => readStagedBody(kv, { userId: options.userId, blobId: options.staged.blobId }),
  };
}

/** Deletes a staged body refused before its webhook was submitted (submit discards after). */
export function discardStaged(
  kv: Deno.Kv,
  options: { userId: string; staged: StagedWebhookBody },
): void {
  discardBody(kv, { userId: options.userId, ...options.staged }).catch((cause) =>
    log.error("discarding a staged body failed", cause)
  );
}
