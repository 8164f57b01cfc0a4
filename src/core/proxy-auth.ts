/**
 * @module Proxy-Authorization exchanges for the upstream proxy (RFC 9110 §11.7.1): Basic (RFC 7617), sent with the
 * first CONNECT, and NTLMv2 (MS-NLMP), a three-message handshake on the CONNECT connection itself:
 *
 *   CONNECT + `NTLM <NEGOTIATE>` → 407 `Proxy-Authenticate: NTLM <CHALLENGE>` → CONNECT + `NTLM <AUTHENTICATE>` → 200
 *
 * Messages in → messages out. Pure: the hash primitives (MD4, HMAC-MD5, RC4), the random bytes and the clock are
 * passed in by the shell (workers/upstream.ts gives node:crypto's). Only NTLMv2 is spoken — never LM or NTLMv1,
 * which current proxies refuse — with extended session security, 128-bit key exchange and, when the challenge
 * carries a timestamp, a MIC (MS-NLMP §3.1.5.1.2). Why not a library: the npm ones (`@ewsjs/ntlm-client`,
 * `httpntlm`, `ntlm-client`) read the host name and Math.random themselves, fall back to LM/NTLMv1, send no key
 * exchange or MIC, and so cannot be tested against the §4.2.4 vectors nor meet "session security".
 * Negotiate (SPNEGO/Kerberos) is not spoken: it needs a KDC to test against.
 */
import { ProxyError, printable } from "./errors";

// ---- the primitives the shell passes in ------------------------------------------------------------------

/** Hashes NTLM needs; node:crypto has all three (MD4 and RC4 included, also under Bun). */
export type NtlmCrypto = {
  md4(data: Uint8Array): Uint8Array;
  hmacMd5(key: Uint8Array, data: Uint8Array): Uint8Array;
  rc4(key: Uint8Array, data: Uint8Array): Uint8Array;
};

/** What an exchange needs from the outside world: crypto, randomness and the wall clock (ms since 1970). */
export type ProxyAuthEnv = { crypto: NtlmCrypto; random: (n: number) => Uint8Array; now: number };

// ---- credentials -----------------------------------------------------------------------------------------

export type ProxyAuthScheme = "basic" | "ntlm";
export type ProxyCredentials = { scheme: ProxyAuthScheme; username: string; password: string };

/**
 * `DOMAIN\user` → (user, DOMAIN); `user@domain.example` (a UPN) → the whole UPN as the user and an empty domain,
 * as Windows itself sends it (MS-NLMP §2.2.1.3: the domain may be empty when the user name is a UPN); `user` → no domain.
 */
export function parseNtlmUser(username: string): { user: string; domain: string } {
  const i = username.indexOf("\\");
  if (i >= 0) return { user: username.slice(i + 1), domain: username.slice(0, i) };
  return { user: username, domain: "" };
}

/** `Basic base64(user:password)` with the UTF-8 charset (RFC 7617 §2.1). */
export function makeBasicAuthorization(username: string, password: string): string {
  return `Basic ${toBase64(new TextEncoder().encode(`${username}:${password}`))}`;
}

// ---- NTLM messages (MS-NLMP §2.2) -------------------------------------------------------------------------

/** NEGOTIATE flags, MS-NLMP §2.2.2.5. */
export const NTLM_FLAGS = {
  UNICODE: 0x00000001,
  OEM: 0x00000002,
  REQUEST_TARGET: 0x00000004,
  SIGN: 0x00000010,
  SEAL: 0x00000020,
  NTLM: 0x00000200,
  ALWAYS_SIGN: 0x00008000,
  EXTENDED_SESSIONSECURITY: 0x00080000,
  TARGET_INFO: 0x00800000,
  VERSION: 0x02000000,
  N128: 0x20000000,
  KEY_EXCH: 0x40000000,
  N56: 0x80000000,
} as const;
const F = NTLM_FLAGS;

