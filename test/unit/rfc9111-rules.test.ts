/**
 * @module Issue 9's rules, table-driven with a fixed clock, each naming its section: the age calculation (RFC 9111
 * §4.2.3, §5.1), stale on arrival, heuristic freshness only for heuristically cacheable codes (§4.2.2), answering a
 * stored response (RFC 9110 §13.2.2, §14, §15.4.5: core/cache/serve.ts), stale-while-revalidate and
 * stale-if-error (RFC 5861, core/cache/plan.ts) and the Cache-Status field (RFC 9211).
 */
import { describe, expect, test } from "bun:test";
import { type ArtifactRule, parseConfig } from "../../src/core/config";
import { type CacheDefaults, type Headers, type StoredResponse, currentAge, freshnessLifetime } from "../../src/core/cache/freshness";
import { type LookupResult, lookupPhase, planLookup, staleIfErrorAllows } from "../../src/core/cache/plan";
import { type ServePlan, makeNotModifiedHeaders, planServe } from "../../src/core/cache/serve";
import { type CacheStatus, emptyCacheStatus, formatCacheStatus } from "../../src/core/cache/cache-status";

const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
const S = 1000;
const DAY = 86_400;
const httpDate = (ms: number) => new Date(ms).toUTCString();
const D: CacheDefaults = { heuristicFraction: 0.1, heuristicMaxS: DAY, rules: [] };

/** Sent at `req`, head received at `resp` (ms before NOW), with these headers. */
const res = (headers: Headers, o: Partial<StoredResponse> = {}): StoredResponse => ({
  status: 200,
  headers,
  requestTime: NOW,
  responseTime: NOW,
  url: "https://dl.example.com/m.json",
  method: "GET",
  requestHeaders: [],
  ...o,
});

describe("RFC 9111 §4.2.3 age calculation", () => {
  const recv = NOW - 100 * S; // the head arrived 100 s ago: resident time 100
  test.each<[string, StoredResponse, number]>([
    ["resident time only", res([["Date", httpDate(recv)]], { requestTime: recv, responseTime: recv }), 100],
    ["the origin's Age is kept (corrected_age_value)", res([["Date", httpDate(recv)], ["Age", "7200"]], { requestTime: recv, responseTime: recv }), 7300],
    ["response delay is added to Age", res([["Date", httpDate(recv)], ["Age", "10"]], { requestTime: recv - 4 * S, responseTime: recv }), 114],
    ["apparent age (Date in the past) when larger than Age", res([["Date", httpDate(recv - 50 * S)], ["Age", "10"]], { requestTime: recv, responseTime: recv }), 150],
    ["a Date in the future gives apparent age 0", res([["Date", httpDate(recv + 50 * S)]], { requestTime: recv, responseTime: recv }), 100],
    ["§5.1 Age on two lines: the first member", res([["Date", httpDate(recv)], ["Age", "30"], ["Age", "999"]], { requestTime: recv, responseTime: recv }), 130],
    ["§5.1 a list-valued Age: the first member", res([["Date", httpDate(recv)], ["Age", "30, 999"]], { requestTime: recv, responseTime: recv }), 130],
    ["§5.1 an invalid Age (1.5) is ignored", res([["Date", httpDate(recv)], ["Age", "1.5"]], { requestTime: recv, responseTime: recv }), 100],
    ["§5.1 an invalid Age (-5) is ignored", res([["Date", httpDate(recv)], ["Age", "-5"]], { requestTime: recv, responseTime: recv }), 100],
    ["§5.1 an invalid Age (empty) is ignored", res([["Date", httpDate(recv)], ["Age", ""]], { requestTime: recv, responseTime: recv }), 100],
  ])("%s", (_t, r, expected) => expect(currentAge(r, NOW)).toBe(expected));
});

