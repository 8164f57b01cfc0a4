/**
 * @module The cache index: `<dir>/index.db`, bun:sqlite in WAL mode, shared by every worker thread (each opens its own
 * connection). It owns the schema, its version and migrations, and every SQL statement, prepared once per connection.
 * It knows rows, not files: `store.ts` and `fill-local.ts` decide when blobs are renamed or unlinked, inside `writeTx` so the index and
 * the files change together.
 *
 * Concurrency: readers never block in WAL mode. Writers serialise on one lock; every multi-statement write goes
 * through `writeTx` (BEGIN IMMEDIATE), which takes the lock up front — a deferred transaction that reads and then
 * writes can fail with SQLITE_BUSY at the upgrade without the busy handler being called. `busy_timeout` makes a
 * writer wait for the lock instead of failing. `synchronous = NORMAL` in WAL mode survives a process crash (kill -9)
 * with no loss; a power loss may drop the last transactions, after which `store.ts`'s recovery drops index rows whose
 * blob is missing.
 *
 * Measured (`bun test/fixtures/store-bench.ts`, 2 vCPU VM, 12,000 entries, medians): `Store.lookup` hit 8 µs without
 * Vary, 10–12 µs with `Vary: Accept-Encoding` (SELECT by pkey ≈ 5 µs of it, most of that the WAL read snapshot; an
 * ORDER BY in the query cost a temp b-tree, 18 µs even for a miss, so store.ts sorts instead), miss 4 µs. A touch as
 * a synchronous UPDATE costs 27 µs and takes the write lock fills need; batched in memory it costs 0.2–0.5 µs per hit
 * and the flush writes one UPDATE per distinct entry (1,000 distinct entries: 9–27 ms in one transaction, because
 * each moves its entries_lru index entry), so hot artifacts hit thousands of times cost one row write per flush.
 * A whole 1 KiB fill (claim, head, write, fsync, rename, dir fsync, insert) ≈ 1.3 ms.
 */
import { Database, type Statement } from "bun:sqlite";
import type { Headers } from "../../core/cache/freshness";
import type { FillOutcome } from "../../core/cache/plan";
import { ProxyError } from "../../core/errors";

/**
 * v2 (issue 8): `fills.outcome` holds how a fill ended (FillOutcome), so a waiter in another thread reads it from a
 * column instead of parsing error text; the `totals` table (named counters nobody read) became `usage`, one row with
 * the stored bytes and entries that eviction needs.
 */
export const SCHEMA_VERSION = 2;

/** Columns of `entries` as stored. JSON columns are strings here; `store.ts` parses them. */
export type EntryRow = {
  pkey: string;
  vkey: string;
  url: string;
  status: number;
  headers: string;
  req_headers: string;
  vary: string | null;
  request_time: number;
  response_time: number;
  blob_path: string;
  size: number;
  sha256: string;
  created: number;
  last_access: number;
  hits: number;
  bytes_served: number;
  verified: string | null;
};

export type LookupRow = Omit<EntryRow, "created" | "last_access" | "hits" | "bytes_served" | "verified">;

export type FillStatus = "filling" | "done" | "failed";

export type FillRow = {
  key: string;
  owner: string;
  tmp_path: string;
  started: number;
  heartbeat: number;
  status: FillStatus;
  bytes: number;
  head: string | null;
  blob_path: string | null;
  /** the error detail of a failed fill (for people and logs; code decides on `outcome`) */
  error: string | null;
  /** how the fill ended; null while filling */
  outcome: FillOutcome | null;
};

export type VictimRow = { pkey: string; vkey: string; blob_path: string; size: number; last_access: number };


