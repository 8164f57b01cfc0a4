/**
 * @module Freshness rules for a shared cache (RFC 9111). Pure: `now` is always passed in (STYLE §2), nothing is
 * read from the clock, the disk or the environment. This file answers questions — may this response be stored,
 * how old is it, how long does it stay fresh, which headers validate it, which URIs a write invalidates — and
 * every "no" is a string reason (STYLE §9). Composing these answers into a decision for one request (serve,
 * revalidate, fetch…) is `plan.ts`'s job; moving bytes is `workers/*` and `store/*`'s.
 *
 * Headers are plain `[name, value][]` lines as they came off the wire; names compare case-insensitively.
 * Times are milliseconds since the epoch; ages and lifetimes are whole seconds (RFC 9111 §1.2.2 delta-seconds).
 */
import type { ArtifactRule } from "../config";

/** One header line per entry, names in any case. Local on purpose: this module does not depend on http1/head.ts. */
export type Headers = [string, string][];

/** Parsed Cache-Control: lower-cased names; numeric arguments as numbers; no-cache/private may carry field names. */
export type CacheControl = { [directive: string]: number | true | string[] };

/** A response as the store keeps it. `requestTime`/`responseTime` are ms, as in RFC 9111 §4.2.3. */
export type StoredResponse = {
  status: number;
  headers: Headers;
  /** when the request that produced this response was sent upstream */
  requestTime: number;
  /** when its head arrived */
  responseTime: number;
  /** the effective request URI, absolute */
  url: string;
  method: string;
  /** the request's headers, kept for Vary matching (key.ts) */
  requestHeaders: Headers;
};

export type CacheDefaults = {
  /** share of (Date − Last-Modified) used as a heuristic lifetime, RFC 9111 §4.2.2 suggests 10% */
  heuristicFraction: number;
  /** upper bound for a heuristic lifetime, in seconds */
  heuristicMaxS: number;
  /** Squid-like refresh_pattern rules from `[cache] rules` */
  rules: readonly ArtifactRule[];
  /** `[cache] negative_ttl_s`: heuristic lifetime of a 404/410 without freshness or Last-Modified (absent/0 = off) */
  negativeTtlS?: number;
};

/** Defaults used when the caller has nothing better; `rules` come from the config. */
export const CACHE_DEFAULTS: CacheDefaults = Object.freeze({
  heuristicFraction: 0.1,
  heuristicMaxS: 86_400,
  rules: Object.freeze([]) as readonly ArtifactRule[],
});

// RFC 9111 §1.2.2: a delta-seconds too large to represent is sent as 2^31.
const DELTA_SECONDS_MAX = 2_147_483_648;

// ───────────────────────────── header helpers (local, case-insensitive) ─────────────────────────────

/** Every value of a field (names case-insensitive). */
export function getAll(h: Headers, name: string): string[] {
  const out: string[] = [];
  for (const [k, v] of h) if (k.length === name.length && k.toLowerCase() === name) out.push(v);
  return out;
}

function getFirst(h: Headers, name: string): string | undefined {
  for (const [k, v] of h) if (k.length === name.length && k.toLowerCase() === name) return v;
  return undefined;
}

function has(h: Headers, name: string): boolean {
  return getFirst(h, name) !== undefined;
}

/** Comma-separated list members of every line of a field, trimmed, empty members dropped (RFC 9110 §5.6.1). */
export function listMembers(h: Headers, name: string): string[] {
  const out: string[] = [];
  for (const v of getAll(h, name)) {
    for (const m of v.split(",")) {
      const t = m.trim();
      if (t !== "") out.push(t);
    }
  }
  return out;
}

// ───────────────────────────── Cache-Control ─────────────────────────────

const NUMERIC = new Set(["max-age", "s-maxage", "max-stale", "min-fresh", "stale-while-revalidate", "stale-if-error"]);
const FIELD_LIST = new Set(["no-cache", "private"]);

const SP = 32, HTAB = 9, COMMA = 44, EQ = 61, DQUOTE = 34, BSLASH = 92;
const isWsCode = (c: number) => c === SP || c === HTAB;

