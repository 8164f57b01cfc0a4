/** @module Cache keys (src/core/cache/key.ts): primary key normalisation, Vary secondary keys, hashing. */
import { describe, expect, test } from "bun:test";
import type { Headers } from "../../src/core/cache/freshness";
import { hashKey, matchesVary, normaliseUrl, primaryKey, varyKey } from "../../src/core/cache/key";
import { ProxyError } from "../../src/core/errors";

describe("primaryKey", () => {
  test.each<[string, string, string, string]>([
    ["RFC 9111 §2 the key is the method and target URI", "GET", "https://example.com/a?b=1", "GET https://example.com/a?b=1"],
    ["RFC 9110 §9.3.2 HEAD shares the GET key (HEAD served from a stored GET)", "HEAD", "https://example.com/a", "GET https://example.com/a"],
    ["RFC 9111 §2 other methods keep their own key", "POST", "https://example.com/a", "POST https://example.com/a"],
    ["RFC 9110 §9.1 methods are case-sensitive", "get", "https://example.com/a", "get https://example.com/a"],
    ["RFC 9110 §4.2.3 scheme and host are case-insensitive", "GET", "HTTPS://Dl.EXAMPLE.com/Path", "GET https://dl.example.com/Path"],
    ["RFC 9110 §4.2.3 the default port is dropped", "GET", "https://example.com:443/a", "GET https://example.com/a"],
    ["RFC 9110 §4.2.3 the default http port is dropped", "GET", "http://example.com:80/a", "GET http://example.com/a"],
    ["RFC 9110 §4.2.3 another port is kept", "GET", "https://example.com:8443/a", "GET https://example.com:8443/a"],
    ["RFC 9110 §4.2.3 an empty path is /", "GET", "https://example.com", "GET https://example.com/"],
    ["RFC 9110 §4.2.3 unreserved percent-encodings are decoded", "GET", "https://example.com/%7euser/%41", "GET https://example.com/~user/A"],
    ["RFC 9110 §4.2.3 other percent-encodings get upper-case hex", "GET", "https://example.com/a%2fb?q=%3d", "GET https://example.com/a%2Fb?q=%3D"],
    ["RFC 9110 §4.2.3 path case is significant", "GET", "https://example.com/A", "GET https://example.com/A"],
    ["RFC 9110 §4.2.4 the fragment is not part of the key", "GET", "https://example.com/a#top", "GET https://example.com/a"],
  ])("%s", (_t, method, url, expected) => expect(primaryKey(method, url)).toBe(expected));

  test("RFC 9110 §4.2.3 equivalent URIs give one key, different ones do not", () => {
    expect(primaryKey("HEAD", "HTTPS://EXAMPLE.COM:443/x")).toBe(primaryKey("GET", "https://example.com/x"));
    expect(primaryKey("GET", "https://example.com/x")).not.toBe(primaryKey("GET", "https://example.com/X"));
    expect(primaryKey("GET", "https://example.com/x?a=1")).not.toBe(primaryKey("GET", "https://example.com/x?a=2"));
  });

  test("RFC 9110 §7.1 a target that is not an absolute URI is a client error", () => {
    expect(() => primaryKey("GET", "/relative")).toThrow(ProxyError);
    let err: unknown;
    try {
      primaryKey("GET", "not a url");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProxyError);
    expect((err as ProxyError).code).toBe("PX_BAD_REQUEST");
    expect((err as ProxyError).side).toBe("client");
  });
});

describe("varyKey", () => {
  test.each<[string, string | undefined, Headers, string | null]>([
    ["§4.1 no Vary: empty secondary key", undefined, [["Accept-Encoding", "gzip"]], ""],
    ["§4.1 Vary: * never matches", "*", [], null],
    ["§4.1 Vary containing * among names never matches", "Accept-Encoding, *", [], null],
    ["§4.1 the request's value of the named field", "Accept-Encoding", [["accept-encoding", "gzip"]], "accept-encoding:gzip"],
    ["§4.1 names lower-cased, sorted, deduplicated", "User-Agent, accept-encoding, Accept-Encoding", [["Accept-Encoding", "br"], ["User-Agent", "qagent/1"]], "accept-encoding:br\nuser-agent:qagent/1"],
    ["§4.1 whitespace runs collapsed and trimmed around commas", "Accept-Encoding", [["Accept-Encoding", "  gzip ,\t deflate  "]], "accept-encoding:gzip,deflate"],
    ["§4.1 several field lines are combined", "Accept-Encoding", [["Accept-Encoding", "gzip"], ["Accept-Encoding", "br"]], "accept-encoding:gzip,br"],
    ["§4.1 an absent field is recorded as absent", "Accept-Language", [], "accept-language"],
    ["§4.1 an empty field is not the same as an absent one", "Accept-Language", [["Accept-Language", ""]], "accept-language:"],
  ])("%s", (_t, vary, h, expected) => expect(varyKey(vary, h)).toBe(expected));
});

