/**
 * @module HTTP/1.1 heads and canned answers → bytes: the CONNECT "200 established", error pages the
 * listener writes before closing, and heads forwarded to origins. Heads are encoded one byte per char
 * (ISO-8859-1, the inverse of head.ts); bodies are UTF-8. Anything that could split a head (CR, LF, NUL
 * in a value, a non-token name) throws instead of being written: a header-injection guard for our own code.
 */
import { ProxyError, printable } from "../errors";
import type { Headers } from "./head";
import { concat } from "../bytes";

/** RFC 9110 §15 reason phrases (plus 429/431 from RFC 6585). */
export const REASONS: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  201: "Created",
  202: "Accepted",
  203: "Non-Authoritative Information",
  204: "No Content",
  205: "Reset Content",
  206: "Partial Content",
  300: "Multiple Choices",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  305: "Use Proxy",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  402: "Payment Required",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  421: "Misdirected Request",
  422: "Unprocessable Content",
  426: "Upgrade Required",
  428: "Precondition Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** The answer to an accepted CONNECT (RFC 9110 §9.3.6: any 2xx; no Content-Length, the tunnel follows). */
export const ESTABLISHED: Uint8Array = encodeHead("HTTP/1.1 200 Connection established\r\n\r\n");

const MAX_REASON_CHARS = 512;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE_CHAR = /[\x00-\x08\x0a-\x1f\x7f]/;
const TARGET = /^[^\x00-\x20\x7f]+$/;
const utf8 = new TextEncoder();

/**
 * A complete plain-text error answer that ends the connection. `reason` is the one line a person can act
 * on; it goes into the body (not the status line, which keeps the standard phrase) with CR/LF and other
 * controls replaced by spaces and cut at 512 chars. `extra` headers (Allow, Proxy-Authenticate,
 * Retry-After…) are appended; an extra Content-Type replaces ours, Content-Length and Connection are ours only.
 */
export function makeErrorResponse(status: number, reason: string, extra: Headers = []): Uint8Array {
  let line = reason.replace(/[\x00-\x1f\x7f]+/g, " ").trim();
  if (line.length > MAX_REASON_CHARS) line = `${line.slice(0, MAX_REASON_CHARS - 1)}…`;
  const body = utf8.encode(`${line}\n`);
  const headers: Headers = [];
  if (!extra.some(([k]) => k.toLowerCase() === "content-type")) headers.push(["Content-Type", "text/plain; charset=utf-8"]);
  for (const h of extra) {
    const k = h[0].toLowerCase();
    if (k !== "content-length" && k !== "connection" && k !== "transfer-encoding") headers.push(h);
  }
  headers.push(["Content-Length", String(body.byteLength)], ["Connection", "close"]);
  return concat(serializeResponseHead({ status, headers }), body);
}

/**
 * Status line with the standard phrase, `headers` as given, then `body`. When a body is given and the
 * headers frame nothing (no Content-Length, no Transfer-Encoding), Content-Length is added.
 */
export function makeResponse(status: number, headers: Headers, body?: Uint8Array | string): Uint8Array {
  if (body === undefined) return serializeResponseHead({ status, headers });
  const bytes = typeof body === "string" ? utf8.encode(body) : body;
  const framed = headers.some(([k]) => {
    const l = k.toLowerCase();
    return l === "content-length" || l === "transfer-encoding";
  });
  const all: Headers = framed ? headers : [...headers, ["Content-Length", String(bytes.byteLength)]];
  return concat(serializeResponseHead({ status, headers: all }), bytes);
}

/** `METHOD target HTTP/1.1`, the fields, and the empty line. */
export function serializeRequestHead(method: string, target: string, headers: Headers): Uint8Array {
  if (!TOKEN.test(method)) throw bad(`method is not a token: "${printable(method)}"`);
  if (!TARGET.test(target)) throw bad(`request target is empty or has spaces or controls: "${printable(target)}"`);
  return encodeHead(`${method} ${target} HTTP/1.1\r\n${fields(headers)}\r\n`);
}

/** `HTTP/1.1 NNN reason`, the fields, and the empty line. `reason` defaults to the standard phrase. */
export function serializeResponseHead(h: { status: number; reason?: string; headers: Headers }): Uint8Array {
  const { status } = h;
  if (!Number.isInteger(status) || status < 100 || status > 999) throw bad(`status is not a 3-digit code: ${status}`);
  const reason = h.reason ?? REASONS[status] ?? "";
  if (BAD_VALUE_CHAR.test(reason)) throw bad(`control character in the reason phrase: "${printable(reason)}"`);
  return encodeHead(`HTTP/1.1 ${status} ${reason}\r\n${fields(h.headers)}\r\n`);
}

function fields(headers: Headers): string {
  let s = "";
  for (let i = 0; i < headers.length; i++) {
    const [k, v] = headers[i];
    if (!TOKEN.test(k)) throw bad(`field name is not a token: "${printable(k)}"`);
    // RFC 9110 §5.5: a value must not carry CR, LF or NUL; one here would start a new header line.
    if (BAD_VALUE_CHAR.test(v)) throw bad(`control character in the value of ${k}: "${printable(v)}"`);
    s += `${k}: ${v}\r\n`;
  }
  return s;
}

/** One byte per char; a char above U+00FF cannot be sent in a head (use punycode / percent-encoding). */
function encodeHead(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw bad(`character U+${c.toString(16).padStart(4, "0")} cannot be written in a head: "${printable(s.slice(Math.max(0, i - 20), i + 20))}"`);
    out[i] = c;
  }
  return out;
}


/** Our own code built a head that would not parse: a bug on this side, never the peer's fault. */
function bad(msg: string): ProxyError {
  return new ProxyError("PX_BAD_OUTGOING_HEAD", "internal", msg);
}
