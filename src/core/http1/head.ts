/**
 * @module HTTP/1.x message heads (RFC 9112 §2–§5): bytes in → `RequestHead` / `ResponseHead`, or `NEED_MORE`.
 * Incomplete input is a value, malformed input is a `ProxyError`, limits are arguments (STYLE §6).
 * Hot path: every CONNECT goes through `parseRequestHead`, so it finds the end of the head with a byte scan
 * first and only then decodes and splits; the size limit is enforced on every call, as bytes arrive.
 * Strict by design: this is a security boundary (agents in, open internet out), so anything a lenient
 * parser would "repair" differently from the next hop is rejected instead (request-smuggling hardening).
 */
import { type ErrorCode, ProxyError, printable } from "../errors";

/** Returned instead of a head while the buffer does not yet hold a complete one. */
export const NEED_MORE: unique symbol = Symbol("NEED_MORE");

/** Field lines in the order received; names keep the case they arrived in. */
export type Headers = [name: string, value: string][];

export type Limits = { maxHeadBytes: number; maxHeaders: number };
export const DEFAULT_LIMITS: Limits = { maxHeadBytes: 16384, maxHeaders: 100 };

/**
 * `headBytes` is the offset just after the final CRLFCRLF, i.e. how many bytes of `buf` the head used,
 * including any empty lines skipped before the request line. Bytes after it belong to the body/tunnel.
 */
export type RequestHead = { method: string; target: string; version: "1.0" | "1.1"; headers: Headers; headBytes: number };
export type ResponseHead = { version: "1.0" | "1.1"; status: number; reason: string; headers: Headers; headBytes: number };

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;

const COLON = 58;
const DEL = 127;

/** RFC 9110 §5.6.2 tchar: the bytes of a method or a field name. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;
/**
 * RFC 9110 §5.5 field-vchar / SP / HTAB, also used for reason phrases. CR, LF and NUL in a value MUST be
 * rejected or replaced; we reject every CTL except HTAB. obs-text (0x80–0xFF) is allowed.
 */
const VCHAR = new Uint8Array(256);
VCHAR[HTAB] = 1;
for (let c = 0x20; c < 0x100; c++) if (c !== DEL) VCHAR[c] = 1;

/** Which side a head came from decides the error codes (statusFor: client → 4xx, upstream → 502). */
type Side = { side: "client" | "upstream"; tooLarge: ErrorCode; badHeader: ErrorCode };
const REQUEST: Side = { side: "client", tooLarge: "PX_HEAD_TOO_LARGE", badHeader: "PX_BAD_HEADER" };
// Not PX_BAD_HEADER / PX_HEAD_TOO_LARGE: errors.ts maps those codes to 400/431 whatever the side,
// and a broken upstream must surface as 502, not as the client's fault. (Status line: PX_BAD_STATUS_LINE.)
const RESPONSE: Side = { side: "upstream", tooLarge: "PX_RESPONSE_HEAD_TOO_LARGE", badHeader: "PX_BAD_RESPONSE_HEADER" };

/**
 * Index just after the first CRLFCRLF, or -1. Scans for LF bytes from `from` (a caller that resumes after
 * more bytes arrived can pass the previous length: the match is found at its final LF). Never throws.
 */
export function findHeadEnd(buf: Uint8Array, from = 0): number {
  let i = buf.indexOf(LF, from < 3 ? 3 : from);
  while (i !== -1) {
    if (buf[i - 1] === CR && buf[i - 2] === LF && buf[i - 3] === CR) return i + 1;
    i = buf.indexOf(LF, i + 1);
  }
  return -1;
}

/**
 * Like findHeadEnd from `start`, but rejects a bare LF as soon as it is seen and enforces the size limit
 * on every call, so a slow or endless head fails at `limit` bytes instead of being buffered.
 */
function scanHead(buf: Uint8Array, start: number, limit: number, s: Side): number {
  const view = buf.length > limit ? buf.subarray(0, limit) : buf;
  let i = view.indexOf(LF, start);
  while (i !== -1) {
    // RFC 9112 §2.2 lets a recipient accept a bare LF as a line terminator; we reject it, because a peer
    // that splits lines differently from the next hop is how requests get smuggled.
    if (i === start || view[i - 1] !== CR) {
      throw new ProxyError(s.badHeader, s.side, `bare LF in the head (lines must end with CRLF) near "${near(buf, i)}"`);
    }
    if (i >= start + 3 && view[i - 2] === LF && view[i - 3] === CR) return i + 1;
    i = view.indexOf(LF, i + 1);
  }
  if (buf.length > limit) {
    throw new ProxyError(s.tooLarge, s.side, `head exceeds ${limit} bytes without an end: "${printable(buf.subarray(0, 64))}"`);
  }
  return -1;
}

