/**
 * @module The Store contract (STYLE §14, after undici's `cacheStoreTests(Store)`): one suite over the public API,
 * against a fresh directory per test. There is one store implementation (the disk `Store`, src/store/cache/store.ts);
 * what varies is where a fill's waiter lives, and the fill half of the suite runs in both places: a waiter in the
 * filler's own Store (an in-memory `LocalFill`) and a waiter in a second Store on the same directory (a `RemoteFill`
 * that polls the index and the temp file, as another worker thread would). store-disk.test.ts runs it; disk-only
 * behaviour (corruption on disk, crash leftovers, real threads, kill -9) is there too.
 */
import { describe, expect, test } from "bun:test";
import type { Headers } from "../../src/core/cache/freshness";
import { varyKey } from "../../src/core/cache/key";
import { type Entry, FillError, type FillTail, type Store, type StoreOptions } from "../../src/store/cache/store";
import { concat, makeBody, makeChunk, sha256Hex } from "../fixtures/store-data";
import { waitFor } from "../peers/helpers";

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

/** Poll until `cond()` holds, or fail after `ms` (the shared waitFor, polling every 2 ms: tails move fast). */
export const until = (ms: number, what: string, cond: () => boolean): Promise<unknown> => waitFor(cond, { timeoutMs: ms, what, everyMs: 2 });

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

/** The FillError a drain ends with (fails the test if it ends otherwise). */
async function fillErrorOf(p: Promise<unknown>): Promise<FillError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FillError) return e;
    throw e;
  }
  throw new Error("expected the tail to end with a FillError");
}

const K = "GET https://dl.example.test/manifest.json";
/** A key whose text names outcomes: the outcome a waiter sees must come from the fill, never from these words. */
const WORDY = "GET https://dl.example.test/fallback/revalidated/superseded/stale-failed-idle.cab?changed=1";

/** Where a fill's waiter lives: in the filler's Store, or in a second Store on the same directory (another worker). */
type Topology = { name: string; pair(dir: string, opts?: Partial<StoreOptions>): { a: Store; b: Store; close(): void } };

