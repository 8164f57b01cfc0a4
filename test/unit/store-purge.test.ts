/**
 * Issue 9, the pure half and the store's admin side: which stored URLs a purge selector names (table-driven), how
 * the API's bodies are checked, job totals and hit ratios, where the store lives (`paths.ts`), and the supervisor's
 * reader Store following a store that was removed and made again (a reset) instead of reading the unlinked index.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostUsage, matchesPurge, normalisePurge, parsePrefillBody, parsePurgeBody, summariseJob, type PrefillItem, type PurgeSelector } from "../../src/core/cache-ops";
import { parseConfig } from "../../src/core/config";
import { cacheBudget, cacheDir, storeOnVolume } from "../../src/store/cache/paths";
import { closeReports, purgeStore, storeUsage, topObjects } from "../../src/store/cache/report";
import { Store } from "../../src/store/cache/store";
import { storeBody } from "../contract/store.contract";
import { makeChunk } from "../fixtures/store-data";

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "agate-purge-"));
  dirs.push(d);
  return d;
};
afterAll(() => {
  closeReports();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("matchesPurge: the stored URL in key form (RFC 9111 §2) against the selector", () => {
  const cases: [PurgeSelector, string, boolean][] = [
    [{ url: "https://h.test/a?x=1" }, "https://h.test/a?x=1", true],
    [{ url: "https://h.test/a?x=1" }, "https://h.test/a?x=2", false],
    [{ url: "https://h.test/a?x=1" }, "https://H.TEST:443/a?x=1", true], // case and default port
    [{ url: "https://h.test/~a" }, "https://h.test/%7ea", true], // unreserved escapes decoded
    [{ url: "https://h.test/a" }, "https://h.test/a/", false],
    [{ prefix: "https://h.test/dir/" }, "https://h.test/dir/x.cab", true],
    [{ prefix: "https://h.test/dir/" }, "https://h.test/dir", false],
    [{ prefix: "https://h.test/dir/" }, "https://h.test.evil/dir/x", false],
    [{ prefix: "https://h.test" }, "https://h.test/anything", true], // "https://h.test" is "https://h.test/"
    [{ host: "h.test" }, "https://h.test/a", true],
    [{ host: "h.test" }, "https://h.test:8443/a", true], // a host without a port: every port
    [{ host: "h.test:8443" }, "https://h.test/a", false],
    [{ host: "h.test:8443" }, "https://h.test:8443/a", true],
    [{ host: "h.test:443" }, "https://h.test/a", true], // the default port is no port
    [{ host: "h.test" }, "https://sub.h.test/a", false], // a host, not a domain
    [{ host: "h.test" }, "https://xh.test/a", false],
    [{ all: true }, "https://anything.test/", true],
    [{ host: "h.test" }, "not a url", false],
  ];
  for (const [sel, url, want] of cases) {
    test(`${JSON.stringify(sel)} ${want ? "names" : "does not name"} ${url}`, () => {
      expect(matchesPurge(normalisePurge(sel), url)).toBe(want);
    });
  }
});

describe("the API's bodies", () => {
  test("purge: exactly one selector; URLs absolute https; a host is a host", () => {
    expect(parsePurgeBody({ url: "https://H.test/a" })).toEqual({ ok: true, value: { url: "https://h.test/a" } });
    expect(parsePurgeBody({ prefix: "https://h.test/d/" })).toEqual({ ok: true, value: { prefix: "https://h.test/d/" } });
    expect(parsePurgeBody({ host: "H.Test." })).toEqual({ ok: true, value: { host: "h.test" } });
    expect(parsePurgeBody({ all: true })).toEqual({ ok: true, value: { all: true } });
    const refused: [unknown, string][] = [
      [null, "body"],
      [[], "body"],
      [{}, "body"],
      [{ url: "https://h/a", all: true }, "body"],
      [{ everything: true }, "everything"],
      [{ all: 1 }, "all"],
      [{ url: "" }, "url"],
      [{ url: "/relative" }, "url"],
      [{ url: "http://h.test/a" }, "url"],
      [{ prefix: 7 }, "prefix"],
      [{ host: "https://h.test/" }, "host"],
      [{ host: "h.test/path" }, "host"],
      [{ host: "" }, "host"],
    ];
    for (const [b, field] of refused) {
      const r = parsePurgeBody(b);
      expect([JSON.stringify(b), r.ok ? "accepted" : r.field]).toEqual([JSON.stringify(b), field]);
      if (!r.ok) expect(r.error.length).toBeGreaterThan(10);
    }
  });

  test("prefill: 1 to 1000 https URLs, normalised, duplicates dropped in order", () => {
    expect(parsePrefillBody({ urls: ["https://h.test/b", "https://H.test/a", "https://h.test:443/b"] })).toEqual({ ok: true, value: ["https://h.test/b", "https://h.test/a"] });
    const refused: [unknown, string][] = [
      [{}, "urls"],
      [{ urls: "https://h.test/a" }, "urls"],
      [{ urls: [] }, "urls"],
      [{ urls: Array.from({ length: 1001 }, (_, i) => `https://h.test/${i}`) }, "urls"],
      [{ urls: ["https://h.test/a", 5] }, "urls[1]"],
      [{ urls: ["ftp://h.test/a"] }, "urls[0]"],
    ];
    for (const [b, field] of refused) {
      const r = parsePrefillBody(b);
      expect(r.ok ? "accepted" : r.field).toBe(field);
    }
  });
});

test("job totals and hit ratios by host", () => {
  const it = (state: PrefillItem["state"], bytes: number): PrefillItem => ({ url: "https://h/", state, bytes, status: 0, stored: false, error: null });
  expect(summariseJob([it("done", 10), it("failed", 0), it("running", 5)])).toEqual({ done: 1, failed: 1, bytes: 15, finished: false });
  expect(summariseJob([it("done", 10), it("failed", 3)])).toEqual({ done: 1, failed: 1, bytes: 13, finished: true });
  expect(hostUsage({ a: { hits: 3, misses: 1, bypass: 0 }, b: { hits: 0, misses: 0, bypass: 9 } })).toEqual([
    { host: "b", hits: 0, misses: 0, bypass: 9, hit_ratio: null },
    { host: "a", hits: 3, misses: 1, bypass: 0, hit_ratio: 0.75 },
  ]);
});

describe("where the store lives", () => {
  test("data_dir/cache without a volume; the volume's agate-patch (one budget: its size) with one; data_dir when the volume is unusable", () => {
    const data = tmp();
    const vol = tmp();
    const plain = parseConfig({ gateway: { data_dir: data }, cache: { max_bytes: 12345 } });
    expect([storeOnVolume(plain), cacheDir(plain), cacheBudget(plain)]).toEqual([false, join(data, "cache"), 12345]);
    const onVol = parseConfig({ gateway: { data_dir: data }, cache: { max_bytes: 12345 }, patch: { volume: vol, min_volume_bytes: 1, allow_same_device: true } });
    expect([storeOnVolume(onVol), cacheDir(onVol)]).toEqual([true, join(vol, "agate-patch")]);
    expect(cacheBudget(onVol)).toBeGreaterThan(12345);
    // too small for patch mode's rule (or missing): the cache keeps to data_dir
    const small = parseConfig({ gateway: { data_dir: data }, patch: { volume: vol, min_volume_bytes: 10 ** 15 } });
    expect([storeOnVolume(small), cacheDir(small)]).toEqual([false, join(data, "cache")]);
    const missing = parseConfig({ gateway: { data_dir: data }, patch: { volume: join(vol, "nope") } });
    expect(cacheDir(missing)).toBe(join(data, "cache"));
  });
});

test("the reader Store follows a store directory that was removed and made again (a reset), instead of the unlinked index", () => {
  const dir = join(tmp(), "cache");
  mkdirSync(dir);
  const first = Store.open(dir, { maxBytes: 1 << 30, owner: "t" });
  storeBody(first, "GET https://old.test/a", makeChunk(1, 100));
  first.close();
  expect(topObjects(dir).map((o) => o.url)).toEqual(["https://old.test/a"]);
  rmSync(dir, { recursive: true });
  mkdirSync(dir);
  const second = Store.open(dir, { maxBytes: 1 << 30, owner: "t" });
  storeBody(second, "GET https://new.test/b", makeChunk(2, 200));
  try {
    expect(topObjects(dir).map((o) => o.url)).toEqual(["https://new.test/b"]);
    expect(storeUsage(dir)).toMatchObject({ entries: 1, bytes: 200 });
    expect(purgeStore(dir, { host: "new.test" })).toEqual({ objects: 1, bytes: 200 });
    expect(second.lookup("GET https://new.test/b", [])).toBeNull();
  } finally {
    second.close();
  }
});