/** What we ask for: what Windows' own HTTP stack asks for, minus LM (0xe2088217). */
const NEGOTIATE_FLAGS =
  (F.UNICODE | F.OEM | F.REQUEST_TARGET | F.SIGN | F.NTLM | F.ALWAYS_SIGN | F.EXTENDED_SESSIONSECURITY | F.VERSION | F.N128 | F.KEY_EXCH | F.N56) >>> 0;
/** What we go along with when the server chooses it (the AUTHENTICATE flags are the server's, masked by these). */
const ACCEPTED_FLAGS = (NEGOTIATE_FLAGS | F.SEAL | F.TARGET_INFO) >>> 0;

/** VERSION (§2.2.2.10): for debugging only; ours says 10.0, NTLM revision 15. */
export const OUR_VERSION = Uint8Array.of(10, 0, 0, 0, 0, 0, 0, 15);

const SIGNATURE = Uint8Array.of(0x4e, 0x54, 0x4c, 0x4d, 0x53, 0x53, 0x50, 0x00); // "NTLMSSP\0"
/** AV_PAIR ids (§2.2.2.1). */
const AV_EOL = 0, AV_FLAGS = 6, AV_TIMESTAMP = 7;
/** MsvAvFlags bit: the AUTHENTICATE message carries a MIC. */
const AV_FLAG_MIC = 0x2;
/** 100-ns ticks between 1601-01-01 (FILETIME's epoch) and 1970-01-01. */
const FILETIME_EPOCH_OFFSET = 116444736000000000n;

export type NtlmChallenge = {
  flags: number;
  serverChallenge: Uint8Array;
  targetName: string;
  /** the raw AV_PAIR list (MsvAvEOL included) */
  targetInfo: Uint8Array;
  /** MsvAvTimestamp, when the server sent one (FILETIME) */
  timestamp: bigint | null;
  /** the whole message: the MIC covers it */
  raw: Uint8Array;
};

/** NEGOTIATE_MESSAGE (§2.2.1.1): no domain or workstation supplied, VERSION present. 40 bytes. */
export function makeNtlmNegotiate(version: Uint8Array = OUR_VERSION): Uint8Array {
  const m = new Uint8Array(40);
  const v = new DataView(m.buffer);
  m.set(SIGNATURE, 0);
  v.setUint32(8, 1, true);
  v.setUint32(12, NEGOTIATE_FLAGS, true);
  // DomainNameFields and WorkstationFields: empty, offset at the end of the fixed part
  v.setUint32(20, 40, true);
  v.setUint32(28, 40, true);
  m.set(version, 32);
  return m;
}

/** Parse a CHALLENGE_MESSAGE (§2.2.1.2). Throws PX_UPSTREAM_PROXY naming what is wrong. */
export function parseNtlmChallenge(raw: Uint8Array): NtlmChallenge {
  const bad = (why: string): never => {
    throw new ProxyError("PX_UPSTREAM_PROXY", "upstream", `the upstream proxy's NTLM challenge is malformed: ${why}`);
  };
  if (raw.byteLength < 32) bad(`${raw.byteLength} bytes, at least 32 expected`);
  for (let i = 0; i < 8; i++) if (raw[i] !== SIGNATURE[i]) bad("no NTLMSSP signature");
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const type = v.getUint32(8, true);
  if (type !== 2) bad(`message type ${type}, expected 2 (CHALLENGE)`);
  const field = (at: number): Uint8Array => {
    const len = v.getUint16(at, true);
    const off = v.getUint32(at + 4, true);
    if (len === 0) return new Uint8Array(0);
    if (off + len > raw.byteLength) bad(`a field at ${off}+${len} runs past the message's ${raw.byteLength} bytes`);
    return raw.subarray(off, off + len);
  };
  const flags = v.getUint32(20, true);
  // §2.2.1.2: TargetInfo is there only with NTLMSSP_NEGOTIATE_TARGET_INFO; otherwise those bytes are anything. The
  // TargetName is only informative (we do not use it), so a bad one is ignored: squid's ntlm_fake_auth leaves
  // 0xaaaaaaae in its offset.
  const nameLen = v.getUint16(12, true), nameOff = v.getUint32(16, true);
  const name = nameOff + nameLen <= raw.byteLength ? raw.subarray(nameOff, nameOff + nameLen) : new Uint8Array(0);
  const targetName = flags & F.UNICODE ? fromUtf16le(name) : String.fromCharCode(...name);
  const targetInfo = flags & F.TARGET_INFO && raw.byteLength >= 48 ? field(40) : new Uint8Array(0);
  let timestamp: bigint | null = null;
  for (const [id, value] of avPairs(targetInfo, bad)) {
    if (id === AV_TIMESTAMP && value.byteLength === 8) timestamp = new DataView(value.buffer, value.byteOffset, 8).getBigUint64(0, true);
  }
  return { flags, serverChallenge: raw.slice(24, 32), targetName, targetInfo, timestamp, raw };
}

