#!/usr/bin/env node
// Runs the bun:test suite and ends with one line "N passed, N failed" taken from Bun's own summary.
// Exit code is Bun's. Extra arguments go to `bun test` (e.g. a path filter).
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bun = join(root, "node_modules/.bin/bun");
const child = spawn(bun, ["test", "--timeout", "120000", ...process.argv.slice(2)], { cwd: root, stdio: ["ignore", "inherit", "pipe"] });
let tail = "";
child.stderr.on("data", (d) => {
  process.stderr.write(d);
  tail = (tail + d.toString()).slice(-4096);
});
child.on("close", (code, signal) => {
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
