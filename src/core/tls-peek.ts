/**
 * @module Read a TLS ClientHello without decrypting anything: the SNI host, ALPN protocols and offered
 * versions, so the session can pick a leaf certificate (cache mode) and check the minimum TLS version.
 * Input is the bytes a client sent after "200 Connection established"; the hello may span several
 * handshake records (RFC 8446 §5.1), which are reassembled up to 64 KiB. Incomplete input is NEED_MORE,
 * anything else that is not a well-formed ClientHello throws (shape after mitmproxy `parse_client_hello`).
 */
import { ProxyError, printable } from "./errors";
import { NEED_MORE } from "./http1/head";

export type ClientHelloInfo = {
  /** server_name host_name, lower-case, no trailing dot; null when the client sent none */
  sni: string | null;
  /** application_layer_protocol_negotiation, in the client's order ("h2", "http/1.1") */
  alpn: string[];
  /** ClientHello.legacy_version, e.g. 0x0303 */
  legacyVersion: number;
  /** supported_versions as sent, GREASE values included (RFC 8701); empty when the extension is absent */
  supportedVersions: number[];
};

const CONTENT_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
/** RFC 8446 §5.1: TLSPlaintext.length MUST NOT exceed 2^14. */
const MAX_RECORD = 1 << 14;
/** Reassembly cap for one ClientHello (post-quantum key shares make them ~1.8 KB today; 64 KiB is plenty). */
const MAX_HELLO = 64 * 1024;

const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const EXT_SUPPORTED_VERSIONS = 43;

export function peekClientHello(bytes: Uint8Array): ClientHelloInfo | typeof NEED_MORE {
  if (bytes.length === 0) return NEED_MORE;
  if (bytes[0] !== CONTENT_HANDSHAKE || (bytes.length > 1 && bytes[1] !== 3)) {
    throw new ProxyError("PX_NOT_TLS", "client", `expected a TLS handshake record, got "${printable(bytes.subarray(0, 32))}"`);
  }
  // Walk records until the handshake message is complete. Common case: one record holds it, no copy.
  let pos = 0;
  let first: Uint8Array | null = null;
  let parts: Uint8Array[] | null = null;
  let have = 0;
  let need = -1; // total handshake bytes (header + body) once the header is known
  while (need === -1 || have < need) {
    if (bytes.length < pos + RECORD_HEADER) {
      checkPartialHeader(bytes, pos);
      return NEED_MORE;
    }
    const type = bytes[pos];
    const major = bytes[pos + 1];
    const len = (bytes[pos + 3] << 8) | bytes[pos + 4];
    if (type !== CONTENT_HANDSHAKE || major !== 3) {
      const what = pos === 0 ? "PX_NOT_TLS" : "PX_BAD_CLIENT_HELLO";
      throw new ProxyError(what, "client", `record ${pos === 0 ? "" : "after a partial ClientHello "}is not a TLS handshake record (type ${type}, version ${major}.${bytes[pos + 2]})`);
    }
    // RFC 8446 §5.1: zero-length handshake fragments MUST NOT be sent.
    if (len === 0 || len > MAX_RECORD) {
      throw new ProxyError("PX_BAD_CLIENT_HELLO", "client", `handshake record length ${len} is out of range 1-${MAX_RECORD}`);
    }
    if (first === null && bytes.length > pos + RECORD_HEADER && bytes[pos + RECORD_HEADER] !== HANDSHAKE_CLIENT_HELLO) {
      throw new ProxyError("PX_NOT_TLS", "client", `first handshake message is type ${bytes[pos + RECORD_HEADER]}, not a ClientHello (1)`);
    }
    if (bytes.length < pos + RECORD_HEADER + len) return NEED_MORE;
    const frag = bytes.subarray(pos + RECORD_HEADER, pos + RECORD_HEADER + len);
    pos += RECORD_HEADER + len;
    if (first === null) first = frag;
    else (parts ??= [first]).push(frag);
    have += len;
    if (need === -1 && have >= HANDSHAKE_HEADER) {
      const h = parts === null ? first : join(parts, HANDSHAKE_HEADER);
      if (h[0] !== HANDSHAKE_CLIENT_HELLO) {
        throw new ProxyError("PX_NOT_TLS", "client", `first handshake message is type ${h[0]}, not a ClientHello (1)`);
      }
      need = HANDSHAKE_HEADER + ((h[1] << 16) | (h[2] << 8) | h[3]);
      if (need > MAX_HELLO) {
        throw new ProxyError("PX_BAD_CLIENT_HELLO", "client", `ClientHello of ${need} bytes is over the ${MAX_HELLO}-byte cap`);
      }
    }
  }
  const msg = parts === null ? (first as Uint8Array) : join(parts, need);
  // Bytes after the ClientHello in its last record would be a second handshake message, which a client
  // cannot send before the server answers; we only read the hello and leave the rest to the TLS stack.
  return parseBody(msg.subarray(HANDSHAKE_HEADER, need));
}

/** With fewer than 5 bytes, still reject what can already be seen to be wrong (record type checked by caller). */
function checkPartialHeader(bytes: Uint8Array, pos: number): void {
  if (bytes.length > pos && bytes[pos] !== CONTENT_HANDSHAKE) {
    throw new ProxyError("PX_BAD_CLIENT_HELLO", "client", `record after a partial ClientHello is not a handshake record (type ${bytes[pos]})`);
  }
  if (bytes.length > pos + 1 && bytes[pos + 1] !== 3) {
    throw new ProxyError(pos === 0 ? "PX_NOT_TLS" : "PX_BAD_CLIENT_HELLO", "client", `record version ${bytes[pos + 1]}.x is not TLS`);
  }
}

