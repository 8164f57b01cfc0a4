/**
 * @module Freshness rules (src/core/cache/freshness.ts, and the lookup rules plan.ts composes from them) against RFC 9111 / RFC 9110, table-driven with a fixed
 * clock. Every case names the section it checks.
 */
import { describe, expect, test } from "bun:test";
import type { ArtifactRule } from "../../src/core/config";
import {
  type CacheControl,
  type CacheDefaults,
  type Headers,
  type NoStoreReason,
  type StoredResponse,
  ageHeaderValue,
  currentAge,
  freshnessLifetime,
  HEURISTIC_STATUSES,
  invalidationTargets,
  isStorable,
  isUnsafeMethod,
  makeConditionalHeaders,
  makeStoredHeaders,
  matchArtifactRule,
  parseCacheControl,
  parseHttpDate,
  storedCc,
  updateStoredHeaders,
} from "../../src/core/cache/freshness";
import { type LookupResult, lookupPhase, onlyIfCached } from "../../src/core/cache/plan";
import { answerConditional } from "../../src/core/cache/serve";

const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
const S = 1000;
const DAY = 86_400;
const httpDate = (ms: number) => new Date(ms).toUTCString();
const URL_MSI = "https://dl.example.com/agent/setup.msi";
const RULES: ArtifactRule[] = [{ host: "example.com", path: "/agent/*.msi", max_age_s: 7 * DAY }];
const D: CacheDefaults = { heuristicFraction: 0.1, heuristicMaxS: DAY, rules: [] };
const D_RULES: CacheDefaults = { ...D, rules: RULES };

/** A response received `ageS` seconds before NOW, with a Date header equal to its receipt time. */
function stored(headers: Headers, ageS = 0, o: Partial<StoredResponse> = {}): StoredResponse {
  const t = NOW - ageS * S;
  return {
    status: 200,
    headers: [["Date", httpDate(t)], ...headers],
    requestTime: t,
    responseTime: t,
    url: URL_MSI,
    method: "GET",
    requestHeaders: [],
    ...o,
  };
}

describe("parseCacheControl", () => {
  test.each<[string, string | string[] | undefined, CacheControl]>([
    ["§5.2 directives are lower-cased, numbers parsed", "Max-Age=60, PUBLIC", { "max-age": 60, public: true }],
    ["§5.2 a quoted numeric argument is accepted", 'max-age="60"', { "max-age": 60 }],
    ["§5.2 field lines are combined", ["max-age=60", "no-transform"], { "max-age": 60, "no-transform": true }],
    ["§4.2.1 duplicate max-age with different values: the most conservative (smallest)", "max-age=60, max-age=10", { "max-age": 10 }],
    ["§4.2.1 duplicate max-age across lines: the smallest", ["max-age=10", "max-age=60"], { "max-age": 10 }],
    ["§4.2.1 duplicate s-maxage: the smallest", "s-maxage=300, s-maxage=30", { "s-maxage": 30 }],
    ["§4.2.1 duplicate min-fresh (request): the largest", "min-fresh=5, min-fresh=50", { "min-fresh": 50 }],
    ["§4.2.1 max-stale bare then numeric: the numeric (stricter)", "max-stale, max-stale=30", { "max-stale": 30 }],
    ["§1.2.2 a non-integer delta-seconds makes the directive invalid: read as 0 (stale, §4.2.1)", "max-age=abc, public", { "max-age": 0, public: true }],
    ["§1.2.2 a negative delta-seconds is invalid: 0", "max-age=-5", { "max-age": 0 }],
    ["§1.2.2 a decimal delta-seconds is invalid: 0", "max-age=1.5", { "max-age": 0 }],
    ["§1.2.2 trailing junk is invalid: 0", "max-age=100a", { "max-age": 0 }],
    ["§1.2.2 an empty delta-seconds is invalid: 0", "max-age=", { "max-age": 0 }],
    ["§1.2.2 a missing delta-seconds is invalid: 0", "s-maxage", { "s-maxage": 0 }],
    ["§1.2.2 an invalid copy beats a valid one (most conservative)", "max-age=600, max-age=1.5", { "max-age": 0 }],
    ["§5.2 quoted delta-seconds is accepted", 'max-age="600", s-maxage="60"', { "max-age": 600, "s-maxage": 60 }],
    ["§5.2 a quoted invalid delta-seconds is still invalid", 'max-age="6 0"', { "max-age": 0 }],
    ["§1.2.2 an invalid min-fresh is dropped (0 would be the lenient reading)", "min-fresh=x", {}],
    ["§1.2.2 an overflowing delta-seconds is clamped to 2^31", "s-maxage=99999999999", { "s-maxage": 2147483648 }],
    ["§5.2.1.2 max-stale without a value", "max-stale", { "max-stale": true }],
    ["§5.2.1.2 max-stale with a value", "max-stale=30", { "max-stale": 30 }],
    [
      "§5.2.2.4 qualified no-cache carries lower-cased field names, commas inside quotes",
      'no-cache="Set-Cookie, X-Foo", max-age=5',
      { "no-cache": ["set-cookie", "x-foo"], "max-age": 5 },
    ],
    ["§5.2.2.7 qualified private lists merge", 'private="a", private="b"', { private: ["a", "b"] }],
    ["§4.2.1 unqualified private beats a qualified one (most restrictive)", 'private="a", private', { private: true }],
    ["§4.2.1 unqualified no-cache is kept over a later qualified one", 'no-cache, no-cache="x"', { "no-cache": true }],
    ["§5.2.3 extension with a quoted comma does not split", 'ext="a,b", max-age=1', { ext: true, "max-age": 1 }],
    ["§5.2 (RFC 9110 §5.6.4) a quoted-pair escapes a quote", 'ext="a\\"b, c", max-age=2', { ext: true, "max-age": 2 }],
    ["§5.2 (RFC 9110 §5.6.4) quoted-pairs are unescaped in field lists", 'private="x-\\a"', { private: ["x-a"] }],
    ["§5.2 an unterminated quote swallows the rest", 'ext="a, max-age=5', { ext: true }],
    ["§5.2 empty members are skipped", " , ,max-age=1,,", { "max-age": 1 }],
    ["§5.2 no header gives no directives", undefined, {}],
    ["§5.2 a __proto__ directive cannot touch the prototype", "__proto__, max-age=1", { "max-age": 1 }],
  ])("%s", (_title, input, expected) => {
    const cc = parseCacheControl(input);
    expect(cc).toEqual(expected);
    expect(Object.getPrototypeOf(cc)).toBe(Object.prototype);
  });
});