/** The AV_PAIRs of a TargetInfo, up to MsvAvEOL (§2.2.2.1). */
function avPairs(info: Uint8Array, bad: (why: string) => never): [number, Uint8Array][] {
  const out: [number, Uint8Array][] = [];
  const v = new DataView(info.buffer, info.byteOffset, info.byteLength);
  let at = 0;
  while (at + 4 <= info.byteLength) {
    const id = v.getUint16(at, true);
    const len = v.getUint16(at + 2, true);
    if (id === AV_EOL) return out;
    if (at + 4 + len > info.byteLength) bad(`AV pair ${id} runs past the target info`);
    out.push([id, info.subarray(at + 4, at + 4 + len)]);
    at += 4 + len;
  }
  if (info.byteLength) bad("target info without MsvAvEOL");
  return out;
}

/** NTOWFv2 (§3.3.2): HMAC_MD5(MD4(UNICODE(password)), UNICODE(Uppercase(user) + domain)). */
export function ntowfV2(c: NtlmCrypto, user: string, domain: string, password: string): Uint8Array {
  return c.hmacMd5(c.md4(utf16le(password)), utf16le(upcase(user) + domain));
}

export type NtlmV2Responses = {
  ntProofStr: Uint8Array;
  /** NtChallengeResponse: NTProofStr || temp */
  ntResponse: Uint8Array;
  /** LmChallengeResponse: LMv2, or Z(24) when the challenge had a timestamp */
  lmResponse: Uint8Array;
  sessionBaseKey: Uint8Array;
};

/** ComputeResponse for NTLMv2 (§3.3.2). `targetInfo` is the AV_PAIR list that goes into the response. */
export function computeNtlmV2Responses(
  c: NtlmCrypto,
  responseKey: Uint8Array,
  serverChallenge: Uint8Array,
  clientChallenge: Uint8Array,
  filetime: bigint,
  targetInfo: Uint8Array,
  zeroLm: boolean,
): NtlmV2Responses {
  // temp = Responserversion(1) HiResponserversion(1) Z(6) Time(8) ClientChallenge(8) Z(4) ServerName Z(4)
  const temp = new Uint8Array(28 + targetInfo.byteLength + 4);
  const tv = new DataView(temp.buffer);
  temp[0] = 1;
  temp[1] = 1;
  tv.setBigUint64(8, filetime, true);
  temp.set(clientChallenge, 16);
  temp.set(targetInfo, 28);
  const ntProofStr = c.hmacMd5(responseKey, cat(serverChallenge, temp));
  const lmResponse = zeroLm ? new Uint8Array(24) : cat(c.hmacMd5(responseKey, cat(serverChallenge, clientChallenge)), clientChallenge);
  return { ntProofStr, ntResponse: cat(ntProofStr, temp), lmResponse, sessionBaseKey: c.hmacMd5(responseKey, ntProofStr) };
}

