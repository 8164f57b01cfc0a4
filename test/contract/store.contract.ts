/**
 * @module The Store contract (STYLE §14, after undici's `cacheStoreTests(Store)`): one suite, run by each store
 * implementation's test file against a fresh directory per test. It exercises only the public API, so a double can
 * run it too. Disk-only behaviour (corruption on disk, crash leftovers, threads, kill -9) is in store-disk.test.ts.
 */
import { describe, expect, test } from "bun:test";
import type { Headers } from "../../src/core/cache/freshness";
import { varyKey } from "../../src/core/cache/key";
import type { Entry, FillTail, Store, StoreOptions } from "../../src/store/store";
import { concat, makeBody, makeChunk, sha256Hex } from "../fixtures/store-data";

export type StoreHarness = {
  /** a fresh, empty store directory (the harness removes them in its own afterAll) */
  makeDir(): string;
  /** open a store on `dir`; `opts` overrides the harness defaults (maxBytes 1 GiB, owner "test") */
  open(dir: string, opts?: Partial<StoreOptions>): Store;
};

/** Fail instead of hanging: every await on the store is bounded. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll until `cond()` holds, or fail after `ms`. */
export async function until(ms: number, what: string, cond: () => boolean): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(2);
  }
}

/** Fill `key` with `body` in chunks of `chunkSize` and commit; returns the stored entry. */
export function storeBody(
  store: Store,
  key: string,
  body: Uint8Array,
  o: { vary?: string | null; reqHeaders?: Headers; headers?: Headers; chunkSize?: number } = {},
): Entry {
  const c = store.claimFill(key);
  if (c.role !== "filler") throw new Error(`expected to be the filler of ${key}`);
  c.fill.setHead(200, o.headers ?? [["content-length", String(body.byteLength)]]);
  const step = o.chunkSize ?? 16384;
  for (let i = 0; i < body.byteLength; i += step) c.fill.write(body.subarray(i, i + step));
  const vary = o.vary ?? null;
  const reqHeaders = o.reqHeaders ?? [];
  const entry = c.fill.commit({
    vkey: varyKey(vary ?? undefined, reqHeaders)!,
    url: key.replace(/^GET /, ""),
    reqHeaders,
    vary,
  });
  if (entry === null) throw new Error("commit stored nothing");
  return entry;
}

/** Everything a tail yields, in order. */
async function drain(tail: FillTail): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const c of tail) chunks.push(c.slice());
  return concat(chunks);
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error("expected a rejection");
}

const K = "GET https://dl.example.test/manifest.json";

