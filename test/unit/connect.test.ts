import { describe, expect, test } from "bun:test";
import { parseAuthority, toRequest } from "../../src/core/connect";
import { errorOf } from "../peers/helpers";
import { NEED_MORE, parseRequestHead, type RequestHead } from "../../src/core/http1/head";

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

function head(method: string, target: string): RequestHead {
  return { method, target, version: "1.1", headers: [], headBytes: 0 };
}

/** Through the real parser, so the two modules are tested together on raw bytes. */
function fromWire(raw: string, allowAbsolute = false) {
  const h = parseRequestHead(bytes(raw));
  if (h === NEED_MORE) throw new Error("incomplete head in test");
  return toRequest(h, { allowAbsolute });
}

describe("CONNECT authority-form (RFC 9110 §9.3.6)", () => {
  const ok: [authority: string, host: string, port: number, isIp: boolean][] = [
    ["qagpublic.qg1.apps.qualys.com:443", "qagpublic.qg1.apps.qualys.com", 443, false],
    ["QAGPUBLIC.QG1.Apps.Qualys.COM:443", "qagpublic.qg1.apps.qualys.com", 443, false],
    ["qualys.com.:443", "qualys.com", 443, false],
    ["a-b.c9.example:8443", "a-b.c9.example", 8443, false],
    ["localhost:1", "localhost", 1, false],
    ["xn--bcher-kva.example:443", "xn--bcher-kva.example", 443, false],
    ["host:65535", "host", 65535, false],
    ["10.0.0.1:443", "10.0.0.1", 443, true],
    ["255.255.255.255:443", "255.255.255.255", 443, true],
    ["0.0.0.0:443", "0.0.0.0", 443, true],
    ["[::1]:443", "::1", 443, true],
    ["[2001:DB8::1]:443", "2001:db8::1", 443, true],
    ["[2001:0db8:0000:0000:0000:0000:0000:0001]:443", "2001:db8::1", 443, true],
    ["[0:0:0:0:0:0:0:1]:443", "::1", 443, true],
    ["[::]:443", "::", 443, true],
    ["[1::]:443", "1::", 443, true],
    ["[1:2:3:4:5:6:7::]:443", "1:2:3:4:5:6:7:0", 443, true],
    ["[1:0:0:2:0:0:0:3]:443", "1:0:0:2::3", 443, true],
    ["[::ffff:127.0.0.1]:443", "::ffff:127.0.0.1", 443, true],
    ["[::FFFF:7f00:1]:443", "::ffff:127.0.0.1", 443, true],
  ];
  for (const [authority, host, port, isIp] of ok) {
    test(`CONNECT ${authority} → ${host} ${port}`, () => {
      expect(toRequest(head("CONNECT", authority), { allowAbsolute: false })).toEqual({
        kind: "connect",
        target: { host, port, isIp },
      });
    });
  }

  const bad: [authority: string, why: string | RegExp][] = [
    ["qualys.com", /missing port/],
    ["[::1]", /missing port/],
    ["qualys.com:", /empty port/],
    ["host:0", /1-65535/],
    ["host:99999", /1-65535/],
    ["host:65536", /1-65535/],
    ["host:443x", /1-65535/],
    ["host:-1", /1-65535/],
    ["host:+443", /1-65535/],
    ["host:123456", /1-65535/],
    ["user@host:443", /userinfo/],
    ["user:pass@host:443", /userinfo/],
    [":443", /empty host/],
    [".:443", /empty host/],
    ["host..example:443", /valid host name/],
    ["-host.example:443", /valid host name/],
    ["host-.example:443", /valid host name/],
    ["ho_st.example:443", /valid host name/],
    [`${"a".repeat(64)}.example:443`, /valid host name/],
    [`${"a.".repeat(127)}ab:443`, /253/],
    ["bücher.example:443", /punycode/],
    ["b\xc3\xbccher.example:443", /punycode/], // UTF-8 bytes as the head parser decodes them (latin1)
    ["::1:443", /brackets/],
    ["[::1:443", /unterminated/],
    ["[::1]443", /:port/],
    ["[1::2::3]:443", /IPv6/],
    ["[1:2:3:4:5:6:7:8:9]:443", /IPv6/],
    ["[1:]:443", /IPv6/],
    ["[:1]:443", /IPv6/],
    ["[fe80::1%25eth0]:443", /IPv6/],
    ["[1.2.3.4]:443", /IPv6/],
    ["[::ffff:256.0.0.1]:443", /IPv6/],
    // resolvers read these as 127.0.0.1; they must not slip past a policy that checks IP literals
    ["127.1:443", /dotted quad/],
    ["2130706433:443", /dotted quad/],
    ["0x7f.0.0.1:443", /dotted quad/],
    ["127.0.0.01:443", /dotted quad/],
    ["256.0.0.1:443", /dotted quad/],
    ["1.2.3.4.5:443", /dotted quad/],
    ["/:443", /not a URL or a path/],
    ["http://host:443", /not a URL or a path/],
    ["0x7f:443", /dotted quad/],
  ];
  for (const [authority, why] of bad) {
    test(`CONNECT ${JSON.stringify(authority)} → PX_BAD_AUTHORITY`, () => {
      const e = errorOf(() => toRequest(head("CONNECT", authority), { allowAbsolute: true }));
      expect(e.code).toBe("PX_BAD_AUTHORITY");
      expect(e.side).toBe("client");
      expect(e.message).toMatch(why);
    });
  }
});