describe("parseHttpDate", () => {
  test.each<[string, string, number | null]>([
    ["RFC 9110 §5.6.7 IMF-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", Date.UTC(1994, 10, 6, 8, 49, 37)],
    ["RFC 9110 §5.6.7 obsolete RFC 850 form", "Sunday, 06-Nov-94 08:49:37 GMT", Date.UTC(1994, 10, 6, 8, 49, 37)],
    ["RFC 9110 §5.6.7 obsolete asctime form", "Sun Nov  6 08:49:37 1994", Date.UTC(1994, 10, 6, 8, 49, 37)],
    ["RFC 9110 §5.6.7 \"0\" is not a date", "0", null],
    ["RFC 9110 §5.6.7 an impossible day is not a date", "Mon, 31 Feb 2025 00:00:00 GMT", null],
    ["RFC 9110 §5.6.7 a non-GMT zone is not a date", "Sun, 06 Nov 1994 08:49:37 PST", null],
  ])("%s", (_t, input, expected) => expect(parseHttpDate(input)).toBe(expected));
});

type StoreCase = [string, string, Headers, number, Headers, "ok" | NoStoreReason];
describe("isStorable", () => {
  test.each<StoreCase>([
    ["§3 a GET 200 with max-age is stored", "GET", [], 200, [["Cache-Control", "max-age=60"]], "ok"],
    ["§3 HEAD responses are not stored (HEAD is served from a stored GET)", "HEAD", [], 200, [["Cache-Control", "max-age=60"]], "method"],
    ["§3 POST responses are not stored", "POST", [], 200, [["Cache-Control", "max-age=60"]], "method"],
    ["§3 a 206 partial response is left to the slice code", "GET", [], 206, [["Cache-Control", "max-age=60"]], "partial"],
    ["§3 a 304 is not stored on its own", "GET", [], 304, [["Cache-Control", "max-age=60"]], "status"],
    ["§3 an unknown final status with explicit freshness is stored (299)", "GET", [], 299, [["Cache-Control", "max-age=60"]], "ok"],
    ["§3 an unknown final status with explicit freshness is stored (499)", "GET", [], 499, [["Cache-Control", "max-age=60"]], "ok"],
    ["§3 an unknown final status with explicit freshness is stored (599)", "GET", [], 599, [["Cache-Control", "max-age=60"]], "ok"],
    ["§3 an unknown status with Expires is stored", "GET", [], 299, [["Expires", httpDate(NOW + 60 * S)]], "ok"],
    ["§3 an unknown status without explicit freshness is not (not heuristically cacheable)", "GET", [], 299, [["Last-Modified", httpDate(NOW - DAY * S)]], "no-validator-or-lifetime"],
    ["§5.2.2.3 must-understand with a status the cache does not know: not stored", "GET", [], 299, [["Cache-Control", "max-age=60, must-understand"]], "status"],
    ["RFC 9110 §15.1 a 404 is heuristically cacheable", "GET", [], 404, [["Last-Modified", httpDate(NOW - DAY * S)]], "ok"],
    ["RFC 9110 §15.1 a 410 is heuristically cacheable", "GET", [], 410, [], "ok"],
    ["RFC 9110 §15.1 a 503 is not heuristically cacheable", "GET", [], 503, [["Last-Modified", httpDate(NOW - DAY * S)]], "no-validator-or-lifetime"],
    ["§3 a 503 with max-age is stored", "GET", [], 503, [["Cache-Control", "max-age=5"]], "ok"],
    ["§3 a 304 is never stored on its own", "GET", [], 304, [["Cache-Control", "max-age=60"]], "status"],
    ["§3 an interim 1xx is not stored", "GET", [], 103, [["Cache-Control", "max-age=60"]], "status"],
    ["§5.2.2.5 response no-store", "GET", [], 200, [["Cache-Control", "max-age=60, no-store"]], "no-store"],
    ["§5.2.1.5 request no-store", "GET", [["cache-control", "no-store"]], 200, [["Cache-Control", "max-age=60"]], "request-no-store"],
    ["§5.2.2.3 must-understand overrides no-store for an understood status", "GET", [], 200, [["Cache-Control", "no-store, must-understand, max-age=60"]], "ok"],
    ["§5.2.2.7 private is never stored by a shared cache", "GET", [], 200, [["Cache-Control", "private, max-age=60"]], "private"],
    ["§5.2.2.7 qualified private stores the rest of the response", "GET", [], 200, [["Cache-Control", 'private="Set-Cookie", max-age=60']], "ok"],
    ["§3.5 a response to an authorized request needs explicit permission", "GET", [["Authorization", "Bearer x"]], 200, [["Cache-Control", "max-age=60"]], "authorization"],
    ["§3.5 ... public gives it", "GET", [["authorization", "Bearer x"]], 200, [["Cache-Control", "public, max-age=60"]], "ok"],
    ["§3.5 ... s-maxage gives it", "GET", [["authorization", "Bearer x"]], 200, [["Cache-Control", "s-maxage=60"]], "ok"],
    ["§3.5 ... must-revalidate gives it", "GET", [["authorization", "Bearer x"]], 200, [["Cache-Control", "must-revalidate, max-age=60"]], "ok"],
    ["§4.1 Vary: * is never stored", "GET", [], 200, [["Cache-Control", "max-age=60"], ["Vary", "*"]], "vary-star"],
    ["§4.1 Vary with * among names is never stored", "GET", [], 200, [["Cache-Control", "max-age=60"], ["Vary", "accept-encoding"], ["vary", " * "]], "vary-star"],
    ["§4.1 an ordinary Vary is stored", "GET", [], 200, [["Cache-Control", "max-age=60"], ["Vary", "Accept-Encoding"]], "ok"],
    ["§3 a 302 without lifetime or public is not stored", "GET", [], 302, [], "no-validator-or-lifetime"],
    ["§3 a 500 without lifetime is not stored", "GET", [], 500, [["ETag", '"a"']], "no-validator-or-lifetime"],
    ["§3 a 302 with max-age is stored", "GET", [], 302, [["Cache-Control", "max-age=60"]], "ok"],
    ["§3 a 201 with Expires is stored", "GET", [], 201, [["Expires", httpDate(NOW + 60 * S)]], "ok"],
    ["§3 a 201 with an invalid Expires is stored (and already stale)", "GET", [], 201, [["Expires", "0"]], "ok"],
    ["§3 a 307 marked public is stored", "GET", [], 307, [["Cache-Control", "public"]], "ok"],
  ])("%s", (_t, method, reqH, status, resH, expected) => {
    const r = isStorable(method, reqH, status, resH);
    expect(r).toEqual(expected === "ok" ? { ok: true } : { ok: false, reason: expected });
  });

  test.each([...HEURISTIC_STATUSES].filter((s) => s !== 206))(
    "§4.2.2 status %i is heuristically cacheable, stored without explicit lifetime",
    (status) => expect(isStorable("GET", [], status, [])).toEqual({ ok: true }),
  );

  test.each<[string, string, "ok" | NoStoreReason]>([
    ["§4.2.2 an artifact rule is a heuristic: it does not make a 302 storable", URL_MSI, "no-validator-or-lifetime"],
    ["§3 an artifact rule for another path does not", "https://dl.example.com/agent/readme.txt", "no-validator-or-lifetime"],
  ])("%s", (_t, url, expected) => {
    const r = isStorable("GET", [], 302, [], { url, rules: RULES });
    expect(r).toEqual(expected === "ok" ? { ok: true } : { ok: false, reason: expected });
  });
});

