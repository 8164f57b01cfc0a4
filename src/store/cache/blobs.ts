/**
 * @module Blob files of the cache store. A blob is written once into `<dir>/tmp/<name>.<random>`, fsynced, then renamed
 * to its content address `<dir>/blobs/<aa>/<sha256>` (aa = the first two hex digits), and never written again: a blob
 * is complete before anybody maps it, and it is replaced only by rename (a new inode) or removed by unlink, never
 * truncated or rewritten in place — `Bun.mmap` readers would crash (SIGBUS) on a truncated mapping.
 *
 * Content addressing means two entries with identical bytes share one file; the index (`index-db.ts`) decides when
 * the last reference is gone. Renames and unlinks of published blobs are done by `store.ts` and `fill-local.ts` while they hold the index's
 * write lock, so the index and the files move together.
 *
 * Measured on the build machine (Bun 1.4.5, 2 vCPU VM, ext4; `bun test/fixtures/store-bench.ts`, medians):
 * - writer: `openSync("wx")` + `writeSync` per chunk vs `Bun.file(path).writer()` with `flush()` per chunk (flush is
 *   needed so waiters in other threads see bytes as they arrive), fresh files, interleaved: 7.8 vs 7.7 µs per 16 KiB
 *   chunk, 18.4 vs 18.8 µs per 64 KiB chunk — the same (≈ 2 GB/s, ≈ 3.5 GB/s). FileSink only looked 2–3× faster in
 *   runs that rewrote an existing file (O_TRUNC of dirty pages) or always ran second, which the store never does. We
 *   keep `writeSync`: same speed, an error such as ENOSPC throws at the write that caused it, and we own the fd for
 *   fsync. SHA-256 costs about as much as the write (≈ 1.6 GB/s); it is computed incrementally while the bytes are hot.
 * - reads: see `readBlob`.
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";

export type BlobInfo = {
  /** absolute path of the published blob */
  path: string;
  size: number;
  /** lower-case hex SHA-256 of the bytes */
  sha256: string;
};

export type SealedBlob = { tmpPath: string; size: number; sha256: string };

export const BLOBS_DIR = "blobs";
export const TMP_DIR = "tmp";
const SHA256_HEX = /^[0-9a-f]{64}$/;
const FANOUT_DIR = /^[0-9a-f]{2}$/;

/** `<dir>/blobs/<aa>/<sha256>` relative to the store directory: what the index stores. */
export function blobRelPath(sha256: string): string {
  return `${BLOBS_DIR}/${sha256.slice(0, 2)}/${sha256}`;
}

export function blobPathFor(dir: string, sha256: string): string {
  return join(dir, blobRelPath(sha256));
}

/** Create `<dir>`, `<dir>/blobs` and `<dir>/tmp` if missing. */
export function ensureBlobDirs(dir: string): void {
  mkdirSync(join(dir, BLOBS_DIR), { recursive: true });
  mkdirSync(join(dir, TMP_DIR), { recursive: true });
}

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

/** Temp names are for people reading `ls tmp/`: keep them short and shell-safe. */
function safeName(name: string): string {
  const s = name.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64);
  return s === "" ? "blob" : s;
}

