/**
 * The module map's one-way arrows (STYLE): core imports only core, @peculiar/* and reflect-metadata — no Bun.*,
 * no node:*, no clock, no timers; store does not import workers; workers do not import supervisor or admin; the
 * admin plane never imports the supervisor (not even types: it gets `AdminDeps`), and the supervisor reaches into
 * admin only for those types (admin/deps.ts). Nothing under src/ imports in a circle (type-only imports count: a
 * circle of types is still two modules that cannot be understood apart), and no file is longer than MAX_LINES.
 */
import { describe, expect, test } from "bun:test";
import { Glob } from "bun";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";

const SRC = join(import.meta.dir, "../../src");
/** STYLE: files under src/ stay below ~600 lines. */
const MAX_LINES = 600;

const files = (dir: string) => [...new Glob(`${dir}/**/*.ts`).scanSync(SRC)].sort();
const ALL = files(".").map((f) => normalize(f));

/** The text without comments that open a line (`// …` and `/* … *\/` blocks), which may mention imports. */
const code = (f: string) =>
  readFileSync(join(SRC, f), "utf8")
    .replace(/^\s*\/\*[\s\S]*?\*\//gm, "")
    .replace(/^\s*\/\/.*$/gm, "");

/** Every module specifier: `import … from`, `import type … from`, `export … from`, side-effect and dynamic imports. */
const IMPORT = /^\s*(?:import|export)\b[^"'`;]*?\bfrom\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)/gm;
const specifiers = (text: string) => [...text.matchAll(IMPORT)].map((m) => m[1] ?? m[2] ?? m[3]!);
const importsOf = (f: string) => specifiers(code(f));

/** A relative specifier → the file under src/ it names (`./x` → `x.ts` or `x/index.ts`), or null. */
function resolveImport(from: string, spec: string): string | null {
  const base = normalize(join(dirname(from), spec));
  for (const c of [base, `${base}.ts`, join(base, "index.ts")]) if (c.endsWith(".ts") && existsSync(join(SRC, c))) return c;
  return null;
}

const graph = new Map<string, string[]>(
  ALL.map((f) => [f, importsOf(f).filter((i) => i.startsWith(".")).map((i) => resolveImport(f, i) ?? `(unresolved) ${i}`)]),
);

/** Every circle reachable in the graph, each as a path that ends where it starts (one per back edge found by a DFS). */
function findCycles(g: Map<string, string[]>): string[][] {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (n: string) => {
    state.set(n, "open");
    stack.push(n);
    for (const m of g.get(n) ?? []) {
      if (!g.has(m)) continue;
      const s = state.get(m);
      if (s === "open") cycles.push([...stack.slice(stack.indexOf(m)), m]);
      else if (s === undefined) visit(m);
    }
    stack.pop();
    state.set(n, "done");
  };
  for (const n of [...g.keys()].sort()) if (!state.has(n)) visit(n);
  return cycles;
}

describe("layering", () => {
  test("the cycle finder finds circles, including through a longer path, and nothing in a tree", () => {
    const g = new Map([
      ["a", ["b"]],
      ["b", ["c"]],
      ["c", ["a", "d"]],
      ["d", []],
      ["e", ["d"]],
      ["f", ["f"]],
    ]);
    expect(findCycles(g)).toEqual([["a", "b", "c", "a"], ["f", "f"]]);
    expect(findCycles(new Map([["a", ["b", "c"]], ["b", ["c"]], ["c", []]]))).toEqual([]);
  });

  test("every relative import resolves to a file under src/", () => {
    const unresolved = [...graph].flatMap(([f, to]) => to.filter((t) => t.startsWith("(unresolved)")).map((t) => `${f} → ${t}`));
    expect(unresolved).toEqual([]);
  });

  test("nothing under src/ imports in a circle (type-only imports included)", () => {
    expect(findCycles(graph).map((c) => c.join(" → "))).toEqual([]);
  });

  test.each(ALL)(`%s has at most ${MAX_LINES} lines`, (f) => {
    const lines = readFileSync(join(SRC, f), "utf8").split("\n").length - 1;
    expect({ file: f, over: lines > MAX_LINES ? lines : 0 }).toEqual({ file: f, over: 0 });
  });

  test.each(files("core"))("%s is pure", (f) => {
    for (const i of importsOf(f)) {
      const ok = i.startsWith(".") ? !i.includes("../workers") && !i.includes("../store") && !i.includes("../supervisor") && !i.includes("../admin") : /^(@peculiar\/|reflect-metadata$)/.test(i);
      expect({ file: f, import: i, ok }).toEqual({ file: f, import: i, ok: true });
    }
    // no runtime I/O, clock or timers in core (comments may mention them); time is an argument (STYLE §2)
    const text = readFileSync(join(SRC, f), "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
    expect({
      file: f,
      bun: /\bBun\./.test(text),
      now: /Date\.now\(\)|new Date\(\)/.test(text),
      timers: text.match(/\b(?:setTimeout|setInterval|setImmediate|performance\.now)\b/g) ?? [],
    }).toEqual({ file: f, bun: false, now: false, timers: [] });
  });

  test.each(files("store"))("%s does not reach up into workers, supervisor or admin", (f) => {
    for (const i of importsOf(f)) expect({ file: f, import: i, bad: /(^|\/)(workers|supervisor|admin)\//.test(i) }).toEqual({ file: f, import: i, bad: false });
  });

  test.each(files("workers"))("%s does not import supervisor or admin", (f) => {
    for (const i of importsOf(f)) expect({ file: f, import: i, bad: /(^|\/)(supervisor|admin)\//.test(i) }).toEqual({ file: f, import: i, bad: false });
  });

  test.each(files("admin"))("%s does not import the supervisor (it gets AdminDeps from main.ts)", (f) => {
    for (const i of importsOf(f)) expect({ file: f, import: i, bad: /(^|\/)supervisor\//.test(i) }).toEqual({ file: f, import: i, bad: false });
  });

  test.each(files("supervisor"))("%s reaches into admin only for the types in admin/deps.ts", (f) => {
    for (const i of importsOf(f)) {
      const bad = /(^|\/)admin\//.test(i) && !/(^|\/)admin\/deps$/.test(i);
      expect({ file: f, import: i, bad }).toEqual({ file: f, import: i, bad: false });
    }
  });

  test("the import scanner sees type-only, multi-line, re-export, side-effect and dynamic imports", () => {
    // guards the scanner itself: a regex that misses a form would let a circle through unseen
    const text = [
      'import type { A } from "./a";',
      "import {\n  b,\n  type C,\n} from './b';",
      'export { d } from "./d";',
      'export type * from "./e";',
      'import "./f";',
      'const g = await import("./g");',
      '// import { z } from "./commented";',
    ].join("\n");
    const found = specifiers(text.replace(/^\s*\/\/.*$/gm, ""));
    expect(found).toEqual(["./a", "./b", "./d", "./e", "./f", "./g"]);
  });
});
