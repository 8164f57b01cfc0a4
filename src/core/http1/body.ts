/**
 * @module HTTP/1.1 message body framing (RFC 9112 §6): which framing a message uses, and a decoder that
 * turns bytes in into body chunks out, with the bytes that belong to the next message left over.
 * Pure and incremental: feed it whatever arrived; it never buffers a whole body.
 */
import { ProxyError } from "../errors";
import { type Headers, getHeaderAll } from "./head";

export type Framing = { kind: "length"; length: number } | { kind: "chunked" } | { kind: "close" } | { kind: "none" };

const MAX_CHUNK_LINE = 4096;
const MAX_TRAILERS = 16 * 1024;

function contentLength(headers: Headers, side: "client" | "upstream"): number | null {
  const values = getHeaderAll(headers, "content-length");
  if (!values.length) return null;
  // RFC 9110 §8.6: a list of identical values may be collapsed; differing values are an error.
  // Only SP and HTAB are list whitespace (RFC 9110 §5.6.1): String.trim() would also drop NBSP (0xA0, legal obs-text
  // in a head), VT and FF, and read "\xa05" as 5 where the next hop reads something else (issue 12, fuzzing).
  const all = values.flatMap((v) => v.split(",").map(ows));
  const first = all[0]!;
  if (!/^\d{1,15}$/.test(first) || all.some((v) => v !== first))
    throw new ProxyError(side === "client" ? "PX_BAD_HEADER" : "PX_UPSTREAM_BAD_RESPONSE", side, `invalid Content-Length: ${JSON.stringify(values.join(", ")).slice(0, 80)}`);
  return Number(first);
}

