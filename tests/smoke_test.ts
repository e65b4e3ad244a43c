import assert from "node:assert/strict";
import { openWs, postWebhook, signUp, startTestServer } from "./helpers.ts";

Deno.test("[ws] a posted webhook reaches a connected WebSocket", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const ws = await openWs(`${server.wsUrl}?token=${user.token}`);
  const response = await postWebhook(user.webhookUrl, JSON.stringify({ hello: "world" }));
  assert.equal(response.status, 200);
  const message = await ws.next();
  assert.equal(message.type, "webhook");
  assert.deepEqual(message.payload, { hello: "world" });
  await ws.close();
});
