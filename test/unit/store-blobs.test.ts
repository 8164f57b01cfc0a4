/** Blob files (src/store/blobs.ts) and the index schema (src/store/index-db.ts), below the Store facade. */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  cleanTmp,
  ensureBlobDirs,
  listBlobs,
  openBlobWriter,
  readBlob,
  verifyBlob,
} from "../../src/store/blobs";
import { IndexDb, SCHEMA_VERSION } from "../../src/store/index-db";
import { Store } from "../../src/store/store";
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
  test("a new index is WAL, at the current schema version, with every total at 0", () => {
    const dir = freshDir();
    const db = IndexDb.open(join(dir, "index.db"));
    try {
      expect(db.schemaVersion()).toBe(SCHEMA_VERSION);
      expect(db.db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()!.journal_mode).toBe("wal");
      expect(db.q.allTotals.all().map((r) => [r.name, r.value])).toContainEqual(["stored_bytes", 0]);
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
      /schema version 99, newer than this agate understands \(1\); run a newer agate, or delete the cache directory/,
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

  test("Store.open checks its options", () => {
    expect(() => Store.open(freshDir(), { maxBytes: 0, owner: "t" })).toThrow(/maxBytes must be > 0/);
    expect(() => Store.open(freshDir(), { maxBytes: 10, owner: "t", lowWater: 0.95 })).toThrow(/lowWater ≤ highWater/);
  });
});