describe("RFC 9111 §4.2 freshness by the parsed directives", () => {
  test.each<[string, Headers, number, LookupResult["phase"]]>([
    ["stale on arrival: Age beyond max-age", [["Cache-Control", "max-age=600"], ["Age", "900"]], 0, "revalidate"],
    ["Age below max-age: fresh", [["Cache-Control", "max-age=10800"], ["Age", "7200"]], 0, "fresh"],
    ["§1.2.2 max-age=1.5 is invalid: not fresh by it", [["Cache-Control", "max-age=1.5"]], 0, "revalidate"],
    ["§1.2.2 max-age=100a is invalid", [["Cache-Control", "max-age=100a"]], 0, "revalidate"],
    ["§1.2.2 max-age=-5 is invalid", [["Cache-Control", "max-age=-5"]], 0, "revalidate"],
    ["§1.2.2 max-age= (empty) is invalid", [["Cache-Control", "max-age="]], 0, "revalidate"],
    ["§5.2 max-age=\"600\" (quoted) is accepted", [["Cache-Control", 'max-age="600"']], 10, "fresh"],
    ["§4.2.1 max-age repeated: the smallest decides", [["Cache-Control", "max-age=600"], ["Cache-Control", "max-age=5"]], 10, "revalidate"],
    ["§5.3 Expires invalid: already expired", [["Expires", "soon"]], 0, "revalidate"],
    ["RFC 9110 §5.6.7 Expires in RFC 850 form", [["Expires", "Thursday, 15-Jan-25 13:00:00 GMT"]], 0, "fresh"],
    ["RFC 9110 §5.6.7 Expires in asctime form", [["Expires", "Wed Jan 15 13:00:00 2025"]], 0, "fresh"],
  ])("%s", (_t, headers, ageS, phase) => {
    const t = NOW - ageS * S;
    expect(lookupPhase(res([["Date", httpDate(t)], ...headers], { requestTime: t, responseTime: t }), [], NOW, D).phase).toBe(phase);
  });

  const RULES: ArtifactRule[] = [{ host: "example.com", path: "/*", max_age_s: DAY }];
  test.each<[string, number, number]>([
    ["§4.2.2 an artifact rule gives a 200 its lifetime", 200, DAY],
    ["§4.2.2 and a 404 (heuristically cacheable, RFC 9110 §15.1)", 404, DAY],
    ["§4.2.2 and a 410", 410, DAY],
    ["§4.2.2 but never a 503 (not heuristically cacheable)", 503, 0],
    ["§4.2.2 nor a 302", 302, 0],
  ])("%s", (_t, status, seconds) => expect(freshnessLifetime(res([], { status }), { ...D, rules: RULES }).seconds).toBe(seconds));
});

describe("RFC 9111 §4.2.2 negative answers: cache.negative_ttl_s (Squid's negative_ttl)", () => {
  const NEG: CacheDefaults = { ...D, negativeTtlS: 60 };
  const lm = httpDate(NOW - 10 * DAY * S);
  test.each<[string, number, Headers, Headers, CacheDefaults, number, string]>([
    ["a 404 with nothing to base a lifetime on: negative_ttl_s", 404, [], [], NEG, 60, "negative"],
    ["a 410 (RFC 9110 §15.5.11) too", 410, [], [], NEG, 60, "negative"],
    ["0 = off", 404, [], [], { ...D, negativeTtlS: 0 }, 0, "none"],
    ["explicit freshness wins (§4.2.1)", 404, [["Cache-Control", "max-age=5"]], [], NEG, 5, "max-age"],
    ["Last-Modified: the §4.2.2 heuristic instead", 404, [["Last-Modified", lm]], [], NEG, DAY, "heuristic"],
    ["never with no-cache (§5.2.2.4)", 404, [["Cache-Control", "no-cache"]], [], NEG, 0, "none"],
    ["never with qualified no-cache", 404, [["Cache-Control", 'no-cache="set-cookie"']], [], NEG, 0, "none"],
    ["never with private (§5.2.2.7)", 404, [["Cache-Control", 'private="x"']], [], NEG, 0, "none"],
    ["never with no-store (§5.2.2.5)", 404, [["Cache-Control", "no-store"]], [], NEG, 0, "none"],
    ["never for an answer to an Authorization request (§3.5)", 404, [["Cache-Control", "public"]], [["Authorization", "Bearer t"]], NEG, 0, "none"],
    ["not other statuses: a 403", 403, [], [], NEG, 0, "none"],
    ["not a 200", 200, [], [], NEG, 0, "none"],
  ])("%s", (_t, status, headers, reqHeaders, d, seconds, source) => {
    expect(freshnessLifetime(res([["Date", httpDate(NOW)], ...headers], { status, requestHeaders: reqHeaders }), d)).toEqual({ seconds, source: source as never });
  });
});