describe("makeStoredHeaders", () => {
  test("§3.1 hop-by-hop, Connection-listed, proxy and private=/no-cache= fields are not stored", () => {
    const h: Headers = [
      ["Content-Type", "application/octet-stream"],
      ["Connection", "keep-alive, X-Hop"],
      ["Keep-Alive", "timeout=5"],
      ["X-Hop", "1"],
      ["Transfer-Encoding", "chunked"],
      ["Proxy-Authenticate", "Basic"],
      ["Cache-Control", 'max-age=60, private="Set-Cookie", no-cache="X-Secret"'],
      ["Set-Cookie", "a=b"],
      ["X-Secret", "s"],
      ["ETag", '"v1"'],
    ];
    expect(makeStoredHeaders(h)).toEqual([
      ["Content-Type", "application/octet-stream"],
      ["Cache-Control", 'max-age=60, private="Set-Cookie", no-cache="X-Secret"'],
      ["ETag", '"v1"'],
    ]);
  });
});

describe("currentAge", () => {
  const base = (o: Partial<StoredResponse>, headers: Headers): StoredResponse => ({
    status: 200,
    headers,
    requestTime: NOW - 100 * S,
    responseTime: NOW - 100 * S,
    url: URL_MSI,
    method: "GET",
    requestHeaders: [],
    ...o,
  });
  const recv = NOW - 100 * S;
  test.each<[string, StoredResponse, number]>([
    ["§4.2.3 resident time alone when Date equals receipt", base({}, [["Date", httpDate(recv)]]), 100],
    ["§4.2.3 Age from upstream caches is added", base({}, [["Date", httpDate(recv)], ["Age", "30"]]), 130],
    [
      "§4.2.3 response_delay is added to Age (corrected_age_value)",
      base({ requestTime: recv - 2 * S }, [["Date", httpDate(recv)], ["Age", "30"]]),
      132,
    ],
    ["§4.2.3 apparent_age from an older Date", base({}, [["Date", httpDate(recv - 50 * S)]]), 150],
    ["§4.2.3 apparent_age is never negative (Date in the future)", base({}, [["Date", httpDate(recv + 500 * S)]]), 100],
    ["§4.2.3 corrected_initial_age is the larger of apparent and corrected Age", base({}, [["Date", httpDate(recv - 50 * S)], ["Age", "10"]]), 150],
    ["§5.1 an invalid Age is ignored", base({}, [["Date", httpDate(recv)], ["Age", "abc"]]), 100],
    ["§5.1 a list-valued Age uses its first member", base({}, [["Date", httpDate(recv)], ["Age", "10, 20"]]), 110],
    ["RFC 9110 §6.6.1 no Date: the receipt time stands in", base({}, []), 100],
  ])("%s", (_t, res, expected) => expect(currentAge(res, NOW)).toBe(expected));

  test("§5.1 the Age header value is the current age in whole seconds", () => {
    const res = base({}, [["Date", httpDate(recv)], ["Age", "30"]]);
    expect(ageHeaderValue(res, NOW + 500)).toBe("130");
  });
});