export type NtlmAuthenticateInput = {
  challenge: NtlmChallenge;
  /** the NEGOTIATE message we sent: the MIC covers it */
  negotiate: Uint8Array;
  user: string;
  domain: string;
  password: string;
  workstation: string;
  /** 8 random bytes */
  clientChallenge: Uint8Array;
  /** 16 random bytes (used when the server agrees to key exchange) */
  randomSessionKey: Uint8Array;
  /** our clock as a FILETIME; the server's MsvAvTimestamp wins when it sent one (§3.1.5.1.2) */
  filetime: bigint;
  version?: Uint8Array;
};

/** AUTHENTICATE_MESSAGE (§2.2.1.3), payloads in the order of §4.2.4.3: domain, user, workstation, LM, NT, key. */
export function makeNtlmAuthenticate(c: NtlmCrypto, i: NtlmAuthenticateInput): Uint8Array {
  const ch = i.challenge;
  const unicode = (ch.flags & F.UNICODE) !== 0;
  let flags = (ch.flags & ACCEPTED_FLAGS) >>> 0;
  if (unicode) flags &= ~F.OEM;
  flags = (flags | F.REQUEST_TARGET) >>> 0;
  const withMic = ch.timestamp !== null;
  // The response's AV pairs are the server's plus MsvAvFlags(MIC) when a MIC is sent (§3.1.5.1.2).
  const info = withMic ? withAvFlags(ch.targetInfo, AV_FLAG_MIC) : ch.targetInfo;
  const key = ntowfV2(c, i.user, i.domain, i.password);
  const r = computeNtlmV2Responses(c, key, ch.serverChallenge, i.clientChallenge, ch.timestamp ?? i.filetime, info, withMic);
  // NTLMv2: KeyExchangeKey = SessionBaseKey (§3.4.5.1)
  const keyExch = (flags & F.KEY_EXCH) !== 0;
  const exported = keyExch ? i.randomSessionKey : r.sessionBaseKey;
  const encryptedKey = keyExch ? c.rc4(r.sessionBaseKey, i.randomSessionKey) : new Uint8Array(0);
  const text = (s: string) => (unicode ? utf16le(s) : Uint8Array.from(s, (ch) => ch.charCodeAt(0) & 0xff));
  const payloads = [text(i.domain), text(i.user), text(i.workstation), r.lmResponse, r.ntResponse, encryptedKey];
  const fixed = 72 + (withMic ? 16 : 0);
  const total = fixed + payloads.reduce((n, p) => n + p.byteLength, 0);
  const m = new Uint8Array(total);
  const v = new DataView(m.buffer);
  m.set(SIGNATURE, 0);
  v.setUint32(8, 3, true);
  // field descriptors, in header order: LM, NT, domain, user, workstation, key
  const headerOrder = [3, 4, 0, 1, 2, 5];
  const offsets: number[] = [];
  let at = fixed;
  for (const p of payloads) {
    offsets.push(at);
    m.set(p, at);
    at += p.byteLength;
  }
  headerOrder.forEach((pi, k) => {
    const d = 12 + k * 8;
    v.setUint16(d, payloads[pi]!.byteLength, true);
    v.setUint16(d + 2, payloads[pi]!.byteLength, true);
    v.setUint32(d + 4, offsets[pi]!, true);
  });
  v.setUint32(60, flags, true);
  if (flags & F.VERSION) m.set(i.version ?? OUR_VERSION, 64);
  // MIC = HMAC_MD5(ExportedSessionKey, NEGOTIATE || CHALLENGE || AUTHENTICATE with the MIC zeroed) (§3.1.5.1.2)
  if (withMic) m.set(c.hmacMd5(exported, cat(cat(i.negotiate, ch.raw), m)).subarray(0, 16), 72);
  return m;
}

