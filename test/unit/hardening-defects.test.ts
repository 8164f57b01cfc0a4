/**
 * @module Issue 12's defects, pure parts: a bare LF cannot end a chunked body's trailers (smuggling), two Host
 * fields or none on HTTP/1.1 are refused (RFC 9112 §3.2), [hosts] is a Map ("constructor" is a name like any
 * other), the admin door never locks out the right token and does not count a missing one, and
 * `proxy.handshake_timeout_s` is validated at the door. Each test failed on the code before its fix.
 */
import { describe, expect, test } from "bun:test";
import { BodyDecoder } from "../../src/core/http1/body";
import { checkHostField, parseRequestHead, NEED_MORE, type RequestHead } from "../../src/core/http1/head";
import { DEFAULTS, parseConfig } from "../../src/core/config";
import { compilePolicy, mappedAddress } from "../../src/core/policy";
import { resolveTarget } from "../../src/workers/upstream";
import { FailureThrottle, checkToken, decideDoor } from "../../src/admin/guard";
import { ProxyError } from "../../src/core/errors";
import { errorOf } from "../peers/helpers";

const ascii = (s: string) => new TextEncoder().encode(s);
const text = (parts: Uint8Array[]) => Buffer.concat(parts).toString("latin1");

describe("defect 1: a chunked body's trailer section ends only with CRLF", () => {
  test("0\\r\\n\\n followed by a request is refused, not read as the end and a second request", () => {
    const d = new BodyDecoder({ kind: "chunked" }, "client");
    const smuggled = "0\r\n\nGET http://h/smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    expect(errorOf(() => d.push(ascii(smuggled))).code).toBe("PX_BAD_BODY");
  });

  test("the same bytes split after the bare LF are refused too (incremental)", () => {
    const d = new BodyDecoder({ kind: "chunked" }, "client");
    d.push(ascii("3\r\nabc\r\n0\r\n"));
    expect(errorOf(() => d.push(ascii("\n"))).code).toBe("PX_BAD_BODY");
  });

  test("a trailer line ending in a bare LF is refused; CRLF trailers still end the body with the rest left over", () => {
    expect(errorOf(() => new BodyDecoder({ kind: "chunked" }, "client").push(ascii("0\r\nX-T: 1\n\r\n"))).code).toBe("PX_BAD_BODY");
    const ok = new BodyDecoder({ kind: "chunked" }, "client").push(ascii("2\r\nhi\r\n0\r\nX-T: 1\r\n\r\nNEXT"));
    expect({ body: text(ok.chunks), done: ok.done, rest: ok.rest && text([ok.rest]) }).toEqual({ body: "hi", done: true, rest: "NEXT" });
  });

  test("an origin's chunked body with a bare LF after the last chunk is a bad response, not a complete one", () => {
    expect(errorOf(() => new BodyDecoder({ kind: "chunked" }, "upstream").push(ascii("0\r\n\n"))).code).toBe("PX_UPSTREAM_BAD_RESPONSE");
  });
});

describe("defect 9: Host (RFC 9112 §3.2)", () => {
  const head = (s: string): RequestHead => {
    const h = parseRequestHead(ascii(s));
    if (h === NEED_MORE) throw new Error("incomplete head");
    return h;
  };
  test.each([
    ["two Host fields", "GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"],
    ["two Host fields, different case", "GET /x HTTP/1.1\r\nhost: a.example\r\nHOST: a.example\r\n\r\n"],
    ["no Host on HTTP/1.1", "GET /x HTTP/1.1\r\nAccept: */*\r\n\r\n"],
    ["a Host list", "GET /x HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n"],
  ])("%s → PX_BAD_HOST (400)", (_what, raw) => {
    const e = errorOf(() => checkHostField(head(raw)));
    expect({ code: e.code, side: e.side }).toEqual({ code: "PX_BAD_HOST", side: "client" });
  });
  test("one Host on 1.1, and none on 1.0, pass", () => {
    expect(errorOf(() => checkHostField(head("GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n"))).code).toBe("no error");
    expect(errorOf(() => checkHostField(head("GET /x HTTP/1.0\r\n\r\n"))).code).toBe("no error");
  });
});