describe("a stored response's fields, parsed once per StoredResponse (the hit path's memo)", () => {
  test("one object asked at three times: the age moves with now, the lifetime stays; the Cache-Control is frozen", () => {
    const res = stored([["Cache-Control", "max-age=600"], ["Age", "30"]], 100);
    expect([currentAge(res, NOW), currentAge(res, NOW + 10 * S), currentAge(res, NOW + 500 * S)]).toEqual([130, 140, 630]);
    expect(freshnessLifetime(res, D)).toEqual({ seconds: 600, source: "max-age" });
    const cc = storedCc(res);
    expect(storedCc(res)).toBe(cc);
    expect(Object.isFrozen(cc)).toBe(true);
    expect(() => {
      (cc as CacheControl)["max-age"] = 1;
    }).toThrow();
    expect(freshnessLifetime(res, D).seconds).toBe(600);
  });
  test("a new object with new headers (a 304 made a new Entry) is read afresh, the old one keeps its own", () => {
    const old = stored([["Cache-Control", "max-age=600"], ["Expires", httpDate(NOW)]], 100);
    expect(freshnessLifetime(old, D).seconds).toBe(600);
    const fresh = { ...old, headers: [["Date", httpDate(NOW)], ["Expires", httpDate(NOW + 60 * S)]] as Headers, responseTime: NOW, requestTime: NOW };
    expect(freshnessLifetime(fresh, D)).toEqual({ seconds: 60, source: "expires" });
    expect(currentAge(fresh, NOW)).toBe(0);
    expect([freshnessLifetime(old, D).seconds, currentAge(old, NOW)]).toEqual([600, 100]);
  });
});

