/**
 * @module Property tests of the cache's header readers (RFC 9111 §5.2 Cache-Control, RFC 9110 §14 ranges): random
 * field values never throw; numeric directives are delta-seconds (integers 0–2^31) and field-list directives are
 * `true` or lists of lower-case names; one field line or many give the same directives; a repeated directive takes
 * the most restrictive value; a Range resolves to null, "unsatisfiable" or a range inside the object.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { parseCacheControl } from "../../src/core/cache/freshness";
import { ifRangeMatches, parseContentRange, parseRange } from "../../src/core/cache/range";
import { check, quotedString, token } from "./arbitraries";

const ccUnit = fc.constantFrom(..."max-age=s-maxage=no-cache=private=no-store,must-revalidate, \t\"\\=,;0123456789abcXYZ-", "max-age", "no-cache", "private", "s-maxage", "stale-if-error", "min-fresh", "max-stale", "constructor", "__proto__", "toString");
const ccText = fc.array(ccUnit, { maxLength: 30 }).map((cs) => cs.join(""));

const directive = fc.oneof(
  fc.tuple(fc.constantFrom("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "max-stale", "min-fresh"), fc.oneof(fc.nat({ max: 10 ** 9 }).map(String), fc.constant("99999999999999999999"))).map(([n, v]) => `${n}=${v}`),
  fc.tuple(fc.constantFrom("no-cache", "private"), fc.array(token(8), { maxLength: 3 })).map(([n, fs]) => (fs.length ? `${n}="${fs.join(", ")}"` : n)),
  fc.constantFrom("no-store", "public", "must-revalidate", "proxy-revalidate", "immutable", "only-if-cached", "no-transform"),
  fc.tuple(token(8), fc.oneof(token(8), quotedString)).map(([n, v]) => `${n}=${v}`),
);

describe("Cache-Control (RFC 9111 §5.2)", () => {
  test("random values: never throws; numbers are delta-seconds, lists are lower-case names", () => {
    check(
      "cache-control shape",
      fc.property(fc.array(ccText, { maxLength: 3 }), (values) => {
        const cc = parseCacheControl(values);
        expect(Object.getPrototypeOf(cc)).toBe(Object.prototype);
        for (const [k, v] of Object.entries(cc)) {
          expect(k).toBe(k.toLowerCase());
          if (typeof v === "number") expect(Number.isInteger(v) && v >= 0 && v <= 2 ** 31).toBe(true);
          else if (Array.isArray(v)) for (const f of v) expect(f).toBe(f.toLowerCase().trim());
          else expect(v).toBe(true);
        }
      }),
      2000,
      41,
    );
  });

  test("one field line or one per directive: the same directives; repeated numbers take the smallest", () => {
    check(
      "cache-control lines",
      fc.property(fc.array(directive, { minLength: 1, maxLength: 5 }), (ds) => {
        expect(parseCacheControl(ds.join(", "))).toEqual(parseCacheControl(ds));
        const ages = ds.filter((d) => /^max-age=\d+$/.test(d)).map((d) => Math.min(Number(d.slice(8)), 2 ** 31));
        if (ages.length) expect(parseCacheControl(ds).maxAge ?? parseCacheControl(ds)["max-age"]).toBe(Math.min(...ages));
      }),
      1000,
      42,
    );
  });
});

describe("ranges (RFC 9110 §14)", () => {
  const rangeText = fc.oneof(
    fc.tuple(fc.option(fc.nat({ max: 300 }), { nil: undefined }), fc.option(fc.nat({ max: 300 }), { nil: undefined })).map(([a, b]) => `bytes=${a ?? ""}-${b ?? ""}`),
    fc.array(fc.constantFrom(..."bytes=0123456789-, \t", "99999999999999999999", "items=", "BYTES="), { maxLength: 12 }).map((cs) => cs.join("")),
  );
  test("Range against an object of any size: null, \"unsatisfiable\", or 0 ≤ start ≤ end < size", () => {
    check(
      "range bounds",
      fc.property(rangeText, fc.nat({ max: 400 }), (h, size) => {
        const r = parseRange(h, size);
        if (r === null || r === "unsatisfiable") return;
        expect(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end)).toBe(true);
        expect(r.start >= 0 && r.start <= r.end && r.end < size).toBe(true);
      }),
      3000,
      43,
    );
  });

  test("bytes=a-b on an object of size n: the oracle of RFC 9110 §14.1.2", () => {
    check(
      "range oracle",
      fc.property(fc.nat({ max: 300 }), fc.nat({ max: 300 }), fc.integer({ min: 1, max: 300 }), (a, b, n) => {
        const r = parseRange(`bytes=${a}-${b}`, n);
        if (b < a) expect(r).toBeNull();
        else if (a >= n) expect(r).toBe("unsatisfiable");
        else expect(r).toEqual({ start: a, end: Math.min(b, n - 1) });
        const s = parseRange(`bytes=-${b}`, n);
        expect(s).toEqual(b === 0 ? "unsatisfiable" : { start: Math.max(0, n - b), end: n - 1 });
      }),
      1000,
      44,
    );
  });

  test("Content-Range from an origin: never throws; what it returns has start ≤ end", () => {
    check(
      "content-range",
      fc.property(fc.array(fc.constantFrom(..."bytes 0123456789-/* \t", "99999999999999999999"), { maxLength: 14 }).map((cs) => cs.join("")), (v) => {
        const r = parseContentRange(v);
        if (r !== null) expect(r.start <= r.end).toBe(true);
      }),
      2000,
      45,
    );
  });

  test("If-Range: a weak or absent validator never matches a strong comparison", () => {
    check(
      "if-range",
      fc.property(fc.string({ maxLength: 12 }), (tag) => {
        expect(ifRangeMatches(`W/"${tag}"`, `W/"${tag}"`, null)).toBe(false);
        expect(ifRangeMatches(`"${tag}"`, null, null)).toBe(false);
      }),
      300,
      46,
    );
  });

  test("Content-Range (RFC 9110 §14.4): a complete-length at or below last-pos, or numbers past 2^53, are malformed", () => {
    expect(parseContentRange("bytes 0-99/50")).toBeNull();
    expect(parseContentRange("bytes 0-99/99")).toBeNull();
    expect(parseContentRange("bytes 0-99/100")).toEqual({ start: 0, end: 99, total: 100 });
    expect(parseContentRange("bytes 0-99/*")).toEqual({ start: 0, end: 99, total: null });
    expect(parseContentRange("bytes 0-18446744073709551615/18446744073709551616")).toBeNull();
    expect(parseContentRange("bytes 9007199254740992-9007199254740993/*")).toBeNull();
    check(
      "content-range inside total",
      fc.property(fc.array(fc.constantFrom(..."bytes 0123456789-/* \t", "99999999999999999999"), { maxLength: 14 }).map((cs) => cs.join("")), (v) => {
        const r = parseContentRange(v);
        if (r === null) return;
        expect(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end)).toBe(true);
        if (r.total !== null) expect(Number.isSafeInteger(r.total) && r.total > r.end).toBe(true);
      }),
      2000,
      47,
    );
  });
});
