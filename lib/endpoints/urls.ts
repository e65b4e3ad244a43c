/** Public URLs shown to users. */
import type { Config } from "../runtime/config.ts";

/** The URLs a configuration serves on. */
export type UrlConfig = Pick<Config, "publicUrl" | "ingestUrl">;

/** Where senders post: INGEST_URL when set (a host of its own), else the public URL. */
export function ingestBase(config: UrlConfig): string {
  return config.ingestUrl ?? config.publicUrl;
}

/** The webhook URL of a slug. */
export function endpointUrl(config: UrlConfig, slug: string): string {
  return `${ingestBase(config)}/api/in/${slug}`;
}

/** The WebSocket URL of the server (ws:// or wss:// for http:// or https://). */
export function websocketUrl(publicUrl: string): string {
  return publicUrl.replace(/^http/, "ws");
}