/**
 * RFC 9111 §5.2: `directive [ "=" ( token / quoted-string ) ]`, comma-separated, over one or many field lines.
 * Quoted arguments may contain commas; `max-age="5"` is accepted like `max-age=5` (§5.2, "recipients SHOULD accept
 * both forms"). Duplicates take the most restrictive reading (§4.2.1): the smallest max-age, an unqualified
 * no-cache/private over a qualified one (qualified lists merge). A numeric directive whose argument is not a
 * non-negative integer is invalid and reads as 0 (stale, §4.2.1); an overflowing one is clamped to 2^31 (§1.2.2).
 */
export function parseCacheControl(values: string | string[] | undefined): CacheControl {
  const out: CacheControl = {};
  if (values === undefined) return out;
  if (typeof values === "string") parseCcInto(values, out);
  else for (const v of values) parseCcInto(v, out);
  return out;
}

// Hot path (every lookup): charCodeAt and slices, no per-character string building.
function parseCcInto(s: string, out: CacheControl): void {
  const n = s.length;
  let i = 0;
  while (i < n) {
    let c = s.charCodeAt(i);
    while (i < n && (isWsCode(c) || c === COMMA)) c = s.charCodeAt(++i);
    if (i >= n) break;
    const start = i;
    while (i < n && c !== EQ && c !== COMMA && c !== DQUOTE && !isWsCode(c)) c = s.charCodeAt(++i);
    const name = s.slice(start, i).toLowerCase();
    while (i < n && isWsCode(c)) c = s.charCodeAt(++i);
    let arg: string | undefined;
    if (c === EQ) {
      c = s.charCodeAt(++i);
      while (i < n && isWsCode(c)) c = s.charCodeAt(++i);
      if (c === DQUOTE) {
        // quoted-string with quoted-pair (RFC 9110 §5.6.4); an unterminated one runs to the end
        const a = ++i;
        let escaped = false;
        c = s.charCodeAt(i);
        while (i < n && c !== DQUOTE) {
          if (c === BSLASH) {
            escaped = true;
            i++;
          }
          c = s.charCodeAt(++i);
        }
        arg = escaped ? s.slice(a, Math.min(i, n)).replace(/\\(.)/g, "$1") : s.slice(a, Math.min(i, n));
        c = s.charCodeAt(++i);
      } else {
        const a = i;
        while (i < n && c !== COMMA && !isWsCode(c)) c = s.charCodeAt(++i);
        arg = s.slice(a, i);
      }
    }
    // anything else up to the next comma is junk; skip it without being fooled by quotes
    let inQuote = false;
    while (i < n && (inQuote || c !== COMMA)) {
      if (c === DQUOTE) inQuote = !inQuote;
      else if (inQuote && c === BSLASH) i++;
      c = s.charCodeAt(++i);
    }
    if (name === "" || name === "__proto__") continue;
    addDirective(out, name, arg);
  }
}

function addDirective(out: CacheControl, name: string, arg: string | undefined): void {
  const present = Object.hasOwn(out, name);
  if (NUMERIC.has(name)) {
    // RFC 9111 §5.2.1.2: max-stale without a value means "any staleness" (a numeric one is stricter and wins)
    if (arg === undefined && name === "max-stale") {
      if (!present) out[name] = true;
      return;
    }
    // RFC 9111 §1.2.2: delta-seconds is 1*DIGIT. Anything else (`1.5`, `100a`, `-5`, empty, missing) makes the
    // directive invalid, and §4.2.1 encourages treating invalid freshness information as stale: it reads as 0 —
    // except min-fresh, where 0 would be the lenient reading, so an invalid one is dropped.
    const valid = arg !== undefined && /^[0-9]+$/.test(arg);
    if (!valid && name === "min-fresh") return;
    const v = valid ? Math.min(Number(arg), DELTA_SECONDS_MAX) : 0;
    const prev = out[name];
    // RFC 9111 §4.2.1: a directive repeated with different values takes the most restrictive reading — the
    // shortest lifetime / staleness allowance, the longest min-fresh.
    if (typeof prev === "number") out[name] = name === "min-fresh" ? Math.max(prev, v) : Math.min(prev, v);
    else out[name] = v;
    return;
  }
  if (FIELD_LIST.has(name)) {
    const fields = arg === undefined ? [] : arg.split(",").map((f) => f.trim().toLowerCase()).filter((f) => f !== "");
    const prev = out[name];
    // `no-cache=""` names no field: treat it as the unqualified (stricter) form
    if (fields.length === 0) out[name] = true;
    else if (prev === true) return;
    else if (Array.isArray(prev)) for (const f of fields) prev.includes(f) || prev.push(f);
    else out[name] = fields;
    return;
  }
  if (!present) out[name] = true;
}