describe("matchesVary", () => {
  test.each<[string, string | undefined, Headers, Headers, boolean]>([
    ["§4.1 no Vary matches any request", undefined, [["Accept-Encoding", "gzip"]], [["Accept-Encoding", "br"]], true],
    ["§4.1 same value matches", "Accept-Encoding", [["Accept-Encoding", "gzip"]], [["accept-encoding", "gzip"]], true],
    ["§4.1 different value does not match", "Accept-Encoding", [["Accept-Encoding", "gzip"]], [["Accept-Encoding", "br"]], false],
    ["§4.1 values equal after whitespace normalisation match", "Accept-Encoding", [["Accept-Encoding", "gzip, deflate"]], [["Accept-Encoding", "gzip,deflate"]], true],
    ["§4.1 values are not case-folded", "X-Variant", [["X-Variant", "A"]], [["X-Variant", "a"]], false],
    ["§4.1 combined field lines match one combined line", "Accept-Encoding", [["Accept-Encoding", "gzip"], ["Accept-Encoding", "br"]], [["Accept-Encoding", "gzip, br"]], true],
    ["§4.1 absent in both matches", "Accept-Language", [], [["Accept-Encoding", "gzip"]], true],
    ["§4.1 absent in one only does not match", "Accept-Language", [], [["Accept-Language", "en"]], false],
    ["§4.1 Vary: * never matches, even identical requests", "*", [["A", "1"]], [["A", "1"]], false],
    ["§4.1 every listed field must match", "Accept-Encoding, User-Agent", [["Accept-Encoding", "gzip"], ["User-Agent", "a"]], [["Accept-Encoding", "gzip"], ["User-Agent", "b"]], false],
  ])("%s", (_t, vary, storedReq, req, expected) => expect(matchesVary(vary, storedReq, req)).toBe(expected));
});

describe("hashKey", () => {
  test.each<[string, string, string]>([
    ["FIPS 180-4 SHA-256 test vector \"abc\"", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    ["FIPS 180-4 SHA-256 of the empty string", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
  ])("%s", async (_t, input, expected) => expect(await hashKey(input)).toBe(expected));

  test("RFC 9111 §2 distinct keys hash apart; HEAD and GET hash alike", async () => {
    const a = await hashKey(primaryKey("GET", "https://example.com/a"));
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(await hashKey(primaryKey("HEAD", "https://EXAMPLE.com/a"))).toBe(a);
    expect(await hashKey(primaryKey("GET", "https://example.com/b"))).not.toBe(a);
  });
});

describe("normaliseUrl keeps its answers for recent URLs (bounded)", () => {
  test("the same answer the second time; 10,000 distinct URLs later every one still normalises right", () => {
    const a = "HTTPS://Dl.Example.COM:443/a/%7euser/b?x=%7E";
    expect(normaliseUrl(a)).toBe("https://dl.example.com/a/~user/b?x=~");
    expect(normaliseUrl(a)).toBe("https://dl.example.com/a/~user/b?x=~");
    for (let i = 0; i < 10_000; i++) expect(normaliseUrl(`https://H${i}.example.com:8443/p/%7e${i}`)).toBe(`https://h${i}.example.com:8443/p/~${i}`);
    expect(normaliseUrl(a)).toBe("https://dl.example.com/a/~user/b?x=~");
    expect(() => normaliseUrl("not a url")).toThrow(ProxyError);
    expect(() => normaliseUrl("not a url")).toThrow(ProxyError);
  });
});