function topologies(h: StoreHarness): Topology[] {
  return [
    {
      name: "waiter in the filler's Store",
      pair(dir, opts) {
        const a = h.open(dir, opts);
        return { a, b: a, close: () => a.close() };
      },
    },
    {
      name: "waiter in another Store on the same directory",
      pair(dir, opts) {
        const a = h.open(dir, opts);
        const b = h.open(dir, opts);
        return { a, b, close: () => (a.close(), b.close()) };
      },
    },
  ];
}

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
        expect(s.usage()).toEqual({ entries: 4, bytes: 1_070_004 });
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
        c.fill.fail("failed", "test: not this way");
        const br = storeBody(s, K, makeChunk(2, 700), { vary, reqHeaders: [["accept-encoding", "br"]] });
        expect(gz.vkey).not.toBe(br.vkey);

        const a = s.lookup(K, [["accept-encoding", "gzip"], ["user-agent", "other"]])!;
        expect(a.sha256).toBe(sha256Hex(makeChunk(1, 500)));
        expect(a.reqHeaders).toEqual([["Accept-Encoding", "gzip"]]);
        expect(a.vary).toBe(vary);
        expect(s.lookup(K, [["Accept-Encoding", "br"]])!.sha256).toBe(sha256Hex(makeChunk(2, 700)));
        expect(s.lookup(K, [])).toBeNull(); // absent only matches absent (RFC 9111 §4.1)
        expect(s.lookup(K, [["accept-encoding", "identity"]])).toBeNull();
        expect(s.usage().entries).toBe(2);
      } finally {
        s.close();
      }
    });

    test("nothing is visible before commit, in this store or another one on the same directory", () => {
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
        expect(b.usage()).toEqual({ entries: 0, bytes: 0 });
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

    test("entries and their hit counts survive close and reopen, byte-exact", () => {
      const dir = h.makeDir();
      const body = makeBody(10, 10_000);
      let s = h.open(dir);
      const stored = storeBody(s, K, body, { headers: [["etag", '"v1"']] });
      s.touch(stored, 42);
      s.close(); // flushes the touch
      s = h.open(dir);
      try {
        const e = s.lookup(K, [])!;
        expect(e).not.toBeNull();
        expect(e.headers).toEqual([["etag", '"v1"']]);
        expect(Buffer.from(s.body(e)!).equals(Buffer.from(body))).toBe(true);
        expect(s.usage()).toEqual({ entries: 1, bytes: body.byteLength });
        expect(s.topObjects(10)).toEqual([{ url: "https://dl.example.test/manifest.json", size: body.byteLength, hits: 1, bytesServed: 42 }]);
        expect(s.recovery).toEqual({ tmpFiles: 0, fills: 0, rows: 0, blobs: 0 });
      } finally {
        s.close();
      }
    });

    test("updateHeaders after a 304 keeps the body; delete removes every variant; usage and hits add up", () => {
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
        c.fill.commit({ vkey: varyKey("accept", [["accept", "b"]])!, url: "u-b", reqHeaders: [["accept", "b"]], vary: "accept" });
        s.touch(u, 300);
        s.touch(u, 300);
        expect(s.usage()).toEqual({ entries: 2, bytes: 400 });
        expect(s.topObjects(1)).toEqual([{ url: "https://dl.example.test/manifest.json", size: 300, hits: 2, bytesServed: 600 }]);
        expect(s.delete(K)).toBe(2);
        expect(s.lookup(K, [["accept", "a"]])).toBeNull();
        expect(s.lookup(K, [["accept", "b"]])).toBeNull();
        expect(s.body(u)).toBeNull(); // the blob went with its last entry
        expect(s.updateHeaders(u, [], 0, 0)).toBe(false);
        expect(s.usage()).toEqual({ entries: 0, bytes: 0 });
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
        expect(s.usage().bytes).toBe(450);
        expect(s.evictIfNeeded()).toEqual({ evicted: 0, bytes: 0 });
        if (refill.role === "filler") refill.fill.fail("failed", "test done");
      } finally {
        s.close();
      }
    });

    test("purge (issue 9): a URL takes all its variants, a prefix or a host only what it names, all the rest; a body already read stays intact", () => {
      const dir = h.makeDir();
      const s = h.open(dir);
      const admin = h.open(dir); // the admin's purge runs in another Store on the directory, as in the gateway
      try {
        const A = "GET https://dl.example.test/a/manifest.json";
        storeBody(s, A, makeChunk(1, 100), { vary: "accept", reqHeaders: [["accept", "a"]] });
        storeBody(s, A, makeChunk(2, 110), { vary: "accept", reqHeaders: [["accept", "b"]] });
        storeBody(s, "GET https://dl.example.test/a/x.cab", makeChunk(3, 120));
        storeBody(s, "GET https://dl.example.test/b/y.cab", makeChunk(4, 130));
        const z = s.body(storeBody(s, "GET https://other.example.test:8443/z", makeChunk(5, 140)))!; // an agent reads it meanwhile
        storeBody(s, "GET https://other.example.test/q", makeChunk(6, 150));
        expect(s.usage()).toEqual({ entries: 6, bytes: 750 });
        // the URL in another spelling (percent-encoding of an unreserved character, the default port): same key
        expect(admin.purge({ url: "https://dl.example.test:443/a/m%61nifest.json" })).toEqual({ objects: 2, bytes: 210 });
        expect(s.lookup(A, [["accept", "a"]])).toBeNull();
        expect(s.lookup(A, [["accept", "b"]])).toBeNull();
        expect(admin.purge({ url: "https://dl.example.test/a/manifest.json" })).toEqual({ objects: 0, bytes: 0 });
        expect(admin.purge({ prefix: "https://dl.example.test/a/" })).toEqual({ objects: 1, bytes: 120 });
        expect(s.lookup("GET https://dl.example.test/b/y.cab", [])).not.toBeNull();
        // a host without a port names it on every port
        expect(admin.purge({ host: "other.example.test:8443" })).toEqual({ objects: 1, bytes: 140 });
        expect(admin.purge({ host: "other.example.test" })).toEqual({ objects: 1, bytes: 150 });
        expect(Buffer.from(z).equals(Buffer.from(makeChunk(5, 140)))).toBe(true); // unlinked, not truncated
        expect(admin.purge({ all: true })).toEqual({ objects: 1, bytes: 130 });
        expect(s.usage()).toEqual({ entries: 0, bytes: 0 });
        // a purged key is filled afresh: the next claim is a filler, not a waiter on the old fill row
        expect(s.claimFill("GET https://dl.example.test/b/y.cab").role).toBe("filler");
      } finally {
        (admin.close(), s.close());
      }
    });

    test("evictions are counted in the index: every Store on the directory reads the same totals", () => {
      let now = 1_000_000;
      const dir = h.makeDir();
      const [s, other] = [h.open(dir, { maxBytes: 1000, highWater: 0.9, lowWater: 0.5, clock: () => now }), h.open(dir)];
      try {
        expect(other.evictions()).toEqual({ objects: 0, bytes: 0 });
        for (let i = 0; i < 10; i++) {
          now += 10;
          storeBody(s, `${K}?n=${i}`, makeChunk(100 + i, 100));
        }
        expect(s.evictIfNeeded()).toEqual({ evicted: 5, bytes: 500 });
        now += 10;
        storeBody(s, `${K}?n=big`, makeChunk(1, 450));
        expect(other.largestObjects(2).map((o) => o.size)).toEqual([450, 100]);
        expect(s.evictIfNeeded()).toEqual({ evicted: 5, bytes: 500 }); // 950 → 450: the five older ones go
        expect(other.evictions()).toEqual({ objects: 10, bytes: 1000 });
      } finally {
        (other.close(), s.close());
      }
    });

    for (const t of topologies(h)) fillContract(h, t);
  });
}

