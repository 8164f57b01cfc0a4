/**
 * @module The shared cache store, as the workers use it: an index (`index-db.ts`, bun:sqlite WAL) plus content-addressed
 * blob files (`blobs.ts`) in one directory. Every worker thread opens its own `Store` on the same directory; they
 * coordinate only through the index and the files, so the same code is correct across threads and across processes,
 * and after a crash (kill -9) the next `Store.open` puts the index and the files back in agreement.
 *
 * What a worker does with it (the RFC 9111 decisions stay in core/cache/*):
 *   hit:   lookup(pkey, req) → Entry → body(entry) → bytes (a cached mmap) → touch(entry, n)
 *   miss:  claimFill(pkey) → filler: setHead · write… · commit(meta)   (or fail(reason))
 *                          → waiter: tail.head() · for await (chunk of tail)   — streams while the filler writes
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
import { closeSync, fstatSync, openSync, readSync, statSync, unlinkSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { Headers } from "../core/cache/freshness";
import { matchesVary } from "../core/cache/key";
import { ProxyError } from "../core/errors";
import {
  blobRelPath,
  type BlobWriter,
  cleanTmp,
  ensureBlobDirs,
  listBlobs,
  openBlobWriter,
  publishBlob,
  readBlob,
  sha256Hex,
  syncDir,
} from "./blobs";
import { type FillRow, IndexDb, type LookupRow, type Statements } from "./index-db";

export type { Headers };

/** A stored response. `blobPath` is absolute; `vary` is the stored response's Vary (all lines joined), or null. */
export type Entry = {
  pkey: string;
  vkey: string;
  url: string;
  status: number;
  headers: Headers;
  /** the request header lines the Vary names (only those are stored) */
  reqHeaders: Headers;
  vary: string | null;
  requestTime: number;
  responseTime: number;
  blobPath: string;
  size: number;
  sha256: string;
};

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
  /** a fill whose heartbeat is older than this is dead: waiters fail, a claim takes it over; default 5000 ms */
  staleMs?: number;
  /** cross-thread tails poll the fills row and file size between these intervals (backing off when idle); 2–20 ms */
  pollMinMs?: number;
  pollMaxMs?: number;
  /** a tail that has seen no new byte and no state change for this long fails with PX_FILL_IDLE; default 120 s */
  tailIdleMs?: number;
  /** batched touches and totals are written this often; default 250 ms */
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
  /** the clock (ms since the epoch) for timestamps, heartbeats and LRU; default Date.now (tests pass a fake one) */
  clock?: () => number;
};

/** The response head a filler publishes for its waiters before the body completes. */
export type FillHead = { status: number; headers: Headers; requestTime: number; responseTime: number };

/**
 * What `FillWriter.commit` stores. status/headers/times default to those given to `setHead`; `pkey` defaults to the
 * fill key (which should be the primary key: eviction spares entries whose pkey has a live fill).
 */
export type CommitMeta = {
  pkey?: string;
  vkey: string;
  url: string;
  /** the request's headers; only the lines the Vary names are kept */
  reqHeaders: Headers;
  vary: string | null;
  status?: number;
  headers?: Headers;
  requestTime?: number;
  responseTime?: number;
};

/** What a filler's claim replaced: nothing, a finished fill, a failed one, or a dead filler's (taken over). */
export type Replaced = "none" | "done" | "failed" | "stale";

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
/** finished ('done'/'failed') fill rows are kept this long for late joiners and diagnostics, then pruned */
const FINISHED_FILL_TTL_MS = 10 * 60_000;
/** recent chunks a local fill keeps for its in-thread tails (a tail that falls further behind reads the file) */
const RING_BYTES = 4 << 20;
/** largest chunk a tail reads from a file at once */
const READ_CHUNK_BYTES = 256 << 10;
/** sources wake their tails at least this often, so a tail notices tailIdleMs without a timer of its own */
const IDLE_TICK_MS = 1000;
/** victims deleted per eviction transaction (the write lock is released between batches) */
const EVICT_BATCH = 256;

type Options = Required<Omit<StoreOptions, "bootId">> & { bootId: string };

/** What fills and tails share with their Store. */
type Ctx = {
  dir: string;
  db: IndexDb;
  q: Statements;
  o: Options;
  now: () => number;
  active: Map<string, LocalFill>;
  remotes: Map<string, RemoteFill>;
  forgetMap: (rel: string) => void;
};

function randomId(): string {
  return crypto.randomUUID();
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}

function openQuiet(path: string): number | null {
  try {
    return openSync(path, "r");
  } catch {
    return null;
  }
}

function closeQuiet(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}

/** The field names a Vary lists, lower-cased ("*" included; such a response is never stored by core's rules). */
function varyNames(vary: string | null): Set<string> {
  const out = new Set<string>();
  if (vary === null) return out;
  for (const m of vary.split(",")) {
    const n = m.trim().toLowerCase();
    if (n !== "") out.add(n);
  }
  return out;
}

function errorMessage(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}

