/**
 * @module Fills owned by another worker thread or process, followed through the index and the file: `RemoteFill`
 * polls the fills row (status, outcome, head, heartbeat) and the temp file's size every pollMinMs..pollMaxMs while a
 * tail is attached, and reads the bytes with pread. One per key per thread, shared by that thread's tails. The fd was
 * opened on the temp file while the row said 'filling'; the filler's rename into blobs/ (or its unlink after a
 * failure) does not affect it. How the fill ended comes from the row's `outcome` column, never from its error text.
 */
import { fstatSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Headers } from "../../core/cache/freshness";
import type { FillOutcome } from "../../core/cache/plan";
import { ProxyError } from "../../core/errors";
import { closeQuiet, errorMessage } from "./fill-local";
import {
  type FillCtx,
  type FillEnd,
  type FillSource,
  headLatch,
  IDLE_TICK_MS,
  preadChunk,
  type SourceStatus,
  Waiters,
} from "./fill-tail";
import type { FillRow } from "./index-db";

export class RemoteFill implements FillSource {
  status: SourceStatus = "filling";
  end: FillEnd | null = null;
  finalSize = -1;
  readonly tmpPath: string;
  #headLatch = headLatch();
  #hasHead = false;
  #size = 0;
  #refs = 0;
  #fd: number;
  #waiters = new Waiters();
  #timer: ReturnType<typeof setTimeout> | null = null;
  #interval: number;
  #lastWake = performance.now();

  constructor(
    readonly ctx: FillCtx,
    readonly key: string,
    row: FillRow,
    fd: number,
    /** called when this thread stops following the fill (it ended, or its last tail let go), so the Store forgets it */
    readonly onFinished: (key: string, fill: RemoteFill) => void,
  ) {
    this.tmpPath = row.tmp_path;
    this.#fd = fd;
    this.#interval = ctx.o.pollMinMs;
    this.#apply(row);
    this.#size = fstatSync(fd).size;
  }

  get headPromise() {
    return this.#headLatch.promise;
  }

  available(): number {
    if (this.#fd !== -1 && (this.status === "filling" || this.#size < this.finalSize)) this.#size = fstatSync(this.#fd).size;
    return this.status === "done" ? Math.min(this.#size, this.finalSize) : this.#size;
  }

  read(offset: number): Uint8Array {
    return preadChunk(this.#fd, offset, this.available(), this.key);
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
    this.onFinished(this.key, this);
  }

  /** The store is closing: fail every tail of this fill. */
  abandon(detail: string): void {
    if (this.status === "filling") this.#fail("failed", detail);
  }

  #apply(row: FillRow): void {
    if (!this.#hasHead && row.head !== null) {
      this.#hasHead = true;
      this.#headLatch.resolve({ ok: true, head: JSON.parse(row.head) });
    }
    if (this.status !== "filling") return;
    if (row.status === "done") {
      if (!this.#hasHead) return this.#fail("failed", "the fill ended without a head");
      this.status = "done";
      this.finalSize = row.bytes;
      this.end = { outcome: row.outcome ?? (row.blob_path !== null ? "stored" : "delivered"), detail: "" };
      this.onFinished(this.key, this);
    } else if (row.status === "failed") {
      this.#fail(row.outcome ?? "failed", row.error ?? "");
    } else if (row.heartbeat < this.ctx.now() - this.ctx.o.staleMs) {
      this.#fail(
        "stale",
        `filler ${row.owner} stopped: no heartbeat for ${this.ctx.now() - row.heartbeat} ms ` +
          `(limit ${this.ctx.o.staleMs} ms); claim it again to take over`,
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
        const headers = JSON.parse(e.headers) as Headers;
        this.#headLatch.resolve({
          ok: true,
          head: { status: e.status, headers, requestTime: e.request_time, responseTime: e.response_time, store: true },
        });
      }
      this.status = "done";
      this.finalSize = st.size;
      this.end = { outcome: "stored", detail: "" };
      this.onFinished(this.key, this);
      return true;
    }
    return false;
  }

  #fail(outcome: FillOutcome, detail: string): void {
    this.status = "failed";
    this.end = { outcome, detail };
    if (!this.#hasHead) this.#headLatch.resolve({ ok: false, outcome, detail });
    this.onFinished(this.key, this);
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
        if (!this.#published()) this.#fail("stale", "the fill was abandoned and removed or taken over");
      } else {
        this.#apply(row);
      }
      if (this.#fd !== -1) this.#size = fstatSync(this.#fd).size;
    } catch (e) {
      if (e instanceof ProxyError && e.code === "PX_STORE_CLOSED") return;
      // a closed database (store closing) or an fs error: report it to the tails
      if (this.status === "filling") this.#fail("failed", errorMessage(e));
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