/** Claims, waiters and how fills end, with the waiter where `t` puts it. */
function fillContract(h: StoreHarness, t: Topology): void {
  describe(`fills, ${t.name}`, () => {
    test("one filler; later claimants are waiters that get the head first, then every byte in order while the filler writes", async () => {
      const p = t.pair(h.makeDir());
      try {
        const c1 = p.a.claimFill(K);
        const c2 = p.b.claimFill(K);
        const c3 = p.b.claimFill(K);
        expect([c1.role, c2.role, c3.role]).toEqual(["filler", "waiter", "waiter"]);
        if (c1.role !== "filler" || c2.role !== "waiter" || c3.role !== "waiter") return;
        const fill = c1.fill;
        const w2 = drain(c2.tail);
        const w3 = drain(c3.tail);
        fill.setHead(203, [["x-test", "1"]], { requestTime: 5, responseTime: 6 });
        // the head reaches the waiters before any body byte is written
        expect(await within(2000, "head", c2.tail.head())).toEqual({
          ok: true,
          head: { status: 203, headers: [["x-test", "1"]], requestTime: 5, responseTime: 6 },
        });
        expect(fill.size).toBe(0);
        const chunks = 20;
        let written = 0;
        for (let i = 0; i < chunks; i++) {
          fill.write(makeChunk(i, 3000 + i));
          written += 3000 + i;
          // streamed, not delivered at the end: each chunk reaches both waiters before the next is written
          await until(2000, `waiters to receive chunk ${i}`, () => c2.tail.received === written && c3.tail.received === written);
        }
        const e = fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null })!;
        const expected = concat(Array.from({ length: chunks }, (_, i) => makeChunk(i, 3000 + i)));
        const [b2, b3] = await within(5000, "waiters", Promise.all([w2, w3]));
        expect(Buffer.from(b2).equals(Buffer.from(expected))).toBe(true);
        expect(Buffer.from(b3).equals(Buffer.from(expected))).toBe(true);
        expect(sha256Hex(b2)).toBe(e.sha256);
      } finally {
        p.close();
      }
    });

    test("a tail that starts after megabytes were written catches up (from the file), every byte in order", async () => {
      const p = t.pair(h.makeDir());
      try {
        const c1 = p.a.claimFill(K);
        const c2 = p.b.claimFill(K);
        if (c1.role !== "filler" || c2.role !== "waiter") throw new Error("roles");
        c1.fill.setHead(200, []);
        // 6 MB in odd-sized chunks while the waiter reads nothing: more than the in-memory window keeps
        const chunks = Array.from({ length: 60 }, (_, i) => makeChunk(i, 100_003));
        for (const c of chunks) c1.fill.write(c);
        const got = drain(c2.tail);
        await until(5000, "the tail to start reading", () => c2.tail.received > 0);
        c1.fill.write(makeChunk(99, 77));
        c1.fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null });
        const body = await within(5000, "slow tail", got);
        expect(sha256Hex(body)).toBe(sha256Hex(concat([...chunks, makeChunk(99, 77)])));
      } finally {
        p.close();
      }
    });

    test("a waiter finishes even if a new claim replaced the finished fill's row before its next poll", async () => {
      // slow poller: the race window (for a waiter in another Store) is wide open
      const p = t.pair(h.makeDir(), { pollMinMs: 300, pollMaxMs: 300 });
      try {
        const c1 = p.a.claimFill(K);
        const w = p.b.claimFill(K);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        const got = drain(w.tail);
        c1.fill.setHead(200, []);
        c1.fill.write(makeChunk(1, 50_000));
        const e = c1.fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null })!;
        // a request that missed just before the commit claims now: it replaces the 'done' row
        const late = p.a.claimFill(K);
        expect(late.role).toBe("filler");
        if (late.role === "filler") expect(late.fill.replaced).toBe("done");
        const body = await within(5000, "slow waiter", got);
        expect(sha256Hex(body)).toBe(e.sha256);
        if (late.role === "filler") late.fill.fail("failed", "test");
      } finally {
        p.close();
      }
    });

    test("a failed download: every waiter sees outcome 'failed' with the detail, nothing is stored, the next claim fills", async () => {
      const p = t.pair(h.makeDir());
      try {
        const c1 = p.a.claimFill(K);
        const w1 = p.b.claimFill(K);
        const w2 = p.b.claimFill(K);
        if (c1.role !== "filler" || w1.role !== "waiter" || w2.role !== "waiter") throw new Error("roles");
        const body1 = drain(w1.tail);
        c1.fill.write(makeChunk(0, 5000));
        await until(2000, "the waiter sees the first bytes", () => w1.tail.received === 5000);
        c1.fill.fail("failed", "upstream reset");
        const e = await within(3000, "waiter error", fillErrorOf(body1));
        expect({ code: e.code, outcome: e.outcome, detail: e.detail }).toEqual({
          code: "PX_FILL_FAILED",
          outcome: "failed",
          detail: "upstream reset",
        });
        // no head was ever set: head() resolves with the outcome instead of rejecting
        expect(await within(3000, "head", w2.tail.head())).toEqual({ ok: false, outcome: "failed", detail: "upstream reset" });
        w2.tail.close();
        expect(p.a.lookup(K, [])).toBeNull();
        expect(p.b.usage()).toEqual({ entries: 0, bytes: 0 });
        expect(() => c1.fill.write(makeChunk(1, 10))).toThrow();
        const again = p.b.claimFill(K);
        expect(again.role).toBe("filler");
        if (again.role === "filler") {
          expect(again.fill.replaced).toBe("failed");
          again.fill.fail("failed", "cleanup");
        }
      } finally {
        p.close();
      }
    });

    for (const outcome of ["revalidated", "superseded", "fallback", "changed", "failed"] as const) {
      test(`outcome "${outcome}" reaches the waiter as reported, whatever the key, URL or detail says`, async () => {
        const p = t.pair(h.makeDir());
        try {
          const early = p.a.claimFill(WORDY);
          const wEarly = p.b.claimFill(WORDY);
          if (early.role !== "filler" || wEarly.role !== "waiter") throw new Error("roles");
          // before the head: head() carries the outcome
          early.fill.fail(outcome, "superseded by a fallback after it was revalidated; stale and idle and failed");
          const hd = await within(3000, "head", wEarly.tail.head());
          expect(hd.ok ? "head" : hd.outcome).toBe(outcome);
          wEarly.tail.close();

          // after the head, mid-body: the tail throws a FillError with the outcome
          const late = p.a.claimFill(WORDY);
          const wLate = p.b.claimFill(WORDY);
          if (late.role !== "filler" || wLate.role !== "waiter") throw new Error("roles");
          const got = drain(wLate.tail);
          late.fill.setHead(200, []);
          late.fill.write(makeChunk(1, 1000));
          await until(2000, "the waiter sees the first bytes", () => wLate.tail.received === 1000);
          late.fill.fail(outcome, "revalidated");
          const e = await within(3000, "waiter error", fillErrorOf(got));
          expect(e.outcome).toBe(outcome);
          expect(e.code).toBe("PX_FILL_FAILED");
          expect(p.b.lookup(WORDY, [])).toBeNull();
        } finally {
          p.close();
        }
      });
    }

    test("a key naming every outcome fills, streams and stores like any other", async () => {
      const p = t.pair(h.makeDir());
      try {
        const c1 = p.a.claimFill(WORDY);
        const w = p.b.claimFill(WORDY);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        const got = drain(w.tail);
        c1.fill.setHead(200, []);
        c1.fill.write(makeChunk(5, 7000));
        const e = c1.fill.commit({ vkey: "", url: WORDY.slice(4), reqHeaders: [], vary: null })!;
        expect(sha256Hex(await within(3000, "waiter", got))).toBe(e.sha256);
        expect(p.b.lookup(WORDY, [])).toEqual(e);
      } finally {
        p.close();
      }
    });

    test("commit(null) delivers the bytes to waiters and stores nothing", async () => {
      const p = t.pair(h.makeDir());
      try {
        const c1 = p.a.claimFill(K);
        const w = p.b.claimFill(K);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        const got = drain(w.tail);
        c1.fill.setHead(200, [["cache-control", "no-store"]]);
        c1.fill.write(makeChunk(9, 12_345));
        expect(c1.fill.commit(null)).toBeNull();
        expect(Buffer.from(await within(3000, "waiter", got)).equals(Buffer.from(makeChunk(9, 12_345)))).toBe(true);
        expect(p.a.lookup(K, [])).toBeNull();
        expect(p.a.usage().entries).toBe(0);
      } finally {
        p.close();
      }
    });

    test("a tail with no progress for tailIdleMs on the store clock ends 'idle' (a filler that hangs but still beats)", async () => {
      let now = 5_000_000;
      const p = t.pair(h.makeDir(), { tailIdleMs: 300, heartbeatMs: 50, clock: () => now });
      try {
        const c1 = p.a.claimFill(K);
        const w = p.b.claimFill(K);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        c1.fill.setHead(200, []);
        c1.fill.write(makeChunk(0, 100));
        const got = drain(w.tail);
        await until(3000, "the waiter reads the first bytes", () => w.tail.received === 100);
        now += 1000; // past tailIdleMs, well within staleMs (5 s): idle, not a dead filler
        const e = await within(5000, "idle error", fillErrorOf(got));
        expect({ code: e.code, outcome: e.outcome }).toEqual({ code: "PX_FILL_IDLE", outcome: "idle" });
        expect(w.tail.received).toBe(100);
        c1.fill.fail("failed", "test");
      } finally {
        p.close();
      }
    });

    test("closing the filler's store ends its fills for every waiter with 'failed'; the closed store refuses calls", async () => {
      const dir = h.makeDir();
      const p = t.pair(dir);
      try {
        const c1 = p.a.claimFill(K);
        const w = p.b.claimFill(K);
        if (c1.role !== "filler" || w.role !== "waiter") throw new Error("roles");
        const got = drain(w.tail);
        p.a.close();
        const e = await within(3000, "waiter error", fillErrorOf(got));
        expect({ outcome: e.outcome, detail: e.detail }).toEqual({ outcome: "failed", detail: "the store was closed" });
        let code: string | undefined;
        try {
          p.a.lookup(K, []);
        } catch (err) {
          code = (err as { code?: string }).code;
        }
        expect(code).toBe("PX_STORE_CLOSED");
      } finally {
        p.close();
      }
    });

    test("an ended fill is forgotten by its Store (onFinished): the next claim of the key is a filler again", async () => {
      const p = t.pair(h.makeDir());
      try {
        for (const end of ["commit", "fail"] as const) {
          const c = p.a.claimFill(K);
          const w = p.b.claimFill(K);
          if (c.role !== "filler" || w.role !== "waiter") throw new Error(`roles (${end})`);
          const got = drain(w.tail).catch((e) => e);
          c.fill.setHead(200, []);
          c.fill.write(makeChunk(2, 10));
          if (end === "commit") c.fill.commit({ vkey: "", url: "u", reqHeaders: [], vary: null });
          else c.fill.fail("superseded");
          await within(3000, "waiter end", got);
          // the filler's Store forgot its LocalFill, and the waiter's Store its RemoteFill (or the same LocalFill)
          const again = p.a.claimFill(K);
          expect(again.role).toBe("filler");
          if (again.role === "filler") {
            expect(again.fill.replaced).toBe(end === "commit" ? "done" : "failed");
            again.fill.fail("failed", "test");
          }
          const third = p.b.claimFill(K);
          expect(third.role).toBe("filler");
          if (third.role === "filler") {
            expect(third.fill.replaced).toBe("failed");
            third.fill.fail("failed", "test");
          }
        }
      } finally {
        p.close();
      }
    });
  });
}