export const ccOf = (h: Headers): CacheControl => parseCacheControl(getAll(h, "cache-control"));
export const num = (cc: CacheControl, name: string): number | undefined => {
  const v = cc[name];
  return typeof v === "number" ? v : undefined;
};

// ───────────────────────────── HTTP-date ─────────────────────────────

const MONTHS: Record<string, number> = {
  jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11,
};
const IMF = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const RFC850 = /^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const ASCTIME = /^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

/**
 * RFC 9110 §5.6.7: IMF-fixdate, plus the obsolete RFC 850 and asctime forms a recipient must accept. Returns ms since
 * the epoch, or null for anything else (e.g. `Expires: 0`). A two-digit RFC 850 year more than 50 years ahead of
 * `now` (default: the date's own century guess) belongs to the previous century.
 */
export function parseHttpDate(s: string | undefined, now?: number): number | null {
  if (s === undefined) return null;
  const t = s.trim();
  let d: number, mon: string, y: number, hh: number, mm: number, ss: number;
  let m = IMF.exec(t);
  if (m) {
    [d, mon, y, hh, mm, ss] = [+m[1]!, m[2]!, +m[3]!, +m[4]!, +m[5]!, +m[6]!];
  } else if ((m = RFC850.exec(t))) {
    [d, mon, y, hh, mm, ss] = [+m[1]!, m[2]!, +m[3]!, +m[4]!, +m[5]!, +m[6]!];
    const thisYear = new Date(now ?? Date.UTC(2000, 0, 1)).getUTCFullYear();
    y += Math.floor(thisYear / 100) * 100;
    if (y > thisYear + 50) y -= 100;
  } else if ((m = ASCTIME.exec(t))) {
    [mon, d, hh, mm, ss, y] = [m[1]!, +m[2]!.trim(), +m[3]!, +m[4]!, +m[5]!, +m[6]!];
  } else return null;
  const month = MONTHS[mon.toLowerCase()];
  if (month === undefined || hh > 23 || mm > 59 || ss > 60 || d < 1) return null;
  const ms = Date.UTC(y, month, d, hh, mm, Math.min(ss, 59));
  if (new Date(ms).getUTCDate() !== d) return null; // 31 Feb and friends
  return ms;
}

/** RFC 9110 §5.6.7 IMF-fixdate for a ms time. */
export function formatHttpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

// ───────────────────────────── storability (RFC 9111 §3) ─────────────────────────────

export type NoStoreReason =
  | "method"
  | "status"
  | "no-store"
  | "private"
  | "authorization"
  | "vary-star"
  | "no-validator-or-lifetime"
  | "request-no-store"
  | "partial";

/** RFC 9111 §4.2.2 / RFC 9110 §15.1: heuristically cacheable status codes. */
export const HEURISTIC_STATUSES: ReadonlySet<number> = new Set([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]);

/**
 * Final status codes whose semantics this cache knows. RFC 9111 §3 asks for "understood" only when must-understand
 * is present (§5.2.2.3); otherwise any final status with explicit freshness is stored (a `299` or `599` with
 * max-age). 304 is an answer to a conditional, never stored on its own; 206 is handled by the slice code.
 */
const UNDERSTOOD_STATUSES: ReadonlySet<number> = new Set([
  200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308,
  400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 426, 429, 431,
  500, 501, 502, 503, 504, 505,
]);

