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
  const all = values.flatMap((v) => v.split(",").map((s) => s.trim()));
  const first = all[0]!;
  if (!/^\d{1,15}$/.test(first) || all.some((v) => v !== first))
    throw new ProxyError(side === "client" ? "PX_BAD_HEADER" : "PX_UPSTREAM_BAD_RESPONSE", side, `invalid Content-Length: ${JSON.stringify(values.join(", ")).slice(0, 80)}`);
  return Number(first);
}

function transferEncoding(headers: Headers): string[] {
  return getHeaderAll(headers, "transfer-encoding")
    .flatMap((v) => v.split(","))
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/** RFC 9112 §6.3 for requests: chunked, Content-Length, or no body. Both at once is refused (smuggling). */
export function framingForRequest(headers: Headers): Framing {
  const te = transferEncoding(headers);
  const cl = contentLength(headers, "client");
  if (te.length) {
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
  if (te.length) {
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
          const semi = line.indexOf(";");
          const hex = (semi >= 0 ? line.slice(0, semi) : line).trim();
          if (!/^[0-9a-fA-F]{1,13}$/.test(hex)) this.bad(`invalid chunk size ${JSON.stringify(hex.slice(0, 20))}`);
          const size = parseInt(hex, 16);
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
          break;
        }
      }
    }
    return { chunks, done: this.done, rest: i < n ? input.subarray(i) : null };
  }
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
