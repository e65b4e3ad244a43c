import assert from "node:assert/strict";
import { DOCS_EXAMPLES, docsPath } from "./docs_examples.ts";

const path = docsPath();

Deno.test({
  name: "[docs] the examples the tests run appear verbatim in websocks-docs.txt",
  // The docs live outside the repository (shared/seed/ beside it, or $WEBSOCKS_DOCS).
  ignore: path === null,
  fn: async () => {
    const docs = await Deno.readTextFile(path!);
    for (const [name, example] of Object.entries(DOCS_EXAMPLES)) {
      assert.ok(docs.includes(example), `${name} is no longer verbatim in ${path}`);
    }
  },
});
