/** Byte ranges (RFC 9110 §14) and If-Range (§13.1.5). */
import { describe, expect, test } from "bun:test";
import { ifRangeMatches, parseContentRange, parseRange, slicesFor, strongEtag } from "../../src/core/cache/range";

describe("parseRange (§14.1.2)", () => {
  test.each([
    ["bytes=0-99", 1000, { start: 0, end: 99 }],
    ["bytes=500-", 1000, { start: 500, end: 999 }],
    ["bytes=-100", 1000, { start: 900, end: 999 }],
    ["bytes=-5000", 1000, { start: 0, end: 999 }],
    ["bytes=900-5000", 1000, { start: 900, end: 999 }],
    ["bytes = 1-2", 10, { start: 1, end: 2 }],
    ["bytes=1000-", 1000, "unsatisfiable"],
    ["bytes=-0", 1000, "unsatisfiable"],
    ["bytes=0-1,5-6", 1000, null],
    ["bytes=5-1", 1000, null],
    ["items=0-1", 1000, null],
    ["bytes=abc", 1000, null],
    [undefined, 1000, null],
  ] as const)("%p of %i bytes → %j", (h, size, want) => {
    expect(parseRange(h as string | undefined, size)).toEqual(want as any);
  });
});

describe("Content-Range and validators", () => {
  test("parseContentRange", () => {
    expect(parseContentRange("bytes 0-99/1234")).toEqual({ start: 0, end: 99, total: 1234 });
    expect(parseContentRange("bytes 5-9/*")).toEqual({ start: 5, end: 9, total: null });
    expect(parseContentRange("bytes 9-5/10")).toBeNull();
    expect(parseContentRange("0-9/10")).toBeNull();
  });
  test("only strong ETags tie slices together (§8.8.3)", () => {
    expect(strongEtag('"abc"')).toBe('"abc"');
    expect(strongEtag('W/"abc"')).toBeNull();
    expect(strongEtag("abc")).toBeNull();
  });
  test.each([
    [undefined, '"a"', null, true],
    ['"a"', '"a"', null, true],
    ['"b"', '"a"', null, false],
    ['W/"a"', '"a"', null, false],
    ["Tue, 01 Dec 2026 00:00:00 GMT", null, "Tue, 01 Dec 2026 00:00:00 GMT", true],
    ["Wed, 02 Dec 2026 00:00:00 GMT", null, "Tue, 01 Dec 2026 00:00:00 GMT", false],
  ] as const)("If-Range %p vs etag %p / last-modified %p → %p", (ir, etag, lm, want) => {
    expect(ifRangeMatches(ir as any, etag as any, lm as any)).toBe(want);
  });
  test("slicesFor", () => {
    expect(slicesFor({ start: 0, end: 0 }, 100)).toEqual({ first: 0, last: 0 });
    expect(slicesFor({ start: 99, end: 100 }, 100)).toEqual({ first: 0, last: 1 });
    expect(slicesFor({ start: 250, end: 999 }, 100)).toEqual({ first: 2, last: 9 });
  });
});
