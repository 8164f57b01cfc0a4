/**
 * @module The one counting of cache hits, misses and bytes. Health (`/healthz`, `agate status`), `/api/stats`,
 * `/metrics` (`agate_cache_requests_total`, `agate_cache_bytes_total`) and the persisted savings series all read
 * these numbers from here, so they cannot disagree (they did: health counted whole-object hits only while metrics
 * added patch-mode slice hits). Pure: plain counters in, plain numbers out.
 */

/** The counters as the workers report them: the cache port's and patch mode's (whose `by_host` is nested). */
export type CacheCounterSource = {
  cache?: Readonly<Record<string, number>>;
  patch?: Readonly<Record<string, unknown>>;
};

export type CacheCounts = {
  /** lookups answered from the store: whole objects (`cache.hits`) + patch slices (`patch.slice_hits`) */
  hits: number;
  /** lookups that went to the origin and filled: `cache.misses` + `patch.slice_misses` */
  misses: number;
  /** waiters that streamed another request's fill: `cache.collapsed` + `patch.slice_collapsed` */
  collapsed: number;
  /** bytes sent to agents from the cache layers */
  bytes_served: number;
  /** bytes fetched from origins for the cache layers */
  bytes_fetched: number;
  /** served − fetched */
  savings: number;
};

const n = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0);

export function countCache(t: CacheCounterSource): CacheCounts {
  const c = t.cache ?? {};
  const p = t.patch ?? {};
  const bytes_served = n(c.bytes_served) + n(p.bytes_served);
  const bytes_fetched = n(c.bytes_fetched) + n(p.bytes_fetched);
  return {
    hits: n(c.hits) + n(p.slice_hits),
    misses: n(c.misses) + n(p.slice_misses),
    collapsed: n(c.collapsed) + n(p.slice_collapsed),
    bytes_served,
    bytes_fetched,
    savings: bytes_served - bytes_fetched,
  };
}