export function parseRequestHead(buf: Uint8Array, limits: Limits = DEFAULT_LIMITS): RequestHead | typeof NEED_MORE {
  // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line
  // (clients that send CRLF after a body; same trap as mitmproxy #4870). They count towards the limit.
  let start = 0;
  const stop = Math.min(buf.length, limits.maxHeadBytes + 1);
  while (start + 1 < stop && buf[start] === CR && buf[start + 1] === LF) start += 2;
  const end = scanHead(buf, start, limits.maxHeadBytes, REQUEST);
  if (end === -1) {
    checkPartialRequestLine(buf, start);
    return NEED_MORE;
  }

  // Validate the bytes first, remembering where the pieces are; then decode once and slice.
  // Every loop below stops at the CR of a CRLF at the latest, and the head ends with CRLFCRLF,
  // so no loop can run past `end`.
  let i = start;
  while (TCHAR[buf[i]] === 1) i++;
  const sp1 = i;
  if (sp1 === start || buf[i] !== SP) {
    throw badRequestLine(buf, start, buf[i] === CR || buf[i] === SP ? 'request line is not "METHOD target HTTP/1.x"' : "request method is not a token");
  }
  const t0 = ++i;
  let hi = 0; // OR of the bytes that may be ≥ 0x80, to pick the decoder
  let c = buf[i];
  // Bytes ≥ 0x80 pass here so that connect.ts can answer "use punycode" for a UTF-8 host.
  while (c > SP && c !== DEL) {
    hi |= c;
    c = buf[++i];
  }
  const sp2 = i;
  if (sp2 === t0 || c !== SP) {
    throw badRequestLine(buf, start, c === CR || sp2 === t0 ? 'request line is not "METHOD target HTTP/1.x"' : "request target has a control character");
  }
  // "HTTP/1.0" or "HTTP/1.1", then CRLF
  const minor = buf[i + 8];
  if (
    buf[i + 1] !== 72 || buf[i + 2] !== 84 || buf[i + 3] !== 84 || buf[i + 4] !== 80 || buf[i + 5] !== 47 ||
    buf[i + 6] !== 49 || buf[i + 7] !== 46 || (minor !== 48 && minor !== 49) || buf[i + 9] !== CR || buf[i + 10] !== LF
  ) {
    throw badRequestLine(buf, start, "expected HTTP/1.0 or HTTP/1.1 after the target");
  }
  hi |= scanFields(buf, i + 11, end, limits.maxHeaders, REQUEST);

  const text = latin1(buf, start, end, hi);
  const headers = makeHeaders(text, start);
  return {
    method: text.slice(0, sp1 - start),
    target: text.slice(t0 - start, sp2 - start),
    version: minor === 49 ? "1.1" : "1.0",
    headers,
    headBytes: end,
  };
}

/**
 * While a head is incomplete, refuse a request line that is already wrong: a method byte that is not a token char, or a
 * control byte in the target. Without it, bytes that can never become a request (a WebSocket frame after a refused
 * Upgrade, a TLS hello on the plain port) held the connection until head_timeout_s (issue 12, smuggling corpus).
 */
function checkPartialRequestLine(buf: Uint8Array, start: number): void {
  const n = buf.length;
  let i = start;
  while (i < n && TCHAR[buf[i]] === 1) i++;
  if (i === n || (i === start && buf[i] === CR && i + 1 === n)) return; // still the method, or half of a leading CRLF
  if (buf[i] !== SP || i === start) throw badRequestLine(buf, start, "request method is not a token");
  let c = buf[++i];
  while (i < n && c > SP && c !== DEL) c = buf[++i];
  if (i < n && c !== SP) throw badRequestLine(buf, start, "request target has a control character");
}

