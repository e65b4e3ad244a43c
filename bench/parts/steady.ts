/** Part "steady": POST→client latency at a steady, open-loop 500 webhooks/s. */
import type { PartContext } from "../part.ts";
import { measureLoad } from "./load.ts";

/** Part "steady" on one isolate; figures under `steady`. */
export function run(context: PartContext): Promise<void> {
  return measureLoad(context, "steady");
}