/** Delete a blob file if no index row refers to it any more. Call inside `writeTx`. */
function unlinkIfUnreferenced(ctx: Ctx, rel: string): boolean {
  if ((ctx.q.blobRefs.get(rel)?.n ?? 0) > 0) return false;
  // Safe for readers: a thread that already opened or mapped this file keeps the inode until it lets go (Linux
  // unlink semantics; checked with Bun.mmap, see blobs.ts). A reader that looked the row up but has not opened the
  // file yet gets ENOENT → `body` returns null → the caller treats it as a miss.
  unlinkQuiet(join(ctx.dir, rel));
  ctx.forgetMap(rel);
  return true;
}

export class Store {
  readonly dir: string;
  /** what the crash recovery at open found and removed (zeros when `recover: false`) */
  readonly recovery: RecoveryReport = { tmpFiles: 0, fills: 0, rows: 0, blobs: 0 };
  #ctx: Ctx;
  #maps = new Map<string, Uint8Array>();
  #touches = new Map<string, { pkey: string; vkey: string; hits: number; bytes: number; last: number }>();
  #pendingTotals = new Map<string, number>();
  #flushTimer: ReturnType<typeof setTimeout> | null = null;
  #closed = false;

  private constructor(dir: string, db: IndexDb, o: Options) {
    this.dir = dir;
    this.#ctx = {
      dir,
      db,
      q: db.q,
      o,
      now: o.clock,
      active: new Map(),
      remotes: new Map(),
      forgetMap: (rel) => this.#maps.delete(rel),
    };
  }

  /** Open (or create) the store in `dir`. Synchronous; throws PX_STORE_SCHEMA for an index it cannot use. */
  static open(dir: string, opts: StoreOptions): Store {
    if (!(opts.maxBytes > 0)) throw new RangeError(`store: maxBytes must be > 0, got ${opts.maxBytes}`);
    const o: Options = {
      ...DEFAULTS,
      recover: true,
      clock: Date.now,
      ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
      bootId: opts.bootId ?? randomId(),
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
        Object.assign(store.recovery, store.#recover());
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
    const rows = this.#ctx.q.entriesByPkey.all(pkey);
    // RFC 9111 §4.1: of several matching responses, use the most recent
    if (rows.length > 1) rows.sort((a, b) => b.response_time - a.response_time);
    for (const row of rows) {
      const stored = JSON.parse(row.req_headers) as Headers;
      // no Vary (the usual artifact): every request matches, skip building the secondary keys
      if (row.vary === null || matchesVary(row.vary, stored, reqHeaders)) return this.#toEntry(row, stored);
    }
    return null;
  }

  /**
   * The entry's bytes: the mapped blob, shared by every later hit in this thread, so treat it as read-only (a write
   * would stay in this thread's private mapping, never reach the file, but would change what later hits serve). The
   * first open of a blob by a boot id (see `bootId`) checks its size and SHA-256 against the index; a mismatch
   * (corrupted on disk) or a missing file deletes every entry of that blob and the file, and returns null so the
   * caller refetches. Later hits reuse the mapping (no syscall).
   *
   * TODO: hashing is synchronous — about 0.8 s per GiB on this VM, on the worker's event loop, once per blob per boot
   * id. Fine for manifests and installers; for multi-GiB patch files an async, chunked check would be kinder.
   */
  body(entry: Entry): Uint8Array | null {
    this.#open();
    const rel = blobRelPath(entry.sha256);
    const cached = this.#maps.get(rel);
    if (cached !== undefined) {
      this.#maps.delete(rel); // move to the LRU end
      this.#maps.set(rel, cached);
      return cached;
    }
    const { q, o } = this.#ctx;
    const bytes = readBlob(entry.blobPath);
    if (bytes === null || bytes.byteLength !== entry.size) {
      this.#dropBlob(rel);
      return null;
    }
    if (q.verifiedOf.get(rel)?.verified !== o.bootId) {
      if (sha256Hex(bytes) !== entry.sha256) {
        this.#dropBlob(rel);
        return null;
      }
      try {
        q.setVerified.run(o.bootId, rel);
      } catch {
        // lock busy: we only lose the "already verified" note; the next Store hashes again
      }
    }
    this.#maps.set(rel, bytes);
    if (this.#maps.size > o.mapCacheEntries) {
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
    t.last = Math.max(t.last, this.#ctx.now());
    this.#scheduleFlush();
  }

  /** After a 304 (RFC 9111 §4.3.4): new stored headers and times, same body. False if the entry is gone or replaced. */
  updateHeaders(entry: Entry, headers: Headers, requestTime: number, responseTime: number): boolean {
    this.#open();
    const r = this.#ctx.q.updateHeaders.run(
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
    const ctx = this.#ctx;
    return ctx.db.writeTx(() => {
      const rows = ctx.q.blobsOfPkey.all(pkey);
      ctx.q.deletePkey.run(pkey);
      ctx.q.deleteFinishedFill.run(pkey); // finished fill rows of the key are only bookkeeping now
      for (const rel of new Set(rows.map((r) => r.blob_path))) unlinkIfUnreferenced(ctx, rel);
      return rows.length;
    });
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
    const local = ctx.active.get(key);
    if (local !== undefined) return { role: "waiter", tail: new FillTail(local, ctx.o.tailIdleMs) };
    const remote = ctx.remotes.get(key);
    if (remote !== undefined && remote.status === "filling") {
      return { role: "waiter", tail: new FillTail(remote, ctx.o.tailIdleMs) };
    }
    // Lock-free first look: a live fill in another thread needs no write.
    const seen = ctx.q.fill.get(key);
    if (seen !== null && seen.status === "filling" && seen.heartbeat >= ctx.now() - ctx.o.staleMs) {
      const fd = openQuiet(seen.tmp_path);
      if (fd !== null) return this.#joinRemote(key, seen, fd);
    }
    // Make the temp file before taking the lock, so a waiter never sees a row whose temp file does not exist yet.
    const writer = openBlobWriter(this.dir, sha256Hex(new TextEncoder().encode(key)).slice(0, 16));
    let joined: { row: FillRow; fd: number } | null;
    let replaced: Replaced = "none";
    try {
      joined = ctx.db.writeTx(() => {
        const now = ctx.now();
        const row = ctx.q.fill.get(key);
        if (row !== null) {
          if (row.status === "filling" && row.heartbeat >= now - ctx.o.staleMs) {
            const fd = openQuiet(row.tmp_path);
            if (fd !== null) return { row, fd };
            // a live row without its temp file cannot be tailed: take it over
          }
          // a dead filler's temp file: nobody will finish it (its tails hold their own fds)
          if (row.status === "filling") unlinkQuiet(row.tmp_path);
          replaced = row.status === "filling" ? "stale" : row.status;
        }
        ctx.q.upsertFill.run(key, ctx.o.owner, writer.tmpPath, now);
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
    const fill = new LocalFill(ctx, key, writer);
    ctx.active.set(key, fill);
    return { role: "filler", fill: new FillWriter(fill, replaced) };
  }

  #joinRemote(key: string, row: FillRow, fd: number): ClaimResult {
    const ctx = this.#ctx;
    const existing = ctx.remotes.get(key);
    if (existing !== undefined && existing.tmpPath === row.tmp_path && existing.status !== "failed") {
      closeQuiet(fd);
      return { role: "waiter", tail: new FillTail(existing, ctx.o.tailIdleMs) };
    }
    const src = new RemoteFill(ctx, key, row, fd);
    if (src.status === "filling") ctx.remotes.set(key, src);
    return { role: "waiter", tail: new FillTail(src, ctx.o.tailIdleMs) };
  }

  // ───────────────────────────── eviction and accounting ─────────────────────────────

  /**
   * LRU eviction: when the stored bytes pass highWater × maxBytes, delete the least recently used entries until they
   * are at most lowWater × maxBytes. Entries whose pkey has a live fill are never evicted. Pending touches are written
   * first so the order is current (other threads' unflushed touches may lag by up to `flushMs`). Deleting a blob
   * file is safe for readers that already opened or mapped it (they keep the inode; see `unlinkIfUnreferenced`).
   * Also prunes finished fill rows older than 10 minutes.
   */
  evictIfNeeded(): { evicted: number; bytes: number } {
    this.#open();
    this.flush();
    const ctx = this.#ctx;
    const { maxBytes, highWater, lowWater, staleMs } = ctx.o;
    let evicted = 0;
    let bytes = 0;
    if (this.#stored() <= highWater * maxBytes) return { evicted, bytes };
    const low = lowWater * maxBytes;
    for (;;) {
      const batch = ctx.db.writeTx(() => {
        // re-read under the lock: another thread may have evicted meanwhile
        let stored = this.#stored();
        if (stored <= low) return null;
        const now = ctx.now();
        const victims = ctx.q.victims.all(now - staleMs, EVICT_BATCH);
        let n = 0;
        let b = 0;
        for (const v of victims) {
          if (stored <= low) break;
          ctx.q.deleteEntry.run(v.pkey, v.vkey);
          unlinkIfUnreferenced(ctx, v.blob_path);
          stored -= v.size;
          n++;
          b += v.size;
        }
        return { n, b, more: victims.length === EVICT_BATCH && stored > low };
      });
      if (batch === null) break;
      evicted += batch.n;
      bytes += batch.b;
      if (!batch.more) break;
    }
    try {
      const now = ctx.now();
      ctx.q.deadFills.run(now - Math.max(staleMs, FINISHED_FILL_TTL_MS), now - FINISHED_FILL_TTL_MS);
    } catch {}
    return { evicted, bytes };
  }

  #stored(): number {
    return this.#ctx.q.total.get("stored_bytes")?.value ?? 0;
  }

  /** All counters (stored_bytes/stored_entries follow the entries; the rest are what addTotals added). */
  totals(): Record<string, number> {
    this.#open();
    this.flush();
    const out: Record<string, number> = {};
    for (const r of this.#ctx.q.allTotals.all()) out[r.name] = r.value;
    return out;
  }

  /** Add to named counters (fetched_bytes, served_bytes, hits, misses, collapsed, revalidations, …); batched. */
  addTotals(delta: Record<string, number>): void {
    this.#open();
    for (const [name, v] of Object.entries(delta)) {
      if (!Number.isFinite(v) || v === 0) continue;
      this.#pendingTotals.set(name, (this.#pendingTotals.get(name) ?? 0) + v);
    }
    this.#scheduleFlush();
  }

  /** Write batched touches and totals now (also done every `flushMs`, by `totals()`, `evictIfNeeded()` and `close()`). */
  flush(): void {
    if (this.#flushTimer !== null) {
      clearTimeout(this.#flushTimer);
      this.#flushTimer = null;
    }
    if (this.#touches.size === 0 && this.#pendingTotals.size === 0) return;
    const touches = [...this.#touches.values()];
    const totals = [...this.#pendingTotals];
    const q = this.#ctx.q;
    try {
      this.#ctx.db.writeTx(() => {
        for (const t of touches) q.touch.run(t.last, t.hits, t.bytes, t.pkey, t.vkey);
        for (const [name, v] of totals) q.addTotal.run(name, v);
      });
    } catch (e) {
      // lock busy beyond busy_timeout: keep the batch and try again later
      this.#scheduleFlush();
      throw e;
    }
    this.#touches.clear();
    this.#pendingTotals.clear();
  }

  #scheduleFlush(): void {
    if (this.#flushTimer !== null) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      try {
        this.flush();
      } catch {}
    }, this.#ctx.o.flushMs);
    this.#flushTimer.unref?.();
  }

  /** Flush, fail this thread's unfinished fills (their waiters get PX_FILL_FAILED), stop tails, close the index. */
  close(): void {
    if (this.#closed) return;
    try {
      this.flush();
    } catch {}
    const ctx = this.#ctx;
    for (const f of [...ctx.active.values()]) f.fail("the store was closed");
    for (const r of [...ctx.remotes.values()]) r.abandon(new ProxyError("PX_FILL_FAILED", "internal", "the store was closed"));
    this.#maps.clear();
    this.#closed = true;
    ctx.db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ───────────────────────────── internals ─────────────────────────────

  #open(): void {
    if (this.#closed) throw new ProxyError("PX_STORE_CLOSED", "internal", `store ${this.dir} is closed`);
  }

  #toEntry(row: LookupRow, reqHeaders: Headers): Entry {
    return {
      pkey: row.pkey,
      vkey: row.vkey,
      url: row.url,
      status: row.status,
      headers: JSON.parse(row.headers) as Headers,
      reqHeaders,
      vary: row.vary,
      requestTime: row.request_time,
      responseTime: row.response_time,
      blobPath: `${this.dir}/${row.blob_path}`, // dir is absolute and normalised (resolve in open)
      size: row.size,
      sha256: row.sha256,
    };
  }

  /** A blob that is missing, short or corrupted: delete it and every entry that points to it. */
  #dropBlob(rel: string): void {
    const ctx = this.#ctx;
    this.#maps.delete(rel);
    ctx.db.writeTx(() => {
      ctx.q.deleteByBlob.run(rel);
      unlinkQuiet(join(ctx.dir, rel));
    });
  }

  /**
   * Crash recovery, under the write lock so no commit interleaves: drop dead 'filling' rows (heartbeat older than
   * staleMs) and old finished ones; delete temp files no live fill owns (and older than staleMs, so a temp file
   * created just before its fill row is spared); drop rows whose blob file is missing; delete blob files no row
   * points to; recount stored_bytes/stored_entries.
   */
  #recover(): RecoveryReport {
    const { db, q, o, dir } = this.#ctx;
    return db.writeTx(() => {
      const now = this.#ctx.now();
      const fills = q.deadFills.run(now - o.staleMs, now - FINISHED_FILL_TTL_MS).changes;
      const live = new Set(q.liveTmpPaths.all().map((r) => r.tmp_path));
      // file mtimes are wall-clock time, whatever clock the store was given
      const tmpFiles = cleanTmp(dir, live, o.staleMs, Date.now());
      const files = new Set(listBlobs(dir));
      let rows = 0;
      for (const { blob_path } of q.allBlobPaths.all()) {
        if (files.delete(blob_path)) continue;
        rows += q.deleteByBlob.run(blob_path).changes;
      }
      for (const f of files) unlinkQuiet(join(dir, f));
      q.recountStored.run();
      return { tmpFiles, fills, rows, blobs: files.size };
    });
  }
}

// ───────────────────────────── fill sources: where a tail's bytes come from ─────────────────────────────

type SourceStatus = "filling" | "done" | "failed";

/** The two kinds of fill a tail can follow: this thread's own (LocalFill) or another thread's (RemoteFill). */
interface FillSource {
  readonly key: string;
  readonly status: SourceStatus;
  readonly error: Error | null;
  /** total size, valid once status is "done" */
  readonly finalSize: number;
  readonly headPromise: Promise<FillHead>;
  /** bytes readable now */
  available(): number;
  /** some bytes at `offset` (offset < available()) */
  read(offset: number): Uint8Array;
  /** resolves at the next change (new bytes, head, status), and at least every IDLE_TICK_MS so tails can time out */
  wait(): Promise<void>;
  attach(): void;
  release(): void;
}

type Deferred<T> = { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void };
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // a head nobody asked for must not become an unhandled rejection
  return { promise, resolve, reject };
}

/**
 * Resolve-on-change list. No timer per wait: with a thousand tails on one fill and a write per 64 KiB, timers per wait
 * would mean millions of setTimeout/clearTimeout a second. Each source wakes its waiters on change and on an idle tick.
 */
class Waiters {
  #list: (() => void)[] = [];
  wait(): Promise<void> {
    return new Promise((res) => this.#list.push(res));
  }
  wake(): void {
    if (this.#list.length === 0) return;
    const l = this.#list;
    this.#list = [];
    for (const f of l) f();
  }
}

function preadChunk(fd: number, offset: number, available: number): Uint8Array {
  const len = Math.min(available - offset, READ_CHUNK_BYTES);
  const buf = new Uint8Array(len);
  let n = 0;
  while (n < len) {
    const r = readSync(fd, buf, n, len - n, offset + n);
    if (r === 0) break;
    n += r;
  }
  if (n === 0) throw new ProxyError("PX_FILL_FAILED", "internal", `fill file shorter than expected at byte ${offset}`);
  return n === len ? buf : buf.subarray(0, n);
}

/**
 * This thread's fill. The writer appends to the temp file; tails in this thread get the recent chunks from memory
 * (a ring of up to RING_BYTES) and older bytes from the file, and are woken on every write — no polling.
 */
class LocalFill implements FillSource {
  status: SourceStatus = "filling";
  error: Error | null = null;
  finalSize = -1;
  lost = false;
  head: FillHead | null = null;
  readonly headD = deferred<FillHead>();
  readonly tmpPath: string;
  #ring: { off: number; bytes: Uint8Array }[] = [];
  #ringBytes = 0;
  #readFd = -1;
  #refs = 0;
  #waiters = new Waiters();
  #beat: ReturnType<typeof setInterval> | null;
  #lastBeat = 0;

  constructor(
    readonly ctx: Ctx,
    readonly key: string,
    readonly writer: BlobWriter,
  ) {
    this.tmpPath = writer.tmpPath;
    // the heartbeat is also the tails' idle tick (IDLE_TICK_MS at most)
    this.#beat = setInterval(() => this.#heartbeat(), Math.min(ctx.o.heartbeatMs, IDLE_TICK_MS));
    this.#beat.unref?.();
  }

  get headPromise(): Promise<FillHead> {
    return this.headD.promise;
  }

  available(): number {
    return this.writer.size;
  }

  read(offset: number): Uint8Array {
    const ring = this.#ring;
    if (ring.length > 0 && offset >= ring[0]!.off) {
      for (let i = ring.length - 1; i >= 0; i--) {
        const c = ring[i]!;
        if (offset >= c.off) {
          if (offset === c.off) return c.bytes;
          if (offset < c.off + c.bytes.byteLength) return c.bytes.subarray(offset - c.off);
          break; // a gap (written while no tail was attached): read the file
        }
      }
    }
    return preadChunk(this.#readFd, offset, this.writer.size);
  }

  wait(): Promise<void> {
    return this.#waiters.wait();
  }

  attach(): void {
    // the temp file exists while this fill is active (it is only in `ctx.active` until it finishes)
    if (this.#readFd === -1) this.#readFd = openSync(this.tmpPath, "r");
    this.#refs++;
  }

  release(): void {
    this.#refs--;
    if (this.#refs <= 0) {
      // write() only fills the ring while a tail is attached; drop it so it never has a gap
      this.#ring = [];
      this.#ringBytes = 0;
    }
    this.#maybeClose();
  }

  #maybeClose(): void {
    if (this.#refs <= 0 && this.status !== "filling" && this.#readFd !== -1) {
      closeQuiet(this.#readFd);
      this.#readFd = -1;
      this.#ring = [];
    }
  }

  setHead(head: FillHead): void {
    this.#assertFilling();
    if (this.head !== null) throw new Error(`fill ${this.key}: the head was already set`);
    this.head = head;
    this.ctx.q.fillHead.run(JSON.stringify(head), this.key, this.tmpPath);
    this.headD.resolve(head);
    this.#waiters.wake();
  }

  write(chunk: Uint8Array): void {
    this.#assertFilling();
    if (chunk.byteLength === 0) return;
    const off = this.writer.size;
    this.writer.write(chunk);
    if (this.#refs > 0) {
      // a copy: the caller may reuse its buffer (socket read buffers are) once write returns
      this.#ring.push({ off, bytes: chunk.slice() });
      this.#ringBytes += chunk.byteLength;
      while (this.#ringBytes > RING_BYTES && this.#ring.length > 1) this.#ringBytes -= this.#ring.shift()!.bytes.byteLength;
      this.#waiters.wake();
    }
  }

  commit(meta: CommitMeta | null): Entry | null {
    this.#assertFilling();
    this.#stopBeat();
    const { ctx, key, tmpPath } = this;
    let head = this.head;
    if (meta !== null && (meta.status !== undefined || meta.headers !== undefined)) {
      const now = ctx.now();
      head = {
        status: meta.status ?? head?.status ?? 200,
        headers: meta.headers ?? head?.headers ?? [],
        requestTime: meta.requestTime ?? head?.requestTime ?? now,
        responseTime: meta.responseTime ?? head?.responseTime ?? now,
      };
    }
    if (head === null) {
      const e = new Error(`fill ${key}: commit before setHead (no status and headers to store)`);
      this.fail(e);
      throw e;
    }
    const h: FillHead = head;
    let sealed: ReturnType<BlobWriter["seal"]>;
    try {
      sealed = this.writer.seal();
    } catch (e) {
      this.fail(e);
      throw e;
    }
    let entry: Entry | null = null;
    try {
      entry = ctx.db.writeTx(() => {
        const now = ctx.now();
        const row = ctx.q.fill.get(key);
        if (row === null || row.tmp_path !== tmpPath || row.status !== "filling") {
          // taken over after our heartbeat went stale (the event loop stalled for > staleMs): the new filler stores it
          this.lost = true;
          unlinkQuiet(tmpPath);
          return null;
        }
        if (this.head === null) ctx.q.fillHead.run(JSON.stringify(h), key, tmpPath); // for late joiners
        if (meta === null) {
          unlinkQuiet(tmpPath); // delivered to the waiters (they hold fds), not stored
          ctx.q.fillDone.run(now, sealed.size, null, key, tmpPath);
          return null;
        }
        const rel = blobRelPath(sealed.sha256);
        publishBlob(ctx.dir, tmpPath, sealed.sha256);
        const pkey = meta.pkey ?? key;
        const names = varyNames(meta.vary);
        const reqHeaders = meta.reqHeaders.filter(([k]) => names.has(k.toLowerCase()));
        const old = ctx.q.entry.get(pkey, meta.vkey);
        ctx.q.upsertEntry.run(
          pkey,
          meta.vkey,
          meta.url,
          h.status,
          JSON.stringify(h.headers),
          JSON.stringify(reqHeaders),
          meta.vary,
          h.requestTime,
          h.responseTime,
          rel,
          sealed.size,
          sealed.sha256,
          now,
          now,
          ctx.o.bootId, // we hashed these bytes as we wrote them
        );
        if (old !== null && old.blob_path !== rel) unlinkIfUnreferenced(ctx, old.blob_path);
        ctx.q.fillDone.run(now, sealed.size, rel, key, tmpPath);
        return {
          pkey,
          vkey: meta.vkey,
          url: meta.url,
          status: h.status,
          headers: h.headers,
          reqHeaders,
          vary: meta.vary,
          requestTime: h.requestTime,
          responseTime: h.responseTime,
          blobPath: join(ctx.dir, rel),
          size: sealed.size,
          sha256: sealed.sha256,
        } satisfies Entry;
      });
    } catch (e) {
      this.fail(e);
      throw e;
    }
    if (entry !== null) {
      try {
        // after the lock: makes the rename durable across a power loss (a kill -9 cannot lose it)
        syncDir(dirname(entry.blobPath));
      } catch {}
    }
    if (this.head === null) {
      this.head = h;
      this.headD.resolve(h);
    }
    this.#finish("done", null);
    return entry;
  }

  fail(reason: unknown): void {
    if (this.status !== "filling") return;
    this.#stopBeat();
    this.writer.abort();
    const msg = errorMessage(reason);
    try {
      this.ctx.q.fillFailed.run(this.ctx.now(), msg, this.key, this.tmpPath);
    } catch {
      // busy or closed: waiters in other threads then see the heartbeat go stale
    }
    this.#finish(
      "failed",
      new ProxyError("PX_FILL_FAILED", "upstream", `fill of ${this.key} failed: ${msg}`, { cause: reason }),
    );
  }

  #finish(status: "done" | "failed", error: Error | null): void {
    this.status = status;
    this.error = error;
    if (status === "done") this.finalSize = this.writer.size;
    if (this.head === null && error !== null) this.headD.reject(error);
    if (this.ctx.active.get(this.key) === this) this.ctx.active.delete(this.key);
    this.#waiters.wake();
    this.#maybeClose();
  }

  #heartbeat(): void {
    this.#waiters.wake(); // idle tick for this thread's tails
    if (this.lost) return;
    const now = this.ctx.now();
    if (now - this.#lastBeat < this.ctx.o.heartbeatMs - 5) return;
    this.#lastBeat = now;
    try {
      const r = this.ctx.q.fillBeat.run(now, this.writer.size, this.key, this.tmpPath);
      // taken over by another claimant: keep delivering to this thread's tails, stop claiming the row
      if (r.changes === 0) this.lost = true;
    } catch {
      // lock busy for longer than busy_timeout: try again next beat
    }
  }

  #stopBeat(): void {
    if (this.#beat !== null) clearInterval(this.#beat);
    this.#beat = null;
  }

  #assertFilling(): void {
    if (this.status !== "filling") throw new Error(`fill ${this.key} is ${this.status}`);
  }
}

/**
 * Another thread's (or process's) fill, followed through the index and the file: polls the fills row (status, head,
 * heartbeat) and the file size every pollMinMs..pollMaxMs while a tail is attached, and reads the bytes with pread.
 * One per key per thread, shared by that thread's tails. The fd was opened on the temp file while the row said
 * 'filling'; the filler's rename into blobs/ (or its unlink after a failure) does not affect it.
 */
class RemoteFill implements FillSource {
  status: SourceStatus = "filling";
  error: Error | null = null;
  finalSize = -1;
  readonly tmpPath: string;
  readonly headD = deferred<FillHead>();
  #hasHead = false;
  #size = 0;
  #refs = 0;
  #fd: number;
  #waiters = new Waiters();
  #timer: ReturnType<typeof setTimeout> | null = null;
  #interval: number;
  #lastWake = performance.now();

  constructor(
    readonly ctx: Ctx,
    readonly key: string,
    row: FillRow,
    fd: number,
  ) {
    this.tmpPath = row.tmp_path;
    this.#fd = fd;
    this.#interval = ctx.o.pollMinMs;
    this.#apply(row);
    this.#size = fstatSync(fd).size;
  }

  get headPromise(): Promise<FillHead> {
    return this.headD.promise;
  }

  available(): number {
    if (this.#fd !== -1 && (this.status === "filling" || this.#size < this.finalSize)) this.#size = fstatSync(this.#fd).size;
    return this.status === "done" ? Math.min(this.#size, this.finalSize) : this.#size;
  }

  read(offset: number): Uint8Array {
    return preadChunk(this.#fd, offset, this.available());
  }

  wait(): Promise<void> {
    const p = this.#waiters.wait();
    this.#schedule();
    return p;
  }

  attach(): void {
    this.#refs++;
    this.#schedule();
  }

  release(): void {
    this.#refs--;
    if (this.#refs > 0) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#fd !== -1) closeQuiet(this.#fd);
    this.#fd = -1;
    if (this.ctx.remotes.get(this.key) === this) this.ctx.remotes.delete(this.key);
  }

  /** The store is closing: fail every tail of this fill. */
  abandon(e: Error): void {
    if (this.status === "filling") this.#fail(e);
  }

  #apply(row: FillRow): void {
    if (!this.#hasHead && row.head !== null) {
      this.#hasHead = true;
      this.headD.resolve(JSON.parse(row.head) as FillHead);
    }
    if (this.status !== "filling") return;
    if (row.status === "done") {
      this.status = "done";
      this.finalSize = row.bytes;
      if (!this.#hasHead) this.#fail(new ProxyError("PX_FILL_FAILED", "internal", `fill of ${this.key} ended without a head`));
    } else if (row.status === "failed") {
      this.#fail(new ProxyError("PX_FILL_FAILED", "upstream", `fill of ${this.key} failed: ${row.error ?? "unknown"}`));
    } else if (row.heartbeat < this.ctx.now() - this.ctx.o.staleMs) {
      this.#fail(
        new ProxyError(
          "PX_FILL_STALE",
          "internal",
          `fill of ${this.key} by ${row.owner} stopped: no heartbeat for ${this.ctx.now() - row.heartbeat} ms ` +
            `(limit ${this.ctx.o.staleMs} ms); claim it again to take over`,
        ),
      );
    }
  }

  /** Is the file we tail now the blob of one of this key's entries (same inode)? Then the fill was stored: done. */
  #published(): boolean {
    if (this.#fd === -1) return false;
    const st = fstatSync(this.#fd);
    for (const r of this.ctx.q.blobsOfPkey.all(this.key)) {
      try {
        const b = statSync(join(this.ctx.dir, r.blob_path));
        if (b.ino !== st.ino || b.dev !== st.dev) continue;
      } catch {
        continue;
      }
      const e = this.ctx.q.entry.get(this.key, r.vkey);
      if (e === null) continue;
      if (!this.#hasHead) {
        // we never polled while the head was in the fills row: the stored entry has it
        this.#hasHead = true;
        this.headD.resolve({
          status: e.status,
          headers: JSON.parse(e.headers) as Headers,
          requestTime: e.request_time,
          responseTime: e.response_time,
        });
      }
      this.status = "done";
      this.finalSize = st.size;
      if (this.ctx.remotes.get(this.key) === this) this.ctx.remotes.delete(this.key);
      return true;
    }
    return false;
  }

  #fail(e: Error): void {
    this.status = "failed";
    this.error = e;
    if (!this.#hasHead) this.headD.reject(e);
    if (this.ctx.remotes.get(this.key) === this) this.ctx.remotes.delete(this.key);
    this.#waiters.wake();
  }

  #schedule(): void {
    if (this.#timer !== null || this.status !== "filling" || this.#refs <= 0) return;
    this.#timer = setTimeout(() => this.#poll(), this.#interval);
  }

  #poll(): void {
    this.#timer = null;
    if (this.status !== "filling" || this.#refs <= 0) return;
    const before = this.#size;
    const hadHead = this.#hasHead;
    try {
      const row = this.ctx.q.fill.get(this.key);
      if (row === null || row.tmp_path !== this.tmpPath) {
        // Between two polls the fill may have finished and a new claim replaced its 'done' row (a request that
        // missed just before the commit). If our file is now a published blob of this key, we have everything.
        if (!this.#published()) {
          this.#fail(
            new ProxyError("PX_FILL_STALE", "internal", `fill of ${this.key} was abandoned and removed or taken over`),
          );
        }
      } else {
        this.#apply(row);
      }
      if (this.#fd !== -1) this.#size = fstatSync(this.#fd).size;
    } catch (e) {
      if (e instanceof ProxyError && e.code === "PX_STORE_CLOSED") return;
      // a closed database (store closing) or an fs error: report it to the tails
      if (this.status === "filling") this.#fail(new ProxyError("PX_FILL_FAILED", "internal", errorMessage(e), { cause: e }));
    }
    const progress = this.#size !== before || this.#hasHead !== hadHead || this.status !== "filling";
    this.#interval = progress ? this.ctx.o.pollMinMs : Math.min(this.#interval * 2, this.ctx.o.pollMaxMs);
    const now = performance.now();
    if (progress || now - this.#lastWake >= IDLE_TICK_MS) {
      this.#lastWake = now;
      this.#waiters.wake();
    }
    this.#schedule();
  }
}

// ───────────────────────────── the two handles a claim returns ─────────────────────────────

/**
 * The filler's handle. Call `setHead` as soon as the upstream head arrives (waiters in every thread can answer
 * then), `write` each body chunk, then `commit` (stores the entry after the blob is fsynced and renamed, and marks
 * the fill done) or `fail` (waiters error, nothing is stored). The heartbeat runs by itself every heartbeatMs.
 */
export class FillWriter {
  #f: LocalFill;
  /** what this claim replaced in the fills table (see Store.claimFill) */
  readonly replaced: Replaced;

  constructor(f: LocalFill, replaced: Replaced) {
    this.#f = f;
    this.replaced = replaced;
  }

  get key(): string {
    return this.#f.key;
  }

  /** body bytes written so far */
  get size(): number {
    return this.#f.writer.size;
  }

  /** true when another claimant took the fill over (our heartbeat went stale); commit then stores nothing */
  get lost(): boolean {
    return this.#f.lost;
  }

  setHead(status: number, headers: Headers, times?: { requestTime?: number; responseTime?: number }): void {
    const now = this.#f.ctx.now();
    this.#f.setHead({
      status,
      headers,
      requestTime: times?.requestTime ?? now,
      responseTime: times?.responseTime ?? now,
    });
  }

  /** Append a body chunk (copied where kept; the caller may reuse its buffer). Throws e.g. ENOSPC: then call fail. */
  write(chunk: Uint8Array): void {
    this.#f.write(chunk);
  }

  /**
   * Finish: with `meta`, store the entry and return it; with null, deliver the bytes to the waiters without storing
   * (a response that turned out not storable). Returns null too when the fill was lost. Throws (after failing the
   * fill) if the blob cannot be made durable.
   */
  commit(meta: CommitMeta | null): Entry | null {
    return this.#f.commit(meta);
  }

  /** Abandon: every waiter gets PX_FILL_FAILED with this reason; the temp file is removed. Idempotent. */
  fail(reason: unknown): void {
    this.#f.fail(reason);
  }
}

/**
 * A waiter's handle: `head()` resolves as soon as the filler set the head (rejects if the fill fails first), and
 * `for await (const chunk of tail)` yields the body in order as it arrives, ending after the last byte of a committed
 * fill, throwing PX_FILL_FAILED when the fill fails, PX_FILL_STALE when the filler's heartbeat stops (claim again to
 * take over), PX_FILL_IDLE after tailIdleMs without progress. Iterate once; `close()` (or leaving the loop) releases
 * the file.
 */
export class FillTail implements AsyncIterable<Uint8Array> {
  #src: FillSource;
  #idleMs: number;
  #offset = 0;
  #released = false;

  constructor(src: FillSource, idleMs: number) {
    this.#src = src;
    this.#idleMs = idleMs;
    src.attach();
  }

  get key(): string {
    return this.#src.key;
  }

  /** body bytes yielded so far */
  get received(): number {
    return this.#offset;
  }

  head(): Promise<FillHead> {
    return this.#src.headPromise;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    const src = this.#src;
    let lastProgress = performance.now();
    try {
      if (this.#released) throw new Error(`tail of ${src.key} is closed`);
      for (;;) {
        if (src.status === "failed") throw src.error!;
        if (this.#offset < src.available()) {
          const chunk = src.read(this.#offset);
          this.#offset += chunk.byteLength;
          lastProgress = performance.now();
          yield chunk;
          continue;
        }
        if (src.status === "done") {
          if (this.#offset >= src.finalSize) return;
          throw new ProxyError(
            "PX_FILL_FAILED",
            "internal",
            `fill of ${src.key}: file has ${src.available()} of ${src.finalSize} bytes`,
          );
        }
        const idle = performance.now() - lastProgress;
        if (idle >= this.#idleMs) {
          throw new ProxyError("PX_FILL_IDLE", "upstream", `fill of ${src.key}: no progress for ${Math.round(idle)} ms`);
        }
        const status = src.status;
        await src.wait();
        if (src.status !== status || this.#offset < src.available()) lastProgress = performance.now();
      }
    } finally {
      this.close();
    }
  }

  close(): void {
    if (this.#released) return;
    this.#released = true;
    this.#src.release();
  }
}
