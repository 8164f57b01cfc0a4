/**
 * @module The admin's purge inside the store (issue 9): the rows a selector names (core/cache-ops.ts `matchesPurge`,
 * in cache-key form) and their finished fill rows go in write transactions of `PURGE_BATCH` rows, and each blob file that lost its last
 * row is released by the store (unlinked, never truncated: readers that hold it keep the inode, see store.ts
 * `#releaseBlob`). Also the eviction totals the index keeps in `meta`.
 */
import { matchesPurge, normalisePurge, type PurgeResult, type PurgeSelector } from "../../core/cache-ops";
import type { IndexDb } from "./index-db";

/**
 * Rows deleted per write transaction: the lock is released between batches so fills in other workers wait at most
 * one batch. Measured with `bun bench/micro/purge.bench.ts 10000` (10,000 entries of 64 B under 10 hosts) on the
 * 2 vCPU build VM under load (load average 7–9): one URL 29–33 ms (the scan),
 * one host (1,000 objects) 0.2–0.7 s, everything (9,000) 1.1–4.1 s, i.e. 0.1–0.45 ms per object, mostly the
 * unlinks; in one transaction "everything" held the write lock 1.8 s, which at 100,000 objects would pass the
 * index's 10 s busy_timeout and fail fills. In batches of 256 a fill waits some 30–120 ms at most.
 */
const PURGE_BATCH = 256;

/** Delete what `sel` names; `releaseBlob` runs inside each batch's transaction for every blob a deleted row held. */
export function purgeRows(db: IndexDb, sel: PurgeSelector, releaseBlob: (rel: string) => void): PurgeResult {
  const q = db.q;
  const key = normalisePurge(sel);
  // The scan needs no lock (WAL snapshot); rows stored after it are new objects and stay.
  const rows = q.objects.all().filter((r) => matchesPurge(key, r.url));
  const total: PurgeResult = { objects: 0, bytes: 0 };
  for (let i = 0; i < rows.length; i += PURGE_BATCH) {
    const batch = rows.slice(i, i + PURGE_BATCH);
    db.writeTx(() => {
      const pkeys = new Set<string>();
      const blobs = new Set<string>();
      for (const r of batch) {
        if (q.deleteEntry.run(r.pkey, r.vkey).changes === 0) continue; // gone meanwhile (evicted, invalidated)
        total.objects++;
        total.bytes += r.size;
        pkeys.add(r.pkey);
        blobs.add(r.blob_path);
      }
      // a finished fill row could hand a late joiner the blob just purged
      for (const k of pkeys) q.deleteFinishedFill.run(k);
      for (const rel of blobs) releaseBlob(rel);
    });
  }
  return total;
}

/** Objects and bytes evicted since the index was created. */
export function evictionTotals(db: IndexDb): { objects: number; bytes: number } {
  const n = (k: string) => Number(db.q.counter.get(k)?.value ?? 0) || 0;
  return { objects: n("evicted_objects"), bytes: n("evicted_bytes") };
}

/** Count an eviction batch; call inside the eviction's write transaction. */
export function countEvicted(db: IndexDb, objects: number, bytes: number): void {
  if (objects === 0) return;
  db.q.addCounter.run("evicted_objects", objects);
  db.q.addCounter.run("evicted_bytes", bytes);
}
