/**
 * @module Per-object accounting for the admin: the stored objects that served the most bytes, read from a store's
 * index without opening it for writing (the workers own the writes; WAL lets this reader run beside them).
 */
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { join } from "node:path";

export type ObjectReport = { url: string; size: number; hits: number; bytes_served: number; bytes_fetched: number; savings: number };

const dbs = new Map<string, Database>();

export function topObjects(storeDir: string, limit = 20): ObjectReport[] {
  const path = join(storeDir, "index.db");
  if (!existsSync(path)) return [];
  let db = dbs.get(path);
  if (!db) {
    db = new Database(path, { readonly: true });
    db.exec("PRAGMA busy_timeout = 2000");
    dbs.set(path, db);
  }
  try {
    const rows = db
      .query("SELECT url, size, hits, bytes_served FROM entries ORDER BY bytes_served DESC LIMIT ?")
      .all(limit) as { url: string; size: number; hits: number; bytes_served: number }[];
    // Each stored object was fetched upstream once (one fill per object): its size.
    return rows.map((r) => ({ ...r, bytes_fetched: r.size, savings: r.bytes_served - r.size }));
  } catch {
    return [];
  }
}
