/**
 * The module map's one-way arrows (STYLE): core imports only core, @peculiar/* and reflect-metadata — no Bun.*,
 * no node:*, no clock; store does not import workers; workers do not import supervisor or admin.
 */
import { describe, expect, test } from "bun:test";
import { Glob } from "bun";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const SRC = join(import.meta.dir, "../../src");
const files = (dir: string) => [...new Glob(`${dir}/**/*.ts`).scanSync(SRC)];
const importsOf = (f: string) => [...readFileSync(join(SRC, f), "utf8").matchAll(/^\s*(?:import|export)[^"']*?from\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']/gm)].map((m) => m[1] ?? m[2]!);

describe("layering", () => {
  test.each(files("core"))("%s is pure", (f) => {
    const text = readFileSync(join(SRC, f), "utf8");
    for (const i of importsOf(f)) {
      const ok = i.startsWith(".") ? !i.includes("../workers") && !i.includes("../store") && !i.includes("../supervisor") && !i.includes("../admin") : /^(@peculiar\/|reflect-metadata$)/.test(i);
      expect({ file: f, import: i, ok }).toEqual({ file: f, import: i, ok: true });
    }
    // no runtime I/O or clock in core (comments may mention them)
    const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
    expect({ file: f, bun: /\bBun\./.test(code), now: /Date\.now\(\)|new Date\(\)/.test(code) }).toEqual({ file: f, bun: false, now: false });
  });
  test.each(files("store"))("%s does not reach up into workers, supervisor or admin", (f) => {
    for (const i of importsOf(f)) expect({ file: f, bad: /\.\.\/(workers|supervisor|admin)\//.test(i) }).toEqual({ file: f, bad: false });
  });
  test.each(files("workers"))("%s does not import supervisor or admin", (f) => {
    for (const i of importsOf(f)) expect({ file: f, bad: /\.\.\/(supervisor|admin)\//.test(i) }).toEqual({ file: f, bad: false });
  });
});