export function storeContract(name: string, h: StoreHarness): void {
  describe(`${name}: Store contract`, () => {
    test("a committed fill is found by lookup and its body is byte-exact (0 B, 1 B, 70 kB, 1 MB)", () => {
      const s = h.open(h.makeDir());
      try {
        for (const [i, size] of [0, 1, 70_000, 1_000_003].entries()) {
          const body = makeChunk(i, size);
          const key = `${K}?size=${size}`;
          const stored = storeBody(s, key, body, { chunkSize: 4093 });
          expect(stored.size).toBe(size);
          expect(stored.sha256).toBe(sha256Hex(body));
          const e = s.lookup(key, [])!;
          expect(e).not.toBeNull();
          expect(e).toMatchObject({ pkey: key, vkey: "", status: 200, size, sha256: sha256Hex(body), vary: null });
          expect(e.headers).toEqual([["content-length", String(size)]]);
          const got = s.body(e)!;
          expect(got.byteLength).toBe(size);
          expect(Buffer.from(got).equals(Buffer.from(body))).toBe(true);
          // a second hit gives the same bytes (from the mapping cache)
          expect(Buffer.from(s.body(e)!).equals(Buffer.from(body))).toBe(true);
        }
        expect(s.lookup(`${K}?size=2`, [])).toBeNull();
        expect(s.totals()).toMatchObject({ stored_entries: 4, stored_bytes: 1_070_004 });
      } finally {
        s.close();
      }
    });

    test("Vary: each variant answers only its own request headers, and only Vary-named request headers are kept", () => {
      const s = h.open(h.makeDir());
      try {
        const vary = "Accept-Encoding";
        const gz = storeBody(s, K, makeChunk(1, 500), {
          vary,
          reqHeaders: [["Accept-Encoding", "gzip"], ["User-Agent", "agent/1"]],
        });
        // the key's fill is 'done' now; a new claim replaces it (the second variant is a new fetch)
        const c = s.claimFill(K);
        expect(c.role).toBe("filler");
        if (c.role !== "filler") return;
        expect(c.fill.replaced).toBe("done");
        c.fill.fail("test: not this way");
        const br = storeBody(s, K, makeChunk(2, 700), { vary, reqHeaders: [["accept-encoding", "br"]] });
        expect(gz.vkey).not.toBe(br.vkey);

        const a = s.lookup(K, [["accept-encoding", "gzip"], ["user-agent", "other"]])!;
        expect(a.sha256).toBe(sha256Hex(makeChunk(1, 500)));
        expect(a.reqHeaders).toEqual([["Accept-Encoding", "gzip"]]);
        expect(a.vary).toBe(vary);
        expect(s.lookup(K, [["Accept-Encoding", "br"]])!.sha256).toBe(sha256Hex(makeChunk(2, 700)));
        expect(s.lookup(K, [])).toBeNull(); // absent only matches absent (RFC 9111 §4.1)
        expect(s.lookup(K, [["accept-encoding", "identity"]])).toBeNull();
        expect(s.totals().stored_entries).toBe(2);
      } finally {
        s.close();
      }
    });

    test("nothing is visible before commit, in this store or another one on the same directory", async () => {
      const dir = h.makeDir();
      const a = h.open(dir);
      const b = h.open(dir);
      try {
        const c = a.claimFill(K);
        if (c.role !== "filler") throw new Error("expected filler");
        c.fill.setHead(200, []);
        c.fill.write(makeChunk(0, 10_000));
        c.fill.write(makeChunk(1, 10_000));
        expect(a.lookup(K, [])).toBeNull();
        expect(b.lookup(K, [])).toBeNull();
        expect(b.totals()).toMatchObject({ stored_entries: 0, stored_bytes: 0 });
        c.fill.write(makeChunk(2, 10_000));
        const e = c.fill.commit({ vkey: "", url: "https://dl.example.test/manifest.json", reqHeaders: [], vary: null })!;
        const seen = b.lookup(K, [])!;
        expect(seen).toEqual(e);
        expect(sha256Hex(b.body(seen)!)).toBe(sha256Hex(concat([0, 1, 2].map((i) => makeChunk(i, 10_000)))));
      } finally {
        a.close();
        b.close();
      }
    });

    test("entries survive close and reopen, byte-exact", () => {
      const dir = h.makeDir();
      const body = makeBody(10, 10_000);
      let s = h.open(dir);
      storeBody(s, K, body, { headers: [["etag", '"v1"']] });
      s.addTotals({ hits: 3, served_bytes: 42 });
      s.close();
      s = h.open(dir);
      try {
        const e = s.lookup(K, [])!;
        expect(e).not.toBeNull();
        expect(e.headers).toEqual([["etag", '"v1"']]);
        expect(Buffer.from(s.body(e)!).equals(Buffer.from(body))).toBe(true);
        expect(s.totals()).toMatchObject({ hits: 3, served_bytes: 42, stored_entries: 1, stored_bytes: body.byteLength });
        expect(s.recovery).toEqual({ tmpFiles: 0, fills: 0, rows: 0, blobs: 0 });
      } finally {
        s.close();
      }
    });

    test("updateHeaders after a 304 keeps the body; delete removes every variant; totals add up", () => {
      const s = h.open(h.makeDir());
      try {
        const e = storeBody(s, K, makeChunk(3, 300), { vary: "accept", reqHeaders: [["accept", "a"]] });
        expect(s.delete(K)).toBe(1);
        expect(s.lookup(K, [["accept", "a"]])).toBeNull();
        expect(s.body(e)).toBeNull();
        const e1 = storeBody(s, K, makeChunk(3, 300), { vary: "accept", reqHeaders: [["accept", "a"]] });
        expect(e1.sha256).toBe(e.sha256);
        expect(s.updateHeaders(e1, [["etag", '"v2"']], 1000, 2000)).toBe(true);
        const u = s.lookup(K, [["accept", "a"]])!;
        expect(u).toMatchObject({ headers: [["etag", '"v2"']], requestTime: 1000, responseTime: 2000, sha256: e1.sha256 });
        expect(Buffer.from(s.body(u)!).equals(Buffer.from(makeChunk(3, 300)))).toBe(true);

        const c = s.claimFill(K);
        if (c.role !== "filler") throw new Error("expected filler");
        c.fill.setHead(200, []);
        c.fill.write(makeChunk(4, 100));
        c.fill.commit({ vkey: varyKey("accept", [["accept", "b"]])!, url: "u", reqHeaders: [["accept", "b"]], vary: "accept" });
        s.touch(u, 300);
        s.touch(u, 300);
        s.addTotals({ hits: 2, served_bytes: 600, misses: 1, collapsed: 0 });
        expect(s.totals()).toMatchObject({ hits: 2, served_bytes: 600, misses: 1, stored_entries: 2, stored_bytes: 400 });
        expect(s.delete(K)).toBe(2);
        expect(s.lookup(K, [["accept", "a"]])).toBeNull();
        expect(s.lookup(K, [["accept", "b"]])).toBeNull();
        expect(s.body(u)).toBeNull(); // the blob went with its last entry
        expect(s.updateHeaders(u, [], 0, 0)).toBe(false);
        expect(s.totals()).toMatchObject({ stored_entries: 0, stored_bytes: 0 });
      } finally {
        s.close();
      }
    });

    test("eviction is LRU by last access, stops at low water, and never takes an entry being filled", () => {
      let now = 1_000_000;
      const s = h.open(h.makeDir(), { maxBytes: 1000, highWater: 0.9, lowWater: 0.5, clock: () => now });
      try {
        const entries: Entry[] = [];
        for (let i = 0; i < 9; i++) {
          now += 10;
          entries.push(storeBody(s, `${K}?n=${i}`, makeChunk(100 + i, 100)));
        }
        expect(s.evictIfNeeded()).toEqual({ evicted: 0, bytes: 0 }); // 900 is not above high water (0.9 × 1000)
        now += 10;
        // touched recently: 0 and 1 become the most recently used
        s.touch(entries[0]!, 100);
        s.touch(entries[1]!, 100);
        // a refill of entry 2 is in progress: its old copy must stay
        const refill = s.claimFill(entries[2]!.pkey);
        expect(refill.role).toBe("filler");
        now += 10;
        const extra = storeBody(s, `${K}?n=extra`, makeChunk(200, 150)); // 1050 bytes > 900
        const r = s.evictIfNeeded();
        // down to ≤ 500: LRU order is 2 (being filled: spared), 3, 4, 5, 6, 7, 8, then 0, 1, extra;
        // 1050 − 6 × 100 = 450
        expect(r).toEqual({ evicted: 6, bytes: 600 });
        const left = (i: number) => s.lookup(entries[i]!.pkey, []) !== null;
        expect([0, 1, 2, 3, 4, 5, 6, 7, 8].filter(left)).toEqual([0, 1, 2]);
        expect(s.lookup(extra.pkey, [])).not.toBeNull();
        expect(s.body(entries[3]!)).toBeNull(); // its blob is gone
        expect(s.totals().stored_bytes).toBe(450);
        expect(s.evictIfNeeded()).toEqual({ evicted: 0, bytes: 0 });
        if (refill.role === "filler") refill.fill.fail("test done");
      } finally {
        s.close();
      }
    });

    test("claimFill in one thread: the second claimant is a waiter that gets the head first, then every byte in order while the filler writes slowly", async () => {
      const s = h.open(h.makeDir());
      try {
        const c1 = s.claimFill(K);
        const c2 = s.claimFill(K);
        const c3 = s.claimFill(K);
        expect([c1.role, c2.role, c3.role]).toEqual(["filler", "waiter", "waiter"]);
        if (c1.role !== "filler" || c2.role !== "waiter" || c3.role !== "waiter") return;
        const fill = c1.fill;
        const w2 = drain(c2.tail);
        const w3 = drain(c3.tail);
        fill.setHead(203, [["x-test", "1"]]);
        // the head reaches the waiters before any body byte is written
        expect(await within(1000, "head", c2.tail.head())).toMatchObject({ status: 203, headers: [["x-test", "1"]] });
        expect(fill.size).toBe(0);
        const chunks = 20;
        let seenBeforeEnd = 0;
        for (let i = 0; i < chunks; i++) {
          fill.write(makeChunk(i, 3000 + i));
          await Bun.sleep(3);
          seenBeforeEnd = c2.tail.received;
        }
        fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null });
        const expected = concat(Array.from({ length: chunks }, (_, i) => makeChunk(i, 3000 + i)));
        const [b2, b3] = await within(5000, "waiters", Promise.all([w2, w3]));
        expect(seenBeforeEnd).toBeGreaterThan(0); // streamed, not delivered at the end
        expect(Buffer.from(b2).equals(Buffer.from(expected))).toBe(true);
        expect(Buffer.from(b3).equals(Buffer.from(expected))).toBe(true);
      } finally {
        s.close();
      }
    });

    test("an in-thread tail that falls behind the in-memory window catches up from the file, every byte in order", async () => {
      const s = h.open(h.makeDir());
      try {
        const c1 = s.claimFill(K);
        const c2 = s.claimFill(K);
        if (c1.role !== "filler" || c2.role !== "waiter") throw new Error("roles");
        c1.fill.setHead(200, []);
        // 6 MB in odd-sized chunks while the waiter reads nothing: more than the window keeps
        const chunks = Array.from({ length: 60 }, (_, i) => makeChunk(i, 100_003));
        for (const c of chunks) c1.fill.write(c);
        const got = drain(c2.tail);
        await Bun.sleep(5);
        c1.fill.write(makeChunk(99, 77));
        c1.fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null });
        const body = await within(5000, "slow tail", got);
        expect(sha256Hex(body)).toBe(sha256Hex(concat([...chunks, makeChunk(99, 77)])));
      } finally {
        s.close();
      }
    });

    test("claimFill across stores on one directory (the cross-thread path): the waiter streams the filler's temp file as it grows", async () => {
      const dir = h.makeDir();
      const a = h.open(dir);
      const b = h.open(dir);
      try {
        const c1 = a.claimFill(K);
        const c2 = b.claimFill(K);
        expect([c1.role, c2.role]).toEqual(["filler", "waiter"]);
        if (c1.role !== "filler" || c2.role !== "waiter") return;
        const headAt: number[] = [];
        const got = c2.tail.head().then((hd) => {
          headAt.push(c1.fill.size);
          expect(hd.headers).toEqual([["content-type", "application/x-test"]]);
          return drain(c2.tail);
        });
        c1.fill.setHead(200, [["content-type", "application/x-test"]], { requestTime: 5, responseTime: 6 });
        await within(2000, "head across stores", c2.tail.head());
        const chunks = 16;
        for (let i = 0; i < chunks; i++) {
          c1.fill.write(makeChunk(i, 10_000));
          if (i === chunks / 2) await until(2000, "waiter to stream the first half", () => c2.tail.received >= 90_000);
          await Bun.sleep(2);
        }
        const e = c1.fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null })!;
        const body = await within(5000, "remote waiter", got);
        expect(headAt).toEqual([0]);
        expect(body.byteLength).toBe(chunks * 10_000);
        expect(sha256Hex(body)).toBe(e.sha256);
        expect(await c2.tail.head()).toMatchObject({ status: 200, requestTime: 5, responseTime: 6 });
      } finally {
        a.close();
        b.close();
      }
    });

    test("a cross-store waiter finishes even if a new claim replaced the finished fill's row before its next poll", async () => {
      const dir = h.makeDir();
      const a = h.open(dir);
      const b = h.open(dir, { pollMinMs: 300, pollMaxMs: 300 }); // slow poller: the race window is wide open
      try {
        const c1 = a.claimFill(K);
        const w = b.claimFill(K);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        const got = drain(w.tail);
        c1.fill.setHead(200, []);
        c1.fill.write(makeChunk(1, 50_000));
        const e = c1.fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null })!;
        // a request that missed just before the commit claims now: it replaces the 'done' row
        const late = a.claimFill(K);
        expect(late.role).toBe("filler");
        if (late.role === "filler") expect(late.fill.replaced).toBe("done");
        const body = await within(5000, "slow remote waiter", got);
        expect(sha256Hex(body)).toBe(e.sha256);
        if (late.role === "filler") late.fill.fail("test");
      } finally {
        a.close();
        b.close();
      }
    });

    test("a failed fill gives every waiter (same store and another store) an error and stores nothing", async () => {
      const dir = h.makeDir();
      const a = h.open(dir);
      const b = h.open(dir);
      try {
        const c1 = a.claimFill(K);
        const local = a.claimFill(K);
        const remote = b.claimFill(K);
        if (c1.role !== "filler" || local.role !== "waiter" || remote.role !== "waiter") throw new Error("roles");
        const localBody = drain(local.tail);
        const remoteBody = drain(remote.tail);
        const remoteHead = remote.tail.head();
        c1.fill.write(makeChunk(0, 5000));
        await until(2000, "remote waiter sees the first bytes", () => remote.tail.received === 5000);
        c1.fill.fail(new Error("upstream reset"));
        for (const p of [localBody, remoteBody, remoteHead, local.tail.head()]) {
          const e = await within(3000, "waiter error", rejection(p));
          expect(e.code).toBe("PX_FILL_FAILED");
          expect(e.message).toContain("upstream reset");
        }
        expect(a.lookup(K, [])).toBeNull();
        expect(b.totals()).toMatchObject({ stored_entries: 0, stored_bytes: 0 });
        expect(() => c1.fill.write(makeChunk(1, 10))).toThrow(/failed/);
        const again = b.claimFill(K);
        expect(again.role).toBe("filler");
        if (again.role === "filler") {
          expect(again.fill.replaced).toBe("failed");
          again.fill.fail("cleanup");
        }
      } finally {
        a.close();
        b.close();
      }
    });

    test("commit(null) delivers the bytes to waiters and stores nothing", async () => {
      const dir = h.makeDir();
      const a = h.open(dir);
      const b = h.open(dir);
      try {
        const c1 = a.claimFill(K);
        const w = b.claimFill(K);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        const got = drain(w.tail);
        c1.fill.setHead(200, [["cache-control", "no-store"]]);
        c1.fill.write(makeChunk(9, 12_345));
        expect(c1.fill.commit(null)).toBeNull();
        expect(Buffer.from(await within(3000, "waiter", got)).equals(Buffer.from(makeChunk(9, 12_345)))).toBe(true);
        expect(a.lookup(K, [])).toBeNull();
        expect(a.totals().stored_entries).toBe(0);
      } finally {
        a.close();
        b.close();
      }
    });

    test("a tail that sees no progress for tailIdleMs fails with PX_FILL_IDLE (a filler that hangs but still beats)", async () => {
      const dir = h.makeDir();
      const a = h.open(dir, { tailIdleMs: 300, heartbeatMs: 50 });
      const b = h.open(dir, { tailIdleMs: 300, heartbeatMs: 50 });
      try {
        const c1 = a.claimFill(K);
        const local = a.claimFill(K);
        const remote = b.claimFill(K);
        if (c1.role !== "filler" || local.role !== "waiter" || remote.role !== "waiter") throw new Error("roles");
        c1.fill.setHead(200, []);
        c1.fill.write(makeChunk(0, 100));
        const t0 = performance.now();
        for (const p of [drain(local.tail), drain(remote.tail)]) {
          const e = await within(5000, "idle error", rejection(p));
          expect(e.code).toBe("PX_FILL_IDLE");
        }
        expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
        expect(local.tail.received).toBe(100);
        expect(remote.tail.received).toBe(100);
        c1.fill.fail("test");
      } finally {
        a.close();
        b.close();
      }
    });

    test("closing a store fails its unfinished fills for every waiter", async () => {
      const dir = h.makeDir();
      const a = h.open(dir);
      const b = h.open(dir);
      try {
        const c1 = a.claimFill(K);
        const w = b.claimFill(K);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        const got = drain(w.tail);
        a.close();
        const e = await within(3000, "waiter error", rejection(got));
        expect(e.code).toBe("PX_FILL_FAILED");
        expect(e.message).toContain("closed");
        expect(() => a.lookup(K, [])).toThrow(/closed/);
      } finally {
        b.close();
      }
    });
  });
}
