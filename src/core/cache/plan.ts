/**
 * @module Layer 2's decisions, pure (STYLE "A request, top to bottom"; issue 8 §2): what to do with a request given
 * the stored entry and `now` (`planLookup`), what to do with the origin's answer (`planOriginResponse`), how a fill
 * ended (`FillOutcome`, the union fills report across threads) and what the access log calls each request
 * (`CachePhase`). `workers/cache-request.ts` carries the plans out; nothing here reads a clock or touches bytes.
 */
import {
  type CacheControl,
  type CacheDefaults,
  type Headers,
  type NoStoreReason,
  type StoredResponse,
  storedCc,
  currentAge,
  getAll,
  isStorable,
  lifetimeOf,
  listMembers,
  makeConditionalHeaders,
  makeStoredHeaders,
  num,
  parseCacheControl,
  updateStoredHeaders,
} from "./freshness";
import type { ErrorCode } from "../errors";

/**
 * How a fill ended, as every waiter (in any worker) learns it. Stored in the fills table's own `outcome` column
 * where it crosses threads, never inside an error message (a URL may contain any of these words).
 * - stored: committed to the store · delivered: streamed to the waiters, not stored (not storable)
 * - revalidated: a 304 freshened the stored entry; look again · superseded: the object was stored meanwhile; look again
 * - fallback: (patch) the object cannot be sliced; use the whole-object path · changed: (patch) the object changed upstream
 * - failed: the download failed · stale: the filler stopped beating (died); claim again · idle: no progress for too
 *   long — a tail's verdict (store.ts tailIdleMs), or the filler's when the origin sent no response head within
 *   `cache.origin_timeout_s` (answered 504, or stale-if-error)
 */
export type FillOutcome = "stored" | "delivered" | "revalidated" | "superseded" | "fallback" | "changed" | "failed" | "stale" | "idle";
/** The outcomes a filler reports with `fail(outcome, detail)`; "stale" is the store's own verdict. */
export type FillEndOutcome = Exclude<FillOutcome, "stored" | "delivered" | "stale">;

// ───────────────────────────── the access log's words ─────────────────────────────

/** Why a request did not go through the cache at all. */
export type BypassReason =
  /** the policy rule does not cache (e.g. a tunnel-only domain intercepted for policy) */
  | "rule"
  /** not GET/HEAD (unsafe methods also invalidate, RFC 9111 §4.4) */
  | "method"
  /** a GET/HEAD with a request body */
  | "body"
  /** cache mode has no store open (it is being switched on or off) */
  | "cache-off"
  /** refused before the cache looked (policy, Host mismatch, malformed target): `reason` is the error code */
  | "refused"
  /** the fill kept ending without an answer: the request went straight to the origin */
  | "retries"
  /** the cache disk is full: passed through, stored nothing, until space returns (issue 12) */
  | "no-space";

/** Like pingora's `CachePhase` (STYLE §9): what the cache did for one request, for logs, counters and tests. */
export type CachePhase = "hit" | "miss" | "stale" | "revalidated" | `bypass:${BypassReason}`;

/**
 * The access line's `reason` beside the phase: why it was a miss (absent, a RevalidateReason, a NoStoreReason when
 * the answer was not stored), "collapsed" (waited on another request's fill), "max-stale", "slices" (patch mode),
 * how a fill ended badly (a FillOutcome), or the error code of a refusal.
 */
export type CacheReason =
  | FetchReason
  | RevalidateReason
  | NoStoreReason
  | FillOutcome
  | ErrorCode
  | StaleReason
  | "collapsed"
  | "slices";

/** Why a stale response was served: the request allowed it (RFC 9111 §5.2.1.2), or RFC 5861 did. */
export type StaleReason = "max-stale" | "stale-while-revalidate" | "stale-if-error";

// ───────────────────────────── lookup (RFC 9111 §4, §5.2.1) ─────────────────────────────

export type RevalidateReason = "stale" | "no-cache" | "request-no-cache" | "max-age" | "min-fresh";
export type LookupResult =
  | { phase: "fresh" }
  | { phase: "revalidate"; reason: RevalidateReason }
  /** stale, but within the request's max-stale and not forbidden by the response */
  | { phase: "stale-ok" }
  /** stale, within the response's stale-while-revalidate window (RFC 5861 §3): serve it and revalidate behind */
  | { phase: "stale-swr" };
