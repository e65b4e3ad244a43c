/**
 * CPU per webhook before and after, on this machine, in the same minutes (issue 15): exports
 * `--rev` (default 2c77efb, main before issues 14 and 15) into bench/out/before-<rev>, gives it
 * today's bench/ and node_modules, and runs bench/cpu_per_webhook.ts (one run each) in that
 * checkout and in this one, alternately, `--pairs` times; the order flips every pair. This VM's
 * speed drifts by up to 2× within minutes, so only the ratios of runs side by side are fair:
 * it prints each pair, the median of the pairs' ratios, and the median µs by thread.
 *
 * Usage: deno run -A bench/before_after.ts [--rev=2c77efb] [--pairs=6] [--seconds=6]
 */
import type { CpuRunResult } from "./cpu_per_webhook.ts";
import { ROOT } from "./procs.ts";
import { median } from "./stats.ts";
import { fmt } from "./report.ts";

const args = Object.fromEntries(
  Deno.args.map((arg) => /^--(\w+)=(.*)$/.exec(arg)).filter((m) => m !== null).map((
    m,
  ) => [m![1], m![2]]),
);
const rev = args.rev ?? "2c77efb";
const pairs = Number(args.pairs ?? 6);
const seconds = Number(args.seconds ?? 6);

/** Runs a command, failing loudly: a half-made checkout would measure the wrong code. */
async function run(command: string, commandArgs: string[], cwd = ROOT): Promise<string> {
  const out = await new Deno.Command(command, { args: commandArgs, cwd, stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(
      `${command} ${commandArgs.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/** The checkout of `rev` with today's bench, made once and reused. */
async function checkout(): Promise<string> {
  const sha = (await run("git", ["rev-parse", "--short", rev])).trim();
  const dir = `${ROOT}bench/out/before-${sha}`;
  try {
    await Deno.stat(`${dir}/main.ts`);
  } catch {
    await Deno.mkdir(dir, { recursive: true });
    await run("bash", ["-c", `git archive ${sha} | tar -x -C "${dir}"`]);
  }
  // Today's bench (the same measurement on both sides) and today's packages (a superset).
  await Deno.remove(`${dir}/bench`, { recursive: true }).catch(() => {});
  await run("bash", [
    "-c",
    `mkdir -p "${dir}/bench" && tar -C "${ROOT}bench" --exclude=./out -c . | tar -x -C "${dir}/bench"`,
  ]);
  await Deno.remove(`${dir}/node_modules`).catch(() => {});
  await Deno.symlink(`${ROOT}node_modules`, `${dir}/node_modules`);
  return dir;
}

/** One run of cpu_per_webhook.ts in `dir`. */
async function measure(dir: string): Promise<CpuRunResult> {
  const text = await run(
    Deno.execPath(),
    ["run", "-A", "bench/cpu_per_webhook.ts", `--seconds=${seconds}`, "--runs=1"],
    dir,
  );
  const line = text.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`no RESULT line from ${dir}:\n${text}`);
  return JSON.parse(line.slice("RESULT ".length));
}

if (import.meta.main) {
  const before = await checkout();
  console.log(`before: ${rev} in ${before}; after: this checkout (${ROOT})`);
  const rows: { before: CpuRunResult; after: CpuRunResult }[] = [];
  for (let pair = 1; pair <= pairs; pair++) {
    const first = pair % 2 === 1 ? "before" : "after";
    const a = await measure(first === "before" ? before : ROOT);
    const b = await measure(first === "before" ? ROOT : before);
    const row = first === "before" ? { before: a, after: b } : { before: b, after: a };
    rows.push(row);
    console.log(
      `  pair ${pair} (${first} first): before ${fmt(row.before.usPerWebhook, 1)} µs ` +
        `(${fmt(row.before.perSecond, 0)}/s), after ${fmt(row.after.usPerWebhook, 1)} µs ` +
        `(${fmt(row.after.perSecond, 0)}/s), ratio ${
          fmt(row.after.usPerWebhook / row.before.usPerWebhook, 2)
        }${row.before.allDelivered && row.after.allDelivered ? "" : " (a delivery was missing)"}`,
    );
  }
  const ratio = median(rows.map((r) => r.after.usPerWebhook / r.before.usPerWebhook));
  console.log(
    `median µs per webhook: before ${fmt(median(rows.map((r) => r.before.usPerWebhook)), 1)}, ` +
      `after ${fmt(median(rows.map((r) => r.after.usPerWebhook)), 1)}; ` +
      `median ratio after/before ${fmt(ratio, 2)} (target ≤ 0.67, a third less)`,
  );
  const threadNames = new Set(rows.flatMap((r) => [
    ...Object.keys(r.before.threads),
    ...Object.keys(r.after.threads),
  ]));
  for (const name of threadNames) {
    const side = (pick: (r: { before: CpuRunResult; after: CpuRunResult }) => CpuRunResult) =>
      fmt(median(rows.map((r) => pick(r).threads[name] ?? 0)), 1);
    console.log(`  thread ${name}: before ${side((r) => r.before)}, after ${side((r) => r.after)}`);
  }
}
