/**
 * @module The Store's per-thread lookup memo (issue 13, small hits) never answers from rows the index no longer
 * holds: two Stores on one directory stand for two workers; what one changes (refill, 304 freshening, purge, delete,
 * eviction) the other's next lookup sees at once, and so do its own changes.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/cache/store";

const KEY = "GET https://h.example/m.json";
const URL = "https://h.example/m.json";
let dir: string;
let a: Store;
let b: Store;

function fill(s: Store, body: string, etag: string) {
  const c = s.claimFill(KEY);
  if (c.role !== "filler") throw new Error("expected to fill");
  c.fill.setHead(200, [["Cache-Control", "max-age=60"], ["ETag", etag]]);
  c.fill.write(new TextEncoder().encode(body));
  return c.fill.commit({ vkey: "", url: URL, reqHeaders: [], vary: null });
}
const etagOf = (s: Store) => s.lookup(KEY, [])?.headers.find(([k]) => k === "ETag")?.[1] ?? null;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "agate-memo-"));
  a = Store.open(dir, { maxBytes: 1 << 20, owner: "a" });
  b = Store.open(dir, { maxBytes: 1 << 20, owner: "b", recover: false });
});
afterEach(() => {
  a.close();
  b.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("lookup memo", () => {
  test("a repeated lookup returns the same entry while nothing changed", () => {
    fill(a, "one", '"1"');
    const first = a.lookup(KEY, []);
    expect(first).not.toBeNull();
    expect(a.lookup(KEY, [])).toBe(first!); // from the memo
  });

  test("another worker's refill, 304 freshening, purge and delete are seen at the next lookup", () => {
    fill(a, "one", '"1"');
    expect(etagOf(a)).toBe('"1"');
    expect(etagOf(b)).toBe('"1"');
    fill(b, "two", '"2"'); // a refill in the other worker
    expect(etagOf(a)).toBe('"2"');
    expect(new TextDecoder().decode(a.body(a.lookup(KEY, [])!)!)).toBe("two");
    b.updateHeaders(b.lookup(KEY, [])!, [["Cache-Control", "max-age=600"], ["ETag", '"2b"']], 1, 2); // a 304 there
    expect(etagOf(a)).toBe('"2b"');
    expect(b.purge({ url: URL }).objects).toBe(1);
    expect(a.lookup(KEY, [])).toBeNull();
    fill(a, "three", '"3"');
    expect(etagOf(b)).toBe('"3"');
    expect(b.delete(KEY)).toBe(1);
    expect(a.lookup(KEY, [])).toBeNull();
  });

  test("this worker's own changes are seen too (its writes do not move data_version)", () => {
    fill(a, "one", '"1"');
    expect(etagOf(a)).toBe('"1"');
    a.updateHeaders(a.lookup(KEY, [])!, [["ETag", '"1b"']], 1, 2);
    expect(etagOf(a)).toBe('"1b"');
    fill(a, "two", '"2"');
    expect(etagOf(a)).toBe('"2"');
    expect(a.purge({ all: true }).objects).toBe(1);
    expect(a.lookup(KEY, [])).toBeNull();
  });
});
