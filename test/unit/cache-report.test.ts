/** The admin's "largest objects" view (src/store/cache/report.ts): read through the Store, with its schema check. */
import { afterAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeReports, topObjects } from "../../src/store/cache/report";
import { Store } from "../../src/store/cache/store";
import { storeBody } from "../contract/store.contract";
import { makeChunk } from "../fixtures/store-data";

const root = mkdtempSync(join(tmpdir(), "agate-report-test-"));
afterAll(() => {
  closeReports();
  rmSync(root, { recursive: true, force: true });
});

test("objects that served the most bytes come first, with what they saved; no index yet gives []", () => {
  const dir = join(root, "a");
  expect(topObjects(dir)).toEqual([]);
  const s = Store.open(dir, { maxBytes: 1 << 20, owner: "t" });
  const small = storeBody(s, "GET https://r.test/small", makeChunk(1, 100));
  const big = storeBody(s, "GET https://r.test/big", makeChunk(2, 1000));
  s.touch(small, 100);
  for (let i = 0; i < 3; i++) s.touch(big, 1000);
  s.close();
  expect(topObjects(dir, 5)).toEqual([
    { url: "https://r.test/big", size: 1000, hits: 3, bytes_served: 3000, bytes_fetched: 1000, savings: 2000 },
    { url: "https://r.test/small", size: 100, hits: 1, bytes_served: 100, bytes_fetched: 100, savings: 0 },
  ]);
  expect(topObjects(dir, 1)).toHaveLength(1);
});

test("an index with a schema this agate cannot read gives [] and is left as it was", () => {
  const dir = join(root, "b");
  Store.open(dir, { maxBytes: 1 << 20, owner: "t" }).close();
  const raw = new Database(join(dir, "index.db"));
  raw.run("UPDATE meta SET value = '99' WHERE key = 'schema_version'");
  raw.close();
  expect(topObjects(dir)).toEqual([]);
  const check = new Database(join(dir, "index.db"));
  expect(check.query<{ value: string }, []>("SELECT value FROM meta WHERE key = 'schema_version'").get()!.value).toBe("99");
  check.close();
});
