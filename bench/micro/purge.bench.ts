/**
 * @module Micro-benchmark of the admin's purge (src/store/cache/purge.ts through `Store.purge`): a store of N entries
 * of 64 B under 10 hosts, then purge one URL (the scan), one host (N/10 objects) and everything, timed. Prints one
 * JSON line per case: { bench, case, entries, objects, ms, msPerObject }. Run: `bun bench/micro/purge.bench.ts [N]`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/cache/store";
import { storeBody } from "../../test/contract/store.contract";
import { makeChunk } from "../../test/fixtures/store-data";

const N = Math.min(Math.max(Number(process.argv[2] ?? 10_000) || 10_000, 100), 1_000_000);
const dir = mkdtempSync(join(tmpdir(), "agate-purge-bench-"));
const s = Store.open(dir, { maxBytes: 2 ** 40, owner: "bench" });
try {
  for (let i = 0; i < N; i++) storeBody(s, `GET https://h${i % 10}.test/f/${i}`, makeChunk(i, 64));
  for (const [name, sel] of [["url", { url: "https://h3.test/f/3" }], ["host", { host: "h1.test" }], ["all", { all: true as const }]] as const) {
    const t = performance.now();
    const r = s.purge(sel);
    const ms = performance.now() - t;
    console.log(JSON.stringify({ bench: "purge", case: name, entries: N, objects: r.objects, ms: +ms.toFixed(1), msPerObject: +(ms / Math.max(1, r.objects)).toFixed(3) }));
  }
} finally {
  s.close();
  rmSync(dir, { recursive: true, force: true });
}
