/**
 * @module Layer 2's decisions (src/core/cache/plan.ts) with a fixed clock: what a request gets given the stored
 * entry (`planLookup`) and what a fill does with the origin's head (`planOriginResponse`). Every case names the
 * RFC 9111 section it checks.
 */
import { describe, expect, test } from "bun:test";
import type { ArtifactRule } from "../../src/core/config";
import { type CacheDefaults, type Headers, type StoredResponse, CACHE_DEFAULTS } from "../../src/core/cache/freshness";
import { type LookupPlan, type OriginPlan, planLookup, planOriginResponse } from "../../src/core/cache/plan";

const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
const URL_CAB = "https://download.microsoft.com/pkg/update.cab";
const D: CacheDefaults = CACHE_DEFAULTS;
const httpDate = (ms: number) => new Date(ms).toUTCString();

/** A response received `ageS` seconds before NOW, with a Date header equal to its receipt time. */
function stored(headers: Headers, ageS = 0): StoredResponse {
  const t = NOW - ageS * 1000;
  return { status: 200, headers: [["Date", httpDate(t)], ...headers], requestTime: t, responseTime: t, url: URL_CAB, method: "GET", requestHeaders: [] };
}

describe("planLookup", () => {
  test.each<[string, StoredResponse | null, Headers, LookupPlan]>([
    ["nothing stored: fetch the whole object", null, [], { do: "fetch", reason: "absent" }],
    ["§5.2.1.7 nothing stored and only-if-cached: reject", null, [["Cache-Control", "only-if-cached"]], { do: "reject", code: "PX_ONLY_IF_CACHED" }],
    ["§4.2 fresh: serve", stored([["Cache-Control", "max-age=600"]], 10), [], { do: "serve" }],
    ["§4.2 fresh and only-if-cached: serve", stored([["Cache-Control", "max-age=600"]], 10), [["Cache-Control", "only-if-cached"]], { do: "serve" }],
    [
      "§4.3.1 stale with an ETag and Last-Modified: revalidate with both validators",
      stored([["Cache-Control", "max-age=60"], ["ETag", '"v1"'], ["Last-Modified", "Mon, 13 Jan 2025 12:00:00 GMT"]], 120),
      [],
      { do: "revalidate", reason: "stale", headers: [["if-none-match", '"v1"'], ["if-modified-since", "Mon, 13 Jan 2025 12:00:00 GMT"]] },
    ],
    ["§4.3.1 stale without validators: revalidate with none (a plain fetch)", stored([["Cache-Control", "max-age=60"]], 120), [], { do: "revalidate", reason: "stale", headers: [] }],
    ["§5.2.1.7 stale and only-if-cached: reject", stored([["Cache-Control", "max-age=60"]], 120), [["Cache-Control", "only-if-cached"]], { do: "reject", code: "PX_ONLY_IF_CACHED" }],
    ["§5.2.1.2 stale within max-stale: serve stale", stored([["Cache-Control", "max-age=60"]], 120), [["Cache-Control", "max-stale=600"]], { do: "serveStale", reason: "max-stale" }],
    ["§5.2.2.2 must-revalidate forbids serving stale", stored([["Cache-Control", "max-age=60, must-revalidate"]], 120), [["Cache-Control", "max-stale"]], { do: "revalidate", reason: "stale", headers: [] }],
    ["§5.2.1.4 request no-cache: revalidate a fresh entry", stored([["Cache-Control", "max-age=600"], ["ETag", '"a"']], 10), [["Cache-Control", "no-cache"]], { do: "revalidate", reason: "request-no-cache", headers: [["if-none-match", '"a"']] }],
    ["§5.4 Pragma: no-cache stands in for no-cache", stored([["Cache-Control", "max-age=600"]], 10), [["Pragma", "no-cache"]], { do: "revalidate", reason: "request-no-cache", headers: [] }],
    ["§5.2.2.4 response no-cache: always revalidate", stored([["Cache-Control", "no-cache, max-age=600"]], 0), [], { do: "revalidate", reason: "no-cache", headers: [] }],
    ["§5.2.1.1 request max-age below the age: revalidate", stored([["Cache-Control", "max-age=600"]], 100), [["Cache-Control", "max-age=50"]], { do: "revalidate", reason: "max-age", headers: [] }],
    ["§5.2.1.3 min-fresh beyond the remaining lifetime: revalidate", stored([["Cache-Control", "max-age=600"]], 590), [["Cache-Control", "min-fresh=60"]], { do: "revalidate", reason: "min-fresh", headers: [] }],
  ])("%s", (_t, entry, req, expected) => expect(planLookup(entry, req, NOW, D)).toEqual(expected));

  test("§4.3.4 an entry a 304 just validated is served even when stale on arrival (max-age=0)", () => {
    const e = stored([["Cache-Control", "max-age=0, must-revalidate"], ["ETag", '"ar"']], 1);
    expect(planLookup(e, [], NOW, D)).toEqual({ do: "revalidate", reason: "stale", headers: [["if-none-match", '"ar"']] });
    expect(planLookup(e, [], NOW, D, { validated: true })).toEqual({ do: "serve" });
  });

  test("the clock decides: the same entry is fresh before its lifetime ends and stale after", () => {
    const e = stored([["Cache-Control", "max-age=60"]], 0);
    expect(planLookup(e, [], NOW + 59_000, D)).toEqual({ do: "serve" });
    expect(planLookup(e, [], NOW + 61_000, D).do).toBe("revalidate");
  });

  test("artifact rules give a lifetime to responses whose origin says nothing", () => {
    const e = stored([], 3600);
    const rules: ArtifactRule[] = [{ host: "microsoft.com", path: "/pkg/*", max_age_s: 86_400 }];
    expect(planLookup(e, [], NOW, D).do).toBe("revalidate");
    expect(planLookup(e, [], NOW, { ...D, rules })).toEqual({ do: "serve" });
  });
});