export function parseResponseHead(buf: Uint8Array, limits: Limits = DEFAULT_LIMITS): ResponseHead | typeof NEED_MORE {
  const end = scanHead(buf, 0, limits.maxHeadBytes, RESPONSE);
  if (end === -1) return NEED_MORE;
  // RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]. We also take a
  // missing second SP ("HTTP/1.1 200"), which real servers send.
  const minor = buf[7];
  const d0 = buf[9] - 48;
  const d1 = buf[10] - 48;
  const d2 = buf[11] - 48;
  let i = 12;
  if (
    buf[0] !== 72 || buf[1] !== 84 || buf[2] !== 84 || buf[3] !== 80 || buf[4] !== 47 || buf[5] !== 49 || buf[6] !== 46 ||
    (minor !== 48 && minor !== 49) || buf[8] !== SP || !(d0 >= 1 && d0 <= 9) || !(d1 >= 0 && d1 <= 9) || !(d2 >= 0 && d2 <= 9) ||
    (buf[i] !== SP && buf[i] !== CR)
  ) {
    throw new ProxyError("PX_BAD_STATUS_LINE", "upstream", `status line is not "HTTP/1.x NNN reason": "${lineAt(buf, 0)}"`);
  }
  const r0 = buf[i] === SP ? ++i : i;
  let hi = 0;
  let c = buf[i];
  while (VCHAR[c] === 1) {
    hi |= c;
    c = buf[++i];
  }
  if (c !== CR || buf[i + 1] !== LF) {
    throw new ProxyError("PX_BAD_STATUS_LINE", "upstream", `control character in the reason phrase: "${lineAt(buf, 0)}"`);
  }
  const r1 = i;
  hi |= scanFields(buf, i + 2, end, limits.maxHeaders, RESPONSE);
  const text = latin1(buf, 0, end, hi);
  return {
    version: minor === 49 ? "1.1" : "1.0",
    status: d0 * 100 + d1 * 10 + d2,
    reason: text.slice(r0, r1),
    headers: makeHeaders(text, 0),
    headBytes: end,
  };
}

/**
 * Where scanFields left each field: [nameStart, nameEnd, valueStart, valueEnd] per field, as offsets into
 * the buffer; nameStart = -1 marks an obs-fold continuation of the previous value. Reused between calls
 * (the parser is synchronous and not re-entrant), so a head costs no allocation here.
 */
const SPANS: number[] = [];
let spanCount = 0;

/**
 * Check the field lines from `i` up to the final empty line at `end - 2`, filling SPANS. Returns the OR of
 * the value bytes (bit 0x80 set means obs-text is present).
 */
function scanFields(buf: Uint8Array, i: number, end: number, maxHeaders: number, s: Side): number {
  let hi = 0;
  let fields = 0;
  spanCount = 0;
  const last = end - 2;
  while (i < last) {
    let c = buf[i];
    let ns = i;
    let ne = i;
    if (c === SP || c === HTAB) {
      // RFC 9112 §5.2: obs-fold. A server MUST reject it in requests (or replace it, which we don't);
      // a proxy MAY replace it with SP in responses, which keeps old origins working.
      if (s === REQUEST || fields === 0) {
        throw new ProxyError(s.badHeader, s.side, `obsolete line folding (RFC 9112 §5.2): "${lineAt(buf, i)}"`);
      }
      ns = -1;
    } else {
      while (TCHAR[c] === 1) c = buf[++i];
      ne = i;
      if (c !== COLON || ne === ns) throw badFieldName(buf, ns, ne, s);
      i++;
      if (++fields > maxHeaders) throw new ProxyError(s.badHeader, s.side, `more than ${maxHeaders} header fields`);
    }
    c = buf[i];
    while (c === SP || c === HTAB) c = buf[++i];
    const vs = i;
    while (VCHAR[c] === 1) {
      hi |= c;
      c = buf[++i];
    }
    if (c !== CR || buf[i + 1] !== LF) {
      const name = ns === -1 ? "a folded line" : printable(buf.subarray(ns, ne));
      const what = c === CR ? "bare CR" : c === 0 ? "NUL" : `control byte 0x${c.toString(16).padStart(2, "0")}`;
      throw new ProxyError(s.badHeader, s.side, `${what} in the value of ${name}: "${near(buf, i)}"`);
    }
    let ve = i;
    while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
    SPANS[spanCount++] = ns;
    SPANS[spanCount++] = ne;
    SPANS[spanCount++] = vs;
    SPANS[spanCount++] = ve;
    i += 2;
  }
  return hi;
}