/**
 * May a shared cache store this response? RFC 9111 §3 in order: method, status, no-store (request §5.2.1.5 and
 * response §5.2.2.5), private §5.2.2.7, Authorization §3.5, Vary: * §4.1, and finally "explicit lifetime, public,
 * heuristically cacheable status". agate's artifact rules give a lifetime only to what is heuristically cacheable
 * already (`lifetimeOf`), so they no longer widen this; `_artifact` stays for callers. Only GET responses are
 * stored; HEAD is answered from them (key.ts).
 */
export function isStorable(
  reqMethod: string,
  reqHeaders: Headers,
  status: number,
  resHeaders: Headers,
  _artifact?: { url: string; rules: readonly ArtifactRule[] },
): { ok: true } | { ok: false; reason: NoStoreReason } {
  if (reqMethod !== "GET") return { ok: false, reason: "method" };
  // Slices (206) are stored by the patch code, which knows the Content-Range; this decides whole responses.
  if (status === 206) return { ok: false, reason: "partial" };
  // RFC 9111 §3: the status must be final (1xx are interim, RFC 9110 §15.2); 304 is never stored on its own.
  if (status < 200 || status > 999 || status === 304) return { ok: false, reason: "status" };
  const reqCc = ccOf(reqHeaders);
  if (reqCc["no-store"] !== undefined) return { ok: false, reason: "request-no-store" };
  const cc = ccOf(resHeaders);
  // RFC 9111 §5.2.2.3: with must-understand, a status whose requirements the cache does not know is never stored.
  if (cc["must-understand"] !== undefined && !UNDERSTOOD_STATUSES.has(status)) return { ok: false, reason: "status" };
  // RFC 9111 §5.2.2.3: with must-understand, a cache that understands the status ignores no-store.
  if (cc["no-store"] !== undefined && cc["must-understand"] === undefined) return { ok: false, reason: "no-store" };
  // RFC 9111 §5.2.2.7: unqualified private forbids a shared cache; private="f" only forbids storing field f
  // (makeStoredHeaders drops it).
  if (cc["private"] === true) return { ok: false, reason: "private" };
  // RFC 9111 §3.5: a shared cache reuses answers to authorized requests only when the origin explicitly allows it.
  if (
    has(reqHeaders, "authorization") &&
    cc["must-revalidate"] === undefined &&
    cc["public"] === undefined &&
    cc["s-maxage"] === undefined
  ) {
    return { ok: false, reason: "authorization" };
  }
  // RFC 9111 §4.1: a Vary containing "*" never matches, so storing it would only waste space.
  if (listMembers(resHeaders, "vary").includes("*")) return { ok: false, reason: "vary-star" };
  if (
    cc["public"] !== undefined ||
    cc["max-age"] !== undefined ||
    cc["s-maxage"] !== undefined ||
    has(resHeaders, "expires") ||
    // RFC 9111 §4.2.2: heuristic freshness (agate's rules are one) only for heuristically cacheable statuses
    HEURISTIC_STATUSES.has(status)
  ) {
    return { ok: true };
  }
  return { ok: false, reason: "no-validator-or-lifetime" };
}

const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
]);
// RFC 9111 §3.1: fields specific to the proxy a cache uses upstream are never stored.
const PROXY_FIELDS = new Set(["proxy-authenticate", "proxy-authentication-info", "proxy-authorization"]);

function connectionListed(h: Headers): Set<string> {
  return new Set(listMembers(h, "connection").map((f) => f.toLowerCase()));
}

/**
 * The headers to store for a response, RFC 9111 §3.1: everything the origin sent except Connection and the fields it
 * lists, other hop-by-hop fields (RFC 9110 §7.6.1), proxy authentication fields, and the fields named by
 * `private="…"` (§5.2.2.7) and `no-cache="…"` (§5.2.2.4, which allows storing the rest of the response).
 */
export function makeStoredHeaders(resHeaders: Headers): Headers {
  const cc = ccOf(resHeaders);
  const drop = connectionListed(resHeaders);
  for (const d of ["private", "no-cache"]) {
    const v = cc[d];
    if (Array.isArray(v)) for (const f of v) drop.add(f);
  }
  return resHeaders.filter(([k]) => {
    const l = k.toLowerCase();
    return !HOP_BY_HOP.has(l) && !PROXY_FIELDS.has(l) && !drop.has(l);
  });
}