/** The AV pairs with MsvAvFlags |= bit (added before MsvAvEOL when missing). */
function withAvFlags(info: Uint8Array, bit: number): Uint8Array {
  const parts: Uint8Array[] = [];
  let seen = false;
  for (const [id, value] of avPairs(info, (why) => {
    throw new ProxyError("PX_UPSTREAM_PROXY", "upstream", `the upstream proxy's NTLM challenge is malformed: ${why}`);
  })) {
    let val = value;
    if (id === AV_FLAGS && value.byteLength === 4) {
      seen = true;
      val = new Uint8Array(4);
      new DataView(val.buffer).setUint32(0, (new DataView(value.buffer, value.byteOffset, 4).getUint32(0, true) | bit) >>> 0, true);
    }
    parts.push(avPair(id, val));
  }
  if (!seen) parts.push(avPair(AV_FLAGS, Uint8Array.of(bit, 0, 0, 0)));
  parts.push(avPair(AV_EOL, new Uint8Array(0)));
  return parts.reduce(cat, new Uint8Array(0));
}

function avPair(id: number, value: Uint8Array): Uint8Array {
  const p = new Uint8Array(4 + value.byteLength);
  const v = new DataView(p.buffer);
  v.setUint16(0, id, true);
  v.setUint16(2, value.byteLength, true);
  p.set(value, 4);
  return p;
}

/** ms since 1970 → FILETIME (100-ns ticks since 1601). */
export function toFiletime(ms: number): bigint {
  return BigInt(Math.floor(ms)) * 10000n + FILETIME_EPOCH_OFFSET;
}

// ---- the exchange on one CONNECT connection ----------------------------------------------------------------

/** Why the upstream proxy's authentication failed: a value for logs and tests (STYLE §9). */
export type ProxyAuthFailure =
  | "no-credentials" // it asks, and no upstream_proxy.username is set
  | "scheme-not-offered" // it does not offer the scheme we are set to use
  | "no-challenge" // it answered our NTLM NEGOTIATE without a CHALLENGE
  | "credentials-rejected"; // it refused the credentials we sent

export type ProxyAuthExchange = {
  creds: ProxyCredentials | null;
  /** NTLM: the NEGOTIATE we sent (the MIC covers it); null before, and for Basic */
  negotiate: Uint8Array | null;
  /** how many Proxy-Authorization headers we have sent */
  sent: number;
};

export type ProxyAuthStep =
  | { next: "send"; authorization: string } // CONNECT again on the same connection with this header
  | { next: "fail"; reason: ProxyAuthFailure; detail: string };

/** The first CONNECT's Proxy-Authorization (or null: none) and the exchange to continue. */
export function openProxyAuth(creds: ProxyCredentials | null): { exchange: ProxyAuthExchange; authorization: string | null } {
  if (!creds) return { exchange: { creds, negotiate: null, sent: 0 }, authorization: null };
  if (creds.scheme === "basic")
    return { exchange: { creds, negotiate: null, sent: 1 }, authorization: makeBasicAuthorization(creds.username, creds.password) };
  const negotiate = makeNtlmNegotiate();
  return { exchange: { creds, negotiate, sent: 1 }, authorization: `NTLM ${toBase64(negotiate)}` };
}