/** Headers from SPANS, sliced out of `text`, which starts at buffer offset `base`. */
function makeHeaders(text: string, base: number): Headers {
  const out: Headers = [];
  for (let k = 0; k < spanCount; k += 4) {
    const value = text.slice(SPANS[k + 2] - base, SPANS[k + 3] - base);
    if (SPANS[k] === -1) {
      const prev = out[out.length - 1];
      prev[1] = prev[1] === "" ? value : value === "" ? prev[1] : `${prev[1]} ${value}`;
    } else {
      out.push([text.slice(SPANS[k] - base, SPANS[k + 1] - base), value]);
    }
  }
  return out;
}

function badFieldName(buf: Uint8Array, ns: number, ne: number, s: Side): ProxyError {
  const line = lineAt(buf, ns);
  let j = ne;
  while (buf[j] === SP || buf[j] === HTAB) j++;
  const why =
    ne === ns && buf[ne] === COLON ? "empty field name"
    : j > ne && buf[j] === COLON && ne > ns ? "whitespace before the colon (RFC 9112 §5.1)"
    : buf[ne] === CR ? "field line without a colon"
    : "field name is not a token";
  return new ProxyError(s.badHeader, s.side, `${why}: "${line}"`);
}

function badRequestLine(buf: Uint8Array, start: number, why: string): ProxyError {
  return new ProxyError("PX_BAD_REQUEST_LINE", "client", `${why}: "${lineAt(buf, start)}"`);
}

/** The line starting at `i` (up to its CR), escaped and cut at 64 bytes for a message. */
function lineAt(buf: Uint8Array, i: number): string {
  let j = buf.indexOf(CR, i);
  if (j === -1) j = buf.length;
  return j - i > 64 ? `${printable(buf.subarray(i, i + 64))}…` : printable(buf.subarray(i, j));
}

const CHUNK = 4096;
/** WHATWG maps the "latin1" label to windows-1252; it is exact only for bytes below 0x80. */
const WIN1252 = new TextDecoder("latin1");

/**
 * ISO-8859-1, one char per byte, so bytes survive a parse/serialize round trip. TextDecoder("latin1")
 * is really windows-1252 (0x80–0x9F become other chars) but ~10x faster than String.fromCharCode, so
 * use it unless `hi` (the OR of the bytes that can be ≥ 0x80) says obs-text is present.
 */
function latin1(buf: Uint8Array, a: number, b: number, hi: number): string {
  if ((hi & 0x80) === 0) return WIN1252.decode(a === 0 && b === buf.length ? buf : buf.subarray(a, b));
  let s = "";
  for (let i = a; i < b; i += CHUNK) {
    s += String.fromCharCode.apply(null, buf.subarray(i, Math.min(b, i + CHUNK)) as unknown as number[]);
  }
  return s;
}

/** Up to 32 bytes before position `i` and the byte at `i`, escaped, for a message. */
function near(buf: Uint8Array, i: number): string {
  return printable(buf.subarray(Math.max(0, i - 32), i + 1));
}

/** Case-insensitive, first match. */
export function getHeader(h: Headers, name: string): string | undefined {
  const n = name.length;
  let lower: string | undefined;
  for (let i = 0; i < h.length; i++) {
    const k = h[i][0];
    if (k.length !== n) continue;
    if (k === name || k.toLowerCase() === (lower ??= name.toLowerCase())) return h[i][1];
  }
  return undefined;
}

/** Every value of `name` (case-insensitive), in order. Values are not split on commas. */
export function getHeaderAll(h: Headers, name: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  for (let i = 0; i < h.length; i++) {
    const k = h[i][0];
    if (k.length === lower.length && k.toLowerCase() === lower) out.push(h[i][1]);
  }
  return out;
}

/**
 * RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host field, and to any request with more
 * than one (two Host lines can name two origins: one for us, one for whoever reads the other). Also a list in one
 * field ("a, b"). Called by the cache port's framing for every request it reads (CONNECT heads are layer 1's).
 */
export function checkHostField(head: RequestHead): void {
  const hosts = getHeaderAll(head.headers, "host");
  if (hosts.length > 1)
    throw new ProxyError("PX_BAD_HOST", "client", `${hosts.length} Host fields in one request (RFC 9112 §3.2): send exactly one`);
  if (hosts.length === 0) {
    if (head.version === "1.1") throw new ProxyError("PX_BAD_HOST", "client", "HTTP/1.1 request without a Host field (RFC 9112 §3.2)");
    return;
  }
  if (hosts[0]!.includes(",")) throw new ProxyError("PX_BAD_HOST", "client", `Host is a list: "${printable(hosts[0]!)}" (RFC 9112 §3.2)`);
}