describe("freshnessLifetime", () => {
  const lm = (daysAgo: number): [string, string] => ["Last-Modified", httpDate(NOW - daysAgo * DAY * S)];
  test.each<[string, Headers, Partial<StoredResponse>, CacheDefaults, number, string]>([
    ["§5.2.2.10 s-maxage overrides max-age in a shared cache", [["Cache-Control", "max-age=10, s-maxage=100"]], {}, D, 100, "s-maxage"],
    ["§5.2.2.10 s-maxage=0 is an explicit zero", [["Cache-Control", "s-maxage=0, max-age=100"]], {}, D, 0, "s-maxage"],
    ["§5.2.2.1 max-age overrides Expires", [["Cache-Control", "max-age=10"], ["Expires", httpDate(NOW + 3600 * S)]], {}, D, 10, "max-age"],
    ["§4.2.1 Expires minus Date", [["Expires", httpDate(NOW + 3600 * S)]], {}, D, 3600, "expires"],
    ["§5.3 an invalid Expires (\"0\") means already expired", [["Expires", "0"]], {}, D, 0, "expires"],
    ["§5.3 an Expires in the past gives no lifetime", [["Expires", httpDate(NOW - 60 * S)]], {}, D, 0, "expires"],
    ["§4.2.2 heuristic: 10% of (Date − Last-Modified)", [lm(5)], {}, D, DAY / 2, "heuristic"],
    ["§4.2.2 heuristic lifetime is capped", [lm(30)], {}, D, DAY, "heuristic"],
    ["§4.2.2 no heuristic when Expires is present", [lm(30), ["Expires", "0"]], {}, D, 0, "expires"],
    ["§4.2.2 no heuristic for a status that is not heuristically cacheable", [lm(5)], { status: 302 }, D, 0, "none"],
    ["§4.2.2 heuristic for any status marked public", [lm(5), ["Cache-Control", "public"]], { status: 302 }, D, DAY / 2, "heuristic"],
    ["§4.2.2 no Last-Modified, no explicit lifetime: none", [], {}, D, 0, "none"],
    ["§4.2.2 (refresh_pattern) an artifact rule gives weak responses a lifetime", [lm(5)], {}, D_RULES, 7 * DAY, "rule"],
    ["§4.2.1 an artifact rule never overrides explicit max-age", [["Cache-Control", "max-age=5"]], {}, D_RULES, 5, "max-age"],
    ["§4.2.2 an artifact rule matches hosts on a label boundary only", [], { url: "https://dl.badexample.com/agent/a.msi" }, D_RULES, 0, "none"],
    ["§4.2.2 an artifact rule's glob must match the whole path", [], { url: "https://example.com/agent/a.msi.sig" }, D_RULES, 0, "none"],
  ])("%s", (_t, headers, o, d, seconds, source) => {
    expect(freshnessLifetime(stored(headers, 0, o), d)).toEqual({ seconds, source } as ReturnType<typeof freshnessLifetime>);
  });

  test.each<[string, string, boolean]>([
    ["§4.2.2 rule host matches itself", "https://example.com/agent/x.msi", true],
    ["§4.2.2 rule host matches a subdomain", "https://a.b.example.com/agent/dir/x.msi", true],
    ["§4.2.2 rule host matches case-insensitively, query ignored", "https://DL.Example.COM/agent/x.msi?v=2", true],
    ["§4.2.2 rule host does not match a suffix without a dot", "https://notexample.com/agent/x.msi", false],
  ])("%s", (_t, url, hit) => expect(matchArtifactRule(url, RULES)).toBe(hit ? RULES[0]! : null));
});

