/**
 * @module Per-object accounting for the admin's "largest objects" view: the stored objects that served the most
 * bytes. Reads through the store's own API (`Store.topObjects`), so it gets the index's schema check and migration
 * instead of querying the file blindly; one reader Store per directory, opened without recovery (the supervisor and
 * the workers own repairs and fills; WAL lets this reader run beside them). The admin's usage view and purge
 * (`storeUsage`, `purgeStore`) go through the same Store: a purge is one write transaction of the store's own.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { ObjectUsage, PurgeResult, PurgeSelector } from "../../core/cache-ops";
import { Store } from "./store";

export type ObjectReport = { url: string; size: number; hits: number; bytes_served: number; bytes_fetched: number; savings: number };

const readers = new Map<string, Store>();

const inodes = new Map<string, number>();

function reader(storeDir: string): Store {
  let s = readers.get(storeDir);
  // A reset (or a moved volume) deletes the directory and a new one is made: a reader still on the old, unlinked
  // index would report and purge a cache that no longer exists, so follow the file.
  const ino = statSync(join(storeDir, "index.db")).ino;
  if (s !== undefined && inodes.get(storeDir) !== ino) {
    s.close();
    s = undefined;
  }
  if (s === undefined) {
    // maxBytes only matters for eviction, which this reader never runs
    s = Store.open(storeDir, { maxBytes: 1, owner: `${process.pid}:report`, recover: false });
    readers.set(storeDir, s);
    inodes.set(storeDir, ino);
  }
  return s;
}

export type StoreUsage = { entries: number; bytes: number; evictions: { objects: number; bytes: number }; largest: ObjectUsage[]; most_served: ObjectUsage[] };

const asUsage = (r: { url: string; size: number; hits: number; bytesServed: number }): ObjectUsage => ({ url: r.url, size: r.size, hits: r.hits, bytes_served: r.bytesServed });

/** Entries, bytes, evictions, the largest and the most served objects of the store in `storeDir` (zeros before one exists). */
export function storeUsage(storeDir: string, limit = 10): StoreUsage {
  const empty: StoreUsage = { entries: 0, bytes: 0, evictions: { objects: 0, bytes: 0 }, largest: [], most_served: [] };
  if (!existsSync(join(storeDir, "index.db"))) return empty;
  const s = reader(storeDir);
  const u = s.usage();
  return { ...u, evictions: s.evictions(), largest: s.largestObjects(limit).map(asUsage), most_served: s.topObjects(limit).map(asUsage) };
}

/** Purge from the store in `storeDir` (nothing to do before it exists). Throws what the store throws (a busy index). */
export function purgeStore(storeDir: string, sel: PurgeSelector): PurgeResult {
  if (!existsSync(join(storeDir, "index.db"))) return { objects: 0, bytes: 0 };
  return reader(storeDir).purge(sel);
}

/** Up to `limit` objects of the store in `storeDir`, most bytes served first; [] if there is no usable index yet. */
export function topObjects(storeDir: string, limit = 20): ObjectReport[] {
  if (!existsSync(join(storeDir, "index.db"))) return [];
  try {
    const s = reader(storeDir);
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