describe("RFC 5861 stale-while-revalidate and stale-if-error", () => {
  const stale = (cc: string, staleS: number) => {
    const t = NOW - (60 + staleS) * S;
    return res([["Date", httpDate(t)], ["Cache-Control", cc], ["ETag", '"e"']], { requestTime: t, responseTime: t });
  };
  test.each<[string, string, number, Headers, string]>([
    ["§3 within the swr window: serve stale, revalidate behind", "max-age=60, stale-while-revalidate=30", 10, [], "serveStale"],
    ["§3 past the window: revalidate first", "max-age=60, stale-while-revalidate=30", 40, [], "revalidate"],
    ["§3 never with must-revalidate (RFC 9111 §4.2.4)", "max-age=60, stale-while-revalidate=30, must-revalidate", 10, [], "revalidate"],
    ["§3 never with proxy-revalidate", "max-age=60, stale-while-revalidate=30, proxy-revalidate", 10, [], "revalidate"],
    ["§3 never with s-maxage", "s-maxage=60, stale-while-revalidate=30", 10, [], "revalidate"],
    ["§3 never with no-cache", "max-age=60, stale-while-revalidate=30, no-cache", 10, [], "revalidate"],
    ["§3 never when the request says no-cache", "max-age=60, stale-while-revalidate=30", 10, [["Cache-Control", "no-cache"]], "revalidate"],
  ])("%s", (_t, cc, staleS, req, expected) => {
    const p = planLookup(stale(cc, staleS), req, NOW, D);
    expect(p.do).toBe(expected as typeof p.do);
    if (p.do === "serveStale") expect(p).toEqual({ do: "serveStale", reason: "stale-while-revalidate", headers: [["if-none-match", '"e"']] });
  });

  test.each<[string, string, number, Headers, number, boolean]>([
    ["§4 within the response's stale-if-error", "max-age=60, stale-if-error=300", 100, [], 0, true],
    ["§4 past it", "max-age=60, stale-if-error=300", 400, [], 0, false],
    ["§4 the response's window beats agate's fallback", "max-age=60, stale-if-error=300", 400, [], DAY, false],
    ["§4 the request's stale-if-error when the response says nothing", "max-age=60", 100, [["Cache-Control", "stale-if-error=200"]], 0, true],
    ["[cache] stale_if_error_s when nobody says anything", "max-age=60", 3600, [], DAY, true],
    ["…and not without it", "max-age=60", 3600, [], 0, false],
    ["never past must-revalidate", "max-age=60, must-revalidate, stale-if-error=300", 10, [], DAY, false],
    ["never past proxy-revalidate", "max-age=60, proxy-revalidate", 10, [], DAY, false],
    ["never past s-maxage", "s-maxage=60", 10, [], DAY, false],
    ["never past no-cache", "max-age=60, no-cache", 10, [], DAY, false],
    ["never when the request says no-cache", "max-age=60", 10, [["Cache-Control", "no-cache"]], DAY, false],
  ])("%s", (_t, cc, staleS, req, fallback, ok) => expect(staleIfErrorAllows(stale(cc, staleS), req, NOW, D, fallback)).toBe(ok));
});

