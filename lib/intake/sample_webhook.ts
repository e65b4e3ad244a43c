/** The dashboard's "send a test webhook": a sample request through the same path as any sender's. */
import { ownedEndpoint } from "../endpoints/endpoints.ts";
import { receiveWebhook } from "./receive.ts";
import type { Services } from "../runtime/services.ts";
import { endpointUrl } from "../endpoints/urls.ts";

/** The sample body, also what the dashboard's button posts from the browser. */
export const TEST_WEBHOOK_BODY = JSON.stringify({
  event: "websocks.test",
  message: "Hello from the WebSocks dashboard",
});

/** Sends the sample to one of the user's endpoints; 404 when the slug is not theirs. */
export async function sendTestWebhook(
  services: Services,
  options: { userId: string; slug: string },
): Promise<{ id: string }> {
  await ownedEndpoint(services.kv, { ...options, action: "send test webhook" });
  const request = new Request(endpointUrl(services.config, options.slug), {
    method: "POST",
    headers: { "Content-Type": "application/json", "User-Agent": "WebSocks dashboard" },
    body: TEST_WEBHOOK_BODY,
  });
  const { id } = await receiveWebhook(services, { request, slug: options.slug, path: "/" });
  // Only a provider's handshake goes unstored, and the sample is none.
  if (id === null) throw new Error("the test webhook was taken for a handshake");
  return { id };
}