function join(parts: Uint8Array[], upTo: number): Uint8Array {
  const out = new Uint8Array(upTo);
  let o = 0;
  for (const p of parts) {
    if (o >= upTo) break;
    const take = Math.min(p.length, upTo - o);
    out.set(p.subarray(0, take), o);
    o += take;
  }
  return out;
}

/** RFC 8446 §4.1.2 ClientHello (also TLS 1.0–1.2, where extensions may be absent). */
function parseBody(b: Uint8Array): ClientHelloInfo {
  const r = new Reader(b);
  const legacyVersion = r.u16();
  r.skip(32); // random
  const sid = r.u8();
  if (sid > 32) throw bad(`session id of ${sid} bytes (max 32)`);
  r.skip(sid);
  const suites = r.u16();
  if (suites < 2 || suites % 2 !== 0) throw bad(`cipher_suites length ${suites} is not a non-zero even number`);
  r.skip(suites);
  const comp = r.u8();
  if (comp < 1) throw bad("no compression methods");
  r.skip(comp);
  const info: ClientHelloInfo = { sni: null, alpn: [], legacyVersion, supportedVersions: [] };
  if (r.pos === b.length) return info; // TLS ≤ 1.2 without extensions
  const extLen = r.u16();
  const extEnd = r.pos + extLen;
  if (extEnd !== b.length) throw bad(`extensions length says ${extLen} bytes, ${b.length - r.pos} remain`);
  const seen = new Set<number>();
  while (r.pos < extEnd) {
    const type = r.u16();
    const len = r.u16();
    const data = r.take(len);
    // RFC 8446 §4.2: there MUST NOT be more than one extension of the same type.
    if (seen.has(type)) throw bad(`extension ${type} appears twice`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) info.sni = parseServerName(data);
    else if (type === EXT_ALPN) info.alpn = parseAlpn(data);
    else if (type === EXT_SUPPORTED_VERSIONS) info.supportedVersions = parseSupportedVersions(data);
  }
  return info;
}

/** RFC 6066 §3: ServerNameList; the first host_name (type 0) is the one. */
function parseServerName(d: Uint8Array): string | null {
  const r = new Reader(d);
  const listLen = r.u16();
  if (listLen !== d.length - 2 || listLen === 0) throw bad(`server_name list length ${listLen} does not match ${d.length - 2}`);
  let sni: string | null = null;
  while (r.pos < d.length) {
    const nameType = r.u8();
    const name = r.take(r.u16());
    if (nameType !== 0 || sni !== null) continue;
    if (name.length === 0) throw bad("empty server_name");
    let s = "";
    for (let i = 0; i < name.length; i++) {
      const c = name[i];
      // A host name is printable ASCII; anything else would end up in logs and certificate names.
      if (c <= 0x20 || c >= 0x7f) throw bad(`server_name has a byte 0x${c.toString(16)}: "${printable(name)}"`);
      s += String.fromCharCode(c >= 65 && c <= 90 ? c + 32 : c);
    }
    if (s.endsWith(".")) s = s.slice(0, -1);
    if (s === "") throw bad("server_name is only a dot");
    sni = s;
  }
  return sni;
}

/** RFC 7301 §3.1: ProtocolNameList, each name 1–255 bytes. */
function parseAlpn(d: Uint8Array): string[] {
  const r = new Reader(d);
  const listLen = r.u16();
  if (listLen !== d.length - 2 || listLen === 0) throw bad(`ALPN list length ${listLen} does not match ${d.length - 2}`);
  const out: string[] = [];
  while (r.pos < d.length) {
    const n = r.u8();
    if (n === 0) throw bad("empty ALPN protocol name");
    out.push(String.fromCharCode.apply(null, r.take(n) as unknown as number[]));
  }
  return out;
}

/** RFC 8446 §4.2.1: ClientHello form, a 1-byte length and 2..254 bytes of versions. */
function parseSupportedVersions(d: Uint8Array): number[] {
  const r = new Reader(d);
  const n = r.u8();
  if (n !== d.length - 1 || n < 2 || n % 2 !== 0) throw bad(`supported_versions length ${n} does not fit ${d.length - 1} bytes`);
  const out: number[] = [];
  while (r.pos < d.length) out.push(r.u16());
  return out;
}

/** Bounds-checked big-endian reads; running past the end is an inconsistent length. */
class Reader {
  pos = 0;
  constructor(readonly b: Uint8Array) {}
  u8(): number {
    this.need(1);
    return this.b[this.pos++];
  }
  u16(): number {
    this.need(2);
    const v = (this.b[this.pos] << 8) | this.b[this.pos + 1];
    this.pos += 2;
    return v;
  }
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
  take(n: number): Uint8Array {
    this.need(n);
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  private need(n: number): void {
    if (this.pos + n > this.b.length) throw bad(`a length field points ${this.pos + n - this.b.length} bytes past its end`);
  }
}

function bad(msg: string): ProxyError {
  return new ProxyError("PX_BAD_CLIENT_HELLO", "client", `malformed ClientHello: ${msg}`);
}
