/**
 * @module Waiters streaming a fill: `FillTail` (the handle a waiter gets from `Store.claimFill`), the `FillSource`
 * interface both kinds of fill implement (this thread's `LocalFill`, another thread's `RemoteFill`), `FillError`
 * (how a fill that ends badly reaches a waiter: with an `outcome`, never with words to match in its message), and
 * the small pieces they share (the wake list, pread of a growing file, what a fill needs from its Store).
 */
import type { Headers } from "../../core/cache/freshness";
import type { FillOutcome } from "../../core/cache/plan";
import { type ErrorCode, ProxyError } from "../../core/errors";
import { readSync } from "node:fs";
import type { IndexDb, Statements } from "./index-db";

/** largest chunk a tail reads from a file at once */
export const READ_CHUNK_BYTES = 256 << 10;
/** sources wake their tails at least this often, so a tail notices tailIdleMs without a timer of its own */
export const IDLE_TICK_MS = 1000;

/** The response head a filler publishes for its waiters before the body completes. */
export type FillHead = {
  status: number;
  headers: Headers;
  requestTime: number;
  responseTime: number;
  /** the filler means to store this response (RFC 9211 §2.6 `stored`): joiners, in any thread, read it from the head
   * (it travels in the fills row's head JSON), so a collapsed answer says `stored` too; absent = not known */
  store?: boolean;
};

/** What `FillTail.head()` resolves to: the head, or how the fill ended before it had one (never a rejection). */
export type HeadResult = { ok: true; head: FillHead } | { ok: false; outcome: FillOutcome; detail: string };

/** How an ended fill went: "stored"/"delivered" for a good end, any other FillOutcome for a bad one. */
export type FillEnd = { outcome: FillOutcome; detail: string };

const CODE_OF: Partial<Record<FillOutcome, ErrorCode>> = { stale: "PX_FILL_STALE", idle: "PX_FILL_IDLE" };
const UPSTREAM: ReadonlySet<FillOutcome> = new Set<FillOutcome>(["failed", "idle", "changed"]);

/**
 * A fill that ended without giving this waiter its whole body. Code decides on `.outcome` ("failed", "stale",
 * "idle", "changed", "revalidated", …); the message is for people (it contains the key, which may contain any word).
 */
export class FillError extends ProxyError {
  constructor(
    readonly key: string,
    readonly outcome: FillOutcome,
    readonly detail: string,
    o?: ErrorOptions,
  ) {
    super(
      CODE_OF[outcome] ?? "PX_FILL_FAILED",
      UPSTREAM.has(outcome) ? "upstream" : "internal",
      `fill of ${key} ended (${outcome})${detail === "" ? "" : `: ${detail}`}`,
      o,
    );
    this.name = "FillError";
  }
}

/** The Store options fills and tails use. */
export type FillOptions = {
  owner: string;
  heartbeatMs: number;
  staleMs: number;
  pollMinMs: number;
  pollMaxMs: number;
  tailIdleMs: number;
  bootId: string;
};

/** What fills and tails share with their Store. The Store owns its maps; fills report back through callbacks. */
export type FillCtx = {
  dir: string;
  db: IndexDb;
  q: Statements;
  o: FillOptions;
  now: () => number;
  /** delete a blob file if no index row refers to it any more (call inside `db.writeTx`) */
  releaseBlob: (rel: string) => void;
};

export type SourceStatus = "filling" | "done" | "failed";

/** The two kinds of fill a tail can follow: this thread's own (LocalFill) or another thread's (RemoteFill). */
export interface FillSource {
  readonly key: string;
  readonly status: SourceStatus;
  /** how it ended; null while filling */
  readonly end: FillEnd | null;
  /** total size, valid once status is "done" */
  readonly finalSize: number;
  readonly headPromise: Promise<HeadResult>;
  /** bytes readable now */
  available(): number;
  /** some bytes at `offset` (offset < available()) */
  read(offset: number): Uint8Array;
  /** resolves at the next change (new bytes, head, status), and at least every IDLE_TICK_MS so tails can time out */
  wait(): Promise<void>;
  attach(): void;
  release(): void;
}

/** A promise with its resolver outside (the head a source resolves when the filler sets it or the fill ends). */
export function headLatch(): { promise: Promise<HeadResult>; resolve: (v: HeadResult) => void } {
  let resolve!: (v: HeadResult) => void;
  const promise = new Promise<HeadResult>((res) => (resolve = res));
  return { promise, resolve };
}

/**
 * Resolve-on-change list. No timer per wait: with a thousand tails on one fill and a write per 64 KiB, timers per wait
 * would mean millions of setTimeout/clearTimeout a second. Each source wakes its waiters on change and on an idle tick.
 */
export class Waiters {
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

/** Up to READ_CHUNK_BYTES at `offset` of a file that has at least `available` bytes. */
export function preadChunk(fd: number, offset: number, available: number, key: string): Uint8Array {
  const len = Math.min(available - offset, READ_CHUNK_BYTES);
  const buf = new Uint8Array(len);
  let n = 0;
  while (n < len) {
    const r = readSync(fd, buf, n, len - n, offset + n);
    if (r === 0) break;
    n += r;
  }
  if (n === 0) throw new FillError(key, "failed", `fill file shorter than expected at byte ${offset}`);
  return n === len ? buf : buf.subarray(0, n);
}

/**
 * A waiter's handle: `head()` resolves as soon as the filler set the head, or with `{ ok: false, outcome }` if the
 * fill ended first; `for await (const chunk of tail)` yields the body in order as it arrives, ending after the last
 * byte of a committed fill and throwing a `FillError` when the fill ends badly: outcome "failed" (or whatever the
 * filler reported), "stale" when the filler's heartbeat stops (claim again to take over), "idle" after tailIdleMs
 * (store clock) without progress. Iterate once; `close()` (or leaving the loop) releases the file.
 */
export class FillTail implements AsyncIterable<Uint8Array> {
  #src: FillSource;
  #idleMs: number;
  #now: () => number;
  #offset = 0;
  #released = false;

  constructor(src: FillSource, idleMs: number, now: () => number) {
    this.#src = src;
    this.#idleMs = idleMs;
    this.#now = now;
    src.attach();
  }

  get key(): string {
    return this.#src.key;
  }

  /** body bytes yielded so far */
  get received(): number {
    return this.#offset;
  }

  head(): Promise<HeadResult> {
    return this.#src.headPromise;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    const src = this.#src;
    let lastProgress = this.#now();
    try {
      if (this.#released) throw new Error(`tail of ${src.key} is closed`);
      for (;;) {
        if (src.status === "failed") throw new FillError(src.key, src.end!.outcome, src.end!.detail);
        if (this.#offset < src.available()) {
          const chunk = src.read(this.#offset);
          this.#offset += chunk.byteLength;
          lastProgress = this.#now();
          yield chunk;
          continue;
        }
        if (src.status === "done") {
          if (this.#offset >= src.finalSize) return;
          throw new FillError(src.key, "failed", `file has ${src.available()} of ${src.finalSize} bytes`);
        }
        const idle = this.#now() - lastProgress;
        if (idle >= this.#idleMs) throw new FillError(src.key, "idle", `no progress for ${Math.round(idle)} ms`);
        const status = src.status;
        await src.wait();
        if (src.status !== status || this.#offset < src.available()) lastProgress = this.#now();
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
