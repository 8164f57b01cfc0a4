import { describe, expect, test } from "bun:test";
import { errorOf } from "../peers/helpers";
import { NEED_MORE, parseRequestHead, parseResponseHead, type Headers } from "../../src/core/http1/head";
import {
  ESTABLISHED,
  makeErrorResponse,
  makeResponse,
  REASONS,
  serializeRequestHead,
  serializeResponseHead,
} from "../../src/core/http1/serialize";

const text = (b: Uint8Array) => String.fromCharCode(...b); // latin1, byte for byte
const utf8 = (b: Uint8Array) => new TextDecoder().decode(b);

/** Split a serialized response into its parsed head and the body bytes after it. */
function split(b: Uint8Array) {
  const head = parseResponseHead(b);
  if (head === NEED_MORE) throw new Error(`incomplete head: ${JSON.stringify(text(b))}`);
  return { head, body: b.subarray(head.headBytes) };
}

describe("ESTABLISHED", () => {
  test("is the exact CONNECT answer", () => {
    expect(text(ESTABLISHED)).toBe("HTTP/1.1 200 Connection established\r\n\r\n");
  });
});

describe("makeErrorResponse", () => {
  const cases: [status: number, reason: string, phrase: string][] = [
    [403, "qualys.evil.example is not an allowed destination", "Forbidden"],
    [400, "missing port, expected host:port", "Bad Request"],
    [405, "this is a proxy: send CONNECT host:port", "Method Not Allowed"],
    [431, "head exceeds 16384 bytes", "Request Header Fields Too Large"],
    [502, "upstream refused", "Bad Gateway"],
    [504, "upstream timed out after 10 s", "Gateway Timeout"],
    [599, "odd", ""],
  ];
  for (const [status, reason, phrase] of cases) {
    test(`${status}: standard phrase, text body, framed and closing`, () => {
      const b = makeErrorResponse(status, reason);
      const { head, body } = split(b);
      expect(head.status).toBe(status);
      expect(head.reason).toBe(phrase);
      expect(head.headers).toEqual([
        ["Content-Type", "text/plain; charset=utf-8"],
        ["Content-Length", String(body.length)],
        ["Connection", "close"],
      ]);
      expect(utf8(body)).toBe(`${reason}\n`);
    });
  }

  test("a reason with CR/LF cannot inject headers", () => {
    const b = makeErrorResponse(403, "denied\r\nSet-Cookie: pwned=1\r\n\r\nHTTP/1.1 200 OK");
    const { head, body } = split(b);
    expect(head.headers.map(([k]) => k)).toEqual(["Content-Type", "Content-Length", "Connection"]);
    expect(utf8(body)).toBe("denied Set-Cookie: pwned=1 HTTP/1.1 200 OK\n");
    expect(body.length).toBe(Number(head.headers[1][1]));
  });

  test("the reason is cut to 512 chars", () => {
    const { body } = split(makeErrorResponse(400, "x".repeat(5000)));
    const line = utf8(body);
    expect(line.endsWith("…\n")).toBe(true);
    expect(line.length).toBe(513);
  });

  test("UTF-8 reasons are counted in bytes", () => {
    const { head, body } = split(makeErrorResponse(400, "bücher.de: use punycode"));
    expect(head.headers[1]).toEqual(["Content-Length", String(body.length)]);
    expect(body.length).toBe("bücher.de: use punycode\n".length + 1);
    expect(utf8(body)).toBe("bücher.de: use punycode\n");
  });

  test("extra headers are appended; our framing wins", () => {
    const extra: Headers = [
      ["Allow", "CONNECT"],
      ["Content-Length", "999"],
      ["Connection", "keep-alive"],
      ["Proxy-Authenticate", 'Basic realm="agate"'],
    ];
    const { head, body } = split(makeErrorResponse(407, "credentials required", extra));
    expect(head.headers).toEqual([
      ["Content-Type", "text/plain; charset=utf-8"],
      ["Allow", "CONNECT"],
      ["Proxy-Authenticate", 'Basic realm="agate"'],
      ["Content-Length", String(body.length)],
      ["Connection", "close"],
    ]);
  });

  test("an extra Content-Type replaces ours", () => {
    const { head } = split(makeErrorResponse(503, "draining", [["content-type", "text/html"]]));
    expect(head.headers[0]).toEqual(["content-type", "text/html"]);
    expect(head.headers.filter(([k]) => k.toLowerCase() === "content-type").length).toBe(1);
  });
});

