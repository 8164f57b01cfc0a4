/**
 * @module Duration histograms for /metrics (Prometheus conventions: seconds, cumulative `le` buckets at render time,
 * `_sum` and `_count`). Workers keep per-bucket counts (not cumulative) so that summing workers is adding arrays.
 * Pure: the caller measures the duration.
 */

/** Upper bounds in seconds: a cache hit takes milliseconds, a patch download minutes, an agent's tunnel hours. */
export const DURATION_BUCKETS_S: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400];

/** `buckets[i]` counts observations ≤ DURATION_BUCKETS_S[i] and > the bound before; the last slot is +Inf. */
export type Histogram = { buckets: number[]; sum: number; count: number };

export const emptyHistogram = (): Histogram => ({ buckets: new Array(DURATION_BUCKETS_S.length + 1).fill(0), sum: 0, count: 0 });

/** What a histogram measures, by port: tunnels and intercepted connections, and requests on the cache port. */
export type DurationKind = "connection:proxy" | "connection:cache" | "request:cache";

export function observe(into: Partial<Record<DurationKind, Histogram>>, kind: DurationKind, seconds: number) {
  const h = (into[kind] ??= emptyHistogram());
  let i = 0;
  while (i < DURATION_BUCKETS_S.length && seconds > DURATION_BUCKETS_S[i]!) i++;
  h.buckets[i]!++;
  h.sum += seconds;
  h.count++;
}

export function addHistograms(into: Partial<Record<DurationKind, Histogram>>, from: Partial<Record<DurationKind, Histogram>>) {
  for (const [k, h] of Object.entries(from) as [DurationKind, Histogram][]) {
    const t = (into[k] ??= emptyHistogram());
    h.buckets.forEach((n, i) => (t.buckets[i] = (t.buckets[i] ?? 0) + n));
    t.sum += h.sum;
    t.count += h.count;
  }
}

/** Cumulative `le` samples for one histogram, in the text format's order (…, +Inf). */
export function cumulative(h: Histogram): [string, number][] {
  let run = 0;
  const out: [string, number][] = DURATION_BUCKETS_S.map((le, i) => [String(le), (run += h.buckets[i] ?? 0)]);
  out.push(["+Inf", h.count]);
  return out;
}
