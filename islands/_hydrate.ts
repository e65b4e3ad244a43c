/// <reference lib="dom" />
/**
 * The browser half of our islands (the server half is lib/islands.ts): each island's bundle
 * calls `hydrateIslands` once, which finds that island's roots on the page and hydrates each
 * with the props the server wrote into an inert JSON script beside it.
 */
import { type ComponentType, h, hydrate } from "preact";

/** Hydrates every root of island `name` on the page with `component`. */
export function hydrateIslands(
  name: string,
  // deno-lint-ignore no-explicit-any
  component: ComponentType<any>,
): void {
  for (const root of document.querySelectorAll<HTMLElement>(`[data-island="${name}"]`)) {
    const source = document.getElementById(root.dataset.islandProps ?? "");
    try {
      hydrate(h(component, JSON.parse(source?.textContent || "{}")), root);
    } catch (error) {
      // One broken island must not keep the others (or the server-rendered page) from working.
      console.error("island %s failed to hydrate", name, error);
    }
  }
}
