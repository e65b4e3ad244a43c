/**
 * Islands, server half: interactive Preact components in islands/ rendered to HTML with the page,
 * then hydrated in the browser by islands/_hydrate.ts. Which islands exist is not known here:
 * islands/_registry.ts names them, and components/Island.tsx renders one by name through
 * `renderIsland`, so lib/ never imports the islands themselves.
 *
 * Each island's root is marked with its name and the id of an inert `<script
 * type="application/json">` holding its props, so no inline script is needed (the CSP forbids
 * them). `renderPage` notes which islands a page used and loads only their bundles.
 */
import { type ComponentType, Fragment, h, type VNode } from "preact";
import { render } from "preact-render-to-string";

/** The browser side of an island: its module script and the shared chunks it imports. */
export interface IslandScripts {
  src: string;
  preload: string[];
}

/** The page being rendered: rendering is synchronous, so one slot is enough. */
let current: { used: Set<string>; next: number } | null = null;

/** JSON that is safe inside a `<script>` element: nothing in it can close the element. */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replaceAll("<", "\\u003c")
    .replaceAll(">", "\\u003e")
    .replaceAll("&", "\\u0026")
    .replaceAll("\u2028", "\\u2028")
    .replaceAll("\u2029", "\\u2029");
}

/**
 * Renders island `name` (its `component`) with `props`: server HTML in a marked root, props
 * beside it as JSON. components/Island.tsx is the typed way in, tying each name to its props.
 */
export function renderIsland<P>(
  island: { name: string; component: ComponentType<P>; props: P },
): VNode {
  if (!current) throw new Error(`Cannot render island ${island.name}: not inside renderPage`);
  current.used.add(island.name);
  const id = `island-props-${current.next++}`;
  // The typed caller ties name to props; inside, one loose type is enough.
  // deno-lint-ignore no-explicit-any
  const component = island.component as ComponentType<any>;
  return h(
    Fragment,
    null,
    h("script", {
      type: "application/json",
      id,
      dangerouslySetInnerHTML: { __html: jsonForScript(island.props) },
    }),
    h("div", { "data-island": island.name, "data-island-props": id }, h(component, island.props)),
  );
}

/** Renders a whole page to an HTML document, with the module scripts of the islands it used. */
export function renderPage(
  page: VNode,
  options: { scripts(name: string): IslandScripts },
): string {
  const used = new Set<string>();
  current = { used, next: 0 };
  let html: string;
  try {
    html = render(page);
  } finally {
    current = null;
  }
  const preload = new Set<string>();
  const tags: string[] = [];
  for (const name of used) {
    const scripts = options.scripts(name);
    for (const chunk of scripts.preload) preload.add(chunk);
    tags.push(`<script type="module" src="${scripts.src}"></script>`);
  }
  const links = [...preload].map((href) => `<link rel="modulepreload" href="${href}">`);
  const head = [...links, ...tags].join("");
  return "<!doctype html>" + (head ? html.replace("</head>", `${head}</head>`) : html);
}