// v1, the historical first schema. A new index is created as v1 and then migrated forward like an old one, so every
// migration runs on every fresh index too (no second "current schema" text to keep in step).
// `entries` keeps a rowid (rows carry a few hundred bytes of header JSON, too wide for WITHOUT ROWID); the
// primary key's index serves `WHERE pkey = ?`. `verified` holds "<boot id>/<blobStamp>" of the last SHA-256 check of the
// blob (see Store.body). `fills.blob_path`/`error` go beyond the brief's columns: a waiter that arrives
// just after a fill finished reads the published blob, and a failed fill tells its waiters why.
export const SCHEMA_V1 = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
  pkey TEXT NOT NULL,
  vkey TEXT NOT NULL,
  url TEXT NOT NULL,
  status INTEGER NOT NULL,
  headers TEXT NOT NULL,
  req_headers TEXT NOT NULL,
  vary TEXT,
  request_time INTEGER NOT NULL,
  response_time INTEGER NOT NULL,
  blob_path TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  created INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  hits INTEGER NOT NULL DEFAULT 0,
  bytes_served INTEGER NOT NULL DEFAULT 0,
  verified TEXT,
  PRIMARY KEY (pkey, vkey)
);
CREATE INDEX entries_lru ON entries (last_access);
CREATE INDEX entries_blob ON entries (blob_path);
CREATE TABLE fills (
  key TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  tmp_path TEXT NOT NULL,
  started INTEGER NOT NULL,
  heartbeat INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('filling', 'done', 'failed')),
  bytes INTEGER NOT NULL DEFAULT 0,
  head TEXT,
  blob_path TEXT,
  error TEXT
);
CREATE TABLE totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- stored_bytes/stored_entries follow entries exactly, in the same transaction as the change. Upserts fire the
-- UPDATE trigger; INSERT OR REPLACE would not fire the DELETE one (SQLite: only with recursive_triggers), so the
-- store never uses REPLACE on entries.
CREATE TRIGGER entries_ai AFTER INSERT ON entries BEGIN
  UPDATE totals SET value = value + NEW.size WHERE name = 'stored_bytes';
  UPDATE totals SET value = value + 1 WHERE name = 'stored_entries';
END;
CREATE TRIGGER entries_ad AFTER DELETE ON entries BEGIN
  UPDATE totals SET value = value - OLD.size WHERE name = 'stored_bytes';
  UPDATE totals SET value = value - 1 WHERE name = 'stored_entries';
END;
CREATE TRIGGER entries_au AFTER UPDATE OF size ON entries BEGIN
  UPDATE totals SET value = value + NEW.size - OLD.size WHERE name = 'stored_bytes';
END;
`;

/** FillOutcome values, for the column's CHECK (kept in step with core/cache/plan.ts by the type below). */
const OUTCOMES = ["stored", "delivered", "revalidated", "superseded", "fallback", "changed", "failed", "stale", "idle"] as const;
type MissingOutcome = Exclude<FillOutcome, (typeof OUTCOMES)[number]>;
const _allOutcomes: MissingOutcome extends never ? true : never = true;
void _allOutcomes;

const V2 = `
ALTER TABLE fills ADD COLUMN outcome TEXT CHECK (outcome IS NULL OR outcome IN (${OUTCOMES.map((o) => `'${o}'`).join(", ")}));
-- finished v1 rows: a failure was 'failed' whatever its text said; a done row with a blob was stored
UPDATE fills SET outcome = CASE
  WHEN status = 'failed' THEN 'failed'
  WHEN status = 'done' AND blob_path IS NOT NULL THEN 'stored'
  WHEN status = 'done' THEN 'delivered' END;
DROP TRIGGER entries_ai;
DROP TRIGGER entries_ad;
DROP TRIGGER entries_au;
DROP TABLE totals;
CREATE TABLE usage (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL, entries INTEGER NOT NULL);
INSERT INTO usage (id, bytes, entries) SELECT 1, coalesce(sum(size), 0), count(*) FROM entries;
-- usage follows entries exactly, in the same transaction as the change. Upserts fire the UPDATE trigger; INSERT OR
-- REPLACE would not fire the DELETE one (SQLite: only with recursive_triggers), so the store never uses REPLACE.
CREATE TRIGGER entries_ai AFTER INSERT ON entries BEGIN
  UPDATE usage SET bytes = bytes + NEW.size, entries = entries + 1;
END;
CREATE TRIGGER entries_ad AFTER DELETE ON entries BEGIN
  UPDATE usage SET bytes = bytes - OLD.size, entries = entries - 1;
END;
CREATE TRIGGER entries_au AFTER UPDATE OF size ON entries BEGIN
  UPDATE usage SET bytes = bytes + NEW.size - OLD.size;
