/**
 * @module The shared cache store's facade, as the workers use it: an index (`index-db.ts`, bun:sqlite WAL) plus
 * content-addressed blob files (`blobs.ts`) in one directory. It owns opening, lookups, hits, headers after a 304,
 * invalidation, claims, eviction, batched touches, closing and the crash recovery; the fills themselves live in
 * `fill-local.ts` (this thread's), `fill-remote.ts` (another thread's) and `fill-tail.ts` (the waiters), and report
 * their end back here through callbacks. Every worker thread opens its own `Store` on the same directory; they
 * coordinate only through the index and the files, so the same code is correct across threads and across processes,
 * and after a crash (kill -9) the next `Store.open` puts the index and the files back in agreement.
 *
 * What a worker does with it (the RFC 9111 decisions stay in core/cache/*):
 *   hit:   lookup(pkey, req) → Entry → body(entry) → bytes (a cached mmap) → touch(entry, n)
 *   miss:  claimFill(pkey) → filler: setHead · write… · commit(meta)   (or fail(outcome, detail))
 *                          → waiter: tail.head() → { ok, head } | { ok: false, outcome } · for await (chunk of tail)
 *   304:   updateHeaders(entry, headers, requestTime, responseTime)
 *   unsafe method: delete(pkey)       ·   after a commit: evictIfNeeded()
 *
 * Invariants:
 * - No reader sees a partial object: a blob is fsynced and renamed into place, and its index row inserted, inside one
 *   BEGIN IMMEDIATE transaction; before that it is only a temp file that fill tails read.
 * - Blob renames and unlinks happen while holding the index write lock, so a file and its rows appear and disappear
 *   together, content-addressed blobs shared by several rows are unlinked with their last row, and the recovery scan
 *   (also under the lock) never races a commit.
 * - One upstream fetch per key: `claimFill` is atomic across threads (BEGIN IMMEDIATE + upsert of the `fills` row);
 *   a fill whose heartbeat is older than `staleMs` belongs to a dead filler and may be taken over.
 */
import { openSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Headers } from "../../core/cache/freshness";
import { matchesVary } from "../../core/cache/key";
import { ProxyError } from "../../core/errors";
import type { PurgeResult, PurgeSelector } from "../../core/cache-ops";
import { countEvicted, evictionTotals, purgeRows } from "./purge";
import { blobRelPath, blobStamp, cleanTmp, ensureBlobDirs, listBlobs, openBlobWriter, readBlob, sha256Hex } from "./blobs";
import { closeQuiet, FillWriter, LocalFill, type Replaced, unlinkQuiet } from "./fill-local";
import { RemoteFill } from "./fill-remote";
import { type FillCtx, FillTail } from "./fill-tail";
import { type Entry, type FillRow, IndexChanges, IndexDb, toEntry } from "./index-db";

export type { Headers };
export type { Entry } from "./index-db";
export type { CommitMeta, Replaced } from "./fill-local";
export { FillWriter } from "./fill-local";
export { FillError, FillTail, type FillHead, type HeadResult } from "./fill-tail";
export type { FillEndOutcome, FillOutcome } from "../../core/cache/plan";

export type StoreOptions = {
  /** the cache's size budget in bytes (blob bytes of all entries) */
  maxBytes: number;
  /** eviction starts above highWater × maxBytes; default 0.9 */
  highWater?: number;
  /** … and goes down to lowWater × maxBytes; default 0.8 */
  lowWater?: number;
  /** who holds fills, for people reading the fills table: e.g. `${pid}:${workerId}` */
  owner: string;
  /** a filler refreshes its heartbeat this often; default 1000 ms */
  heartbeatMs?: number;
  /** a fill whose heartbeat is older than this is dead: waiters see "stale", a claim takes it over; default 5000 ms */
  staleMs?: number;
  /** cross-thread tails poll the fills row and file size between these intervals (backing off when idle); 2–20 ms */
  pollMinMs?: number;
  pollMaxMs?: number;
  /** a tail that has seen no new byte and no state change for this long (store clock) ends "idle"; default 120 s */
  tailIdleMs?: number;
  /** batched touches are written this often; default 250 ms */
  flushMs?: number;
  /**
   * Identifies this process's life for blob verification: a blob is hashed on its first open by a Store with a boot
   * id that has not verified it yet. Give every worker of one process the same id (made once by the supervisor at
   * start) for "once per process"; the default, a random id per Store, means once per Store instance.
   */
  bootId?: string;
  /** run the crash recovery at open (default true); the supervisor may run it once and let workers skip it */
  recover?: boolean;
  /** mapped blobs kept per Store (thread) for fast hits; default 256 */
  mapCacheEntries?: number;
  /** the clock (ms since the epoch) for timestamps, heartbeats, idle tails and LRU; default Date.now (tests pass a fake one) */
  clock?: () => number;
};

