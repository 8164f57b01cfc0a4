/**
 * @module One JSON line per log call (src/log.ts): the fixed keys first, then the caller's fields in their order,
 * built without spreading the fields into a new object.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { log, setLogSink } from "../../src/log";

let lines: string[] = [];
afterEach(() => setLogSink((line) => process.stdout.write(line + "\n"), "main"));

describe("log line", () => {
  test("t, level, c, msg, then the fields in order; valid JSON", () => {
    lines = [];
    setLogSink((l) => lines.push(l), "worker");
    log("info", "access", { reqId: "r1", status: 200, path: 'a"b\\c', nested: { x: [1, 2] }, gone: undefined });
    expect(lines).toHaveLength(1);
    const o = JSON.parse(lines[0]!);
    expect(Object.keys(o)).toEqual(["t", "level", "c", "msg", "reqId", "status", "path", "nested"]);
    expect(o).toMatchObject({ level: "info", c: "worker", msg: "access", reqId: "r1", status: 200, path: 'a"b\\c', nested: { x: [1, 2] } });
    expect(new Date(o.t).toISOString()).toBe(o.t);
  });

  test("no fields, and a message that needs escaping", () => {
    lines = [];
    setLogSink((l) => lines.push(l), "main");
    log("warn", 'say "hi"\n');
    log("error", "x", {});
    expect(lines.map((l) => JSON.parse(l))).toMatchObject([
      { level: "warn", c: "main", msg: 'say "hi"\n' },
      { level: "error", c: "main", msg: "x" },
    ]);
    expect(lines[1]!.endsWith('"msg":"x"}')).toBe(true);
  });

  test("lines within one millisecond share its time; a later line gets its own", async () => {
    lines = [];
    setLogSink((l) => lines.push(l), "main");
    for (let i = 0; i < 50; i++) log("debug", "burst", { i });
    const t0 = Date.now();
    while (Date.now() === t0) await Bun.sleep(1);
    log("debug", "later");
    const ts = lines.map((l) => Date.parse(JSON.parse(l).t));
    for (let i = 1; i < 50; i++) expect(ts[i]!).toBeGreaterThanOrEqual(ts[i - 1]!);
    expect(ts[50]!).toBeGreaterThan(ts[0]!);
  });
});
