/**
 * Modules imported when first needed rather than at start: the first `node:` module loads Deno's
 * Node layer (15–50 ms of every start, bench part `cold`), and a large SDK costs module loading
 * that most processes never use.
 */

/**
 * `load`, run at the first call only; every call gets the same promise. A load that failed is
 * forgotten, so the next call tries again rather than failing for the life of the process.
 */
export function onFirstUse<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () =>
    loaded ??= load().catch((error) => {
      loaded = undefined;
      throw error;
    });
}