/** SP/HTAB trimmed from both ends (RFC 9110 §5.6.3 OWS), nothing else. */
function ows(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * The codings of every Transfer-Encoding field, lower-cased; empty list elements are skipped (RFC 9110 §5.6.1).
 * null when there is no such field; [] when there is one that names no coding ("Transfer-Encoding: ,"), which a
 * front end may read as "chunked requested" and we must not read as "no body" (issue 12, fuzzing).
 */
function transferEncoding(headers: Headers): string[] | null {
  const values = getHeaderAll(headers, "transfer-encoding");
  if (!values.length) return null;
  return values
    .flatMap((v) => v.split(","))
    .map((s) => ows(s).toLowerCase())
    .filter(Boolean);
}

/** RFC 9112 §6.3 for requests: chunked, Content-Length, or no body. Both at once is refused (smuggling). */
export function framingForRequest(headers: Headers): Framing {
  const te = transferEncoding(headers);
  const cl = contentLength(headers, "client");
  if (te !== null) {
    if (te.length === 0) throw new ProxyError("PX_BAD_HEADER", "client", "Transfer-Encoding names no coding (RFC 9112 §6.1)");
    if (cl !== null) throw new ProxyError("PX_BAD_HEADER", "client", "both Transfer-Encoding and Content-Length (RFC 9112 §6.3)");
    if (te[te.length - 1] !== "chunked") throw new ProxyError("PX_BAD_HEADER", "client", `request Transfer-Encoding must end with chunked, got ${te.join(", ")}`);
    if (te.length > 1) throw new ProxyError("PX_NOT_IMPLEMENTED", "client", `transfer codings other than chunked are not supported: ${te.join(", ")}`);
    return { kind: "chunked" };
  }
  if (cl !== null) return cl === 0 ? { kind: "none" } : { kind: "length", length: cl };
  return { kind: "none" };
}

/** RFC 9112 §6.3 for responses, given the request method. */
export function framingForResponse(method: string, status: number, headers: Headers): Framing {
  if (method === "HEAD" || (status >= 100 && status < 200) || status === 204 || status === 304) return { kind: "none" };
  const te = transferEncoding(headers);
  if (te !== null) {
    if (te.length === 0) throw new ProxyError("PX_UPSTREAM_BAD_RESPONSE", "upstream", "Transfer-Encoding from origin names no coding");
    if (te[te.length - 1] === "chunked" && te.length === 1) return { kind: "chunked" };
    if (te[te.length - 1] !== "chunked") return { kind: "close" };
    throw new ProxyError("PX_UPSTREAM_BAD_RESPONSE", "upstream", `unsupported transfer coding from origin: ${te.join(", ")}`);
  }
  const cl = contentLength(headers, "upstream");
  if (cl !== null) return cl === 0 ? { kind: "none" } : { kind: "length", length: cl };
  return { kind: "close" };
}

export type DecodeResult = {
  /** body bytes decoded from this input (views into the input where possible) */
  chunks: Uint8Array[];
  /** the body is complete */
  done: boolean;
  /** bytes after the end of the body: the next message */
  rest: Uint8Array | null;
};

type ChunkState = "size" | "data" | "dataCRLF" | "trailers";

/** Incremental body decoder for one message. */
export class BodyDecoder {
  private remaining = 0;
  private state: ChunkState = "size";
  private line = "";
  private trailerBytes = 0;
  private trailerLine = "";
  done = false;
  received = 0;

  constructor(
    readonly framing: Framing,
    private side: "client" | "upstream" = "upstream",
  ) {
    if (framing.kind === "length") this.remaining = framing.length;
    if (framing.kind === "none") this.done = true;
  }

  private bad(msg: string): never {
    throw new ProxyError(this.side === "client" ? "PX_BAD_BODY" : "PX_UPSTREAM_BAD_RESPONSE", this.side, msg);
  }

  /** The peer closed: for close-delimited bodies that ends the body; otherwise the body was cut short. */
  end(): void {
    if (this.done) return;
    if (this.framing.kind === "close") {
      this.done = true;
      return;
    }
    this.bad(`connection closed before the body was complete (${this.received} bytes received)`);
  }

  push(input: Uint8Array): DecodeResult {
    const chunks: Uint8Array[] = [];
    if (this.done) return { chunks, done: true, rest: input.byteLength ? input : null };
    const f = this.framing;
    if (f.kind === "close") {
      this.received += input.byteLength;
      if (input.byteLength) chunks.push(input);
      return { chunks, done: false, rest: null };
    }
    if (f.kind === "length") {
      const take = Math.min(this.remaining, input.byteLength);
      if (take) chunks.push(input.subarray(0, take));
      this.remaining -= take;
      this.received += take;
      if (this.remaining === 0) this.done = true;
      return { chunks, done: this.done, rest: take < input.byteLength ? input.subarray(take) : null };
    }
    // chunked (RFC 9112 §7.1)
    let i = 0;
    const n = input.byteLength;
    while (i < n && !this.done) {
      switch (this.state) {
        case "size": {
          const nl = input.indexOf(10, i);
          const end = nl < 0 ? n : nl;
          this.line += latin1(input, i, end);
          if (this.line.length > MAX_CHUNK_LINE) this.bad("chunk size line too long");
          if (nl < 0) {
            i = n;
            break;
          }
          i = nl + 1;
          let line = this.line;
          this.line = "";
          if (!line.endsWith("\r")) this.bad("chunk size line must end with CRLF");
          line = line.slice(0, -1);
          const size = parseChunkLine(line);
          if (typeof size === "string") this.bad(`${size}: ${JSON.stringify(line.slice(0, 40))}`);
          if (size === 0) {
            this.state = "trailers";
            this.trailerLine = "";
          } else {
            this.remaining = size;
            this.state = "data";
          }
          break;
        }
        case "data": {
          const take = Math.min(this.remaining, n - i);
          chunks.push(input.subarray(i, i + take));
          this.received += take;
          this.remaining -= take;
          i += take;
          if (this.remaining === 0) {
            this.state = "dataCRLF";
            this.line = "";
          }
          break;
        }
        case "dataCRLF": {
          const c = input[i++]!;
          this.line += String.fromCharCode(c);
          if (this.line === "\r") break;
          if (this.line !== "\r\n") this.bad("chunk data must be followed by CRLF");
          this.line = "";
          this.state = "size";
          break;
        }
        case "trailers": {
          // Trailer fields are read and dropped (RFC 9112 §7.1.2 allows discarding them); an empty line ends.
          const nl = input.indexOf(10, i);
          const end = nl < 0 ? n : nl;
          this.trailerLine += latin1(input, i, end);
          this.trailerBytes += end - i;
          if (this.trailerBytes > MAX_TRAILERS) this.bad("trailer section too large");
          if (nl < 0) {
            i = n;
            break;
          }
          i = nl + 1;
          const line = this.trailerLine;
          this.trailerLine = "";
          // RFC 9112 §7.1.2, §2.2: only CRLF ends the trailer section. A bare LF here must be refused, not
          // taken as the end: a strict front end reads what follows as trailer lines, we would read it as the
          // next request (request smuggling).
          if (line === "\r") this.done = true;
          else if (!line.endsWith("\r")) this.bad("trailer line must end with CRLF (a bare LF is refused: RFC 9112 §2.2)");
          else {
            const why = checkTrailerLine(line.slice(0, -1));
            if (why !== null) this.bad(`${why}: ${JSON.stringify(line.slice(0, 40))}`);
          }
          break;
        }
      }
    }
    return { chunks, done: this.done, rest: i < n ? input.subarray(i) : null };
  }
}

const isHex = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const isWs = (c: number) => c === 32 || c === 9;
/** RFC 9110 §5.6.2 tchar. */
const isTchar = (c: number) =>
  (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c < 127 && c > 32 && "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c)));
/** RFC 9110 §5.6.4 qdtext (without the quote and the backslash) and quoted-pair's second char. */
const isQdtext = (c: number) => c === 9 || c === 32 || c === 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || (c >= 0x80 && c <= 0xff);
const isQpChar = (c: number) => c === 9 || (c >= 32 && c <= 0x7e) || (c >= 0x80 && c <= 0xff);
/** RFC 9110 §5.5 field-vchar, SP, HTAB: what a field value may hold (no CTL, no DEL). */
const isValueChar = (c: number) => c === 9 || (c >= 32 && c !== 127 && c <= 0xff);

/** After a token starting at `i`, or -1 when there is none. */
function skipToken(s: string, i: number): number {
  const j0 = i;
  while (i < s.length && isTchar(s.charCodeAt(i))) i++;
  return i === j0 ? -1 : i;
}

/** After a quoted-string starting at `i` (its opening quote), or -1 when it is malformed or unterminated. */
function skipQuoted(s: string, i: number): number {
  for (i++; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 34) return i + 1;
    if (c === 92) {
      if (++i >= s.length || !isQpChar(s.charCodeAt(i))) return -1;
    } else if (!isQdtext(c)) return -1;
  }
  return -1;
}

/**
 * RFC 9112 §7.1: chunk-size [ chunk-ext ], the line without its CRLF, read strictly: 1–13 hex digits (leading
 * zeros included; more would overflow a safe integer), then *( BWS ";" BWS name [ BWS "=" BWS token / quoted-string ] ).
 * Anything else — whitespace around a bare size, a bare CR, NUL, a broken quote — is the kind of difference between
 * two parsers that smuggling is made of, so it is refused rather than read past (String.trim() used to drop VT, FF
 * and NBSP around the size; issue 12, fuzzing). Returns the size, or why the line is refused.
 */
export function parseChunkLine(line: string): number | string {
  let i = 0;
  while (i < line.length && isHex(line.charCodeAt(i))) i++;
  if (i === 0 || i > 13) return i === 0 ? "invalid chunk size" : "chunk size over 13 hex digits";
  const size = parseInt(line.slice(0, i), 16);
  for (;;) {
    let j = i;
    while (j < line.length && isWs(line.charCodeAt(j))) j++;
    if (j === line.length) return j === i ? size : "whitespace after the chunk size or extension";
    if (line.charCodeAt(j) !== 59 /* ; */) return "invalid chunk size or extension";
    j++;
    while (j < line.length && isWs(line.charCodeAt(j))) j++;
    const nameEnd = skipToken(line, j);
    if (nameEnd < 0) return "chunk extension without a name";
    let k = nameEnd;
    while (k < line.length && isWs(line.charCodeAt(k))) k++;
    if (k < line.length && line.charCodeAt(k) === 61 /* = */) {
      k++;
      while (k < line.length && isWs(line.charCodeAt(k))) k++;
      const valEnd = line.charCodeAt(k) === 34 ? skipQuoted(line, k) : skipToken(line, k);
      if (valEnd < 0) return "chunk extension value is not a token or a quoted string";
      i = valEnd;
    } else i = nameEnd;
  }
}

/**
 * A trailer field line without its CRLF (RFC 9112 §7.1.2 → §5: field-name ":" OWS field-value OWS): null when it
 * is one, else why not. Trailers are dropped, but only after they are read the way a strict next hop reads them.
 */
function checkTrailerLine(line: string): string | null {
  if (line.length && isWs(line.charCodeAt(0))) return "obsolete line folding in the trailers (RFC 9112 §5.2)";
  const nameEnd = skipToken(line, 0);
  if (nameEnd < 0 || line.charCodeAt(nameEnd) !== 58 /* : */) return "trailer line is not a header field";
  for (let i = nameEnd + 1; i < line.length; i++) if (!isValueChar(line.charCodeAt(i))) return "control character in a trailer field";
  return null;
}

function latin1(b: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let k = from; k < to; k++) s += String.fromCharCode(b[k]!);
  return s;
}

const CRLF = new Uint8Array([13, 10]);
const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");

/** Encode one chunk for a chunked body (empty input gives nothing: use lastChunk() to end). */
export function encodeChunk(data: Uint8Array): Uint8Array[] {
  if (!data.byteLength) return [];
  return [new TextEncoder().encode(data.byteLength.toString(16) + "\r\n"), data, CRLF];
}

export const lastChunk = () => LAST_CHUNK;
