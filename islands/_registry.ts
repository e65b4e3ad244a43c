/**
 * Every island, named as its file in this folder: the server renders them by these names
 * (components/Island.tsx) and the bundle build makes one module per name (lib/web/bundles.ts).
 */
import CopyButton from "./CopyButton.tsx";
import EventInspector from "./EventInspector.tsx";
import MonthUsage from "./MonthUsage.tsx";
import SendTestWebhook from "./SendTestWebhook.tsx";

/** Every island by name. */
export const ISLANDS = { CopyButton, EventInspector, MonthUsage, SendTestWebhook };

/** The name of an island. */
export type IslandName = keyof typeof ISLANDS;

/** What the bundle build needs: the names, and this folder (with _hydrate.ts) as a URL. */
export const ISLAND_MODULES = {
  names: Object.keys(ISLANDS) as IslandName[],
  folder: new URL("./", import.meta.url).href,
};