export type LookupPhase = LookupResult["phase"];

/** Request directives, with RFC 9111 §5.4's Pragma: no-cache standing in when there is no Cache-Control. */
function requestCc(reqHeaders: Headers): CacheControl {
  const values = getAll(reqHeaders, "cache-control");
  const cc = parseCacheControl(values);
  if (values.length === 0 && listMembers(reqHeaders, "pragma").some((p) => p.toLowerCase() === "no-cache")) {
    cc["no-cache"] = true;
  }
  return cc;
}

/**
 * May `stored` answer this request without contacting the origin? RFC 9111 §4.2 + §5.2. Order: response no-cache
 * (§5.2.2.4) always revalidates; request no-cache (§5.2.1.4, or Pragma §5.4); request max-age (§5.2.1.1); then
 * freshness — a fresh response may still fail min-fresh (§5.2.1.3); a stale one is served only within max-stale
 * (§5.2.1.2) and never when must-revalidate (§5.2.2.2), proxy-revalidate (§5.2.2.8) or s-maxage (§5.2.2.10, which
 * implies proxy-revalidate) forbid it. Vary is checked by key.ts; only-if-cached by `onlyIfCached`.
 */
export function lookupPhase(stored: StoredResponse, reqHeaders: Headers, now: number, d: CacheDefaults): LookupResult {
  const resCc = storedCc(stored);
  if (resCc["no-cache"] === true) return { phase: "revalidate", reason: "no-cache" };
  const reqCc = requestCc(reqHeaders);
  if (reqCc["no-cache"] !== undefined) return { phase: "revalidate", reason: "request-no-cache" };
  const age = currentAge(stored, now);
  const reqMaxAge = num(reqCc, "max-age");
  if (reqMaxAge !== undefined && age > reqMaxAge) return { phase: "revalidate", reason: "max-age" };
  const lifetime = lifetimeOf(stored, resCc, d).seconds;
  if (lifetime > age) {
    const minFresh = num(reqCc, "min-fresh");
    if (minFresh !== undefined && lifetime - age < minFresh) return { phase: "revalidate", reason: "min-fresh" };
    return { phase: "fresh" };
  }
  const mayServeStale = mayBeServedStale(resCc);
  // RFC 5861 §3: within stale-while-revalidate seconds of going stale, serve it and revalidate in the background.
  // Never past must-revalidate / proxy-revalidate / s-maxage (RFC 9111 §4.2.4: "MUST NOT ... when forbidden").
  const swr = num(resCc, "stale-while-revalidate");
  if (mayServeStale && swr !== undefined && age - lifetime <= swr) return { phase: "stale-swr" };
  const maxStale = reqCc["max-stale"];
  if (mayServeStale && (maxStale === true || (typeof maxStale === "number" && age - lifetime <= maxStale))) {
    return { phase: "stale-ok" };
  }
  return { phase: "revalidate", reason: "stale" };
}

/** RFC 9111 §4.2.4: a stale response is never served when must-revalidate (§5.2.2.2), proxy-revalidate (§5.2.2.8)
 * or s-maxage (§5.2.2.10, which implies proxy-revalidate) forbid it; response no-cache is checked by the callers. */
function mayBeServedStale(resCc: Readonly<CacheControl>): boolean {
  return resCc["must-revalidate"] === undefined && resCc["proxy-revalidate"] === undefined && resCc["s-maxage"] === undefined;
}

/**
 * RFC 5861 §4 stale-if-error: may `stored` (stale) answer this request because the origin is unreachable, timed
 * out or answered 5xx? The window is the response's stale-if-error, else the request's, else `fallbackS` — agate's
 * `[cache] stale_if_error_s`, which the caller passes for platform objects only (0 otherwise). Never when the
 * response says no-cache, must-revalidate, proxy-revalidate or s-maxage, nor when the request says no-cache (the
 * agent asked for the origin's answer, not ours).
 */
export function staleIfErrorAllows(stored: StoredResponse, reqHeaders: Headers, now: number, d: CacheDefaults, fallbackS: number): boolean {
  const resCc = storedCc(stored);
  if (resCc["no-cache"] !== undefined || !mayBeServedStale(resCc)) return false;
  const reqCc = requestCc(reqHeaders);
  if (reqCc["no-cache"] !== undefined) return false;
  const window = num(resCc, "stale-if-error") ?? num(reqCc, "stale-if-error") ?? fallbackS;
  const staleFor = currentAge(stored, now) - lifetimeOf(stored, resCc, d).seconds;
  return staleFor <= window;
}

