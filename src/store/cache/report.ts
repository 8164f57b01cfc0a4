/**
 * @module Per-object accounting for the admin's "largest objects" view: the stored objects that served the most
 * bytes. Reads through the store's own API (`Store.topObjects`), so it gets the index's schema check and migration
 * instead of querying the file blindly; one reader Store per directory, opened without recovery (the supervisor and
 * the workers own repairs and writes; WAL lets this reader run beside them).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Store } from "./store";

export type ObjectReport = { url: string; size: number; hits: number; bytes_served: number; bytes_fetched: number; savings: number };

const readers = new Map<string, Store>();

/** Up to `limit` objects of the store in `storeDir`, most bytes served first; [] if there is no usable index yet. */
export function topObjects(storeDir: string, limit = 20): ObjectReport[] {
  if (!existsSync(join(storeDir, "index.db"))) return [];
  try {
    let s = readers.get(storeDir);
    if (s === undefined) {
      // maxBytes only matters for eviction, which this reader never runs
      s = Store.open(storeDir, { maxBytes: 1, owner: `${process.pid}:report`, recover: false });
      readers.set(storeDir, s);
    }
    // Each stored object was fetched upstream once (one fill per object): its size.
    return s
      .topObjects(limit)
      .map((r) => ({ url: r.url, size: r.size, hits: r.hits, bytes_served: r.bytesServed, bytes_fetched: r.size, savings: r.bytesServed - r.size }));
  } catch {
    // a schema this agate cannot read (PX_STORE_SCHEMA) or a busy index: the view stays empty, the store is untouched
    return [];
  }
}

/** Close the reader Stores (the supervisor's shutdown; tests). */
export function closeReports(): void {
  for (const s of readers.values()) s.close();
  readers.clear();
}