// ───────────────────────────── age and lifetime (RFC 9111 §4.2) ─────────────────────────────

/**
 * What a stored response's own header fields say, worked out once per StoredResponse object: its Cache-Control, Date,
 * Age, Expires and Last-Modified. The store's lookup memo hands a hot object's hits the same read-only Entry and
 * fill.ts's `toStored` the same StoredResponse for it, so a hit no longer parses them again (they were ~15 % of a
 * worker's sampled JavaScript per 1 KiB keep-alive hit: `parseHttpDate` three times, `parseCacheControl` twice). A
 * StoredResponse is never changed once made (a 304's new headers make a new Entry, so a new one); the Cache-Control
 * object handed out is frozen, so a caller that tried to change it would fail loudly instead of changing the memo.
 */
type StoredFacts = {
  cc: Readonly<CacheControl>;
  /** Date in ms; without one, the time it was received (RFC 9110 §6.6.1) */
  dateMs: number;
  /** the Age field's value in seconds (0 when absent or invalid: `ageValue`) */
  ageS: number;
  /** Expires in ms: undefined without the field, null when it is not a valid HTTP-date */
  expiresMs: number | null | undefined;
  /** Last-Modified in ms, or null */
  lastModifiedMs: number | null;
};
const FACTS = new WeakMap<StoredResponse, StoredFacts>();

function factsOf(res: StoredResponse): StoredFacts {
  let f = FACTS.get(res);
  if (f !== undefined) return f;
  const expires = getFirst(res.headers, "expires");
  f = {
    cc: Object.freeze(ccOf(res.headers)),
    dateMs: parseHttpDate(getFirst(res.headers, "date")) ?? res.responseTime,
    ageS: ageValue(res.headers),
    expiresMs: expires === undefined ? undefined : parseHttpDate(expires, res.responseTime),
    lastModifiedMs: parseHttpDate(getFirst(res.headers, "last-modified"), res.responseTime),
  };
  FACTS.set(res, f);
  return f;
}

/** A stored response's parsed Cache-Control (read-only; parsed once per StoredResponse, see `factsOf`). */
export const storedCc = (res: StoredResponse): Readonly<CacheControl> => factsOf(res).cc;

/** The response's Date in ms; without one, the time it was received (RFC 9110 §6.6.1). */
function dateValue(res: StoredResponse): number {
  return factsOf(res).dateMs;
}

/**
 * RFC 9111 §5.1: "a cache encountering a message with a list-based Age field value SHOULD use the first member",
 * so `Age: 10, 20` and two Age lines both read as 10 (the first member of the combined list, RFC 9110 §5.3); "if
 * the field value ... is invalid (e.g., it contains something other than a non-negative integer), a cache SHOULD
 * ignore the field" — `Age: 1.5`, `-5`, `abc` count as 0 (the apparent age still applies).
 */
function ageValue(h: Headers): number {
  const v = getFirst(h, "age");
  if (v === undefined) return 0;
  const first = v.split(",")[0]!.trim();
  return /^[0-9]+$/.test(first) ? Math.min(Number(first), DELTA_SECONDS_MAX) : 0;
}

/** RFC 9111 §4.2.3, in whole seconds. */
export function currentAge(res: StoredResponse, now: number): number {
  const apparentAge = Math.max(0, res.responseTime - dateValue(res));
  const responseDelay = Math.max(0, res.responseTime - res.requestTime);
  const correctedAgeValue = factsOf(res).ageS * 1000 + responseDelay;
  const correctedInitialAge = Math.max(apparentAge, correctedAgeValue);
  const residentTime = Math.max(0, now - res.responseTime);
  return Math.floor((correctedInitialAge + residentTime) / 1000);
}

/** RFC 9111 §5.1: the Age a cache sends with a stored response, clamped to 2^31. */
export function ageHeaderValue(res: StoredResponse, now: number): string {
  return String(Math.min(currentAge(res, now), DELTA_SECONDS_MAX));
}

export type LifetimeSource = "s-maxage" | "max-age" | "expires" | "heuristic" | "rule" | "negative" | "none";

