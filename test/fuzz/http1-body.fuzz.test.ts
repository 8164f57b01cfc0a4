/**
 * @module Property tests of body framing (RFC 9112 §6, §7.1): the framing of a request is decided once, from a strict
 * reading of Content-Length and Transfer-Encoding; a chunked, length or close-delimited body decodes to the same body
 * and the same leftover bytes however its bytes are split; a bare LF, a bare CR, NUL or another control byte anywhere
 * in the chunked framing (size lines, extensions, the CRLF after data, trailers) is refused, never read past.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { BodyDecoder, framingForRequest, framingForResponse, type Framing } from "../../src/core/http1/body";
import type { Headers } from "../../src/core/http1/head";
import { ProxyError } from "../../src/core/errors";
import { bytes, check, chunkedBody, concatBytes, cuts, expectOnlyProxyError, splitAt, text, token } from "./arbitraries";

type Outcome = { kind: "error"; code: string } | { kind: "done"; body: string; rest: string } | { kind: "more"; body: string };

/** Feed `pieces` to a fresh decoder; the outcome names what a peer would see, whatever the split was. */
function decode(framing: Framing, pieces: Uint8Array[], side: "client" | "upstream" = "client", end = false): Outcome {
  const d = new BodyDecoder(framing, side);
  const body: Uint8Array[] = [];
  const rest: Uint8Array[] = [];
  let doneAt = 0;
  try {
    for (const p of pieces) {
      const r = d.push(p);
      for (const c of r.chunks) body.push(c.slice());
      if (r.rest) rest.push(r.rest.slice());
      if (r.done && !doneAt) doneAt = 1;
      // framing is decided exactly once: once done, the decoder stays done and hands every later byte back
      if (doneAt) expect(d.done).toBe(true);
    }
    if (end) d.end();
  } catch (e) {
    if (!(e instanceof ProxyError)) throw e;
    return { kind: "error", code: e.code };
  }
  return d.done ? { kind: "done", body: text(concatBytes(body)), rest: text(concatBytes(rest)) } : { kind: "more", body: text(concatBytes(body)) };
}

