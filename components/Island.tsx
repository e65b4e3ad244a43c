/** An island in a page, by name, with the props its component takes (see islands/_registry.ts). */
import type { ComponentProps, VNode } from "preact";
import { renderIsland } from "../lib/web/islands.ts";
import { type IslandName, ISLANDS } from "../islands/_registry.ts";

/** Renders island `name` with `props`, server-side, marked for hydration in the browser. */
export function Island<N extends IslandName>(
  island: { name: N; props: ComponentProps<typeof ISLANDS[N]> },
): VNode {
  return renderIsland({
    name: island.name,
    component: ISLANDS[island.name] as (props: typeof island.props) => VNode,
    props: island.props,
  });
}
