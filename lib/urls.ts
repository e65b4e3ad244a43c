/** Public URLs shown to users. */

/** The webhook URL of a slug. */
export function endpointUrl(publicUrl: string, slug: string): string {
  return `${publicUrl}/api/in/${slug}`;
}

/** The WebSocket URL of the server (ws:// or wss:// for http:// or https://). */
export function websocketUrl(publicUrl: string): string {
  return publicUrl.replace(/^http/, "ws");
}
