import assert from "node:assert/strict";
import { floorMessage } from "../bench/ws_send_floor.ts";

Deno.test("[bench ws floor] the message has the length asked for, as WebSocks' envelopes do", () => {
  for (const bytes of [200, 1096, 2561]) {
    const message = floorMessage(bytes);
    assert.equal(message.length, bytes);
    assert.equal(JSON.parse(message).type, "webhook");
  }
});

Deno.test("[bench ws floor] without a size the message is the ~1.1 KB it always was", () => {
  assert.equal(floorMessage().length, 1096);
  assert.equal(JSON.parse(floorMessage()).body.text.length, 1024);
});