describe("lookupPhase", () => {
  const lmOld: [string, string] = ["Last-Modified", httpDate(NOW - 10 * DAY * S)];
  test.each<[string, Headers, number, Headers, LookupResult]>([
    ["§4.2 fresh while age < max-age", [["Cache-Control", "max-age=100"]], 50, [], { phase: "fresh" }],
    ["§4.2 stale once age > max-age", [["Cache-Control", "max-age=100"]], 150, [], { phase: "revalidate", reason: "stale" }],
    ["§4.2 stale when age equals the lifetime", [["Cache-Control", "max-age=100"]], 100, [], { phase: "revalidate", reason: "stale" }],
    ["§4.2.3 Age from upstream counts towards staleness", [["Cache-Control", "max-age=100"], ["Age", "90"]], 20, [], { phase: "revalidate", reason: "stale" }],
    ["§4.2.2 heuristic freshness serves without revalidation", [lmOld], 100, [], { phase: "fresh" }],
    ["§4.2 no lifetime at all: revalidate", [["ETag", '"a"']], 0, [], { phase: "revalidate", reason: "stale" }],
    ["§5.2.2.4 response no-cache always revalidates, even fresh", [["Cache-Control", "no-cache, max-age=100"]], 1, [], { phase: "revalidate", reason: "no-cache" }],
    ["§5.2.2.4 qualified no-cache does not force revalidation", [["Cache-Control", 'no-cache="set-cookie", max-age=100']], 1, [], { phase: "fresh" }],
    ["§5.2.1.4 request no-cache revalidates", [["Cache-Control", "max-age=100"]], 1, [["Cache-Control", "no-cache"]], { phase: "revalidate", reason: "request-no-cache" }],
    ["§5.4 Pragma: no-cache without Cache-Control revalidates", [["Cache-Control", "max-age=100"]], 1, [["Pragma", "no-cache"]], { phase: "revalidate", reason: "request-no-cache" }],
    ["§5.4 Pragma is ignored when Cache-Control is present", [["Cache-Control", "max-age=100"]], 1, [["Pragma", "no-cache"], ["Cache-Control", "max-stale=5"]], { phase: "fresh" }],
    ["§5.2.1.1 request max-age below the age revalidates", [["Cache-Control", "max-age=100"]], 50, [["Cache-Control", "max-age=10"]], { phase: "revalidate", reason: "max-age" }],
    ["§5.2.1.1 request max-age=0 revalidates anything older than 0 s", [["Cache-Control", "max-age=100"]], 1, [["Cache-Control", "max-age=0"]], { phase: "revalidate", reason: "max-age" }],
    ["§5.2.1.1 request max-age above the age serves fresh", [["Cache-Control", "max-age=100"]], 50, [["Cache-Control", "max-age=60"]], { phase: "fresh" }],
    ["§5.2.1.1 request max-age does not make a stale response usable", [["Cache-Control", "max-age=10"]], 50, [["Cache-Control", "max-age=60"]], { phase: "revalidate", reason: "stale" }],
    ["§5.2.1.3 min-fresh beyond the remaining lifetime revalidates", [["Cache-Control", "max-age=100"]], 50, [["Cache-Control", "min-fresh=60"]], { phase: "revalidate", reason: "min-fresh" }],
    ["§5.2.1.3 min-fresh within the remaining lifetime serves fresh", [["Cache-Control", "max-age=100"]], 50, [["Cache-Control", "min-fresh=30"]], { phase: "fresh" }],
    ["§5.2.1.2 max-stale without a value accepts any staleness", [["Cache-Control", "max-age=10"]], 5000, [["Cache-Control", "max-stale"]], { phase: "stale-ok" }],
    ["§5.2.1.2 max-stale counts staleness (age − lifetime), not age: 40 s within 45", [["Cache-Control", "max-age=10"]], 50, [["Cache-Control", "max-stale=45"]], { phase: "stale-ok" }],
    ["§5.2.1.2 max-stale=10 rejects 40 s of staleness", [["Cache-Control", "max-age=10"]], 50, [["Cache-Control", "max-stale=10"]], { phase: "revalidate", reason: "stale" }],
    ["§5.2.2.2 must-revalidate: max-stale is ignored", [["Cache-Control", "max-age=10, must-revalidate"]], 50, [["Cache-Control", "max-stale"]], { phase: "revalidate", reason: "stale" }],
    ["§5.2.2.8 proxy-revalidate: max-stale is ignored in a shared cache", [["Cache-Control", "max-age=10, proxy-revalidate"]], 50, [["Cache-Control", "max-stale"]], { phase: "revalidate", reason: "stale" }],
    ["§5.2.2.10 s-maxage implies proxy-revalidate", [["Cache-Control", "s-maxage=10"]], 50, [["Cache-Control", "max-stale"]], { phase: "revalidate", reason: "stale" }],
    ["§5.2.2.2 must-revalidate does not affect a fresh response", [["Cache-Control", "max-age=100, must-revalidate"]], 50, [], { phase: "fresh" }],
  ])("%s", (_t, headers, ageS, reqH, expected) => {
    expect(lookupPhase(stored(headers, ageS), reqH, NOW, D)).toEqual(expected);
  });

  test("§4.2.2 (refresh_pattern) a rule keeps an artifact fresh past its heuristic lifetime", () => {
    // Last-Modified 2 days before Date: heuristic lifetime 0.2 day, age 3 days
    const res = stored([["Last-Modified", httpDate(NOW - 5 * DAY * S)]], 3 * DAY);
    expect(freshnessLifetime(res, D)).toEqual({ seconds: 17_280, source: "heuristic" });
    expect(lookupPhase(res, [], NOW, D)).toEqual({ phase: "revalidate", reason: "stale" });
    expect(lookupPhase(res, [], NOW, D_RULES)).toEqual({ phase: "fresh" });
  });
});

