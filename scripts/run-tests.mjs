#!/usr/bin/env node
// Runs the bun:test suite and ends with one line "N passed, N failed" taken from Bun's own summary.
// Exit code is Bun's. Extra arguments go to `bun test` (e.g. a path filter).
// Before that line it repeats, for each failed test, the lines Bun printed just before it (the assertion, the
// source excerpt, the error): CI keeps only the tail of the output, and a failure's name alone cannot be acted on.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bun = join(root, "node_modules/.bin/bun");
const child = spawn(bun, ["test", "--timeout", "120000", ...process.argv.slice(2)], { cwd: root, stdio: ["ignore", "inherit", "pipe"] });

/** lines of each failure's report kept for the end (JSON log lines of gateways under test are left out) */
const KEEP = 14;
const MAX_FAILURES = 6;
let tail = "";
let partial = "";
let recent = [];
let inSummary = false;
const failures = [];
function onLine(line) {
  if (/^\d+ tests? failed:$/.test(line.trim())) inSummary = true;
  if (inSummary) return;
  if (/^\((pass|skip|todo)\) /.test(line) || /^test\/.*:$/.test(line)) {
    recent = [];
    return;
  }
  if (line.startsWith("(fail) ")) {
    if (failures.length < MAX_FAILURES) failures.push([...recent.slice(-KEEP), line]);
    recent = [];
    return;
  }
  if (line.trim() === "" || line.trimStart().startsWith("{\"")) return;
  recent.push(line.length > 300 ? `${line.slice(0, 300)}…` : line);
  if (recent.length > 4 * KEEP) recent = recent.slice(-KEEP);
}
child.stderr.on("data", (d) => {
  process.stderr.write(d);
  const s = d.toString();
  tail = (tail + s).slice(-4096);
  const lines = (partial + s).split("\n");
  partial = lines.pop() ?? "";
  for (const l of lines) onLine(l);
});
child.on("close", (code, signal) => {
  if (partial) onLine(partial);
  if (failures.length) {
    console.log(`\n[agate] what each failed test printed just before it failed (${failures.length} shown):`);
    for (const f of failures) console.log(`---\n${f.join("\n")}`);
    console.log("---");
  }
  const pass = /^\s*(\d+) pass\s*$/m.exec(tail)?.[1];
  const fail = /^\s*(\d+) fail\s*$/m.exec(tail)?.[1];
  const skip = /^\s*(\d+) skip\s*$/m.exec(tail)?.[1];
  if (pass === undefined && fail === undefined) {
    console.log(`0 passed, 1 failed`);
    console.error(`[agate] bun test ended (${signal ?? code}) without a summary`);
    process.exit(code || 1);
  }
  console.log(`${pass ?? 0} passed, ${fail ?? 0} failed${skip && skip !== "0" ? `, ${skip} skipped` : ""}`);
  process.exit(code ?? 1);
});
