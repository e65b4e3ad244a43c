/**
 * The state file: the last event id done, so a restart resumes with `lastEventId` and loses
 * nothing.
 */
import { z } from "zod";

const stateSchema = z.object({ lastEventId: z.string().min(1).nullable() });

/** The last event id done, or null when there is no (readable) state yet. */
export async function readState(file: string): Promise<string | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  const parsed = stateSchema.safeParse(
    (() => {
      try {
        return JSON.parse(text);
      } catch {
        return null;
      }
    })(),
  );
  if (!parsed.success) throw new Error(`state file ${file} is not valid; delete it to start over`);
  return parsed.data.lastEventId;
}

/** Records the last event id done; temp file + rename, so a crash never leaves half a file. */
export async function writeState(file: string, lastEventId: string): Promise<void> {
  const temp = `${file}.${Deno.pid}.tmp`;
  const text = JSON.stringify({ lastEventId, updatedAt: new Date().toISOString() }) + "\n";
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, file);
}