describe("onlyIfCached", () => {
  test.each<[string, Headers, boolean]>([
    ["§5.2.1.7 only-if-cached is seen", [["Cache-Control", "only-if-cached"]], true],
    ["§5.2.1.7 among other directives, any case", [["cache-control", "max-age=0, ONLY-IF-CACHED"]], true],
    ["§5.2.1.7 absent", [["Cache-Control", "max-age=0"]], false],
    ["§5.2.1.7 not from Pragma", [["Pragma", "only-if-cached"]], false],
  ])("%s", (_t, h, expected) => expect(onlyIfCached(h)).toBe(expected));
});

describe("makeConditionalHeaders", () => {
  const lmv = httpDate(NOW - DAY * S);
  test.each<[string, Headers, Headers]>([
    ["§4.3.1 ETag and Last-Modified both validate", [["ETag", '"v1"'], ["Last-Modified", lmv]], [["if-none-match", '"v1"'], ["if-modified-since", lmv]]],
    ["§4.3.1 a weak ETag is sent as is", [["etag", 'W/"v1"']], [["if-none-match", 'W/"v1"']]],
    ["§4.3.1 Last-Modified alone", [["Last-Modified", lmv]], [["if-modified-since", lmv]]],
    ["§4.3.1 no validators, no conditionals", [["Cache-Control", "max-age=1"]], []],
  ])("%s", (_t, headers, expected) => {
    expect(makeConditionalHeaders({ ...stored([]), headers })).toEqual(expected);
  });
});

describe("updateStoredHeaders", () => {
  test.each<[string, Headers, Headers, Headers]>([
    [
      "§3.2 fields in the 304 replace stored ones; others are kept",
      [["Date", "old"], ["Content-Type", "text/plain"], ["ETag", '"v1"'], ["Cache-Control", "max-age=10"]],
      [["Date", "new"], ["cache-control", "max-age=600"], ["ETag", '"v1"']],
      [["Content-Type", "text/plain"], ["Date", "new"], ["cache-control", "max-age=600"], ["ETag", '"v1"']],
    ],
    [
      "§3.2 Content-Length in a 304 does not replace the stored one",
      [["Content-Length", "1234"], ["ETag", '"v1"']],
      [["Content-Length", "0"], ["ETag", '"v2"']],
      [["Content-Length", "1234"], ["ETag", '"v2"']],
    ],
    [
      "§3.1 hop-by-hop and Connection-listed fields in a 304 are not stored",
      [["ETag", '"v1"']],
      [["Connection", "close, X-Hop"], ["Keep-Alive", "timeout=5"], ["X-Hop", "1"], ["Expires", "x"], ["Proxy-Authenticate", "Basic"]],
      [["ETag", '"v1"'], ["Expires", "x"]],
    ],
    [
      "§3.2 all stored lines of a field are replaced by the 304's lines",
      [["Link", "<a>"], ["Link", "<b>"], ["X-Keep", "1"]],
      [["link", "<c>"]],
      [["X-Keep", "1"], ["link", "<c>"]],
    ],
    [
      "§3.2 Content-Encoding stays with the stored bytes",
      [["Content-Encoding", "gzip"]],
      [["Content-Encoding", "br"]],
      [["Content-Encoding", "gzip"]],
    ],
  ])("%s", (_t, st, nm, expected) => expect(updateStoredHeaders(st, nm)).toEqual(expected));
});

