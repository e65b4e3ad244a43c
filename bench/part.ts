/** What every benchmark part (bench/parts/*.ts) is handed by the runner. */
import type { Machine } from "./machine.ts";
import type { Settings } from "./settings.ts";

/** A part's whole world: nothing it needs lives in a module-level variable. */
export interface PartContext {
  readonly settings: Settings;
  readonly machine: Machine;
  /**
   * Files figures under a results.json key as soon as they are measured, so a part that fails
   * half-way still leaves what it measured before the failure.
   */
  record(key: string, figures: unknown): void;
}

/** One benchmark part: prints its section and records its figures. */
export type PartRun = (context: PartContext) => Promise<void>;