/**
 * RFC 9111 §5.2.1.7: the client wants no upstream traffic. When `lookupPhase` says "revalidate" (or nothing is
 * stored) the cache answers 504 instead of going upstream.
 */
export function onlyIfCached(reqHeaders: Headers): boolean {
  return requestCc(reqHeaders)["only-if-cached"] !== undefined;
}

/** Why a request goes to the origin for the whole object. */
export type FetchReason = "absent";

/** What to do with a request, given what the store holds for it. */
export type LookupPlan =
  /** answer from the stored entry */
  | { do: "serve" }
  /** answer from the stale entry: the request allows it (max-stale), or stale-while-revalidate does — then
   * revalidate in the background with `headers` (RFC 5861 §3) */
  | { do: "serveStale"; reason: "max-stale" }
  | { do: "serveStale"; reason: "stale-while-revalidate"; headers: Headers }
  /** ask the origin whether the stored entry still holds, with these validators (may be empty: no validator) */
  | { do: "revalidate"; reason: RevalidateReason; headers: Headers }
  /** nothing usable is stored: fetch the whole object */
  | { do: "fetch"; reason: FetchReason }
  /** the request forbids going upstream and nothing fresh is stored */
  | { do: "reject"; code: "PX_ONLY_IF_CACHED" };

export type LookupOptions = {
  /** a 304 just confirmed this entry for this request: serve it even if it is stale on arrival (max-age=0) */
  validated?: boolean;
};

/**
 * The lookup phase of one request: `entry` is the stored response that matches it (Vary included), or null.
 * `validated` entries are served as they are (RFC 9111 §4.3.4: the 304 made them the response to this request).
 */
export function planLookup(
  entry: StoredResponse | null,
  reqHeaders: Headers,
  now: number,
  d: CacheDefaults,
  o: LookupOptions = {},
): LookupPlan {
  if (entry !== null) {
    if (o.validated) return { do: "serve" };
    const phase = lookupPhase(entry, reqHeaders, now, d);
    if (phase.phase === "fresh") return { do: "serve" };
    if (phase.phase === "stale-ok") return { do: "serveStale", reason: "max-stale" };
    if (phase.phase === "stale-swr") return { do: "serveStale", reason: "stale-while-revalidate", headers: makeConditionalHeaders(entry) };
    if (onlyIfCached(reqHeaders)) return { do: "reject", code: "PX_ONLY_IF_CACHED" };
    return { do: "revalidate", reason: phase.reason, headers: makeConditionalHeaders(entry) };
  }
  if (onlyIfCached(reqHeaders)) return { do: "reject", code: "PX_ONLY_IF_CACHED" };
  return { do: "fetch", reason: "absent" };
}

// ───────────────────────────── the origin's answer (RFC 9111 §3, §4.3.4) ─────────────────────────────

/** What to do with the head the origin sent for a fill. */
export type OriginPlan =
  /** store it: `headers` are what to keep (RFC 9111 §3.1), `vary` the response's Vary (null: none) */
  | { do: "store"; headers: Headers; vary: string | null }
  /** a 304 for the entry we revalidated: freshen it with these headers (RFC 9111 §4.3.4); the waiters look again */
  | { do: "freshen"; headers: Headers }
  /** not storable: stream it to this fill's waiters and drop it */
  | { do: "deliver"; reason: NoStoreReason };

/**
 * `req` is the agent's request (its method, headers and URL decide storability and artifact rules); `stale` the
 * entry we sent validators for, or null.
 */
export function planOriginResponse(
  req: { method: string; headers: Headers; url: string },
  res: { status: number; headers: Headers },
  stale: StoredResponse | null,
  d: CacheDefaults,
): OriginPlan {
  if (stale !== null && res.status === 304) return { do: "freshen", headers: updateStoredHeaders(stale.headers, res.headers) };
  const v = isStorable(req.method, req.headers, res.status, res.headers, { url: req.url, rules: d.rules });
  if (!v.ok) return { do: "deliver", reason: v.reason };
  const vary = getAll(res.headers, "vary").join(", ");
  return { do: "store", headers: makeStoredHeaders(res.headers), vary: vary === "" ? null : vary };
}