describe("invalidation", () => {
  test.each<[string, string, boolean]>([
    ["§4.4 POST is unsafe", "POST", true],
    ["§4.4 PUT is unsafe", "PUT", true],
    ["§4.4 DELETE is unsafe", "DELETE", true],
    ["§4.4 a method of unknown safety is unsafe", "PURGE", true],
    ["§4.4 GET is safe", "GET", false],
    ["§4.4 HEAD is safe", "HEAD", false],
    ["§4.4 OPTIONS is safe", "OPTIONS", false],
    ["§4.4 TRACE is safe", "TRACE", false],
  ])("%s", (_t, m, expected) => expect(isUnsafeMethod(m)).toBe(expected));

  const U = "https://api.example.com/items/1";
  test.each<[string, number, Headers, string[]]>([
    ["§4.4 a 2xx invalidates the target URI", 204, [], [U]],
    ["§4.4 a 3xx is a non-error response too", 303, [], [U]],
    ["§4.4 an error response invalidates nothing (4xx)", 404, [], []],
    ["§4.4 an error response invalidates nothing (5xx)", 500, [["Location", "/items/2"]], []],
    ["§4.4 a relative Location on the same origin is invalidated", 201, [["Location", "/items/2"]], [U, "https://api.example.com/items/2"]],
    [
      "§4.4 Location and Content-Location, deduplicated, fragments dropped",
      200,
      [["Location", "/items/2#x"], ["Content-Location", "https://API.example.com:443/items/2"]],
      [U, "https://api.example.com/items/2"],
    ],
    ["§4.4 another host's Location is not invalidated", 201, [["Location", "https://evil.example.net/items/2"]], [U]],
    ["§4.4 another port is another origin", 201, [["Content-Location", "https://api.example.com:8443/items/2"]], [U]],
  ])("%s", (_t, status, h, expected) => expect(invalidationTargets(U, status, h)).toEqual(expected));
});

describe("answerConditional", () => {
  const lmv = httpDate(NOW - DAY * S);
  const ST: Headers = [["ETag", '"a"'], ["Last-Modified", lmv], ["Date", httpDate(NOW)]];
  test.each<[string, Headers, Headers, number, 304 | null]>([
    ["RFC 9110 §13.1.2 If-None-Match with the stored tag", [["If-None-Match", '"a"']], ST, 200, 304],
    ["RFC 9110 §8.8.3.2 weak comparison: W/ on the request side", [["If-None-Match", 'W/"a"']], ST, 200, 304],
    ["RFC 9110 §8.8.3.2 weak comparison: W/ on the stored side", [["If-None-Match", '"a"']], [["ETag", 'W/"a"']], 200, 304],
    ["RFC 9110 §13.1.2 a list containing the tag", [["If-None-Match", '"x", "a"']], ST, 200, 304],
    ["RFC 9110 §13.1.2 a list over several field lines", [["If-None-Match", '"x"'], ["if-none-match", '"a"']], ST, 200, 304],
    ["RFC 9110 §8.8.3 a comma inside an entity tag does not split it", [["If-None-Match", '"a,b"']], [["ETag", '"a,b"']], 200, 304],
    ["RFC 9110 §13.1.2 no tag matches: full response", [["If-None-Match", '"x", "y"']], ST, 200, null],
    ["RFC 9110 §13.1.2 * matches any stored representation", [["If-None-Match", "*"]], ST, 200, 304],
    ["RFC 9110 §13.1.3 If-Modified-Since is ignored when If-None-Match is present", [["If-None-Match", '"x"'], ["If-Modified-Since", httpDate(NOW)]], ST, 200, null],
    ["RFC 9110 §13.1.3 not modified since a later date", [["If-Modified-Since", httpDate(NOW)]], ST, 200, 304],
    ["RFC 9110 §13.1.3 not modified since the exact Last-Modified", [["If-Modified-Since", lmv]], ST, 200, 304],
    ["RFC 9110 §13.1.3 modified after the given date", [["If-Modified-Since", httpDate(NOW - 2 * DAY * S)]], ST, 200, null],
    ["RFC 9110 §13.1.3 an invalid date is ignored", [["If-Modified-Since", "yesterday"]], ST, 200, null],
    ["RFC 9111 §4.3.2 without Last-Modified the stored Date is used", [["If-Modified-Since", httpDate(NOW)]], [["Date", httpDate(NOW - 60 * S)]], 200, 304],
    ["RFC 9110 §13.2.1 preconditions are ignored for a stored non-2xx", [["If-None-Match", "*"]], ST, 404, null],
    ["RFC 9110 §13.1.2 no conditionals: full response", [], ST, 200, null],
  ])("%s", (_t, req, st, status, expected) => expect(answerConditional(req, st, status)).toBe(expected));
});