/** The upstream proxy answered 407 with these Proxy-Authenticate values: what to send next, or why we stop. */
export function onProxyAuthRequired(ex: ProxyAuthExchange, proxyAuthenticate: string[], env: ProxyAuthEnv): ProxyAuthStep {
  const offered = offeredSchemes(proxyAuthenticate);
  const offers = offered.length ? `it offers ${offered.join(", ")}` : "it sent no Proxy-Authenticate";
  const fail = (reason: ProxyAuthFailure, detail: string): ProxyAuthStep => ({ next: "fail", reason, detail });
  const c = ex.creds;
  if (!c) return fail("no-credentials", `the upstream proxy requires authentication (${offers}); set upstream_proxy.username and upstream_proxy.password`);
  const wanted = c.scheme === "ntlm" ? "ntlm" : "basic";
  if (!offered.some((s) => s.toLowerCase() === wanted)) {
    const hint = offered.some((s) => /^ntlm$/i.test(s))
      ? '; set upstream_proxy.auth = "ntlm"'
      : offered.some((s) => /^basic$/i.test(s))
        ? '; set upstream_proxy.auth = "basic"'
        : " (Negotiate/Kerberos is not supported)";
    return fail("scheme-not-offered", `the upstream proxy does not offer ${wanted === "ntlm" ? "NTLM" : "Basic"} authentication (${offers})${hint}`);
  }
  const who = c.username; // the admin's own setting, shown as written (DOMAIN\user)
  if (c.scheme === "basic" || ex.sent >= 2)
    return fail(
      "credentials-rejected",
      `the upstream proxy rejected the ${c.scheme === "ntlm" ? "NTLM" : "Basic"} credentials of ${who} (check upstream_proxy.username${c.scheme === "ntlm" ? ', written DOMAIN\\user or user@domain,' : ""} and upstream_proxy.password)`,
    );
  const token = ntlmToken(proxyAuthenticate);
  if (!token) return fail("no-challenge", "the upstream proxy answered the NTLM negotiate without a challenge (does it keep the connection open?)");
  const challenge = parseNtlmChallenge(fromBase64(token));
  const { user, domain } = parseNtlmUser(c.username);
  const rnd = env.random(24);
  const msg = makeNtlmAuthenticate(env.crypto, {
    challenge,
    negotiate: ex.negotiate!,
    user,
    domain,
    password: c.password,
    workstation: "",
    clientChallenge: rnd.subarray(0, 8),
    randomSessionKey: rnd.subarray(8, 24),
    filetime: toFiletime(env.now),
  });
  ex.sent++;
  return { next: "send", authorization: `NTLM ${toBase64(msg)}` };
}

/** Auth schemes named in Proxy-Authenticate values (RFC 9110 §11.6.1: challenges may share one field, comma-separated). */
export function offeredSchemes(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    // Drop quoted strings (realms may hold commas), then a challenge starts each comma-separated part whose first
    // word is not an auth-param (`name=value`).
    for (const part of v.replace(/"(?:[^"\\]|\\.)*"/g, '""').split(",")) {
      const m = /^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:\s|$)/.exec(part);
      if (m && !/^\s*[^\s=]+\s*=/.test(part) && !out.includes(m[1]!)) out.push(m[1]!);
    }
  }
  return out;
}

function ntlmToken(values: string[]): string | null {
  for (const v of values) {
    const m = /^\s*NTLM\s+([A-Za-z0-9+/]+={0,2})\s*$/i.exec(v);
    if (m) return m[1]!;
  }
  return null;
}

// ---- bytes and text ---------------------------------------------------------------------------------------

function cat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

function utf16le(s: string): Uint8Array {
  const out = new Uint8Array(s.length * 2);
  for (let i = 0; i < s.length; i++) {
    const u = s.charCodeAt(i);
    out[2 * i] = u & 0xff;
    out[2 * i + 1] = u >> 8;
  }
  return out;
}

function fromUtf16le(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i + 1 < b.byteLength; i += 2) s += String.fromCharCode(b[i]! | (b[i + 1]! << 8));
  return s;
}

/** Uppercase one UTF-16 unit at a time, as Windows does (a unit whose uppercase is longer, like ß, stays). */
function upcase(s: string): string {
  let out = "";
  for (const ch of s) {
    const u = ch.toUpperCase();
    out += u.length === ch.length ? u : ch;
  }
  return out;
}

function toBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.byteLength; i++) s += String.fromCharCode(b[i]!);
  return btoa(s);
}

function fromBase64(s: string): Uint8Array {
  try {
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch {
    throw new ProxyError("PX_UPSTREAM_PROXY", "upstream", `the upstream proxy's NTLM challenge is not base64: ${printable(s, 60)}`);
  }
}
