/**
 * Below the Store facade: blob files (src/store/cache/blobs.ts), the index schema and its migration
 * (src/store/cache/index-db.ts), and a LocalFill reporting its end through its onFinished callback (fill-local.ts).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  cleanTmp,
  ensureBlobDirs,
  listBlobs,
  openBlobWriter,
  readBlob,
  verifyBlob,
} from "../../src/store/cache/blobs";
import { LocalFill } from "../../src/store/cache/fill-local";
import type { FillCtx } from "../../src/store/cache/fill-tail";
import { createV1, IndexDb, SCHEMA_VERSION } from "../../src/store/cache/index-db";
import { Store } from "../../src/store/cache/store";
import { makeBody, makeChunk, sha256Hex } from "../fixtures/store-data";

const root = mkdtempSync(join(tmpdir(), "agate-blobs-test-"));
let n = 0;
function freshDir(): string {
  const d = join(root, `d${n++}`);
  ensureBlobDirs(d);
  return d;
}
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("BlobWriter", () => {
  test("chunks → commit gives blobs/<aa>/<sha256> with the exact bytes, and no temp file left", () => {
    const dir = freshDir();
    const w = openBlobWriter(dir, "GET https://x/a b");
    expect(w.tmpPath.startsWith(join(dir, "tmp", "GET_https___x_a_b."))).toBe(true); // shell-safe label
    for (let i = 0; i < 5; i++) w.write(makeChunk(i, 1000 + i));
    expect(w.size).toBe(5010);
    const info = w.commit();
    const expected = Buffer.concat([0, 1, 2, 3, 4].map((i) => makeChunk(i, 1000 + i)));
    expect(info.sha256).toBe(sha256Hex(expected));
    expect(info.size).toBe(5010);
    expect(info.path).toBe(join(dir, "blobs", info.sha256.slice(0, 2), info.sha256));
    expect(readFileSync(info.path).equals(expected)).toBe(true);
    expect(readdirSync(join(dir, "tmp"))).toEqual([]);
    expect(listBlobs(dir)).toEqual([`blobs/${info.sha256.slice(0, 2)}/${info.sha256}`]);
    expect(() => w.write(new Uint8Array(1))).toThrow(/done/);
  });

  test("abort removes the temp file and can be repeated", () => {
    const dir = freshDir();
    const w = openBlobWriter(dir, "x");
    w.write(makeChunk(1, 100));
    expect(existsSync(w.tmpPath)).toBe(true);
    w.abort();
    w.abort();
    expect(existsSync(w.tmpPath)).toBe(false);
    expect(readdirSync(join(dir, "tmp"))).toEqual([]);
  });

  test("the same bytes written twice publish to one path (content addressing)", () => {
    const dir = freshDir();
    const a = openBlobWriter(dir, "a");
    a.write(makeChunk(3, 333));
    const b = openBlobWriter(dir, "b");
    b.write(makeChunk(3, 333));
    expect(a.commit().path).toBe(b.commit().path);
    expect(listBlobs(dir)).toHaveLength(1);
  });
});

describe("readBlob / verifyBlob", () => {
  test("an empty blob reads as 0 bytes (Bun.mmap refuses empty files), a missing one as null", () => {
    const dir = freshDir();
    const w = openBlobWriter(dir, "empty");
    const info = w.commit();
    expect(info.sha256).toBe(sha256Hex(new Uint8Array(0)));
    expect(readBlob(info.path)!.byteLength).toBe(0);
    expect(verifyBlob(info.path, info.sha256)).toBe(true);
    expect(readBlob(join(dir, "nope"))).toBeNull();
    expect(verifyBlob(join(dir, "nope"), info.sha256)).toBe(false);
  });

  test("verifyBlob recomputes the hash: a flipped byte fails", () => {
    const dir = freshDir();
    const w = openBlobWriter(dir, "v");
    w.write(makeBody(4, 4096));
    const info = w.commit();
    expect(verifyBlob(info.path, info.sha256)).toBe(true);
    expect(verifyBlob(info.path, info.sha256.toUpperCase())).toBe(true);
    const bytes = readFileSync(info.path);
    bytes[100] = bytes[100]! ^ 1;
    writeFileSync(info.path, bytes);
    expect(verifyBlob(info.path, info.sha256)).toBe(false);
  });

  test("a mapped blob stays readable after unlink (what eviction relies on)", () => {
    const dir = freshDir();
    const w = openBlobWriter(dir, "m");
    const body = makeBody(64, 4096);
    w.write(body);
    const info = w.commit();
    const mapped = readBlob(info.path)!;
    rmSync(info.path);
    expect(sha256Hex(mapped)).toBe(sha256Hex(body));
  });
});

describe("cleanTmp", () => {
  test("deletes old temp files, keeps live ones and young ones", () => {
    const dir = freshDir();
    const now = Date.now();
    const old = new Date(now - 60_000);
    for (const f of ["old.1", "live.1", "young.1"]) writeFileSync(join(dir, "tmp", f), f);
    utimesSync(join(dir, "tmp", "old.1"), old, old);
    utimesSync(join(dir, "tmp", "live.1"), old, old);
    expect(cleanTmp(dir, new Set([join(dir, "tmp", "live.1")]), 5000, now)).toBe(1);
    expect(readdirSync(join(dir, "tmp")).sort()).toEqual(["live.1", "young.1"]);
  });
});

describe("index schema", () => {
  test("a new index is WAL, at the current schema version, with empty usage and no totals table", () => {
    const dir = freshDir();
    const db = IndexDb.open(join(dir, "index.db"));
    try {
      expect(SCHEMA_VERSION).toBe(2);
      expect(db.schemaVersion()).toBe(SCHEMA_VERSION);
      expect(db.db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()!.journal_mode).toBe("wal");
      expect(db.q.usage.get()).toEqual({ bytes: 0, entries: 0 });
      const tables = db.db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      expect(tables.map((t) => t.name).sort()).toEqual(["entries", "fills", "meta", "usage"]);
    } finally {
      db.close();
    }
    // opening again keeps it
    const again = IndexDb.open(join(dir, "index.db"));
    expect(again.schemaVersion()).toBe(SCHEMA_VERSION);
    again.close();
  });

  test("a newer schema is refused with a message that says what to do", () => {
    const dir = freshDir();
    IndexDb.open(join(dir, "index.db")).close();
    const raw = new Database(join(dir, "index.db"));
    raw.run("UPDATE meta SET value = '99' WHERE key = 'schema_version'");
    raw.close();
    expect(() => Store.open(dir, { maxBytes: 1000, owner: "t" })).toThrow(
      /schema version 99, newer than this agate understands \(2\); run a newer agate, or delete the cache directory/,
    );
  });

  test("an older version without a migration, a bad version and a foreign database are refused", () => {
    const dir = freshDir();
    IndexDb.open(join(dir, "index.db")).close();
    const raw = new Database(join(dir, "index.db"));
    raw.run("UPDATE meta SET value = '0' WHERE key = 'schema_version'");
    raw.close();
    expect(() => IndexDb.open(join(dir, "index.db"))).toThrow(/meta.schema_version is "0", not a version number/);

    const foreign = freshDir();
    const f = new Database(join(foreign, "index.db"));
    f.run("CREATE TABLE cats (name TEXT)");
    f.close();
    let err: unknown;
    try {
      IndexDb.open(join(foreign, "index.db"));
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).toBe("PX_STORE_SCHEMA");
    expect((err as Error).message).toMatch(/is not an agate cache index \(tables: cats\)/);
  });

  test("a v1 index (agate before issue 8) migrates to v2: outcomes filled in, totals dropped, usage recounted, data kept", () => {
    const dir = freshDir();
    const raw = new Database(join(dir, "index.db"));
    raw.exec("PRAGMA journal_mode = WAL");
    createV1(raw);
    const body = makeChunk(1, 321);
    const sha = sha256Hex(body);
    const rel = `blobs/${sha.slice(0, 2)}/${sha}`;
    mkdirSync(join(dir, "blobs", sha.slice(0, 2)), { recursive: true });
    writeFileSync(join(dir, rel), body);
    raw.run(
      `INSERT INTO entries (pkey, vkey, url, status, headers, req_headers, vary, request_time, response_time, blob_path,
         size, sha256, created, last_access, hits, bytes_served)
       VALUES ('GET https://m.test/a', '', 'https://m.test/a', 200, '[]', '[]', NULL, 1, 2, ?, 321, ?, 3, 4, 5, 1605)`,
      [rel, sha],
    );
    const fill = raw.query(
      "INSERT INTO fills (key, owner, tmp_path, started, heartbeat, status, bytes, blob_path, error) VALUES (?, 'old', ?, 1, ?, ?, 0, ?, ?)",
    );
    const now = Date.now();
    fill.run("GET https://m.test/a", "tmp/a", now, "done", rel, null);
    fill.run("GET https://m.test/delivered", "tmp/d", now, "done", null, null);
    // v1 carried outcomes as error text: whatever the text says, a v1 failure migrates as "failed"
    fill.run("GET https://m.test/superseded", "tmp/s", now, "failed", null, "superseded");
    fill.run("GET https://m.test/live", "tmp/l", now, "filling", null, null);
    raw.close();

    const db = IndexDb.open(join(dir, "index.db"));
    try {
      expect(db.schemaVersion()).toBe(2);
      const outcomes = db.db.query<{ key: string; outcome: string | null }, []>("SELECT key, outcome FROM fills ORDER BY key").all();
      expect(outcomes).toEqual([
        { key: "GET https://m.test/a", outcome: "stored" },
        { key: "GET https://m.test/delivered", outcome: "delivered" },
        { key: "GET https://m.test/live", outcome: null },
        { key: "GET https://m.test/superseded", outcome: "failed" },
      ]);
      expect(db.db.query("SELECT name FROM sqlite_master WHERE name = 'totals'").all()).toEqual([]);
      expect(db.q.usage.get()).toEqual({ bytes: 321, entries: 1 });
      // the column only takes FillOutcome values
      expect(() => db.db.run("UPDATE fills SET outcome = 'bogus'")).toThrow();
    } finally {
      db.close();
    }
    // the facade on the migrated directory: the entry is served and its counts are in the report
    const s = Store.open(dir, { maxBytes: 1 << 20, owner: "t" });
    try {
      const e = s.lookup("GET https://m.test/a", [])!;
      expect(sha256Hex(s.body(e)!)).toBe(sha);
      expect(s.topObjects(5)).toEqual([{ url: "https://m.test/a", size: 321, hits: 5, bytesServed: 1605 }]);
      storeOne(s, "GET https://m.test/b", makeChunk(2, 100)); // the new triggers keep usage exact
      expect(s.usage()).toEqual({ bytes: 421, entries: 2 });
      s.delete("GET https://m.test/a");
      expect(s.usage()).toEqual({ bytes: 100, entries: 1 });
    } finally {
      s.close();
    }
  });

  test("Store.open checks its options", () => {
    expect(() => Store.open(freshDir(), { maxBytes: 0, owner: "t" })).toThrow(/maxBytes must be > 0/);
    expect(() => Store.open(freshDir(), { maxBytes: 10, owner: "t", lowWater: 0.95 })).toThrow(/lowWater ≤ highWater/);
  });
});

function storeOne(s: Store, key: string, body: Uint8Array): void {
  const c = s.claimFill(key);
  if (c.role !== "filler") throw new Error("expected filler");
  c.fill.setHead(200, []);
  c.fill.write(body);
  c.fill.commit({ vkey: "", url: key.slice(4), reqHeaders: [], vary: null });
}

describe("LocalFill", () => {
  const open = (dir: string) => {
    const db = IndexDb.open(join(dir, "index.db"));
    const o = { owner: "t", heartbeatMs: 1000, staleMs: 5000, pollMinMs: 2, pollMaxMs: 20, tailIdleMs: 1000, bootId: "b" };
    const released: string[] = [];
    const ctx: FillCtx = { dir, db, q: db.q, o, now: () => 1000, releaseBlob: (rel) => released.push(rel) };
    return { db, ctx, released };
  };
  const start = (ctx: FillCtx, key: string, onFinished: (k: string, f: LocalFill) => void) => {
    const w = openBlobWriter(ctx.dir, "t");
    ctx.q.upsertFill.run(key, "t", w.tmpPath, 1000);
    return new LocalFill(ctx, key, w, onFinished);
  };

  test("reports its end once through onFinished — after a commit, a failure, and not again on a second fail", () => {
    const { db, ctx } = open(freshDir());
    try {
      const calls: [string, LocalFill, string | undefined][] = [];
      const onFinished = (k: string, f: LocalFill) => calls.push([k, f, f.end?.outcome]);
      const a = start(ctx, "GET https://o.test/a", onFinished);
      a.setHead({ status: 200, headers: [], requestTime: 1, responseTime: 2 });
      a.write(makeChunk(1, 10));
      expect(calls).toEqual([]);
      a.commit({ vkey: "", url: "u", reqHeaders: [], vary: null });
      const b = start(ctx, "GET https://o.test/b", onFinished);
      b.fail("fallback", "not sliceable");
      b.fail("failed", "again");
      expect(calls).toEqual([
        ["GET https://o.test/a", a, "stored"],
        ["GET https://o.test/b", b, "fallback"],
      ]);
      expect(db.q.fill.get("GET https://o.test/b")).toMatchObject({ status: "failed", outcome: "fallback", error: "not sliceable" });
      expect(db.q.fill.get("GET https://o.test/a")).toMatchObject({ status: "done", outcome: "stored" });
    } finally {
      db.close();
    }
  });

  test("a commit that replaces an entry's blob hands the old blob to the Store's releaseBlob", () => {
    const { db, ctx, released } = open(freshDir());
    try {
      for (const i of [1, 2]) {
        const f = start(ctx, "GET https://o.test/r", () => {});
        f.setHead({ status: 200, headers: [], requestTime: 1, responseTime: 2 });
        f.write(makeChunk(i, 50));
        f.commit({ vkey: "", url: "u", reqHeaders: [], vary: null });
      }
      const first = sha256Hex(makeChunk(1, 50));
      expect(released).toEqual([`blobs/${first.slice(0, 2)}/${first}`]);
    } finally {
      db.close();
    }
  });
});
