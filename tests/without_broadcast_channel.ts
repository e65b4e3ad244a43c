/**
 * main.ts as it starts on a Deno without BroadcastChannel (2.5, the LTS, run without
 * --unstable-broadcast-channel): lts_test.ts runs this in a child process.
 */
delete (globalThis as { BroadcastChannel?: unknown }).BroadcastChannel;
await import("../main.ts");