/** What `negativeTtlS` covers: 404 and 410 (RFC 9110 §15.5.5, §15.5.11), heuristically cacheable (§15.1). */
const NEGATIVE_STATUSES: ReadonlySet<number> = new Set([404, 410]);

/**
 * RFC 9111 §4.2.1, for a shared cache: s-maxage, then max-age, then Expires − Date (an invalid Expires means
 * "already expired"). Without an explicit lifetime, a matching artifact rule gives one (Squid's refresh_pattern);
 * otherwise, with Last-Modified and a heuristically cacheable status or `public`, §4.2.2's heuristic: a fraction of
 * (Date − Last-Modified), capped.
 */
export function freshnessLifetime(
  res: StoredResponse,
  d: CacheDefaults,
): { seconds: number; source: LifetimeSource } {
  return lifetimeOf(res, storedCc(res), d);
}

/** `freshnessLifetime` with the response's Cache-Control already parsed (the lookup parses it once). */
export function lifetimeOf(res: StoredResponse, cc: Readonly<CacheControl>, d: CacheDefaults): { seconds: number; source: LifetimeSource } {
  // RFC 9111 §5.2.2.10: s-maxage overrides max-age and Expires in a shared cache.
  const sMaxage = num(cc, "s-maxage");
  if (sMaxage !== undefined) return { seconds: sMaxage, source: "s-maxage" };
  const maxAge = num(cc, "max-age");
  if (maxAge !== undefined) return { seconds: maxAge, source: "max-age" };
  const facts = factsOf(res);
  if (facts.expiresMs !== undefined) {
    const e = facts.expiresMs;
    // RFC 9111 §5.3: "a cache recipient MUST interpret invalid date formats, especially "0", as in the past"
    if (e === null) return { seconds: 0, source: "expires" };
    return { seconds: Math.max(0, Math.floor((e - dateValue(res)) / 1000)), source: "expires" };
  }
  // RFC 9111 §4.2.2: a rule's lifetime is a heuristic, so it applies only to heuristically cacheable statuses
  // (RFC 9110 §15.1): a 503 the origin says nothing about is never kept for a rule's max_age_s.
  const heuristic = HEURISTIC_STATUSES.has(res.status);
  const rule = heuristic ? matchArtifactRule(res.url, d.rules) : null;
  if (rule !== null) return { seconds: rule.max_age_s, source: "rule" };
  const lm = facts.lastModifiedMs;
  if (lm !== null && (heuristic || cc["public"] !== undefined)) {
    const since = Math.max(0, dateValue(res) - lm) / 1000;
    return { seconds: Math.floor(Math.min(since * d.heuristicFraction, d.heuristicMaxS)), source: "heuristic" };
  }
  // RFC 9111 §4.2.2 lets a cache pick a heuristic lifetime for a heuristically cacheable status; for a 404/410 with
  // nothing to base one on, a short fixed one (Squid's negative_ttl, nginx's proxy_cache_valid 404), so a file
  // missing on the vendor's site costs one upstream request per `negativeTtlS`, not one per agent. Never when the
  // origin restricted reuse: no-cache (§5.2.2.4, also qualified), private (§5.2.2.7, also qualified), no-store
  // (§5.2.2.5), or an answer to a request with Authorization (§3.5: reuse only with explicit permission).
  const neg = d.negativeTtlS ?? 0;
  const restricted = cc["no-cache"] !== undefined || cc["private"] !== undefined || cc["no-store"] !== undefined || has(res.requestHeaders, "authorization");
  if (neg > 0 && NEGATIVE_STATUSES.has(res.status) && !restricted) return { seconds: neg, source: "negative" };
  return { seconds: 0, source: "none" };
}

// ───────────────────────────── artifact rules ─────────────────────────────

const ruleRegex = new WeakMap<ArtifactRule, RegExp>();

function globRegex(rule: ArtifactRule): RegExp {
  let re = ruleRegex.get(rule);
  if (re === undefined) {
    const body = rule.path.split("*").map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".*");
    re = new RegExp(`^${body}$`);
    ruleRegex.set(rule, re);
  }
  return re;
}

