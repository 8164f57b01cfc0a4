/**
 * @module Property tests of the head parser and serialiser (RFC 9112 §2–§5): random bytes never throw anything but a
 * ProxyError; a head that parses, serialised, parses to the same value; any prefix of a head is NEED_MORE (the head is
 * found the same way however the bytes arrive); a bare LF, bare CR, NUL, other control byte or obs-fold anywhere in a
 * request head is refused, never repaired; the size and field-count limits hold on every call.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { NEED_MORE, parseRequestHead, parseResponseHead, type RequestHead } from "../../src/core/http1/head";
import { serializeRequestHead, serializeResponseHead } from "../../src/core/http1/serialize";
import { bytes, check, expectOnlyProxyError, fieldValue, plainHeaders, target, text, token, vchar } from "./arbitraries";

const LIMITS = { maxHeadBytes: 4096, maxHeaders: 20 };

const requestHead = fc.record({ method: token(10), target, headers: plainHeaders });
const responseHead = fc.record({
  status: fc.integer({ min: 100, max: 999 }),
  reason: fc.array(fc.oneof(vchar, fc.constant(" ")), { maxLength: 20 }).map((cs) => cs.join("")),
  headers: plainHeaders,
});

/** What a request head says, without where it sat in the buffer. */
const valueOf = (h: RequestHead) => ({ method: h.method, target: h.target, version: h.version, headers: h.headers });

describe("request heads", () => {
  test("random bytes: a head, NEED_MORE or a ProxyError, nothing else", () => {
    const unit = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(..."GET / HTTP/1.1\r\n:Host \t") }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)) });
    check(
      "request head: only ProxyError",
      fc.property(fc.array(unit, { maxLength: 120 }), (cs) => {
        expectOnlyProxyError(() => parseRequestHead(bytes(cs.join("")), LIMITS));
      }),
      3000,
      11,
    );
  });

  test("serialised and parsed again: the same method, target and fields, and headBytes is the whole head", () => {
    check(
      "request head round trip",
      fc.property(requestHead, fc.uint8Array({ maxLength: 20 }), (h, body) => {
        const wire = serializeRequestHead(h.method, h.target, h.headers);
        const buf = new Uint8Array([...wire, ...body]);
        const parsed = parseRequestHead(buf, LIMITS);
        if (parsed === NEED_MORE) throw new Error("NEED_MORE for a complete head");
        expect(valueOf(parsed)).toEqual({ ...h, version: "1.1" });
        expect(parsed.headBytes).toBe(wire.length);
        // and once more: serialise(parse(x)) is a fixed point
        expect(text(serializeRequestHead(parsed.method, parsed.target, parsed.headers))).toBe(text(wire));
      }),
      1000,
      12,
    );
  });

  test("every strict prefix of a head is NEED_MORE: the end is found the same way however bytes arrive", () => {
    check(
      "request head prefixes",
      fc.property(requestHead, fc.nat(), (h, cut) => {
        const wire = serializeRequestHead(h.method, h.target, h.headers);
        const at = cut % wire.length;
        expect(parseRequestHead(wire.subarray(0, at), LIMITS)).toBe(NEED_MORE);
      }),
      800,
      13,
    );
  });

  const BAD = ["\n", "\r", "\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1f", "\x7f"];
  test("a bare LF, bare CR, NUL or control byte anywhere in a request head: refused (or, inside the final CRLFCRLF, waiting and refused once the head ends)", () => {
    check(
      "request head control bytes",
      fc.property(requestHead, fc.nat(), fc.constantFrom(...BAD), (h, pos, bad) => {
        const wire = text(serializeRequestHead(h.method, h.target, h.headers));
        // positions before the final LF; LF between a CR and its LF is LF after a CRLF, so step back one
        let at = pos % (wire.length - 1);
        if (bad === "\n" && wire[at] === "\n") at--;
        const mutated = wire.slice(0, at) + bad + wire.slice(at);
        const r = expectOnlyProxyError(() => parseRequestHead(bytes(mutated), LIMITS));
        if (r.ok && r.value === NEED_MORE) {
          // a byte inserted in the final CRLFCRLF hides the end; once more bytes end the head, it must be refused
          expect(at).toBeGreaterThanOrEqual(wire.length - 4);
          const more = expectOnlyProxyError(() => parseRequestHead(bytes(`${mutated}\r\n\r\n`), LIMITS));
          if (more.ok) throw new Error(`accepted ${JSON.stringify(mutated)}\\r\\n\\r\\n as ${JSON.stringify(more.value)}`);
          return;
        }
        if (r.ok) throw new Error(`accepted ${JSON.stringify(mutated)} as ${JSON.stringify(r.value)}`);
      }),
      3000,
      14,
    );
  });

  test("obs-fold (a field line starting with SP or HTAB) in a request is refused (RFC 9112 §5.2)", () => {
    check(
      "request obs-fold",
      fc.property(requestHead.filter((h) => h.headers.length > 0), fc.nat(), fc.constantFrom(" ", "\t"), fieldValue, (h, which, ws, v) => {
        const headers = h.headers.map(([k, x], i) => [k, i === which % h.headers.length ? `${x}\r\n${ws}${v}` : x] as [string, string]);
        const wire = `${h.method} ${h.target} HTTP/1.1\r\n${headers.map(([k, x]) => `${k}: ${x}\r\n`).join("")}\r\n`;
        const r = expectOnlyProxyError(() => parseRequestHead(bytes(wire), LIMITS));
        expect(r.ok).toBe(false);
      }),
      500,
      15,
    );
  });

  test("a request line already wrong while the head is incomplete is refused at once, not held until head_timeout_s", () => {
    for (const early of ["\x81\x85raw-frame", "\x16\x03\x01\x02\x00\x01", "GE\x00T / HTTP/1.1", "GET /a\x01b", "GET /x\r", " GET / HTTP/1.1"]) {
      const r = expectOnlyProxyError(() => parseRequestHead(bytes(early), LIMITS));
      expect({ early, refused: !r.ok }).toEqual({ early, refused: true });
    }
    check(
      "partial heads: refused now or the same as later",
      fc.property(requestHead, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 }), (h, cut, junk) => {
        // a prefix of a valid head is never refused; a prefix with junk is refused now only if refused once complete
        const wire = serializeRequestHead(h.method, h.target, h.headers);
        const p = wire.subarray(0, cut % wire.length);
        expect(parseRequestHead(p, LIMITS)).toBe(NEED_MORE);
        const mixed = new Uint8Array([...p, ...junk]);
        const now = expectOnlyProxyError(() => parseRequestHead(mixed, LIMITS));
        if (!now.ok) {
          const later = expectOnlyProxyError(() => parseRequestHead(new Uint8Array([...mixed, ...bytes(" HTTP/1.1\r\nA: b\r\n\r\n")]), LIMITS));
          expect(later.ok).toBe(false);
        }
      }),
      1500,
      10,
    );
  });

  test("limits: more than maxHeadBytes without an end, or more than maxHeaders fields, is refused on that call", () => {
    check(
      "request limits",
      fc.property(fc.integer({ min: 64, max: 2048 }), fc.integer({ min: 1, max: 30 }), fc.integer({ min: 0, max: 40 }), (max, maxHeaders, n) => {
        const endless = bytes(`GET / HTTP/1.1\r\n${"X-A: b\r\n".repeat(Math.ceil(max / 8) + 1)}`);
        const r = expectOnlyProxyError(() => parseRequestHead(endless, { maxHeadBytes: max, maxHeaders: 100 }));
        expect(r.ok ? "accepted" : r.error.code).toBe("PX_HEAD_TOO_LARGE");
        const many = bytes(`GET / HTTP/1.1\r\n${"X-A: b\r\n".repeat(n)}\r\n`);
        const m = expectOnlyProxyError(() => parseRequestHead(many, { maxHeadBytes: 65536, maxHeaders }));
        expect(m.ok).toBe(n <= maxHeaders);
      }),
      200,
      16,
    );
  });
});

