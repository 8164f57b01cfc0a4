/**
 * @module This thread's fills: `LocalFill` (the writer side of a claim, and the source its in-thread tails read) and
 * `FillWriter`, the filler's handle. The writer appends to a temp file; tails in this thread get the recent chunks
 * from memory (a ring of up to RING_BYTES) and older bytes from the file, and are woken on every write — no polling.
 * Tails in other threads follow the fills row and the same file (fill-remote.ts). A commit publishes the blob and
 * its index row in one write transaction; the fill reports its end to the Store through `onFinished`.
 */
import { closeSync, openSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Headers } from "../../core/cache/freshness";
import type { FillEndOutcome, FillOutcome } from "../../core/cache/plan";
import { blobRelPath, blobStamp, type BlobWriter, publishBlob, syncDir } from "./blobs";
import {
  type FillCtx,
  type FillEnd,
  type FillHead,
  type FillSource,
  headLatch,
  IDLE_TICK_MS,
  preadChunk,
  type SourceStatus,
  Waiters,
} from "./fill-tail";
import type { Entry } from "./index-db";

/** recent chunks a local fill keeps for its in-thread tails (a tail that falls further behind reads the file) */
const RING_BYTES = 4 << 20;

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

export function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}

export function closeQuiet(fd: number): void {
  try {
    closeSync(fd);
  } catch {}
}

export function errorMessage(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
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

export class LocalFill implements FillSource {
  status: SourceStatus = "filling";
  end: FillEnd | null = null;
  finalSize = -1;
  lost = false;
  head: FillHead | null = null;
  readonly tmpPath: string;
  #headLatch = headLatch();
  #ring: { off: number; bytes: Uint8Array }[] = [];
  #ringBytes = 0;
  #readFd = -1;
  #refs = 0;
  #waiters = new Waiters();
  #beat: ReturnType<typeof setInterval> | null;
  #lastBeat = 0;

  constructor(
    readonly ctx: FillCtx,
    readonly key: string,
    readonly writer: BlobWriter,
    /** called once when the fill ends (committed, failed or lost), so the Store forgets it */
    readonly onFinished: (key: string, fill: LocalFill) => void,
  ) {
    this.tmpPath = writer.tmpPath;
    // the heartbeat is also the tails' idle tick (IDLE_TICK_MS at most)
    this.#beat = setInterval(() => this.#heartbeat(), Math.min(ctx.o.heartbeatMs, IDLE_TICK_MS));
    this.#beat.unref?.();
  }

  get headPromise() {
    return this.#headLatch.promise;
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
    return preadChunk(this.#readFd, offset, this.writer.size, this.key);
  }

  wait(): Promise<void> {
    return this.#waiters.wait();
  }

  attach(): void {
    // the temp file exists while this fill is active (the Store only hands it out until it finishes)
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
    this.#headLatch.resolve({ ok: true, head });
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
      this.fail("failed", e.message);
      throw e;
    }
    const h: FillHead = head;
    let sealed: ReturnType<BlobWriter["seal"]>;
    try {
      sealed = this.writer.seal();
    } catch (e) {
      this.fail("failed", errorMessage(e));
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
          ctx.q.fillDone.run(now, sealed.size, null, "delivered", key, tmpPath);
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
          `${ctx.o.bootId}/${blobStamp(join(ctx.dir, rel))}`, // we hashed these bytes as we wrote them (store.ts `body`)
        );
        if (old !== null && old.blob_path !== rel) ctx.releaseBlob(old.blob_path);
        ctx.q.fillDone.run(now, sealed.size, rel, "stored", key, tmpPath);
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
      this.fail("failed", errorMessage(e));
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
      this.#headLatch.resolve({ ok: true, head: h });
    }
    // lost: this thread's tails still get every byte (delivered), the new filler stores the object
    this.#finish("done", { outcome: entry !== null ? "stored" : "delivered", detail: "" });
    return entry;
  }

  fail(outcome: FillEndOutcome, detail = ""): void {
    if (this.status !== "filling") return;
    this.#stopBeat();
    this.writer.abort();
    try {
      this.ctx.q.fillFailed.run(this.ctx.now(), outcome, detail, this.key, this.tmpPath);
    } catch {
      // busy or closed: waiters in other threads then see the heartbeat go stale
    }
    this.#finish("failed", { outcome, detail });
  }

  #finish(status: "done" | "failed", end: { outcome: FillOutcome; detail: string }): void {
    this.status = status;
    this.end = end;
    if (status === "done") this.finalSize = this.writer.size;
    if (this.head === null) this.#headLatch.resolve({ ok: false, ...end });
    this.onFinished(this.key, this);
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
 * The filler's handle. Call `setHead` as soon as the upstream head arrives (waiters in every thread can answer
 * then), `write` each body chunk, then `commit` (stores the entry after the blob is fsynced and renamed, and marks
 * the fill "stored", or "delivered" for commit(null)) or `fail(outcome, detail)` (waiters get that outcome, nothing
 * is stored). The heartbeat runs by itself every heartbeatMs.
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

  setHead(status: number, headers: Headers, times?: { requestTime?: number; responseTime?: number; store?: boolean }): void {
    const now = this.#f.ctx.now();
    const head: FillHead = { status, headers, requestTime: times?.requestTime ?? now, responseTime: times?.responseTime ?? now };
    if (times?.store !== undefined) head.store = times.store;
    this.#f.setHead(head);
  }

  /** Append a body chunk (copied where kept; the caller may reuse its buffer). Throws e.g. ENOSPC: then call fail. */
  write(chunk: Uint8Array): void {
    this.#f.write(chunk);
  }

  /**
   * Finish: with `meta`, store the entry and return it; with null, deliver the bytes to the waiters without storing
   * (a response that turned out not storable). Returns null too when the fill was lost. Throws (after failing the
   * fill with "failed") if the blob cannot be made durable.
   */
  commit(meta: CommitMeta | null): Entry | null {
    return this.#f.commit(meta);
  }

  /**
   * End without storing: every waiter (in any thread) sees `outcome` — "failed" for a broken download, or what the
   * filler found out ("revalidated", "superseded", "fallback", "changed"); `detail` is for logs. The temp file is
   * removed. Idempotent (a second call, or one after commit, does nothing).
   */
  fail(outcome: FillEndOutcome, detail?: string): void {
    this.#f.fail(outcome, detail ?? "");
  }
}