describe("makeResponse", () => {
  test("adds Content-Length for a string body", () => {
    const { head, body } = split(makeResponse(200, [["Content-Type", "text/plain"]], "ok\n"));
    expect(head).toMatchObject({ status: 200, reason: "OK", headers: [["Content-Type", "text/plain"], ["Content-Length", "3"]] });
    expect(utf8(body)).toBe("ok\n");
  });
  test("keeps the caller's framing", () => {
    const b = makeResponse(200, [["content-length", "3"]], Uint8Array.of(1, 2, 3));
    const { head, body } = split(b);
    expect(head.headers).toEqual([["content-length", "3"]]);
    expect(Array.from(body)).toEqual([1, 2, 3]);
    const chunked = split(makeResponse(200, [["Transfer-Encoding", "chunked"]], "0\r\n\r\n"));
    expect(chunked.head.headers).toEqual([["Transfer-Encoding", "chunked"]]);
  });
  test("without a body: head only", () => {
    const b = makeResponse(204, [["X-A", "1"]]);
    expect(text(b)).toBe("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n");
  });
});

describe("serializeRequestHead / serializeResponseHead", () => {
  test("request head round-trips through the parser, bytes and order kept", () => {
    const headers: Headers = [
      ["Host", "qagpublic.qg1.apps.qualys.com:443"],
      ["x-lower", "v\tw"],
      ["X-Latin1", "\xe9\x80"],
    ];
    const b = serializeRequestHead("CONNECT", "qagpublic.qg1.apps.qualys.com:443", headers);
    expect(text(b)).toBe("CONNECT qagpublic.qg1.apps.qualys.com:443 HTTP/1.1\r\nHost: qagpublic.qg1.apps.qualys.com:443\r\nx-lower: v\tw\r\nX-Latin1: \xe9\x80\r\n\r\n");
    expect(parseRequestHead(b)).toEqual({ method: "CONNECT", target: "qagpublic.qg1.apps.qualys.com:443", version: "1.1", headers, headBytes: b.length });
  });

  test("response head: default phrase, custom phrase, empty phrase", () => {
    expect(text(serializeResponseHead({ status: 404, headers: [] }))).toBe("HTTP/1.1 404 Not Found\r\n\r\n");
    expect(text(serializeResponseHead({ status: 200, reason: "Connection established", headers: [] }))).toBe(text(ESTABLISHED));
    expect(text(serializeResponseHead({ status: 299, headers: [["A", "b"]] }))).toBe("HTTP/1.1 299 \r\nA: b\r\n\r\n");
  });

  test("every REASONS entry parses back", () => {
    for (const [code, phrase] of Object.entries(REASONS)) {
      const { head } = split(serializeResponseHead({ status: Number(code), headers: [] }));
      expect([head.status, head.reason]).toEqual([Number(code), phrase]);
    }
  });

  const refused: [name: string, fn: () => unknown][] = [
    ["CRLF in a value", () => serializeRequestHead("GET", "/", [["A", "b\r\nEvil: 1"]])],
    ["LF in a value", () => serializeResponseHead({ status: 200, headers: [["A", "b\nc"]] })],
    ["NUL in a value", () => serializeResponseHead({ status: 200, headers: [["A", "b\x00"]] })],
    ["space in a name", () => serializeRequestHead("GET", "/", [["A B", "c"]])],
    ["empty name", () => serializeRequestHead("GET", "/", [["", "c"]])],
    ["colon in a name", () => serializeRequestHead("GET", "/", [["A:", "c"]])],
    ["method with a space", () => serializeRequestHead("GET /x", "/", [])],
    ["target with a space", () => serializeRequestHead("GET", "/a b", [])],
    ["empty target", () => serializeRequestHead("GET", "", [])],
    ["CR in a reason", () => serializeResponseHead({ status: 200, reason: "OK\r\nA: b", headers: [] })],
    ["status 99", () => serializeResponseHead({ status: 99, headers: [] })],
    ["status 1000", () => serializeResponseHead({ status: 1000, headers: [] })],
    ["status 200.5", () => serializeResponseHead({ status: 200.5, headers: [] })],
    ["char above U+00FF in a value", () => serializeRequestHead("GET", "/", [["A", "日本"]])],
  ];
  for (const [name, fn] of refused) {
    test(`${name} → PX_BAD_OUTGOING_HEAD (internal)`, () => {
      const e = errorOf(fn);
      expect(e.code).toBe("PX_BAD_OUTGOING_HEAD");
      expect(e.side).toBe("internal");
    });
  }
});