describe("response heads", () => {
  test("random bytes: a head, NEED_MORE or a ProxyError on the upstream side", () => {
    const unit = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(..."HTTP/1.1 200 OK\r\n:Content-Length \t") }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)) });
    check(
      "response head: only ProxyError",
      fc.property(fc.array(unit, { maxLength: 120 }), (cs) => {
        const r = expectOnlyProxyError(() => parseResponseHead(bytes(cs.join("")), LIMITS));
        // a broken origin is the origin's fault: never a client-side (4xx) code
        if (!r.ok) expect(r.error.side).toBe("upstream");
      }),
      3000,
      17,
    );
  });

  test("serialised and parsed again: the same status, reason and fields", () => {
    check(
      "response head round trip",
      fc.property(responseHead, (h) => {
        const reason = h.reason.replace(/^ +/, "");
        const wire = serializeResponseHead({ status: h.status, reason, headers: h.headers });
        const parsed = parseResponseHead(wire, LIMITS);
        if (parsed === NEED_MORE) throw new Error("NEED_MORE for a complete head");
        expect({ status: parsed.status, reason: parsed.reason, headers: parsed.headers }).toEqual({ status: h.status, reason, headers: h.headers });
        expect(parsed.headBytes).toBe(wire.length);
      }),
      1000,
      18,
    );
  });

  test("obs-fold in a response is joined with one SP (RFC 9112 §5.2), never read as a new field", () => {
    check(
      "response obs-fold",
      fc.property(token(), fieldValue.filter((v) => v !== ""), fieldValue.filter((v) => v !== ""), (k, a, b) => {
        const parsed = parseResponseHead(bytes(`HTTP/1.1 200 OK\r\n${k}: ${a}\r\n\t${b}\r\n\r\n`), LIMITS);
        if (parsed === NEED_MORE) throw new Error("NEED_MORE");
        expect(parsed.headers).toEqual([[k, `${a} ${b}`]]);
      }),
      300,
      19,
    );
  });
});