/**
 * The first rule whose host equals the URL's host or is a parent domain of it (label boundary: "microsoft.com"
 * matches "dl.microsoft.com", not "notmicrosoft.com"), and whose path glob (`*` = any run of characters, `/`
 * included) matches the whole path, query excluded. Regexes are built once per rule object (STYLE §8).
 */
export function matchArtifactRule(url: string, rules: readonly ArtifactRule[]): ArtifactRule | null {
  if (rules.length === 0) return null;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const host = u.hostname.toLowerCase().replace(/\.$/, "");
  for (const r of rules) {
    const rh = r.host.toLowerCase().replace(/^\*?\./, "").replace(/\.$/, "");
    if (host !== rh && !host.endsWith("." + rh)) continue;
    if (globRegex(r).test(u.pathname)) return r;
  }
  return null;
}

// ───────────────────────────── validation (RFC 9111 §4.3) ─────────────────────────────

/**
 * RFC 9111 §4.3.1: validators for a conditional request upstream — If-None-Match with the stored ETag, and
 * If-Modified-Since with the stored Last-Modified. The caller adds these to the agent's request (after dropping the
 * agent's own conditionals, which the cache answers itself with `answerConditional`).
 */
export function makeConditionalHeaders(stored: StoredResponse): Headers {
  const out: Headers = [];
  const etag = getFirst(stored.headers, "etag");
  if (etag !== undefined && etag.trim() !== "") out.push(["if-none-match", etag.trim()]);
  const lm = getFirst(stored.headers, "last-modified");
  if (lm !== undefined && lm.trim() !== "") out.push(["if-modified-since", lm.trim()]);
  return out;
}

/**
 * RFC 9111 §3.2 / §4.3.4: freshen a stored response with a 304. Each field in the 304 replaces all stored lines of
 * that name; other stored fields stay. Not taken from the 304: Content-Length (§3.2), hop-by-hop and
 * Connection-listed fields and proxy fields (§3.1), and — to keep the stored bytes consistent with their metadata,
 * which §3.2 allows — Content-Encoding and Content-Range. The caller also resets requestTime/responseTime.
 */
export function updateStoredHeaders(stored: Headers, notModified: Headers): Headers {
  const skip = connectionListed(notModified);
  for (const f of ["content-length", "content-encoding", "content-range"]) skip.add(f);
  const incoming = notModified.filter(([k]) => {
    const l = k.toLowerCase();
    return !skip.has(l) && !HOP_BY_HOP.has(l) && !PROXY_FIELDS.has(l);
  });
  const replaced = new Set(incoming.map(([k]) => k.toLowerCase()));
  const kept = stored.filter(([k]) => !replaced.has(k.toLowerCase()));
  return [...kept, ...incoming];
}

// ───────────────────────────── invalidation (RFC 9111 §4.4) ─────────────────────────────

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

/** RFC 9110 §9.2.1: methods are case-sensitive, and a method whose safety is unknown counts as unsafe (§4.4). */
export function isUnsafeMethod(m: string): boolean {
  return !SAFE_METHODS.has(m);
}

/**
 * RFC 9111 §4.4: after a 2xx/3xx answer to an unsafe request (the caller checks `isUnsafeMethod`), invalidate the
 * target URI, and Location / Content-Location when they resolve to the same origin (a different origin must not be
 * invalidated: it would let one site evict another's entries). Returns absolute URLs without fragments, deduplicated.
 */
export function invalidationTargets(reqUrl: string, status: number, resHeaders: Headers): string[] {
  if (status < 200 || status > 399) return [];
  let base: URL;
  try {
    base = new URL(reqUrl);
  } catch {
    return [];
  }
  base.hash = "";
  const out = [base.href];
  for (const f of ["location", "content-location"]) {
    const v = getFirst(resHeaders, f);
    if (v === undefined || v.trim() === "") continue;
    let u: URL;
    try {
      u = new URL(v.trim(), base);
    } catch {
      continue;
    }
    u.hash = "";
    if (u.origin !== base.origin) continue;
    if (!out.includes(u.href)) out.push(u.href);
  }
  return out;
}