describe("chunked bodies (RFC 9112 §7.1)", () => {
  test("a valid chunked body, any split: the same body, done once, and the bytes after it handed back untouched", () => {
    check(
      "chunked round trip",
      fc.property(chunkedBody, fc.uint8Array({ maxLength: 30 }), cuts, (c, next, at) => {
        const wire = concatBytes([bytes(c.wire), next]);
        const whole = decode({ kind: "chunked" }, [wire]);
        expect(whole).toEqual({ kind: "done", body: text(c.body), rest: text(next) });
        expect(decode({ kind: "chunked" }, splitAt(wire, at))).toEqual(whole);
        expect(decode({ kind: "chunked" }, splitAt(wire, [...Array(wire.length).keys()]))).toEqual(whole); // byte by byte
      }),
      300,
      1,
    );
  });

  const ALPHABET = fc.constantFrom(..."0123456789abcdefABCDEF;= \t\"\\\r\n\r\n\r\nxX:\x00\x01\x7f\x0b\xa0");
  test("any bytes, any split: the same outcome as fed whole (error, done with the same rest, or waiting)", () => {
    check(
      "chunked split-invariance",
      fc.property(fc.array(ALPHABET, { maxLength: 60 }), cuts, (cs, at) => {
        const wire = bytes(cs.join(""));
        const whole = decode({ kind: "chunked" }, [wire]);
        const split = decode({ kind: "chunked" }, splitAt(wire, at));
        if (whole.kind === "more") expect(split.kind).toBe("more");
        else expect(split).toEqual(whole);
      }),
      2000,
      2,
    );
  });

  const BAD = ["\n", "\r", "\x00", "\x01", "\x7f", "\x0b", "\x0c"];
  test("a bare LF, bare CR, NUL or control byte inserted anywhere in the framing is refused", () => {
    check(
      "chunked control bytes refused",
      fc.property(chunkedBody, fc.nat(), fc.nat(), fc.constantFrom(...BAD), (c, which, off, bad) => {
        const framing = c.segs.map((g, i) => [g, i] as const).filter(([g]) => g.framing);
        const [seg, idx] = framing[which % framing.length]!;
        let at = off % seg.s.length; // before an existing framing byte: never after the body's final LF
        // LF between a CR and its LF is the same bytes as LF after that CRLF (for the last CRLF: the next message)
        if (bad === "\n" && seg.s[at] === "\n") at--;
        const segs = c.segs.map((g, i) => (i === idx ? g.s.slice(0, at) + bad + g.s.slice(at) : g.s));
        const out = decode({ kind: "chunked" }, [bytes(segs.join("") + "GET /next HTTP/1.1\r\n\r\n")]);
        if (out.kind !== "error") throw new Error(`accepted ${JSON.stringify(segs.join(""))} as ${JSON.stringify(out)}`);
      }),
      1500,
      3,
    );
  });

  test("obs-fold in a trailer section is refused (RFC 9112 §5.2 applies to trailer fields too)", () => {
    check(
      "trailer obs-fold",
      fc.property(chunkedBody.filter((c) => c.trailers > 0), fc.constantFrom(" ", "\t"), (c, ws) => {
        const wire = c.wire.replace(/\r\n\r\n$/, `\r\n${ws}folded\r\n\r\n`);
        expect(decode({ kind: "chunked" }, [bytes(wire)]).kind).toBe("error");
      }),
      200,
      4,
    );
  });

  test.each([
    ["5\r\r\nhello\r\n0\r\n\r\n", "bare CR before the CRLF of a size line"],
    ["5\rX\r\nhello\r\n0\r\n\r\n", "bare CR inside a size line"],
    [" 5\r\nhello\r\n0\r\n\r\n", "space before the size"],
    ["5 \r\nhello\r\n0\r\n\r\n", "space after the size, no extension"],
    ["\xa05\r\nhello\r\n0\r\n\r\n", "NBSP (0xA0) before the size: String.trim() removed it"],
    ["\x0b5\r\nhello\r\n0\r\n\r\n", "vertical tab before the size"],
    ["5;a\rb\r\nhello\r\n0\r\n\r\n", "bare CR in a chunk extension"],
    ["5;a\x00\r\nhello\r\n0\r\n\r\n", "NUL in a chunk extension"],
    ["5;\r\nhello\r\n0\r\n\r\n", "empty chunk-ext name"],
    ['5;a="x\r\nhello\r\n0\r\n\r\n', "unterminated quoted string"],
    ["5;a=b c\r\nhello\r\n0\r\n\r\n", "a space inside an extension value"],
    ["0\r\nX: a\rb\r\n\r\n", "bare CR in a trailer"],
    ["0\r\nX: a\x00\r\n\r\n", "NUL in a trailer"],
    ["0\r\nno colon here\r\n\r\n", "trailer line without a colon"],
    ["0\r\nX : a\r\n\r\n", "whitespace before a trailer's colon"],
    ["0\r\n\r\r\n", "bare CR in the last line"],
    ["0x5\r\nhello\r\n0\r\n\r\n", "0x prefix"],
    ["fffffffffffffffff\r\n", "chunk size overflow"],
  ])("refused: %j (%s)", (wire) => {
    expect(decode({ kind: "chunked" }, [bytes(wire)])).toMatchObject({ kind: "error", code: "PX_BAD_BODY" });
  });

  test.each([
    ["00005\r\nhello\r\n0\r\n\r\n", "leading zeros", "hello"],
    ["A\r\n0123456789\r\n0\r\n\r\n", "upper-case hex", "0123456789"],
    ['5 ; a = "q;\\"x" ; b\r\nhello\r\n0\r\n\r\n', "extensions with BWS and a quoted ';'", "hello"],
    ["5\r\nhello\r\n0\r\nX-T: v\r\nY:\r\n\r\n", "trailers, one empty", "hello"],
  ])("accepted: %j (%s)", (wire, _why, body) => {
    expect(decode({ kind: "chunked" }, [bytes(wire)])).toEqual({ kind: "done", body, rest: "" });
  });
});

