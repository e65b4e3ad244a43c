/**
 * CPU profiling of the server under test through its V8 inspector (`--inspect`): the Chrome
 * DevTools protocol's Profiler domain records the main JS thread; `analyze` turns the profile
 * into self and inclusive time per function and per area (project code, Hono, Deno runtime...).
 */
import { ROOT } from "./procs.ts";

/** The parts of a V8 .cpuprofile that the analysis reads. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A DevTools-protocol session to one inspector target. */
export interface Inspector {
  send(method: string, params?: Record<string, unknown>): Promise<Record<string, unknown>>;
  close(): void;
}

/** Connects to the first target of the inspector on `port`. */
export async function connectInspector(port: number): Promise<Inspector> {
  let targets: { webSocketDebuggerUrl: string }[] = [];
  for (let attempt = 0; attempt < 50 && targets.length === 0; attempt++) {
    try {
      targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  if (targets.length === 0) throw new Error(`no inspector target on port ${port}`);
  const socket = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () => reject(new Error("cannot connect to the inspector"));
  });
  let nextId = 1;
  const waiting = new Map<
    number,
    { resolve(value: Record<string, unknown>): void; reject(error: Error): void }
  >();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data as string);
    const waiter = message.id === undefined ? undefined : waiting.get(message.id);
    if (!waiter) return;
    waiting.delete(message.id);
    if (message.error) waiter.reject(new Error(JSON.stringify(message.error)));
    else waiter.resolve(message.result ?? {});
  };
  return {
    send(method, params = {}) {
      const id = nextId++;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
    },
    close: () => socket.close(),
  };
}

/** One row of the analysis. */
export interface ProfileRow {
  name: string;
  /** Milliseconds (CPU profile) or bytes (heap profile). */
  ms: number;
  percent: number;
}

/** Self and inclusive time, by function and by area. */
export interface ProfileAnalysis {
  totalMs: number;
  /** Share of samples in which the main thread was idle, waiting for I/O. */
  idlePercent: number;
  areas: ProfileRow[];
  self: ProfileRow[];
  /** Inclusive time of project functions (lib/, routes/, main.ts). */
  projectInclusive: ProfileRow[];
}

function shortUrl(url: string): string {
  const root = `file://${ROOT}`;
  if (url.startsWith(root)) url = url.slice(root.length);
  const modules = url.indexOf("node_modules/");
  if (modules !== -1) {
    url = url.slice(modules + "node_modules/".length).replace(/^\.deno\/[^/]+\/node_modules\//, "");
  }
  return url;
}

function areaOf(url: string, name: string): string {
  if (!url) return name.startsWith("(") ? name : "(native / V8 builtins)";
  const short = shortUrl(url);
  if (/^(lib|routes)\//.test(short) || short === "main.ts") {
    return `project ${short.split("/")[0]}/`;
  }
  if (short.startsWith("hono")) return "hono";
  if (short.startsWith("zod")) return "zod";
  if (short.startsWith("ext:")) return `deno runtime ${short.slice(4).split("/")[0]}`;
  if (short.startsWith("node:")) return "deno node compat";
  return short.split("/")[0];
}

/** Aggregates a profile; `top` rows per list. */
export function analyze(profile: CpuProfile, top = 15): ProfileAnalysis {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const keyOf = (id: number) => {
    const frame = byId.get(id)!.callFrame;
    const name = frame.functionName || "(anonymous)";
    return frame.url ? `${name} ${shortUrl(frame.url)}:${frame.lineNumber + 1}` : name;
  };
  const self = new Map<string, number>();
  const areas = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; the time after it is the next delta.
    const us = profile.timeDeltas[i + 1] ?? 0;
    const id = profile.samples[i];
    const frame = byId.get(id)!.callFrame;
    total += us;
    if (frame.functionName === "(idle)") idle += us;
    const key = keyOf(id);
    self.set(key, (self.get(key) ?? 0) + us);
    const area = areaOf(frame.url, frame.functionName);
    areas.set(area, (areas.get(area) ?? 0) + us);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const url = byId.get(at)!.callFrame.url;
      if (!areaOf(url, "").startsWith("project")) continue;
      const k = keyOf(at);
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + us);
    }
  }
  const rows = (map: Map<string, number>, n: number) =>
    [...map].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, us]) => ({
      name,
      ms: us / 1000,
      percent: (100 * us) / total,
    }));
  return {
    totalMs: total / 1000,
    idlePercent: (100 * idle) / total,
    areas: rows(areas, top),
    self: rows(self, top),
    projectInclusive: rows(inclusive, top),
  };
}

/** A node of V8's sampling heap profile. */
export interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/** Live sampled bytes by allocating function, and by the nearest project or library frame. */
export function analyzeHeap(
  head: HeapNode,
  top = 10,
): { totalBytes: number; byFunction: ProfileRow[]; byOwner: ProfileRow[] } {
  const byFunction = new Map<string, number>();
  const byOwner = new Map<string, number>();
  let total = 0;
  const walk = (node: HeapNode, owner: string) => {
    const frame = node.callFrame;
    const name = frame.functionName || "(anonymous)";
    const key = frame.url ? `${name} ${shortUrl(frame.url)}:${frame.lineNumber + 1}` : name;
    const area = areaOf(frame.url, "");
    // The owner is the innermost frame of our code or a library: who asked for the memory.
    const nextOwner = area.startsWith("project") || area === "hono" ? key : owner;
    if (node.selfSize > 0) {
      total += node.selfSize;
      byFunction.set(key, (byFunction.get(key) ?? 0) + node.selfSize);
      byOwner.set(nextOwner, (byOwner.get(nextOwner) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, nextOwner);
  };
  walk(head, "(runtime, no project frame)");
  const rows = (map: Map<string, number>) =>
    [...map].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, bytes]) => ({
      name,
      ms: bytes,
      percent: (100 * bytes) / total,
    }));
  return { totalBytes: total, byFunction: rows(byFunction), byOwner: rows(byOwner) };
}