export type ClaimResult = { role: "filler"; fill: FillWriter } | { role: "waiter"; tail: FillTail };

export type RecoveryReport = {
  /** temp files of crashed fills deleted */
  tmpFiles: number;
  /** dead 'filling' rows and old finished fill rows deleted */
  fills: number;
  /** index rows whose blob file was missing */
  rows: number;
  /** blob files no index row pointed to */
  blobs: number;
};

/** What the store holds: blob bytes and entries (kept exact by triggers on the index). */
export type Usage = { bytes: number; entries: number };

/** A stored object in the admin's "largest objects" view. */
export type ObjectRow = { url: string; size: number; hits: number; bytesServed: number };

const DEFAULTS = {
  highWater: 0.9,
  lowWater: 0.8,
  heartbeatMs: 1000,
  staleMs: 5000,
  pollMinMs: 2,
  pollMaxMs: 20,
  tailIdleMs: 120_000,
  flushMs: 250,
  mapCacheEntries: 256,
};
/** finished fill rows are kept this long for late joiners and diagnostics, then pruned */
const FINISHED_FILL_TTL_MS = 10 * 60_000;
/** primary keys whose variants a Store keeps in its lookup memo (hot manifests; a miss costs one SELECT) */
const MEMO_KEYS = 4096;
/** victims deleted per eviction transaction (the write lock is released between batches) */
const EVICT_BATCH = 256;

type Options = Required<Omit<StoreOptions, "bootId">> & { bootId: string };

function openQuiet(path: string): number | null {
  try {
    return openSync(path, "r");
  } catch {
    return null;
  }
}

export class Store {
  readonly dir: string;
  /** what the crash recovery at open found and removed (zeros when `recover: false`) */
  readonly recovery: RecoveryReport = { tmpFiles: 0, fills: 0, rows: 0, blobs: 0 };
  #db: IndexDb;
  #o: Options;
  #ctx: FillCtx;
  #active = new Map<string, LocalFill>();
  #remotes = new Map<string, RemoteFill>();
  #maps = new Map<string, { bytes: Uint8Array; stamp: string | null }>();
  /** pkey → its entries as last read from the index, valid while the index is unchanged (see `#variants`) */
  #memo = new Map<string, Entry[]>();
  #changes: IndexChanges;
  #touches = new Map<string, { pkey: string; vkey: string; hits: number; bytes: number; last: number }>();
  #flushTimer: ReturnType<typeof setTimeout> | null = null;
  #closed = false;
  // fills report their end here; the identity check keeps a newer fill of the same key
  #onLocalFinished = (key: string, f: LocalFill) => {
    if (this.#active.get(key) === f) this.#active.delete(key);
  };
  #onRemoteFinished = (key: string, f: RemoteFill) => {
    if (this.#remotes.get(key) === f) this.#remotes.delete(key);
  };

  private constructor(dir: string, db: IndexDb, o: Options) {
    this.dir = dir;
    this.#db = db;
    this.#o = o;
    this.#ctx = { dir, db, q: db.q, o, now: o.clock, releaseBlob: (rel) => this.#releaseBlob(rel) };
    this.#changes = new IndexChanges(db, o.clock);
  }

  /** Open (or create, or migrate) the store in `dir`. Synchronous; throws PX_STORE_SCHEMA for an index it cannot use. */
  static open(dir: string, opts: StoreOptions): Store {
    if (!(opts.maxBytes > 0)) throw new RangeError(`store: maxBytes must be > 0, got ${opts.maxBytes}`);
    const o: Options = {
      ...DEFAULTS,
      recover: true,
      clock: Date.now,
      ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
      bootId: opts.bootId ?? crypto.randomUUID(),
    } as Options;
    if (!(o.lowWater > 0 && o.lowWater <= o.highWater && o.highWater <= 1)) {
      throw new RangeError(`store: need 0 < lowWater ≤ highWater ≤ 1, got ${o.lowWater} and ${o.highWater}`);
    }
    const abs = resolve(dir);
    ensureBlobDirs(abs);
    const db = IndexDb.open(join(abs, "index.db"));
    const store = new Store(abs, db, o);
    if (o.recover) {
      try {
        Object.assign(store.recovery, store.recover());
      } catch (e) {
        db.close();
        throw e;
      }
    }
    return store;
  }

