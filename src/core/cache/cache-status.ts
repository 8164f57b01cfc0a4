/**
 * @module The `Cache-Status` response field (RFC 9211): what the cache did for one response, written on every
 * response of the cache port under the gateway's name. Pure: cache-request.ts fills a `CacheStatus` as the story
 * goes and formats it when the head is written; the same phase and reason go to the access line.
 *
 *   agate; hit; ttl=3540                              served from the store, fresh for 3540 s more
 *   agate; hit; ttl=-20; detail=stale-while-revalidate served stale (RFC 5861), revalidated behind
 *   agate; fwd=uri-miss; fwd-status=200; stored; ttl=600   nothing stored for the URI: fetched and stored
 *   agate; fwd=stale; fwd-status=304; ttl=600; detail=revalidated   stale, revalidated with a 304
 *   agate; fwd=uri-miss; collapsed; fwd-status=200    waited on another request's fill
 */

/** RFC 9211 §2.2 fwd values agate uses. `bypass` covers every request the cache does not look at (the detail
 * says why: method, body, rule, cache-off, no-space, retries, refused). */
export type FwdReason = "bypass" | "uri-miss" | "vary-miss" | "miss" | "request" | "stale";

export type CacheStatus = {
  /** §2.1 hit: answered from the store without going to the origin */
  hit: boolean;
  /** §2.2 why the request went to the origin (null: it did not) */
  fwd: FwdReason | null;
  /** §2.3 the status the origin answered */
  fwdStatus: number | null;
  /** §2.4 remaining freshness in seconds (negative: stale) */
  ttl: number | null;
  /** §2.5 the answer was stored */
  stored: boolean;
  /** §2.6 collapsed into another request's fill */
  collapsed: boolean;
  /** §2.8 agate's own words: a BypassReason, StaleReason, NoStoreReason, "revalidated", a FillOutcome or an error code */
  detail: string | null;
};

export const CACHE_NAME = "agate";

export const emptyCacheStatus = (): CacheStatus => ({ hit: false, fwd: null, fwdStatus: null, ttl: null, stored: false, collapsed: false, detail: null });

/** RFC 9211 §2: `agate; param; param=value…`; `detail` is a token when it can be, else a quoted string. */
export function formatCacheStatus(cs: CacheStatus, name = CACHE_NAME): string {
  let s = name;
  if (cs.hit) s += "; hit";
  if (cs.fwd !== null) s += `; fwd=${cs.fwd}`;
  if (cs.fwdStatus !== null) s += `; fwd-status=${cs.fwdStatus}`;
  if (cs.stored) s += "; stored";
  if (cs.collapsed) s += "; collapsed";
  if (cs.ttl !== null) s += `; ttl=${Math.trunc(cs.ttl)}`;
  if (cs.detail !== null && cs.detail !== "") {
    // RFC 8941 §3.3.4 token: starts with ALPHA or "*"; else a quoted string with " and \ escaped
    s += /^[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*$/.test(cs.detail)
      ? `; detail=${cs.detail}`
      : `; detail="${cs.detail.replace(/[\\"]/g, "\\$&").replace(/[^\x20-\x7e]/g, "?")}"`;
  }
  return s;
}