/** fsync a directory so a rename or create inside it survives a power loss (POSIX: the entry lives in the dir). */
export function syncDir(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Appends chunks to a temp file, tracking size and an incremental SHA-256. Bytes are visible to other readers of the
 * temp file as soon as `write` returns (page cache; no fsync needed for that), which is what fill tails rely on.
 */
export class BlobWriter {
  readonly tmpPath: string;
  #fd: number;
  #size = 0;
  #hasher = new Bun.CryptoHasher("sha256");
  #state: "open" | "sealed" | "done" = "open";

  constructor(
    readonly dir: string,
    name: string,
  ) {
    this.tmpPath = join(dir, TMP_DIR, `${safeName(name)}.${randomHex(8)}`);
    // "wx": O_CREAT|O_EXCL — a fresh file every time (also the fast case, see the module header).
    this.#fd = openSync(this.tmpPath, "wx", 0o644);
  }

  get size(): number {
    return this.#size;
  }

  /** Append a chunk. Throws (e.g. ENOSPC) synchronously; the caller then calls `abort()`. */
  write(chunk: Uint8Array): void {
    if (this.#state !== "open") throw new Error(`blob writer for ${this.tmpPath} is ${this.#state}`);
    let off = 0;
    // writeSync on a regular file writes everything or throws, but a short write is legal POSIX: loop.
    while (off < chunk.byteLength) off += writeSync(this.#fd, chunk, off, chunk.byteLength - off);
    this.#hasher.update(chunk);
    this.#size += chunk.byteLength;
  }

  /** fsync and close the temp file; it stays in tmp/. The store publishes it under its own lock. */
  seal(): SealedBlob {
    if (this.#state !== "open") throw new Error(`blob writer for ${this.tmpPath} is ${this.#state}`);
    fsyncSync(this.#fd);
    closeSync(this.#fd);
    this.#fd = -1;
    this.#state = "sealed";
    return { tmpPath: this.tmpPath, size: this.#size, sha256: this.#hasher.digest("hex") };
  }

  /** seal → rename into `blobs/<aa>/<sha256>` → fsync the directory. */
  commit(): BlobInfo {
    const sealed = this.seal();
    const path = publishBlob(this.dir, sealed.tmpPath, sealed.sha256);
    syncDir(join(path, ".."));
    this.#state = "done";
    return { path, size: sealed.size, sha256: sealed.sha256 };
  }

  /** Close and unlink the temp file. Safe to call in any state, more than once. */
  abort(): void {
    if (this.#fd !== -1) {
      try {
        closeSync(this.#fd);
      } catch {}
      this.#fd = -1;
    }
    if (this.#state !== "done") {
      try {
        unlinkSync(this.tmpPath);
      } catch {}
    }
    this.#state = "done";
  }
}

/** Start a blob: `name` only labels the temp file (`<dir>/tmp/<name>.<random>`); the final name is the SHA-256. */
export function openBlobWriter(dir: string, name: string): BlobWriter {
  return new BlobWriter(dir, name);
}

/**
 * Rename a sealed temp file to its content address and return the absolute path. Renaming over an existing blob with
 * the same hash is fine: readers that mapped the old inode keep it, new readers get identical bytes. The caller fsyncs
 * the fan-out directory (`syncDir`) once it no longer holds a lock. A newly created fan-out directory is fsynced in
 * its parent here.
 */
export function publishBlob(dir: string, tmpPath: string, sha256: string): string {
  if (!SHA256_HEX.test(sha256)) throw new Error(`not a SHA-256 hex digest: ${sha256}`);
  const fan = join(dir, BLOBS_DIR, sha256.slice(0, 2));
  const created = mkdirSync(fan, { recursive: true });
  if (created !== undefined) syncDir(join(dir, BLOBS_DIR));
  const path = join(fan, sha256);
  renameSync(tmpPath, path);
  return path;
}

const EMPTY = new Uint8Array(0);

/**
 * The bytes of a blob through `Bun.mmap`, mapped MAP_PRIVATE (`shared: false`): a caller that writes into the array
 * gets a private copy of that page instead of corrupting the blob on disk for everyone (same read speed: 2 MiB
 * map+crc32 median 203 µs private vs 214 µs shared). Returns null when the file does not exist. `Bun.mmap` refuses
 * empty files (EINVAL), so size 0 gives an empty array.
 *
 * Measured (test/fixtures/store-bench.ts, warm page cache, read then crc32 every byte as a stand-in for writing it
 * to a socket; medians of one run, runs vary by ±50 % on this VM but never change the order):
 *                      64 KiB     2 MiB      64 MiB
 *   Bun.mmap per read   20 µs     119 µs     2.6 ms
 *   Bun.mmap, cached   1.3 µs      45 µs     2.3 ms
 *   Bun.file().bytes() 126 µs     460 µs      19 ms
 *   readFileSync        17 µs     293 µs      25 ms
 * mmap wins from 2 MiB up (no copy into the JS heap), and a mapping kept across hits wins everywhere, so the store
 * keeps a bounded per-thread cache of mappings (`Store.body`). Unlinking a mapped file is safe on Linux — the mapping
 * keeps the inode alive (checked: map 4 MiB, unlink, read every page); only truncation breaks a mapping.
 */
export function readBlob(path: string): Uint8Array | null {
  try {
    return Bun.mmap(path, { shared: false });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    if (code === "EINVAL") {
      // empty file (mmap of length 0), or something that is not a regular file
      const st = statOrNull(path);
      if (st === null) return null;
      if (st.isFile() && st.size === 0) return EMPTY;
    }
    throw e;
  }
}

function statOrNull(path: string) {
  try {
    return statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
}

/**
 * What a blob file is right now, as a string that changes when anybody writes into it or replaces it: inode, ctime
 * (write(2), truncate and rename all move it; POSIX stat) and size; null when it is missing. The store checks a
 * blob's SHA-256 again whenever its stamp is not the one it was checked with, so bytes written into a stored file
 * while the gateway runs are caught at the next hit, not served from the mapping (issue 12: a live corrupted blob
 * was served for the rest of the process's life). It cannot see a change that leaves ctime alone (bit rot under the
 * page cache): the next process hashes every blob on its first open.
 * Measured: 3.5 µs per `statSync` (one per hit) on the build VM, 200,000 calls of
 * `bun -e 'const {statSync:s,writeFileSync:w}=require("node:fs");w("/tmp/x",new Uint8Array(1<<20));let t=performance.now();for(let i=0;i<2e5;i++)s("/tmp/x");console.log((performance.now()-t)/2e5*1e3,"µs")'`.
 */
export function blobStamp(path: string): string | null {
  const st = statOrNull(path);
  return st === null ? null : `${st.ino}:${st.ctimeMs}:${st.size}`;
}

/** Recompute a blob's SHA-256 and compare; false when it differs or the file is missing. */
export function verifyBlob(path: string, sha256: string): boolean {
  const bytes = readBlob(path);
  return bytes !== null && sha256Hex(bytes) === sha256.toLowerCase();
}

/** Published blobs as paths relative to the store directory (`blobs/aa/<name>`), whatever their names. */
export function listBlobs(dir: string): string[] {
  const root = join(dir, BLOBS_DIR);
  const out: string[] = [];
  let fans: string[];
  try {
    fans = readdirSync(root);
  } catch {
    return out;
  }
  for (const fan of fans) {
    if (!FANOUT_DIR.test(fan)) continue;
    let names: string[];
    try {
      names = readdirSync(join(root, fan));
    } catch {
      continue; // not a directory
    }
    for (const n of names) out.push(`${BLOBS_DIR}/${fan}/${n}`);
  }
  return out;
}

/**
 * Delete temp files a crash left behind: every file in tmp/ that is not in `live` and was last written more than
 * `olderThanMs` before `now` (a young file may belong to a writer that is about to register its fill). Returns the
 * number deleted.
 */
export function cleanTmp(dir: string, live: ReadonlySet<string>, olderThanMs: number, now: number): number {
  const tmp = join(dir, TMP_DIR);
  let names: string[];
  try {
    names = readdirSync(tmp);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    const p = join(tmp, name);
    if (live.has(p)) continue;
    const st = statOrNull(p);
    if (st === null || !st.isFile() || st.mtimeMs > now - olderThanMs) continue;
    try {
      unlinkSync(p);
      n++;
    } catch {}
  }
  return n;
}