describe("planOriginResponse", () => {
  const get = { method: "GET", headers: [] as Headers, url: URL_CAB };
  test.each<[string, { status: number; headers: Headers }, StoredResponse | null, OriginPlan]>([
    ["§3 a cacheable 200: store it", { status: 200, headers: [["Cache-Control", "max-age=600"], ["Connection", "keep-alive"]] }, null, { do: "store", headers: [["Cache-Control", "max-age=600"]], vary: null }],
    ["§4.1 Vary is kept with the entry", { status: 200, headers: [["Cache-Control", "max-age=600"], ["Vary", "Accept-Language"]] }, null, { do: "store", headers: [["Cache-Control", "max-age=600"], ["Vary", "Accept-Language"]], vary: "Accept-Language" }],
    ["§5.2.2.5 no-store: deliver without storing", { status: 200, headers: [["Cache-Control", "no-store"]] }, null, { do: "deliver", reason: "no-store" }],
    ["§5.2.2.7 private: deliver without storing", { status: 200, headers: [["Cache-Control", "private"]] }, null, { do: "deliver", reason: "private" }],
    ["§5.2.2.3 must-understand with a status the cache does not understand: deliver", { status: 299, headers: [["Cache-Control", "max-age=60, must-understand"]] }, null, { do: "deliver", reason: "status" }],
    [
      "§4.3.4 a 304 for the revalidated entry: freshen it with the 304's fields",
      { status: 304, headers: [["Cache-Control", "max-age=900"], ["ETag", '"v1"']] },
      stored([["Cache-Control", "max-age=60"], ["ETag", '"v1"'], ["Content-Type", "application/octet-stream"]], 120),
      { do: "freshen", headers: [["Date", httpDate(NOW - 120_000)], ["Content-Type", "application/octet-stream"], ["Cache-Control", "max-age=900"], ["ETag", '"v1"']] },
    ],
    ["a 304 without a stored entry is not storable (it answers no conditional of ours)", { status: 304, headers: [] }, null, { do: "deliver", reason: "status" }],
  ])("%s", (_t, res, stale, expected) => expect(planOriginResponse(get, res, stale, D)).toEqual(expected));

  test("§3 a request with no-store is not stored", () => {
    expect(planOriginResponse({ ...get, headers: [["Cache-Control", "no-store"]] }, { status: 200, headers: [["Cache-Control", "max-age=60"]] }, null, D)).toEqual({ do: "deliver", reason: "request-no-store" });
  });
});
