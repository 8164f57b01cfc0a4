/**
 * @module Sliding windows for visibility: distinct keys (client IPs, agents) seen within a window, and
 * time-bucketed series (connections per unique IP over time). Pure: `now` is always passed in.
 */

/** Distinct keys seen in the last `windowMs`. Memory: one entry per distinct key in the window. */
export class UniqueWindow {
  private seen = new Map<string, number>();
  constructor(readonly windowMs: number) {}

  add(key: string, now: number) {
    // Re-insert so the Map stays ordered by last sighting, oldest first: pruning stops at the first fresh one.
    this.seen.delete(key);
    this.seen.set(key, now);
  }

  prune(now: number) {
    const cutoff = now - this.windowMs;
    for (const [k, t] of this.seen) {
      if (t > cutoff) break;
      this.seen.delete(k);
    }
  }

  count(now: number): number {
    this.prune(now);
    return this.seen.size;
  }

  keys(now: number): string[] {
    this.prune(now);
    return [...this.seen.keys()];
  }

  /** Forget everything (reset: stats start from zero). */
  clear() {
    this.seen.clear();
  }
}

/** Fixed buckets of `bucketMs`, keeping the last `buckets`; each bucket counts distinct keys. */
export class BucketSeries {
  private buckets = new Map<number, Set<string>>();
  constructor(
    readonly bucketMs: number,
    readonly keep: number,
  ) {}

  add(key: string, now: number) {
    const b = Math.floor(now / this.bucketMs) * this.bucketMs;
    let s = this.buckets.get(b);
    if (!s) {
      s = new Set();
      this.buckets.set(b, s);
      const oldest = b - this.keep * this.bucketMs;
      for (const k of this.buckets.keys()) if (k <= oldest) this.buckets.delete(k);
    }
    s.add(key);
  }

  clear() {
    this.buckets.clear();
  }

  series(now: number): { t: number; n: number }[] {
    const end = Math.floor(now / this.bucketMs) * this.bucketMs;
    const out: { t: number; n: number }[] = [];
    for (let i = this.keep - 1; i >= 0; i--) {
      const t = end - i * this.bucketMs;
      out.push({ t, n: this.buckets.get(t)?.size ?? 0 });
    }
    return out;
  }
}