describe("answering from a stored response (RFC 9110 §13.2.2, §14, §15.4.5)", () => {
  const LM = httpDate(NOW - DAY * S);
  const ST: Headers = [["ETag", '"a1"'], ["Last-Modified", LM], ["Content-Type", "text/plain"], ["Cache-Control", "max-age=60"], ["Date", httpDate(NOW)]];
  test.each<[string, Headers, ServePlan["do"], string | null]>([
    ["§13.1.2 If-None-Match weak match: 304", [["If-None-Match", 'W/"a1"']], "notModified", null],
    ["§13.1.3 If-Modified-Since at Last-Modified: 304", [["If-Modified-Since", LM]], "notModified", null],
    ["§13.2.2 If-None-Match that fails wins over a matching If-Modified-Since", [["If-None-Match", '"zz"'], ["If-Modified-Since", LM]], "whole", null],
    ["§13.2.2 a matching conditional comes before Range", [["If-None-Match", '"a1"'], ["Range", "bytes=0-1"]], "notModified", null],
    ["§14.1.2 single range", [["Range", "bytes=2-5"]], "partial", "bytes 2-5/10"],
    ["§14.1.2 suffix range", [["Range", "bytes=-3"]], "partial", "bytes 7-9/10"],
    ["§14.1.2 open-ended range", [["Range", "bytes=8-"]], "partial", "bytes 8-9/10"],
    ["§14.1.2 a last position past the end is clamped", [["Range", "bytes=8-100"]], "partial", "bytes 8-9/10"],
    ["§15.5.17 unsatisfiable: 416", [["Range", "bytes=10-"]], "unsatisfiable", "bytes */10"],
    ["§14.2 multiple ranges: the whole 200 (agate's documented choice)", [["Range", "bytes=0-1,4-5"]], "whole", null],
    ["§14.2 a unit other than bytes: ignored", [["Range", "items=0-1"]], "whole", null],
    ["§13.1.5 If-Range with the strong ETag: the range", [["Range", "bytes=0-1"], ["If-Range", '"a1"']], "partial", "bytes 0-1/10"],
    ["§13.1.5 If-Range with another ETag: whole", [["Range", "bytes=0-1"], ["If-Range", '"b2"']], "whole", null],
    ["§13.1.5 If-Range with a weak ETag never matches", [["Range", "bytes=0-1"], ["If-Range", 'W/"a1"']], "whole", null],
    ["§13.1.5 If-Range with the Last-Modified date", [["Range", "bytes=0-1"], ["If-Range", LM]], "partial", "bytes 0-1/10"],
  ])("%s", (_t, req, expected, cr) => {
    const p = planServe("GET", req, 200, ST, 10);
    expect(p.do).toBe(expected);
    if (cr !== null) expect((p as { contentRange: string }).contentRange).toBe(cr);
  });
  test("§14.2 Range is ignored on HEAD and on a non-200", () => {
    expect(planServe("HEAD", [["Range", "bytes=0-1"]], 200, ST, 10).do).toBe("whole");
    expect(planServe("GET", [["Range", "bytes=0-1"]], 404, ST, 10).do).toBe("whole");
  });
  test("§15.4.5 a 304 carries Cache-Control, Date, ETag (not Content-Type); Last-Modified only without ETag", () => {
    expect(makeNotModifiedHeaders(ST).map(([k]) => k)).toEqual(["ETag", "Cache-Control", "Date"]);
    expect(makeNotModifiedHeaders(ST.filter(([k]) => k !== "ETag")).map(([k]) => k)).toEqual(["Last-Modified", "Cache-Control", "Date"]);
  });
});

describe("RFC 9211 Cache-Status", () => {
  const cs = (o: Partial<CacheStatus>): CacheStatus => ({ ...emptyCacheStatus(), ...o });
  test.each<[string, CacheStatus, string]>([
    ["§2.1 hit with ttl", cs({ hit: true, ttl: 3540 }), "agate; hit; ttl=3540"],
    ["§2.2/§2.3/§2.5 a stored miss", cs({ fwd: "uri-miss", fwdStatus: 200, stored: true, ttl: 600 }), "agate; fwd=uri-miss; fwd-status=200; stored; ttl=600"],
    ["§2.6 collapsed", cs({ fwd: "uri-miss", fwdStatus: 200, collapsed: true }), "agate; fwd=uri-miss; fwd-status=200; collapsed"],
    ["§2.8 detail as a token", cs({ fwd: "bypass", detail: "method" }), "agate; fwd=bypass; detail=method"],
    ["§2.8 detail that is not a token is quoted", cs({ detail: 'a b"c' }), 'agate; detail="a b\\"c"'],
    ["§2.4 negative ttl: stale", cs({ hit: true, ttl: -20.7, detail: "stale-while-revalidate" }), "agate; hit; ttl=-20; detail=stale-while-revalidate"],
  ])("%s", (_t, c, s) => expect(formatCacheStatus(c)).toBe(s));
});

describe("[cache] stale_if_error_s (RFC 5861 §4 for platform objects)", () => {
  test("default a day; validated at the door", () => {
    expect(parseConfig({}).cache.stale_if_error_s).toBe(86_400);
    expect(parseConfig({ cache: { stale_if_error_s: 0 } }).cache.stale_if_error_s).toBe(0);
    expect(() => parseConfig({ cache: { stale_if_error_s: -1 } })).toThrow(/cache\.stale_if_error_s/);
    expect(() => parseConfig({ cache: { stale_if_error_s: "1d" } })).toThrow(/cache\.stale_if_error_s/);
  });
});