describe("raw heads through parseRequestHead + toRequest", () => {
  test("CONNECT [::1]:443", () => {
    expect(fromWire("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n")).toEqual({
      kind: "connect",
      target: { host: "::1", port: 443, isIp: true },
    });
  });
  test("extra CRLFs before CONNECT still give the target (same trap as mitmproxy #4870)", () => {
    expect(fromWire("\r\n\r\nCONNECT Qualys.COM.:443 HTTP/1.1\r\n\r\n")).toEqual({
      kind: "connect",
      target: { host: "qualys.com", port: 443, isIp: false },
    });
  });
  test("UTF-8 host bytes ask for punycode", () => {
    const e = errorOf(() => fromWire("CONNECT b\xc3\xbccher.de:443 HTTP/1.1\r\n\r\n"));
    expect(e.code).toBe("PX_BAD_AUTHORITY");
    expect(e.message).toContain("punycode");
  });
});

describe("health, absolute-form and refusals", () => {
  test("GET and HEAD /healthz sent to the port directly", () => {
    expect(toRequest(head("GET", "/healthz"), { allowAbsolute: false })).toEqual({ kind: "health" });
    expect(toRequest(head("HEAD", "/healthz"), { allowAbsolute: false })).toEqual({ kind: "health" });
    expect(toRequest(head("GET", "/healthz?probe=lb"), { allowAbsolute: false })).toEqual({ kind: "health" });
  });

  test("absolute-form http:// when allowed", () => {
    expect(fromWire("GET http://Patches.Vendor.example/win/kb1.msu?x=1 HTTP/1.1\r\n\r\n", true)).toEqual({
      kind: "absolute",
      target: { host: "patches.vendor.example", port: 80, isIp: false },
      url: { scheme: "http", host: "patches.vendor.example", port: 80, path: "/win/kb1.msu?x=1" },
    });
    expect(toRequest(head("GET", "HTTP://h.example:8080"), { allowAbsolute: true })).toEqual({
      kind: "absolute",
      target: { host: "h.example", port: 8080, isIp: false },
      url: { scheme: "http", host: "h.example", port: 8080, path: "/" },
    });
    expect(toRequest(head("HEAD", "http://[::1]/a"), { allowAbsolute: true })).toMatchObject({
      url: { host: "::1", port: 80, path: "/a" },
    });
    expect(toRequest(head("GET", "http://h.example?q"), { allowAbsolute: true })).toMatchObject({ url: { path: "/?q" } });
  });

  const refused: [method: string, target: string, allowAbsolute: boolean, code: string, why: RegExp][] = [
    ["GET", "/", false, "PX_METHOD_NOT_ALLOWED", /this is a proxy: send CONNECT host:port/],
    ["GET", "/index.html", true, "PX_METHOD_NOT_ALLOWED", /this is a proxy: send CONNECT host:port/],
    ["POST", "/healthz", false, "PX_METHOD_NOT_ALLOWED", /this is a proxy/],
    ["GET", "/healthz/x", false, "PX_METHOD_NOT_ALLOWED", /this is a proxy/],
    ["GET", "/HEALTHZ", false, "PX_METHOD_NOT_ALLOWED", /this is a proxy/],
    // RFC 9110 §9.1: methods are case-sensitive; "connect" is not CONNECT.
    ["connect", "qualys.com:443", false, "PX_METHOD_NOT_ALLOWED", /CONNECT host:port/],
    ["OPTIONS", "*", false, "PX_METHOD_NOT_ALLOWED", /CONNECT host:port/],
    ["GET", "qualys.com:443", false, "PX_METHOD_NOT_ALLOWED", /CONNECT host:port/],
    ["GET", "http://qualys.com/", false, "PX_METHOD_NOT_ALLOWED", /not accepted on this port/],
    ["GET", "https://qualys.com/", true, "PX_BAD_REQUEST", /use CONNECT for https/],
    ["GET", "https://qualys.com/", false, "PX_BAD_REQUEST", /use CONNECT for https/],
    ["GET", "ftp://qualys.com/", true, "PX_BAD_REQUEST", /unsupported scheme/],
    ["GET", "http://qualys.com/#frag", true, "PX_BAD_REQUEST", /fragment/],
    ["GET", "http://user@qualys.com/", true, "PX_BAD_AUTHORITY", /userinfo/],
    ["GET", "http:///x", true, "PX_BAD_AUTHORITY", /empty authority/],
    ["GET", "http://qualys.com:0/", true, "PX_BAD_AUTHORITY", /1-65535/],
  ];
  for (const [method, target, allowAbsolute, code, why] of refused) {
    test(`${method} ${target} (allowAbsolute=${allowAbsolute}) → ${code}`, () => {
      const e = errorOf(() => toRequest(head(method, target), { allowAbsolute }));
      expect(e.code).toBe(code);
      expect(e.side).toBe("client");
      expect(e.message).toMatch(why);
    });
  }
});

describe("parseAuthority", () => {
  test("defaultPort makes the port optional", () => {
    expect(parseAuthority("Example.COM", 80)).toEqual({ host: "example.com", port: 80, isIp: false });
    expect(parseAuthority("[::1]", 80)).toEqual({ host: "::1", port: 80, isIp: true });
    expect(parseAuthority("example.com:8080", 80)).toEqual({ host: "example.com", port: 8080, isIp: false });
  });
  test("without defaultPort the port is required", () => {
    expect(errorOf(() => parseAuthority("example.com")).code).toBe("PX_BAD_AUTHORITY");
  });
  test("messages escape peer bytes", () => {
    const e = errorOf(() => parseAuthority("a\x00b:443"));
    expect(e.code).toBe("PX_BAD_AUTHORITY");
    expect(e.message).toContain("\\u0000");
    expect(e.message).not.toContain("\x00");
  });
});
