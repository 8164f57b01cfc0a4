/**
 * @module The Store's per-thread lookup memo (issue 13, small hits) never answers from rows the index no longer
 * holds: two Stores on one directory stand for two workers; what one changes (refill, 304 freshening, purge, delete,
 * eviction) the other's next lookup sees at once, and so do its own changes. Both ways a store learns of a change:
 * SQLite's `PRAGMA data_version` on every lookup (a thread that shares no count), and the process-wide write count
 * in shared memory (store/cache/index-db.ts `shareWriteCount`, what the supervisor and workers use), with a fixed
 * clock so that data_version is never asked again and the count alone must tell.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { Store } from "../../src/store/cache/store";
import { shareWriteCount } from "../../src/store/cache/index-db";

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

type Mode = "data_version" | "shared count";
const MODES: Mode[] = ["data_version", "shared count"];
let clockMs = 1_000;

function openPair(mode: Mode) {
  dir = mkdtempSync(join(tmpdir(), "agate-memo-"));
  shareWriteCount(mode === "shared count" ? new Int32Array(new SharedArrayBuffer(8)) : null, 1);
  clockMs = 1_000;
  const clock = () => clockMs; // fixed: with the shared count, data_version is asked once and never again
  a = Store.open(dir, { maxBytes: 1 << 20, owner: "a", clock });
  b = Store.open(dir, { maxBytes: 1 << 20, owner: "b", recover: false, clock });
}
afterEach(() => {
  a.close();
  b.close();
  shareWriteCount(null, 0);
  rmSync(dir, { recursive: true, force: true });
});

describe.each(MODES)("lookup memo (%s)", (mode) => {
  beforeEach(() => openPair(mode));
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

describe("lookup memo (shared count): a writer outside the process", () => {
  beforeEach(() => openPair("shared count"));

  test("is seen through data_version once the check interval (250 ms) has passed", () => {
    fill(a, "one", '"1"');
    expect(etagOf(a)).toBe('"1"');
    // another process (a raw connection: it does not bump this process's count) deletes the row
    const other = new Database(join(dir, "index.db"));
    try {
      expect(other.query("DELETE FROM entries").run().changes).toBe(1);
    } finally {
      other.close();
    }
    clockMs += 250;
    expect(a.lookup(KEY, [])).toBeNull();
  });
});
