/** LeafCache: LRU by host, expiry a day before notAfter, and one mint for concurrent first handshakes. Fixed clock. */
import { describe, expect, test } from "bun:test";
import { LEAF_EXPIRY_MARGIN_MS, LeafCache, type Leaf } from "../../src/core/cert-cache";

const NOW = Date.UTC(2026, 2, 1, 12); // 2026-03-01T12:00:00Z
const DAY = 86_400_000;
const leaf = (tag: string, notAfter = NOW + 100 * DAY): Leaf => ({ certPem: `cert ${tag}`, keyPem: "key", notAfter });
const tick = () => new Promise<void>((r) => setTimeout(r, 1));

describe("LeafCache LRU", () => {
  test("get returns what set stored, by host", () => {
    const c = new LeafCache({ cap: 10 });
    c.set("a.example", leaf("a"));
    c.set("b.example", leaf("b"));
    expect(c.get("a.example", NOW)?.certPem).toBe("cert a");
    expect(c.get("b.example", NOW)?.certPem).toBe("cert b");
    expect(c.get("c.example", NOW)).toBeUndefined();
    expect(c.size).toBe(2);
  });

  test("over the cap, the least recently used host goes first; get counts as use", () => {
    const c = new LeafCache({ cap: 3 });
    c.set("a", leaf("a"));
    c.set("b", leaf("b"));
    c.set("c", leaf("c"));
    expect(c.get("a", NOW)).toBeDefined(); // a is now the most recent; b the oldest
    c.set("d", leaf("d"));
    expect(c.size).toBe(3);
    expect(c.get("b", NOW)).toBeUndefined();
    expect(c.get("a", NOW)?.certPem).toBe("cert a");
    expect(c.get("c", NOW)?.certPem).toBe("cert c");
    expect(c.get("d", NOW)?.certPem).toBe("cert d");
  });

  test("set on an existing host replaces it and makes it the most recent", () => {
    const c = new LeafCache({ cap: 2 });
    c.set("a", leaf("a1"));
    c.set("b", leaf("b"));
    c.set("a", leaf("a2"));
    c.set("c", leaf("c")); // evicts b, not a
    expect(c.size).toBe(2);
    expect(c.get("a", NOW)?.certPem).toBe("cert a2");
    expect(c.get("b", NOW)).toBeUndefined();
  });

  test("a leaf within a day of its notAfter is dropped on get", () => {
    const c = new LeafCache({ cap: 10 });
    const notAfter = NOW + 10 * DAY;
    c.set("h", leaf("h", notAfter));
    expect(c.get("h", notAfter - LEAF_EXPIRY_MARGIN_MS - 1)?.certPem).toBe("cert h");
    expect(c.size).toBe(1);
    expect(c.get("h", notAfter - LEAF_EXPIRY_MARGIN_MS)).toBeUndefined();
    expect(c.size).toBe(0);
    expect(LEAF_EXPIRY_MARGIN_MS).toBe(DAY);
  });

  test("delete and clear", () => {
    const c = new LeafCache({ cap: 10 });
    c.set("a", leaf("a"));
    c.set("b", leaf("b"));
    expect(c.delete("a")).toBe(true);
    expect(c.delete("a")).toBe(false);
    expect(c.get("a", NOW)).toBeUndefined();
    expect(c.size).toBe(1);
    c.clear();
    expect(c.size).toBe(0);
    expect(c.get("b", NOW)).toBeUndefined();
  });

  test("the cap defaults to 10 000 and must be a positive integer", () => {
    expect(new LeafCache({}).cap).toBe(10_000);
    expect(() => new LeafCache({ cap: 0 })).toThrow(/cap/);
    expect(() => new LeafCache({ cap: 1.5 })).toThrow(/cap/);
  });
});

describe("LeafCache.getOrMint", () => {
  test("50 concurrent first requests for one host mint once and all get that leaf", async () => {
    const c = new LeafCache({ cap: 10 });
    let mints = 0;
    const mint = async () => {
      mints++;
      await tick(); // a real mint awaits WebCrypto; the others arrive meanwhile
      return leaf(`minted ${mints}`);
    };
    const all = await Promise.all(Array.from({ length: 50 }, () => c.getOrMint("h.example", NOW, mint)));
    expect(mints).toBe(1);
    expect(new Set(all).size).toBe(1);
    expect(all[0].certPem).toBe("cert minted 1");
    // later requests are cache hits
    expect((await c.getOrMint("h.example", NOW, mint)).certPem).toBe("cert minted 1");
    expect(mints).toBe(1);
    expect(c.size).toBe(1);
  });

  test("different hosts mint separately", async () => {
    const c = new LeafCache({ cap: 10 });
    const minted: string[] = [];
    const mintFor = (h: string) => async () => {
      minted.push(h);
      await tick();
      return leaf(h);
    };
    const [a, b, a2] = await Promise.all([
      c.getOrMint("a", NOW, mintFor("a")),
      c.getOrMint("b", NOW, mintFor("b")),
      c.getOrMint("a", NOW, mintFor("a")),
    ]);
    expect(minted).toEqual(["a", "b"]);
    expect([a.certPem, b.certPem, a2.certPem]).toEqual(["cert a", "cert b", "cert a"]);
  });

  test("a failed mint reaches every waiter once, is not cached, and the next request tries again", async () => {
    const c = new LeafCache({ cap: 10 });
    let mints = 0;
    const failing = async (): Promise<Leaf> => {
      mints++;
      await tick();
      throw new Error("CA expired");
    };
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => c.getOrMint("h", NOW, failing)));
    expect(mints).toBe(1);
    expect(results.every((r) => r.status === "rejected" && (r.reason as Error).message === "CA expired")).toBe(true);
    expect(c.size).toBe(0);
    const ok = await c.getOrMint("h", NOW, async () => (mints++, leaf("second")));
    expect(ok.certPem).toBe("cert second");
    expect(mints).toBe(2);
  });

  test("a mint that throws synchronously rejects instead of throwing", async () => {
    const c = new LeafCache({ cap: 10 });
    const p = c.getOrMint("h", NOW, () => {
      throw new Error("bad host");
    });
    await expect(p).rejects.toThrow("bad host");
    expect(c.size).toBe(0);
  });

  test("an expired cached leaf is minted again", async () => {
    const c = new LeafCache({ cap: 10 });
    c.set("h", leaf("old", NOW + DAY / 2));
    let mints = 0;
    const got = await c.getOrMint("h", NOW, async () => (mints++, leaf("new")));
    expect(mints).toBe(1);
    expect(got.certPem).toBe("cert new");
    expect(c.get("h", NOW)?.certPem).toBe("cert new");
  });

  test("clear() while a mint runs: its leaf is returned but not cached, and new requests mint afresh", async () => {
    const c = new LeafCache({ cap: 10 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let mints = 0;
    const slow = async () => {
      mints++;
      await gate;
      return leaf("old CA");
    };
    const first = c.getOrMint("h", NOW, slow);
    await tick();
    c.clear(); // e.g. the admin switched CA
    const second = await c.getOrMint("h", NOW, async () => (mints++, leaf("new CA")));
    expect(second.certPem).toBe("cert new CA");
    release();
    expect((await first).certPem).toBe("cert old CA");
    expect(mints).toBe(2);
    expect(c.get("h", NOW)?.certPem).toBe("cert new CA"); // the late old-CA leaf did not overwrite it
  });
});