describe("defect 8: [hosts] is a Map", () => {
  const config = parseConfig({ hosts: { "origin.example": "127.0.0.1" } });
  const policy = compilePolicy(config);
  test("a host named like an Object property is not mapped", () => {
    for (const name of ["constructor", "toString", "__proto__", "hasOwnProperty"]) expect(mappedAddress(policy, name)).toBeUndefined();
    expect(mappedAddress(policy, "ORIGIN.example.")).toBe("127.0.0.1");
  });
  test("resolving 'constructor' gives an address or a ProxyError, never Object (was: s.includes is not a function)", async () => {
    const got = await resolveTarget({ host: "constructor", port: 443, isIp: false }, config, policy).then(
      (v) => (typeof v === "string" ? "an address string" : `a ${typeof v}`),
      (e) => (e instanceof ProxyError ? "a ProxyError" : `a ${(e as Error).constructor.name}`),
    );
    expect(["an address string", "a ProxyError"]).toContain(got);
  });
  test("a mapped name resolves to its mapping without DNS", async () => {
    expect(await resolveTarget({ host: "origin.example", port: 443, isIp: false }, config, policy)).toBe("127.0.0.1");
  });
});

describe("defect 7: the admin door", () => {
  const TOKEN = "right-token-0123456789";
  const req = (auth?: string) => new Request("http://127.0.0.1/api/status", auth === undefined ? {} : { headers: { authorization: auth } });
  const NOW = 1_700_000_000_000;

  test("what a request presented", () => {
    expect([req(), req(""), req(`Bearer ${TOKEN}`), req("Bearer nope"), req("Basic abc")].map((r) => checkToken(r, TOKEN))).toEqual([
      "missing",
      "missing",
      "right",
      "wrong",
      "wrong",
    ]);
  });

  test("ten requests without a token are 401 and never lock anyone out", () => {
    const t = new FailureThrottle(5, 60_000);
    for (let i = 0; i < 10; i++) expect(decideDoor(checkToken(req(), TOKEN), t, "127.0.0.1", NOW + i)).toEqual({ pass: false, status: 401, retryAfter: 0 });
    expect(decideDoor(checkToken(req("Bearer wrong"), TOKEN), t, "127.0.0.1", NOW + 20)).toEqual({ pass: false, status: 401, retryAfter: 0 });
  });

  test("after five wrong tokens: 429 for wrong ones, the right token still passes, and passing does not reset the count", () => {
    const t = new FailureThrottle(5, 60_000);
    for (let i = 0; i < 5; i++) expect(decideDoor("wrong", t, "127.0.0.1", NOW + i)).toMatchObject({ pass: false, status: 401 });
    expect(decideDoor("wrong", t, "127.0.0.1", NOW + 10)).toMatchObject({ pass: false, status: 429 });
    expect(decideDoor("right", t, "127.0.0.1", NOW + 11)).toEqual({ pass: true });
    expect(decideDoor("wrong", t, "127.0.0.1", NOW + 12)).toMatchObject({ pass: false, status: 429 });
    expect(decideDoor("missing", t, "127.0.0.1", NOW + 13)).toMatchObject({ pass: false, status: 401 });
  });
});

describe("defect 2: proxy.handshake_timeout_s", () => {
  test("defaults to 10 and is validated at the door", () => {
    expect(DEFAULTS.proxy.handshake_timeout_s).toBe(10);
    expect(parseConfig({ proxy: { handshake_timeout_s: 2.5 } }).proxy.handshake_timeout_s).toBe(2.5);
    expect(() => parseConfig({ proxy: { handshake_timeout_s: 0 } })).toThrow("proxy.handshake_timeout_s");
    expect(() => parseConfig({ proxy: { handshake_timeout_s: "10" } })).toThrow("proxy.handshake_timeout_s");
  });
});
