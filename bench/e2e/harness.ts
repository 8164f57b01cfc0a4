/**
 * @module The orchestration shared by the end-to-end benchmarks (bench/e2e/concurrency.ts, savings.ts, patch.ts):
 * flag parsing, logging, the result document's machine block and its ending (gates → pass, the file in
 * bench/results, the JSON on stdout, the human summary on stderr, the exit code), and stopping on a signal.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { CLK_TCK, gitRev, round } from "./children";

/** Prints `name: msg` (when given) and the usage text to stderr, exits 2. */
export function makeUsage(name: string, text: string) {
  return (msg?: string): never => {
    if (msg) console.error(`${name}: ${msg}`);
    console.error(text);
    process.exit(2);
  };
}

export type Flag = {
  /** the flag without an inline `=value` */
  flag: string;
  /** the argument as given */
  arg: string;
  /** its value: inline (`--x=1`) or the next argument */
  value: () => string;
  /** its value as an integer in [min, max] */
  int: (min: number, max: number) => number;
};

/**
 * Calls `on` for every flag of `argv` but those every benchmark takes: --workers N (1–64) and --out DIR (set on
 * `common`), --help and -h (usage). A missing or bad value is a `usage()` error.
 */
export function forEachFlag(argv: string[], usage: (msg?: string) => never, common: { workers: number; out: string }, on: (f: Flag) => void) {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = () => inline ?? argv[++i] ?? usage(`${flag} needs a value`);
    const int = (min: number, max: number) => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < min || n > max) usage(`${flag}: expected an integer ${min}–${max}`);
      return n;
    };
    switch (flag) {
      case "--workers": common.workers = int(1, 64); break;
      case "--out": common.out = resolve(value()); break;
      case "--help":
      case "-h":
        usage();
      default:
        on({ flag, arg: a, value, int });
    }
  }
}

/** `[name HH:MM:SS] msg` on stderr. */
export function makeLog(name: string) {
  return (msg: string) => {
    process.stderr.write(`[${name} ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
  };
}

/** The run's start, and its result file `<out>/<name>-<timestamp>.json` (the folder is created). */
export function resultFile(out: string, name: string) {
  const started = Date.now();
  const stamp = new Date(started).toISOString().replace(/[:.]/g, "-");
  mkdirSync(out, { recursive: true });
  return { started, file: join(out, `${name}-${stamp}.json`) };
}

/** The first fields of a result document: the benchmark's name, when it started, the revision, machine, options. */
export function docHead(name: string, started: number, machine: Record<string, any>, options: unknown) {
  return { benchmark: name, startedAt: new Date(started).toISOString(), revision: gitRev(), machine, options };
}

/**
 * The document's machine block: CPUs, memory, Bun, `beforeClk`, the clock tick, the load average before the run
 * (other work on the box skews every figure: the load average before and after says how busy it was), `after`.
 */
export function machineInfo(beforeClk: Record<string, unknown> = {}, after: Record<string, unknown> = {}): Record<string, any> {
  return {
    cpus: availableParallelism(),
    memGiB: round(totalmem() / 2 ** 30, 1),
    bun: Bun.version,
    ...beforeClk,
    clkTck: CLK_TCK,
    loadAvgStart: loadavg().map((x) => round(x)),
    ...after,
  };
}

/** On SIGINT or SIGTERM (once): log `msg`, run `cleanup`, exit 130. */
export function onInterrupt(log: (msg: string) => void, msg: string, cleanup: () => Promise<void>) {
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    log(msg);
    await cleanup();
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

/** A gate (failing one fails the run) or a target (reported pass/miss, not gated). */
export type Check = { name: string; pass: boolean; value: unknown; want: string };

/** `p50 X / p99 Y ms` for a stats() figure, or "-". */
export const p50p99 = (s: any) => (s ? `p50 ${s.p50} / p99 ${s.p99} ms` : "-");

/** The summary's gates and targets (with `targetWant`, each target's want too). */
export function checkLines(doc: { gates: Check[]; targets: Check[] }, targetWant: boolean): string[] {
  const out = ["\ngates:"];
  for (const c of doc.gates) out.push(`  ${c.pass ? "PASS" : "FAIL"}  ${c.name}${c.pass ? "" : `: got ${JSON.stringify(c.value)}; want ${c.want}`}`);
  out.push("targets (reported, not gated):");
  for (const c of doc.targets) out.push(`  ${c.pass ? "pass" : "miss"}  ${c.name}: ${c.value}${targetWant ? ` (want ${c.want})` : ""}`);
  return out;
}

/** The summary's last lines: the harness error if any, then PASS or FAIL and where the JSON is. */
export function verdictLines(doc: { error: string | null; pass: boolean; file: string }): string[] {
  const out: string[] = [];
  if (doc.error) out.push(`\nHARNESS ERROR: ${doc.error}`);
  out.push(`\n${doc.pass ? "PASS" : "FAIL"}; JSON in ${doc.file}`);
  return out;
}

/**
 * Ends a run: gates, targets, error and pass (no harness error and every gate passed; with `needGates`, at
 * least one gate) into `doc`, then elapsed time, the load average after, the file; writes the file, the JSON
 * on stdout and `summary(doc)` on stderr; exits 3 on a harness error, else 0 when it passed, 1 when not.
 */
export function finishRun(
  doc: any,
  r: { started: number; file: string; error: string | null; gates: Check[]; targets: Check[]; needGates?: boolean; summary: (doc: any) => string },
): never {
  doc.gates = r.gates;
  doc.targets = r.targets;
  doc.error = r.error;
  doc.pass = !r.error && (!r.needGates || r.gates.length > 0) && r.gates.every((g) => g.pass);
  doc.elapsedS = round((Date.now() - r.started) / 1000, 1);
  doc.machine.loadAvgEnd = loadavg().map((x) => round(x));
  doc.file = r.file;
  writeFileSync(r.file, JSON.stringify(doc, null, 2) + "\n");
  process.stdout.write(JSON.stringify(doc, null, 2) + "\n");
  process.stderr.write("\n" + r.summary(doc) + "\n");
  process.exit(r.error ? 3 : doc.pass ? 0 : 1);
}