describe("length and close-delimited bodies", () => {
  test("Content-Length: exactly that many bytes, the rest handed back, any split", () => {
    check(
      "length framing",
      fc.property(fc.integer({ min: 1, max: 80 }), fc.uint8Array({ maxLength: 120 }), cuts, (n, b, at) => {
        const out = decode({ kind: "length", length: n }, splitAt(b, at));
        if (b.length >= n) expect(out).toEqual({ kind: "done", body: text(b.subarray(0, n)), rest: text(b.subarray(n)) });
        else expect(out).toEqual({ kind: "more", body: text(b) });
      }),
      300,
      5,
    );
  });

  test("close-delimited: every byte is body until the peer closes; a cut length or chunked body is an error", () => {
    check(
      "close framing",
      fc.property(fc.uint8Array({ maxLength: 120 }), cuts, (b, at) => {
        expect(decode({ kind: "close" }, splitAt(b, at), "upstream", true)).toEqual({ kind: "done", body: text(b), rest: "" });
        if (b.length) expect(decode({ kind: "length", length: b.length + 1 }, splitAt(b, at), "upstream", true).kind).toBe("error");
      }),
      200,
      6,
    );
  });
});

/** The strict reading the framing must match: SP/HTAB are the only whitespace of a list (RFC 9110 §5.6.1). */
function oracle(headers: Headers): Framing | "error" {
  const all = (n: string) => headers.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
  const members = (vs: string[]) => vs.flatMap((v) => v.split(",")).map((s) => s.replace(/^[ \t]+|[ \t]+$/g, ""));
  const te = all("transfer-encoding");
  const cl = all("content-length");
  if (te.length) {
    if (cl.length) return "error";
    const codings = members(te).filter((s) => s !== "").map((s) => s.toLowerCase());
    if (codings.length !== 1 || codings[0] !== "chunked") return "error";
    return { kind: "chunked" };
  }
  if (cl.length) {
    const m = members(cl);
    if (!m.every((v) => /^[0-9]{1,15}$/.test(v) && v === m[0])) return "error";
    return Number(m[0]) === 0 ? { kind: "none" } : { kind: "length", length: Number(m[0]) };
  }
  return { kind: "none" };
}

describe("request framing (RFC 9112 §6.3): decided once, strictly", () => {
  const TE = ["chunked", "Chunked", "CHUNKED", "chunked, identity", "identity, chunked", "xchunked", "chunked,", ", chunked", "chunked\t", "gzip", ",", "", "chunked, chunked", "\xa0chunked", "chunked\xa0", "chunked\x0b", "chunk ed"];
  const CL = ["5", "05", "0", "5, 5", "5,5", "5, 6", "", ",", "+5", "-1", "0x5", "1e3", "5.0", "99999999999999999999", "\xa05", "5\xa0", "\x0b5", " 5", "5 5", "5,"];
  const field = fc.oneof(
    fc.tuple(fc.constantFrom("Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING"), fc.constantFrom(...TE)),
    fc.tuple(fc.constantFrom("Content-Length", "content-length"), fc.constantFrom(...CL)),
    fc.tuple(token(), fc.constantFrom("x", "chunked", "5")),
  );
  test("random CL/TE combinations: the strict oracle's answer, and only ProxyError otherwise", () => {
    check(
      "framing oracle",
      fc.property(fc.array(field, { maxLength: 4 }), (headers) => {
        const got = expectOnlyProxyError(() => framingForRequest(headers as Headers));
        const want = oracle(headers as Headers);
        if (want === "error") {
          if (got.ok) throw new Error(`${JSON.stringify(headers)} framed as ${JSON.stringify(got.value)}, expected a refusal`);
        } else {
          if (!got.ok) throw new Error(`${JSON.stringify(headers)} refused (${got.error.message}), expected ${JSON.stringify(want)}`);
          expect(got.value).toEqual(want);
        }
        // the same headers framed again give the same answer: no state between calls
        expect(expectOnlyProxyError(() => framingForRequest(headers as Headers)).ok).toBe(got.ok);
      }),
      1500,
      7,
    );
  });

  test("responses: never anything but ProxyError, and no-body statuses never read a body", () => {
    check(
      "response framing",
      fc.property(fc.array(field, { maxLength: 4 }), fc.constantFrom("GET", "HEAD", "POST"), fc.integer({ min: 100, max: 599 }), (headers, method, status) => {
        const got = expectOnlyProxyError(() => framingForResponse(method, status, headers as Headers));
        if (method === "HEAD" || status < 200 || status === 204 || status === 304) expect(got).toEqual({ ok: true, value: { kind: "none" } });
      }),
      800,
      8,
    );
  });
});
