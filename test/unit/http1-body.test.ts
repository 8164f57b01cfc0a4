/** Body framing (RFC 9112 §6) and the incremental decoder, fed whole and byte by byte. */
import { describe, expect, test } from "bun:test";
import { BodyDecoder, encodeChunk, framingForRequest, framingForResponse, lastChunk, type Framing } from "../../src/core/http1/body";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (parts: Uint8Array[]) => new TextDecoder().decode(Buffer.concat(parts));

function feed(f: Framing, input: string, step = 0) {
  const d = new BodyDecoder(f);
  const bytes = enc(input);
  const out: Uint8Array[] = [];
  let rest: Uint8Array | null = null;
  const pieces = step ? Array.from({ length: Math.ceil(bytes.length / step) }, (_, i) => bytes.subarray(i * step, (i + 1) * step)) : [bytes];
  for (const p of pieces) {
    if (rest) {
      rest = Buffer.concat([rest, p]);
      continue;
    }
    const r = d.push(p);
    out.push(...r.chunks.map((c) => c.slice()));
    if (r.rest) rest = r.rest.slice();
  }
  return { body: dec(out), done: d.done, rest: rest ? new TextDecoder().decode(rest) : null };
}

describe("framing (RFC 9112 §6.3)", () => {
  test.each([
    [[["Content-Length", "5"]], { kind: "length", length: 5 }],
    [[["Content-Length", "0"]], { kind: "none" }],
    [[["Transfer-Encoding", "chunked"]], { kind: "chunked" }],
    [[], { kind: "none" }],
    [[["Content-Length", "5"], ["content-length", "5"]], { kind: "length", length: 5 }],
  ] as const)("request %j → %j", (h, f) => {
    expect(framingForRequest(h as any)).toEqual(f as any);
  });
  test.each([
    [[["Content-Length", "5"], ["Transfer-Encoding", "chunked"]], "both Transfer-Encoding and Content-Length"],
    [[["Content-Length", "5"], ["Content-Length", "6"]], "invalid Content-Length"],
    [[["Content-Length", "-1"]], "invalid Content-Length"],
    [[["Content-Length", "1e3"]], "invalid Content-Length"],
    [[["Transfer-Encoding", "gzip"]], "must end with chunked"],
  ] as const)("request %j refused: %s", (h, msg) => {
    expect(() => framingForRequest(h as any)).toThrow(msg);
  });
  test("responses: HEAD, 204, 304 and 1xx have no body; no length means close-delimited", () => {
    expect(framingForResponse("HEAD", 200, [["Content-Length", "10"]])).toEqual({ kind: "none" });
    expect(framingForResponse("GET", 304, [["Content-Length", "10"]])).toEqual({ kind: "none" });
    expect(framingForResponse("GET", 204, [])).toEqual({ kind: "none" });
    expect(framingForResponse("GET", 200, [])).toEqual({ kind: "close" });
    expect(framingForResponse("GET", 200, [["Transfer-Encoding", "chunked"]])).toEqual({ kind: "chunked" });
  });
});

describe("decoder", () => {
  const chunked = "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
  test.each([0, 1, 2, 3, 7])("chunked with extensions and trailers, fed %i bytes at a time", (step) => {
    const r = feed({ kind: "chunked" }, chunked, step);
    expect(r.body).toBe("hello, world");
    expect(r.done).toBe(true);
    expect(r.rest).toBe("NEXT");
  });
  test.each([0, 1, 4])("content-length leaves the next message over (step %i)", (step) => {
    const r = feed({ kind: "length", length: 5 }, "helloGET / HTTP/1.1", step);
    expect(r.body).toBe("hello");
    expect(r.done).toBe(true);
    expect(r.rest).toBe("GET / HTTP/1.1");
  });
  test.each([
    ["zz\r\nhello\r\n", "invalid chunk size"],
    ["5\r\nhelloXX", "chunk data must be followed by CRLF"],
    ["5\nhello\r\n", "must end with CRLF"],
  ])("malformed chunked %j → %s", (input, msg) => {
    expect(() => feed({ kind: "chunked" }, input)).toThrow(msg);
  });
  test("a body cut short is an error at end(); close-delimited ends cleanly", () => {
    const d = new BodyDecoder({ kind: "length", length: 10 });
    d.push(enc("abc"));
    expect(() => d.end()).toThrow("connection closed before the body was complete (3 bytes received)");
    const c = new BodyDecoder({ kind: "close" });
    c.push(enc("abc"));
    c.end();
    expect(c.done).toBe(true);
  });
  test("encodeChunk round-trips through the decoder", () => {
    const parts = [...encodeChunk(enc("abc")), ...encodeChunk(enc("")), ...encodeChunk(enc("defgh")), lastChunk()];
    const r = feed({ kind: "chunked" }, dec(parts));
    expect(r.body).toBe("abcdefgh");
    expect(r.done).toBe(true);
  });
});