  // ───────────────────────────── hits ─────────────────────────────

  /**
   * The stored response for `pkey` whose stored Vary request headers match `reqHeaders` (RFC 9111 §4.1, via
   * core's `matchesVary`); the most recent one when several match (§4.1: "the most recent response"). Null on a miss.
   */
  lookup(pkey: string, reqHeaders: Headers): Entry | null {
    this.#open();
    for (const e of this.#variants(pkey)) {
      // no Vary (the usual artifact): every request matches, skip building the secondary keys
      if (e.vary === null || matchesVary(e.vary, e.reqHeaders, reqHeaders)) return e;
    }
    return null;
  }

  /**
   * The stored variants of `pkey`, most recent first (RFC 9111 §4.1: of several matching responses, use the most
   * recent), from this thread's memo while the index has not changed since they were read: no write by this
   * connection (`localWrites`) and none by any other — another worker's fill, refill, 304 freshening, purge,
   * eviction or touch flush (index-db.ts `IndexChanges`: the process's shared write count, and `PRAGMA
   * data_version` for writers outside it). Any change at all empties the memo, so a hit never answers
   * from rows the index no longer holds. Entries are shared by later hits: read-only, like the mapped bodies.
   */
  #variants(pkey: string): Entry[] {
    const db = this.#db;
    if (this.#changes.since()) this.#memo.clear();
    const hit = this.#memo.get(pkey);
    if (hit !== undefined) return hit;
    const rows = db.q.entriesByPkey.all(pkey);
    if (rows.length > 1) rows.sort((a, b) => b.response_time - a.response_time);
    const entries = rows.map((row) => toEntry(this.dir, row, JSON.parse(row.req_headers) as Headers));
    if (this.#memo.size >= MEMO_KEYS) this.#memo.delete(this.#memo.keys().next().value!);
    this.#memo.set(pkey, entries);
    return entries;
  }

  /** Whether any variant of `pkey` is stored: after a `lookup` miss, tells a Vary miss from a URI miss (RFC 9211 §2.2). */
  holds(pkey: string): boolean {
    this.#open();
    return this.#db.q.entriesByPkey.all(pkey).length > 0;
  }

  /**
   * The entry's bytes: the mapped blob, shared by every later hit in this thread, so treat it as read-only (a write
   * would stay in this thread's private mapping, never reach the file, but would change what later hits serve). The
   * first open of a blob by a boot id (see `bootId`), and every open after its file changed (`blobStamp`), checks its
   * size and SHA-256 against the index; a mismatch (corrupted on disk) or a missing file deletes every entry of that
   * blob and the file, and returns null so the caller refetches. Later hits reuse the mapping (one stat).
   *
   * TODO: hashing is synchronous — about 0.8 s per GiB on this VM, on the worker's event loop, once per blob per boot
   * id. Fine for manifests and installers; for multi-GiB patch files an async, chunked check would be kinder.
   */
  body(entry: Entry): Uint8Array | null {
    this.#open();
    const rel = blobRelPath(entry.sha256);
    const cached = this.#maps.get(rel);
    // a file written into since it was checked (its stamp moved) is mapped and checked again, never served as it was
    if (cached !== undefined && cached.stamp === blobStamp(entry.blobPath)) {
      this.#maps.delete(rel); // move to the LRU end
      this.#maps.set(rel, cached);
      return cached.bytes;
    }
    const q = this.#db.q;
    const bytes = readBlob(entry.blobPath);
    const stamp = blobStamp(entry.blobPath);
    if (bytes === null || bytes.byteLength !== entry.size) {
      this.#dropBlob(rel);
      return null;
    }
    const mark = `${this.#o.bootId}/${stamp}`;
    if (q.verifiedOf.get(rel)?.verified !== mark) {
      if (sha256Hex(bytes) !== entry.sha256) {
        this.#dropBlob(rel);
        return null;
      }
      try {
        q.setVerified.run(mark, rel);
      } catch {
        // lock busy: we only lose the "already verified" note; the next Store hashes again
      }
    }
    this.#maps.set(rel, { bytes, stamp });
    if (this.#maps.size > this.#o.mapCacheEntries) {
      // the oldest mapping goes; it is unmapped when GC collects it (Bun.mmap arrays munmap on finalisation)
      this.#maps.delete(this.#maps.keys().next().value!);
    }
    return bytes;
  }

  /**
   * Record a hit: last_access, hits, bytes_served. Batched in memory and written every `flushMs` in one transaction
   * (measured: 0.2–0.5 µs per hit this way, 27 µs as a synchronous UPDATE that also takes the write lock fills need;
   * see index-db.ts).
   */
  touch(entry: Entry, bytesServed: number): void {
    this.#open();
    const k = `${entry.pkey}\u0000${entry.vkey}`;
    let t = this.#touches.get(k);
    if (t === undefined) {
      t = { pkey: entry.pkey, vkey: entry.vkey, hits: 0, bytes: 0, last: 0 };
      this.#touches.set(k, t);
    }
    t.hits++;
    t.bytes += bytesServed;
    t.last = Math.max(t.last, this.#o.clock());
    this.#scheduleFlush();
  }

  /** After a 304 (RFC 9111 §4.3.4): new stored headers and times, same body. False if the entry is gone or replaced. */
  updateHeaders(entry: Entry, headers: Headers, requestTime: number, responseTime: number): boolean {
    this.#open();
    this.#db.noteWrite(); // the memo must not keep the old headers (run outside writeTx)
    const r = this.#db.q.updateHeaders.run(
      JSON.stringify(headers),
      requestTime,
      responseTime,
      entry.pkey,
      entry.vkey,
      blobRelPath(entry.sha256),
    );
    return r.changes > 0;
  }

  /** Invalidate every variant of `pkey` (RFC 9111 §4.4). Returns how many entries were deleted. */
  delete(pkey: string): number {
    this.#open();
    const q = this.#db.q;
    return this.#db.writeTx(() => {
      const rows = q.blobsOfPkey.all(pkey);
      q.deletePkey.run(pkey);
      q.deleteFinishedFill.run(pkey); // finished fill rows of the key are only bookkeeping now
      for (const rel of new Set(rows.map((r) => r.blob_path))) this.#releaseBlob(rel);
      return rows.length;
    });
  }

  /** Blob bytes and entries stored now (exact: kept by the index in the same transaction as each change). */
  usage(): Usage {
    this.#open();
    return this.#db.q.usage.get() ?? { bytes: 0, entries: 0 };
  }

  /**
   * Remove every stored object the selector names (all variants of a URL, a host, a URL prefix, everything) in write
   * transactions of a few hundred rows (purge.ts). An agent already streaming one finishes intact (blobs are unlinked, never
   * truncated); its next lookup misses. A fill in flight is not stopped: what it commits afterwards is new.
   */
  purge(sel: PurgeSelector): PurgeResult {
    this.#open();
    return purgeRows(this.#db, sel, (rel) => this.#releaseBlob(rel));
  }

  /** Objects and bytes evicted by LRU since the index was created (every thread's: kept in the index). */
  evictions(): { objects: number; bytes: number } {
    this.#open();
    return evictionTotals(this.#db);
  }

  /** The largest stored objects (patch slices count as objects of their own). */
  largestObjects(limit: number): ObjectRow[] {
    this.#open();
    return this.#db.q.largestObjects.all(limit).map((r) => ({ url: r.url, size: r.size, hits: r.hits, bytesServed: r.bytes_served }));
  }

  /** The stored objects that served the most bytes (pending touches of this Store are written first). */
  topObjects(limit: number): ObjectRow[] {
    this.#open();
    try {
      this.flush();
    } catch {}
    return this.#db.q.topObjects
      .all(limit)
      .map((r) => ({ url: r.url, size: r.size, hits: r.hits, bytesServed: r.bytes_served }));
  }

  // ───────────────────────────── fills ─────────────────────────────

  /**
   * Become the one filler of `key` (use the primary key), or a waiter that streams the filler's bytes. Atomic across
   * threads and processes. In this thread, a second claim of a key it is filling (or already tailing) attaches in
   * memory; other threads' fills are tailed by polling the fills row and the growing temp file. A 'filling' row with a
   * heartbeat older than `staleMs` is taken over; 'done'/'failed' rows are replaced (`fill.replaced` says which).
   *
   * Callers: a filler whose claim replaced a 'done' fill lost a race with it (the fill ended between the caller's
   * lookup and its claim); looking up again before fetching saves the fetch. With Vary, a waiter must still check the
   * head against its own request (matchesVary) and fetch on its own if the response varies on what it sent.
   */
  claimFill(key: string): ClaimResult {
    this.#open();
    const ctx = this.#ctx;
    const { q, o } = ctx;
    const local = this.#active.get(key);
    if (local !== undefined) return { role: "waiter", tail: this.#tail(local) };
    const remote = this.#remotes.get(key);
    if (remote !== undefined && remote.status === "filling") return { role: "waiter", tail: this.#tail(remote) };
    // Lock-free first look: a live fill in another thread needs no write.
    const seen = q.fill.get(key);
    if (seen !== null && seen.status === "filling" && seen.heartbeat >= ctx.now() - o.staleMs) {
      const fd = openQuiet(seen.tmp_path);
      if (fd !== null) return this.#joinRemote(key, seen, fd);
    }
    // Make the temp file before taking the lock, so a waiter never sees a row whose temp file does not exist yet.
    const writer = openBlobWriter(this.dir, sha256Hex(new TextEncoder().encode(key)).slice(0, 16));
    let joined: { row: FillRow; fd: number } | null;
    let replaced: Replaced = "none";
    try {
      joined = this.#db.writeTx(() => {
        const now = ctx.now();
        const row = q.fill.get(key);
        if (row !== null) {
          if (row.status === "filling" && row.heartbeat >= now - o.staleMs) {
            const fd = openQuiet(row.tmp_path);
            if (fd !== null) return { row, fd };
            // a live row without its temp file cannot be tailed: take it over
          }
          // a dead filler's temp file: nobody will finish it (its tails hold their own fds)
          if (row.status === "filling") unlinkQuiet(row.tmp_path);
          replaced = row.status === "filling" ? "stale" : row.status;
        }
        q.upsertFill.run(key, o.owner, writer.tmpPath, now);
        return null;
      });
    } catch (e) {
      writer.abort();
      throw e;
    }
    if (joined !== null) {
      writer.abort();
      return this.#joinRemote(key, joined.row, joined.fd);
    }
    const fill = new LocalFill(ctx, key, writer, this.#onLocalFinished);
    this.#active.set(key, fill);
    return { role: "filler", fill: new FillWriter(fill, replaced) };
  }

  #tail(src: LocalFill | RemoteFill): FillTail {
    return new FillTail(src, this.#o.tailIdleMs, this.#o.clock);
  }

  #joinRemote(key: string, row: FillRow, fd: number): ClaimResult {
    const existing = this.#remotes.get(key);
    if (existing !== undefined && existing.tmpPath === row.tmp_path && existing.status !== "failed") {
      closeQuiet(fd);
      return { role: "waiter", tail: this.#tail(existing) };
    }
    const src = new RemoteFill(this.#ctx, key, row, fd, this.#onRemoteFinished);
    if (src.status === "filling") this.#remotes.set(key, src);
    return { role: "waiter", tail: this.#tail(src) };
  }

  // ───────────────────────────── eviction ─────────────────────────────

  /**
   * LRU eviction: when the stored bytes pass highWater × maxBytes, delete the least recently used entries until they
   * are at most lowWater × maxBytes. Entries whose pkey has a live fill are never evicted. Pending touches are written
   * first so the order is current (other threads' unflushed touches may lag by up to `flushMs`). Deleting a blob
   * file is safe for readers that already opened or mapped it (they keep the inode; see `#releaseBlob`).
   * Also prunes finished fill rows older than 10 minutes.
   */
  evictIfNeeded(): { evicted: number; bytes: number } {
    this.#open();
    this.flush();
    const { q } = this.#db;
    const { maxBytes, highWater, lowWater, staleMs } = this.#o;
    let evicted = 0;
    let bytes = 0;
    if (this.#storedBytes() <= highWater * maxBytes) return { evicted, bytes };
    const low = lowWater * maxBytes;
    for (;;) {
      const batch = this.#db.writeTx(() => {
        // re-read under the lock: another thread may have evicted meanwhile
        let stored = this.#storedBytes();
        if (stored <= low) return null;
        const victims = q.victims.all(this.#o.clock() - staleMs, EVICT_BATCH);
        let n = 0;
        let b = 0;
        for (const v of victims) {
          if (stored <= low) break;
          q.deleteEntry.run(v.pkey, v.vkey);
          this.#releaseBlob(v.blob_path);
          stored -= v.size;
          n++;
          b += v.size;
        }
        countEvicted(this.#db, n, b);
        return { n, b, more: victims.length === EVICT_BATCH && stored > low };
      });
      if (batch === null) break;
      evicted += batch.n;
      bytes += batch.b;
      if (!batch.more) break;
    }
    try {
      const now = this.#o.clock();
      q.deadFills.run(now - Math.max(staleMs, FINISHED_FILL_TTL_MS), now - FINISHED_FILL_TTL_MS);
    } catch {}
    return { evicted, bytes };
  }

  #storedBytes(): number {
    return this.#db.q.usage.get()?.bytes ?? 0;
  }

  /** Write batched touches now (also done every `flushMs`, by `evictIfNeeded()` and `close()`). */
  flush(): void {
    if (this.#flushTimer !== null) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = null;
    }
    if (this.#touches.size === 0) return;
    const touches = [...this.#touches.values()];
    const q = this.#db.q;
    try {
      this.#db.writeTx(() => {
        for (const t of touches) q.touch.run(t.last, t.hits, t.bytes, t.pkey, t.vkey);
      });
    } catch (e) {
      // lock busy beyond busy_timeout: keep the batch and try again later
      this.#scheduleFlush();
      throw e;
    }
    this.#touches.clear();
  }

  #scheduleFlush(): void {
    if (this.#flushTimer !== null) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      try {
        this.flush();
      } catch {}
    }, this.#o.flushMs);
    this.#flushTimer.unref?.();
  }

  /** Flush, fail this thread's unfinished fills (their waiters see "failed"), stop tails, close the index. */
  close(): void {
    if (this.#closed) return;
    try {
      this.flush();
    } catch {}
    for (const f of [...this.#active.values()]) f.fail("failed", "the store was closed");
    for (const r of [...this.#remotes.values()]) r.abandon("the store was closed");
    this.#maps.clear();
    this.#closed = true;
    this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ───────────────────────────── recovery and internals ─────────────────────────────

  /**
   * Crash recovery, under the write lock so no commit interleaves: drop dead 'filling' rows (heartbeat older than
   * staleMs) and old finished ones; delete temp files no live fill owns (and older than staleMs, so a temp file
   * created just before its fill row is spared); drop rows whose blob file is missing; delete blob files no row
   * points to; recount the usage row. `open` runs it unless `recover: false`.
   */
  recover(): RecoveryReport {
    const { q } = this.#db;
    const { staleMs } = this.#o;
    const dir = this.dir;
    return this.#db.writeTx(() => {
      const now = this.#o.clock();
      const fills = q.deadFills.run(now - staleMs, now - FINISHED_FILL_TTL_MS).changes;
      const live = new Set(q.liveTmpPaths.all().map((r) => r.tmp_path));
      // file mtimes are wall-clock time, whatever clock the store was given
      const tmpFiles = cleanTmp(dir, live, staleMs, Date.now());
      const files = new Set(listBlobs(dir));
      let rows = 0;
      for (const { blob_path } of q.allBlobPaths.all()) {
        if (files.delete(blob_path)) continue;
        rows += q.deleteByBlob.run(blob_path).changes;
      }
      for (const f of files) unlinkQuiet(join(dir, f));
      q.recountUsage.run();
      return { tmpFiles, fills, rows, blobs: files.size };
    });
  }

  #open(): void {
    if (this.#closed) throw new ProxyError("PX_STORE_CLOSED", "internal", `store ${this.dir} is closed`);
  }

  /** Delete a blob file if no index row refers to it any more. Call inside `writeTx`. */
  #releaseBlob(rel: string): void {
    if ((this.#db.q.blobRefs.get(rel)?.n ?? 0) > 0) return;
    // Safe for readers: a thread that already opened or mapped this file keeps the inode until it lets go (Linux
    // unlink semantics; checked with Bun.mmap, see blobs.ts). A reader that looked the row up but has not opened the
    // file yet gets ENOENT → `body` returns null → the caller treats it as a miss.
    unlinkQuiet(join(this.dir, rel));
    this.#maps.delete(rel);
  }

  /** A blob that is missing, short or corrupted: delete it and every entry that points to it. */
  #dropBlob(rel: string): void {
    this.#maps.delete(rel);
    this.#db.writeTx(() => {
      this.#db.q.deleteByBlob.run(rel);
      unlinkQuiet(join(this.dir, rel));
    });
  }
}