END;
`;

/** Migrations from version N to N+1, run in the write transaction that opens the index. */
const MIGRATIONS: Record<number, (db: Database) => void> = {
  2: (db) => db.exec(V2),
};

export function schemaError(msg: string): ProxyError {
  return new ProxyError("PX_STORE_SCHEMA", "internal", msg);
}

function prepareAll(db: Database) {
  return {
    // No ORDER BY: it costs a temp b-tree per call (18 µs instead of 7 µs, even for a miss); store.ts orders the
    // rare multi-variant result itself. Only the columns an Entry needs.
    entriesByPkey: db.prepare<LookupRow, [string]>(
      `SELECT pkey, vkey, url, status, headers, req_headers, vary, request_time, response_time, blob_path, size, sha256
       FROM entries WHERE pkey = ?`,
    ),
    entry: db.prepare<EntryRow, [string, string]>("SELECT * FROM entries WHERE pkey = ? AND vkey = ?"),
    upsertEntry: db.prepare<
      unknown,
      [string, string, string, number, string, string, string | null, number, number, string, number, string, number, number, string | null]
    >(
      `INSERT INTO entries (pkey, vkey, url, status, headers, req_headers, vary, request_time, response_time,
         blob_path, size, sha256, created, last_access, verified)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
       ON CONFLICT (pkey, vkey) DO UPDATE SET url = ?3, status = ?4, headers = ?5, req_headers = ?6, vary = ?7,
         request_time = ?8, response_time = ?9, blob_path = ?10, size = ?11, sha256 = ?12, created = ?13,
         last_access = ?14, hits = 0, bytes_served = 0, verified = ?15`,
    ),
    updateHeaders: db.prepare<unknown, [string, number, number, string, string, string]>(
      `UPDATE entries SET headers = ?, request_time = ?, response_time = ?
       WHERE pkey = ? AND vkey = ? AND blob_path = ?`,
    ),
    touch: db.prepare<unknown, [number, number, number, string, string]>(
      `UPDATE entries SET last_access = max(last_access, ?), hits = hits + ?, bytes_served = bytes_served + ?
       WHERE pkey = ? AND vkey = ?`,
    ),
    verifiedOf: db.prepare<{ verified: string | null }, [string]>(
      "SELECT verified FROM entries WHERE blob_path = ? LIMIT 1",
    ),
    setVerified: db.prepare<unknown, [string, string]>("UPDATE entries SET verified = ? WHERE blob_path = ?"),
    blobsOfPkey: db.prepare<{ vkey: string; blob_path: string }, [string]>(
      "SELECT vkey, blob_path FROM entries WHERE pkey = ?",
    ),
    deletePkey: db.prepare<unknown, [string]>("DELETE FROM entries WHERE pkey = ?"),
    deleteEntry: db.prepare<unknown, [string, string]>("DELETE FROM entries WHERE pkey = ? AND vkey = ?"),
    deleteByBlob: db.prepare<unknown, [string]>("DELETE FROM entries WHERE blob_path = ?"),
    blobRefs: db.prepare<{ n: number }, [string]>("SELECT count(*) AS n FROM entries WHERE blob_path = ?"),
    allBlobPaths: db.prepare<{ blob_path: string }, []>("SELECT DISTINCT blob_path FROM entries"),
    // LRU victims, oldest first, skipping keys with a live fill (fresh heartbeat) — never evict what is being filled.
    victims: db.prepare<VictimRow, [number, number]>(
      `SELECT pkey, vkey, blob_path, size, last_access FROM entries
       WHERE pkey NOT IN (SELECT key FROM fills WHERE status = 'filling' AND heartbeat >= ?)
       ORDER BY last_access ASC LIMIT ?`,
    ),
    fill: db.prepare<FillRow, [string]>("SELECT * FROM fills WHERE key = ?"),
    upsertFill: db.prepare<unknown, [string, string, string, number]>(
      `INSERT INTO fills (key, owner, tmp_path, started, heartbeat, status, bytes, head, blob_path, error, outcome)
       VALUES (?1, ?2, ?3, ?4, ?4, 'filling', 0, NULL, NULL, NULL, NULL)
       ON CONFLICT (key) DO UPDATE SET owner = ?2, tmp_path = ?3, started = ?4, heartbeat = ?4, status = 'filling',
         bytes = 0, head = NULL, blob_path = NULL, error = NULL, outcome = NULL`,
    ),
    fillHead: db.prepare<unknown, [string, string, string]>(
      "UPDATE fills SET head = ? WHERE key = ? AND tmp_path = ? AND status = 'filling'",
    ),
    fillBeat: db.prepare<unknown, [number, number, string, string]>(
      "UPDATE fills SET heartbeat = ?, bytes = ? WHERE key = ? AND tmp_path = ? AND status = 'filling'",
    ),
    // outcome 'stored' (blob_path set) or 'delivered' (null)
    fillDone: db.prepare<unknown, [number, number, string | null, FillOutcome, string, string]>(
      `UPDATE fills SET status = 'done', heartbeat = ?, bytes = ?, blob_path = ?, outcome = ?
       WHERE key = ? AND tmp_path = ? AND status = 'filling'`,
    ),
    fillFailed: db.prepare<unknown, [number, FillOutcome, string, string, string]>(
      `UPDATE fills SET status = 'failed', heartbeat = ?, outcome = ?, error = ?
       WHERE key = ? AND tmp_path = ? AND status = 'filling'`,
    ),
    deleteFinishedFill: db.prepare<unknown, [string]>("DELETE FROM fills WHERE key = ? AND status <> 'filling'"),
    deadFills: db.prepare<unknown, [number, number]>(
      `DELETE FROM fills WHERE (status = 'filling' AND heartbeat < ?) OR (status <> 'filling' AND heartbeat < ?)`,
    ),
    liveTmpPaths: db.prepare<{ tmp_path: string }, []>("SELECT tmp_path FROM fills WHERE status = 'filling'"),
    usage: db.prepare<{ bytes: number; entries: number }, []>("SELECT bytes, entries FROM usage WHERE id = 1"),
    recountUsage: db.prepare<unknown, []>(
      "UPDATE usage SET bytes = (SELECT coalesce(sum(size), 0) FROM entries), entries = (SELECT count(*) FROM entries)",
    ),
    // purge (store.ts): every stored object, matched against the selector in JS (core/cache-ops.ts matchesPurge)
    objects: db.prepare<{ pkey: string; vkey: string; url: string; blob_path: string; size: number }, []>(
      "SELECT pkey, vkey, url, blob_path, size FROM entries",
    ),
    // eviction totals live in `meta` as counters (no schema change): 'evicted_objects', 'evicted_bytes'
    addCounter: db.prepare<unknown, [string, number]>(
      `INSERT INTO meta (key, value) VALUES (?1, ?2)
       ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + ?2`,
    ),
    counter: db.prepare<{ value: string }, [string]>("SELECT value FROM meta WHERE key = ?"),
    largestObjects: db.prepare<{ url: string; size: number; hits: number; bytes_served: number }, [number]>(
      "SELECT url, size, hits, bytes_served FROM entries ORDER BY size DESC LIMIT ?",
    ),
    // the admin's "largest objects" view (report.ts)
    topObjects: db.prepare<{ url: string; size: number; hits: number; bytes_served: number }, [number]>(
      "SELECT url, size, hits, bytes_served FROM entries ORDER BY bytes_served DESC LIMIT ?",
    ),
  };
}

export type Statements = ReturnType<typeof prepareAll>;

export type IndexDbOptions = {
  /** how long a writer waits for the lock before SQLITE_BUSY; default 10 s */
  busyTimeoutMs?: number;
};

/**
 * The process-wide count of index write transactions, in a slot of the supervisor's SharedArrayBuffer
 * (workers/protocol.ts STORE_WRITES_SLOT). The supervisor thread and every worker thread register it at start, and
 * each write transaction bumps it after its COMMIT, so a hit can tell "nothing in this process wrote to any index
 * since my memo was read" with one atomic load. It replaces `PRAGMA data_version` on every hit: that query took a
 * read lock on the WAL's shm file (two fcntl calls) under SQLite's per-file mutex, which both workers contend for —
 * measured on 1 KiB keep-alive hits (`strace -f -c -p <gateway>` during `bench/e2e/savings.ts`): 1.8 fcntl and 0.9
 * futex calls per hit, most futex calls `FUTEX_WAIT_PRIVATE, 2` (a contended lock) on the worker threads.
 * Writers outside the process (none in normal operation: one gateway owns its data_dir) are still seen through
 * `dataVersion`, which `IndexChanges` (below) asks at most every OUTSIDE_WRITES_CHECK_MS when the count is shared.
 */
let sharedWrites: { counts: Int32Array; slot: number } | null = null;

/** Register (or with null, drop) this thread's view of the process-wide write count; see `sharedWrites`. */
export function shareWriteCount(counts: Int32Array | null, slot: number): void {
  sharedWrites = counts === null ? null : { counts, slot };
}

/** One connection to `<dir>/index.db` with its statements. One per thread (bun:sqlite handles are not shareable). */
export class IndexDb {
  readonly db: Database;
  readonly q: Statements;

  private constructor(db: Database) {
    this.db = db;
    this.q = prepareAll(db);
  }

  static open(path: string, opts: IndexDbOptions = {}): IndexDb {
    const db = new Database(path, { create: true, readwrite: true });
    try {
      // busy_timeout first: switching to WAL needs a lock another thread may hold while it does the same.
      const busyMs = Math.max(0, Math.floor(opts.busyTimeoutMs ?? 10_000));
      db.exec(`PRAGMA busy_timeout = ${busyMs}`);
      const mode = switchToWal(db, busyMs);
      if (mode !== "wal") throw schemaError(`${path}: could not switch to WAL mode (got ${mode})`);
      db.exec("PRAGMA synchronous = NORMAL");
      db.exec("PRAGMA temp_store = MEMORY");
      migrate(db, path);
    } catch (e) {
      db.close();
      throw e;
    }
    return new IndexDb(db);
  }

  /** write transactions this connection ran (committed or not): with `dataVersion`, when a lookup memo must go */
  localWrites = 0;

  /** A write on this connection: counted here and, when this thread shares the process-wide count, there too. */
  noteWrite(): void {
    this.localWrites++;
    if (sharedWrites !== null) Atomics.add(sharedWrites.counts, sharedWrites.slot, 1);
  }

  /**
   * Every index write in this process so far (all stores, all threads that called `shareWriteCount`), or null when
   * this thread does not share the count and must ask SQLite (`dataVersion`) on every lookup.
   */
  processWrites(): number | null {
    return sharedWrites === null ? null : Atomics.load(sharedWrites.counts, sharedWrites.slot);
  }
  #dataVersion: Statement<{ data_version: number }, []> | null = null;

  /**
   * SQLite's `PRAGMA data_version`: changes whenever ANOTHER connection (another worker thread, the supervisor, an
   * admin process) committed to this database since the last call on this one (sqlite.org/pragma.html#pragma_data_version);
   * this connection's own writes are counted by `localWrites`. Measured 1.6–2.4 µs a call vs 3.4 µs for the SELECT by
   * pkey alone and ~7 µs for a whole `Store.lookup` (`bun bench/micro/hit-path.bench.ts`).
   */
  dataVersion(): number {
    this.#dataVersion ??= this.db.prepare<{ data_version: number }, []>("PRAGMA data_version");
    return this.#dataVersion.get()?.data_version ?? -1;
  }

  /** BEGIN IMMEDIATE … COMMIT around `fn` (rolled back if it throws). */
  writeTx<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } finally {
      this.noteWrite();
    }
  }

  schemaVersion(): number {
    const v = this.db.query<{ value: string }, []>("SELECT value FROM meta WHERE key = 'schema_version'").get();
    return Number(v?.value);
  }

  close(): void {
    this.db.close();
  }
}

/** The v1 schema with its seeded rows, as agate before issue 8 created it. Exported for the migration test. */
export function createV1(db: Database): void {
  db.exec(SCHEMA_V1);
  db.query("INSERT INTO meta (key, value) VALUES ('schema_version', '1')").run();
  const ins = db.query("INSERT INTO totals (name, value) VALUES (?, 0)");
  for (const n of V1_TOTAL_NAMES) ins.run(n);
}

const V1_TOTAL_NAMES = ["stored_bytes", "stored_entries", "fetched_bytes", "served_bytes", "hits", "misses", "collapsed", "revalidations"];

/**
 * The journal mode after asking for WAL. WAL is kept in the file, so the mode is read first and only a new file is
 * switched. The switch can fail with SQLITE_BUSY at once, without the busy handler, when another thread switches
 * the same new file at the same moment (SQLite refuses to wait where waiting could deadlock), so it is retried
 * until `busyMs` has passed; test/unit/index-db-open.test.ts opens one new file from 6 threads at once.
 */
function switchToWal(db: Database, busyMs: number): string | undefined {
  const end = Date.now() + busyMs;
  for (let attempt = 0; ; attempt++) {
    try {
      const now = db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()?.journal_mode;
      if (now === "wal") return now;
      return db.query<{ journal_mode: string }, []>("PRAGMA journal_mode = WAL").get()?.journal_mode;
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (typeof code !== "string" || !code.startsWith("SQLITE_BUSY") || Date.now() >= end) throw e;
      Bun.sleepSync(Math.min(50, 2 + attempt * 2)); // back off while the other thread finishes its switch
    }
  }
}

/** Create the schema in an empty file (v1, then migrated), migrate an older one, or refuse a newer or foreign one with a clear message. */
function migrate(db: Database, path: string): void {
  db.transaction(() => {
    const tables = db
      .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
      .all()
      .map((r) => r.name);
    if (tables.length === 0) createV1(db);
    else if (!tables.includes("meta")) {
      throw schemaError(
        `${path} is not an agate cache index (tables: ${tables.join(", ")}); move it away or point the store at an empty directory`,
      );
    }
    const raw = db.query<{ value: string }, []>("SELECT value FROM meta WHERE key = 'schema_version'").get()?.value;
    let version = Number(raw);
    if (!Number.isInteger(version) || version < 1) {
      throw schemaError(`${path}: meta.schema_version is ${JSON.stringify(raw ?? null)}, not a version number`);
    }
    if (version > SCHEMA_VERSION) {
      throw schemaError(
        `${path} has schema version ${version}, newer than this agate understands (${SCHEMA_VERSION}); ` +
          `run a newer agate, or delete the cache directory to start an empty cache`,
      );
    }
    while (version < SCHEMA_VERSION) {
      const step = MIGRATIONS[version + 1];
      if (step === undefined) {
        throw schemaError(
          `${path} has schema version ${version} and there is no migration to ${version + 1}; ` +
            `delete the cache directory to start an empty cache`,
        );
      }
      step(db);
      version++;
      db.query("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(String(version));
    }
  }).immediate();
}

export type { Statement };

/** A stored response, as the workers see it. `blobPath` is absolute; `vary` is the stored response's Vary (all lines joined), or null. */
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

/** A lookup row as an Entry; `dir` is the store's absolute, normalised directory. */
export function toEntry(dir: string, row: LookupRow, reqHeaders: Headers): Entry {
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
    blobPath: `${dir}/${row.blob_path}`,
    size: row.size,
    sha256: row.sha256,
  };
}

/**
 * With the process-wide write count shared (`shareWriteCount`), how often `IndexChanges` still asks SQLite whether a
 * connection outside the process wrote: such a write is seen within this long.
 */
const OUTSIDE_WRITES_CHECK_MS = 250;

/**
 * Whether an index may have changed since the last time it was asked (a lookup memo's validity, store.ts
 * `#variants`): writes in this process (any worker, the supervisor) through the shared count, exactly; writes from
 * outside the process through `PRAGMA data_version`, asked at most every OUTSIDE_WRITES_CHECK_MS then. A thread that
 * shares no count asks data_version every time and adds this connection's own `localWrites`.
 */
export class IndexChanges {
  #mark = -1;
  #writes = -1;
  #markAt = -Infinity;
  constructor(
    private readonly db: IndexDb,
    private readonly clock: () => number,
  ) {}

  /** True when something may have changed since the last call (the first call says true). */
  since(): boolean {
    const shared = this.db.processWrites();
    const writes = shared ?? this.db.localWrites;
    let mark = this.#mark;
    const now = shared === null ? 0 : this.clock();
    if (shared === null || !(now - this.#markAt < OUTSIDE_WRITES_CHECK_MS && now >= this.#markAt)) {
      mark = this.db.dataVersion();
      this.#markAt = now;
    }
    if (mark === this.#mark && writes === this.#writes) return false;
    this.#mark = mark;
    this.#writes = writes;
    return true;
  }
}
