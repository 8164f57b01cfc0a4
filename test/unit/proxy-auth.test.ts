/**
 * core/proxy-auth.ts against the published NTLMv2 example of MS-NLMP §4.2.4 (user "User", domain "Domain",
 * password "Password", server challenge 0123456789abcdef, client challenge aaaaaaaaaaaaaaaa, time 0, random
 * session key 55…55), then the exchange's decisions on 407 answers, and Basic.
 */
import { describe, expect, test } from "bun:test";
import { createCipheriv, createHash, createHmac } from "node:crypto";
import {
  type NtlmCrypto,
  type ProxyAuthEnv,
  computeNtlmV2Responses,
  makeBasicAuthorization,
  makeNtlmAuthenticate,
  makeNtlmNegotiate,
  ntowfV2,
  offeredSchemes,
  onProxyAuthRequired,
  openProxyAuth,
  parseNtlmChallenge,
  parseNtlmUser,
  toFiletime,
} from "../../src/core/proxy-auth";
import { ProxyError } from "../../src/core/errors";
import { parseConfig, redactConfig } from "../../src/core/config";

const crypto: NtlmCrypto = {
  md4: (d) => new Uint8Array(createHash("md4").update(d).digest()),
  hmacMd5: (k, d) => new Uint8Array(createHmac("md5", k).update(d).digest()),
  rc4: (k, d) => new Uint8Array(createCipheriv("rc4", k, null).update(d)),
};
const hex = (s: string) => Uint8Array.from(s.replace(/\s+/g, "").match(/../g)!, (b) => parseInt(b, 16));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

// §4.2.4.3: the CHALLENGE_MESSAGE (flags 0xe28a8233, target "Server", AV pairs Domain/Server).
const SPEC_CHALLENGE = hex(`
  4e544c4d53535000 02000000 0c000c00 38000000 33828ae2 0123456789abcdef 0000000000000000 24002400 44000000
  060070170000000f 530065007200760065007200
  02000c0044006f006d00610069006e00 01000c00530065007200760065007200 00000000`);
// §4.2.4.3: the AUTHENTICATE_MESSAGE.
const SPEC_AUTHENTICATE = hex(`
  4e544c4d53535000 03000000 18001800 6c000000 54005400 84000000 0c000c00 48000000 08000800 54000000 10001000 5c000000
  10001000 d8000000 358288e2 0501280a0000000f
  44006f006d00610069006e00 5500730065007200 43004f004d0050005500540045005200
  86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa
  68cd0ab851e51c96aabc927bebef6a1c 0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000
  02000c0044006f006d00610069006e00 01000c00530065007200760065007200 00000000 00000000
  c5dad2544fc9799094ce1ce90bc9d03e`);
const SERVER_CHALLENGE = hex("0123456789abcdef");
const CLIENT_CHALLENGE = hex("aaaaaaaaaaaaaaaa");
const RANDOM_SESSION_KEY = hex("55555555555555555555555555555555");
const SPEC_VERSION = hex("0501280a0000000f");

describe("NTLMv2, MS-NLMP §4.2.4", () => {
  test("§4.2.4.1.1 NTOWFv2(Password, User, Domain)", () => {
    expect(toHex(ntowfV2(crypto, "User", "Domain", "Password"))).toBe("0c868a403bfd7a93a3001ef22ef02e3f");
  });

  test("the CHALLENGE_MESSAGE parses: flags, server challenge, target name, target info", () => {
    const c = parseNtlmChallenge(SPEC_CHALLENGE);
    expect(c.flags >>> 0).toBe(0xe28a8233);
    expect(toHex(c.serverChallenge)).toBe("0123456789abcdef");
    expect(c.targetName).toBe("Server");
    expect(toHex(c.targetInfo)).toBe("02000c0044006f006d00610069006e0001000c0053006500720076006500720000000000");
    expect(c.timestamp).toBeNull();
  });

  test("§4.2.4.2 LMv2 response, NTProofStr, session base key and the encrypted random session key", () => {
    const key = ntowfV2(crypto, "User", "Domain", "Password");
    const info = parseNtlmChallenge(SPEC_CHALLENGE).targetInfo;
    const r = computeNtlmV2Responses(crypto, key, SERVER_CHALLENGE, CLIENT_CHALLENGE, 0n, info, false);
    expect(toHex(r.lmResponse)).toBe("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa");
    expect(toHex(r.ntProofStr)).toBe("68cd0ab851e51c96aabc927bebef6a1c");
    expect(toHex(r.sessionBaseKey)).toBe("8de40ccadbc14a82f15cb0ad0de95ca3");
    expect(toHex(crypto.rc4(r.sessionBaseKey, RANDOM_SESSION_KEY))).toBe("c5dad2544fc9799094ce1ce90bc9d03e");
  });

  test("§4.2.4.3 the whole AUTHENTICATE_MESSAGE, byte for byte", () => {
    const msg = makeNtlmAuthenticate(crypto, {
      challenge: parseNtlmChallenge(SPEC_CHALLENGE),
      negotiate: makeNtlmNegotiate(),
      user: "User",
      domain: "Domain",
      password: "Password",
      workstation: "COMPUTER",
      clientChallenge: CLIENT_CHALLENGE,
      randomSessionKey: RANDOM_SESSION_KEY,
      filetime: 0n,
      version: SPEC_VERSION,
    });
    expect(toHex(msg)).toBe(toHex(SPEC_AUTHENTICATE));
  });

  test("a wrong password changes the proof (the vector test can fail)", () => {
    const key = ntowfV2(crypto, "User", "Domain", "password");
    expect(toHex(key)).not.toBe("0c868a403bfd7a93a3001ef22ef02e3f");
  });
});

/** A CHALLENGE like Active Directory's: with MsvAvTimestamp, so the client must send a MIC and Z(24) as LM. */
function challengeWithTimestamp(ts: bigint): Uint8Array {
  const info = hex("02000c0044006f006d00610069006e00 07000800 0000000000000000 00000000");
  new DataView(info.buffer).setBigUint64(20, ts, true);
  const head = hex("4e544c4d53535000 02000000 00000000 38000000 35828ae2 0123456789abcdef 0000000000000000");
  const m = new Uint8Array(56 + info.byteLength);
  m.set(head, 0);
  const v = new DataView(m.buffer);
  v.setUint16(40, info.byteLength, true);
  v.setUint16(42, info.byteLength, true);
  v.setUint32(44, 56, true);
  m.set(hex("0a00614a0000000f"), 48);
  m.set(info, 56);
  return m;
}

describe("NTLMv2 with a server timestamp (§3.1.5.1.2)", () => {
  const ts = 0x01d5_0000_1234_5678n;
  const challenge = parseNtlmChallenge(challengeWithTimestamp(ts));
  const negotiate = makeNtlmNegotiate();
  const input = {
    challenge, negotiate, user: "user", domain: "DOMAIN", password: "pw", workstation: "",
    clientChallenge: CLIENT_CHALLENGE, randomSessionKey: RANDOM_SESSION_KEY, filetime: 42n,
  };
  const msg = makeNtlmAuthenticate(crypto, input);
  const v = new DataView(msg.buffer);
  const field = (k: number) => msg.subarray(v.getUint32(12 + k * 8 + 4, true), v.getUint32(12 + k * 8 + 4, true) + v.getUint16(12 + k * 8, true));

  test("uses the server's time, adds MsvAvFlags=MIC, sends Z(24) as the LM response", () => {
    expect(challenge.timestamp).toBe(ts);
    expect(toHex(field(0))).toBe("00".repeat(24));
    const nt = field(1);
    expect(new DataView(nt.buffer, nt.byteOffset).getBigUint64(24, true)).toBe(ts);
    expect(toHex(nt)).toContain("060004000200000000000000"); // MsvAvFlags = 2, then MsvAvEOL
  });

  test("the MIC is HMAC_MD5(exported key, NEGOTIATE ‖ CHALLENGE ‖ AUTHENTICATE with the MIC zeroed)", () => {
    const mic = msg.slice(72, 88);
    const zeroed = msg.slice();
    zeroed.fill(0, 72, 88);
    const all = Buffer.concat([negotiate, challenge.raw, zeroed]);
    expect(toHex(mic)).toBe(toHex(crypto.hmacMd5(RANDOM_SESSION_KEY, all).subarray(0, 16)));
    expect(toHex(mic)).not.toBe("00".repeat(16));
  });

  test("NEGOTIATE asks for NTLM, extended session security, 128-bit and key exchange; never LM", () => {
    const flags = new DataView(negotiate.buffer).getUint32(12, true);
    expect(flags >>> 0).toBe(0xe2088217);
    expect(flags & 0x80).toBe(0); // NTLMSSP_NEGOTIATE_LM_KEY
  });
});

describe("parsing failures name what is wrong", () => {
  const bad = (m: Uint8Array) => {
    try {
      parseNtlmChallenge(m);
    } catch (e) {
      return e instanceof ProxyError ? `${e.code}: ${e.message}` : `other: ${e}`;
    }
    return "parsed";
  };
  test("short, unsigned, wrong type, field out of bounds", () => {
    expect(bad(new Uint8Array(10))).toContain("10 bytes");
    expect(bad(new Uint8Array(40))).toContain("no NTLMSSP signature");
    const t1 = makeNtlmNegotiate();
    expect(bad(t1)).toContain("message type 1");
    const cut = SPEC_CHALLENGE.slice(0, 70);
    expect(bad(cut)).toStartWith("PX_UPSTREAM_PROXY: ");
    expect(bad(cut)).toContain("runs past");
  });
});

describe("user names", () => {
  test("DOMAIN\\user, user@domain (a UPN, domain empty), bare user", () => {
    expect(parseNtlmUser("CORP\\alice")).toEqual({ user: "alice", domain: "CORP" });
    expect(parseNtlmUser("alice@corp.example")).toEqual({ user: "alice@corp.example", domain: "" });
    expect(parseNtlmUser("alice")).toEqual({ user: "alice", domain: "" });
  });
});

describe("the exchange on 407s", () => {
  const env: ProxyAuthEnv = { crypto, random: (n) => new Uint8Array(n).fill(7), now: Date.UTC(2026, 0, 1) };
  const ntlm = { scheme: "ntlm" as const, username: "DOMAIN\\user", password: "Secret-Pw1" };
  const challengeHeader = `NTLM ${Buffer.from(SPEC_CHALLENGE).toString("base64")}`;

  test("ntlm: NEGOTIATE first, AUTHENTICATE after the challenge, then a second 407 is a rejection", () => {
    const { exchange, authorization } = openProxyAuth(ntlm);
    expect(authorization).toBe(`NTLM ${Buffer.from(makeNtlmNegotiate()).toString("base64")}`);
    const step = onProxyAuthRequired(exchange, [challengeHeader, 'Basic realm="x"'], env);
    expect(step.next).toBe("send");
    const m = Buffer.from((step as { authorization: string }).authorization.slice(5), "base64");
    expect(m.readUInt32LE(8)).toBe(3);
    expect(m.toString("utf16le")).toContain("DOMAIN");
    expect(m.toString("latin1")).not.toContain("Secret-Pw1");
    const again = onProxyAuthRequired(exchange, ["NTLM"], env);
    expect(again).toMatchObject({ next: "fail", reason: "credentials-rejected" });
    expect((again as { detail: string }).detail).toContain("DOMAIN\\user");
    expect((again as { detail: string }).detail).not.toContain("Secret-Pw1");
  });

  test("ntlm: a bare `NTLM` answer to the negotiate is no-challenge; a Basic-only proxy is scheme-not-offered", () => {
    expect(onProxyAuthRequired(openProxyAuth(ntlm).exchange, ["NTLM"], env)).toMatchObject({ next: "fail", reason: "no-challenge" });
    const s = onProxyAuthRequired(openProxyAuth(ntlm).exchange, ['Basic realm="a, b"'], env);
    expect(s).toMatchObject({ next: "fail", reason: "scheme-not-offered" });
    expect((s as { detail: string }).detail).toContain('upstream_proxy.auth = "basic"');
  });

  test("basic: sent first; a 407 offering only NTLM says to set auth = ntlm; otherwise it is a rejection", () => {
    const basic = { scheme: "basic" as const, username: "agent", password: "pw" };
    const o = openProxyAuth(basic);
    expect(o.authorization).toBe(makeBasicAuthorization("agent", "pw"));
    const s = onProxyAuthRequired(o.exchange, ["NTLM", "Negotiate"], env);
    expect(s).toMatchObject({ next: "fail", reason: "scheme-not-offered" });
    expect((s as { detail: string }).detail).toContain('upstream_proxy.auth = "ntlm"');
    expect(onProxyAuthRequired(o.exchange, ['Basic realm="squid"'], env)).toMatchObject({ next: "fail", reason: "credentials-rejected" });
  });

  test("no credentials: the 407 says which schemes the proxy wants", () => {
    const s = onProxyAuthRequired(openProxyAuth(null).exchange, ["Negotiate", "NTLM"], env);
    expect(s).toMatchObject({ next: "fail", reason: "no-credentials" });
    expect((s as { detail: string }).detail).toContain("Negotiate, NTLM");
  });

  test("Basic is UTF-8 (RFC 7617 §2.1), and Proxy-Authenticate lists split like RFC 9110 §11.6.1", () => {
    expect(makeBasicAuthorization("jörg", "pä")).toBe(`Basic ${Buffer.from("jörg:pä").toString("base64")}`);
    expect(offeredSchemes(['Basic realm="a, NTLM b", charset="UTF-8", NTLM', "Negotiate"])).toEqual(["Basic", "NTLM", "Negotiate"]);
    expect(offeredSchemes([challengeHeader])).toEqual(["NTLM"]);
  });

  test("FILETIME: 1970-01-01 is 116444736000000000 ticks after 1601", () => {
    expect(toFiletime(0)).toBe(116444736000000000n);
    expect(toFiletime(1)).toBe(116444736000010000n);
  });
});

describe("squid's ntlm_fake_auth challenge (what the e2e test meets)", () => {
  // Its CHALLENGE as it prints it: flags OEM only, no target info, and 0xaaaaaaae in the TargetName offset.
  const FAKE = Buffer.from("TlRMTVNTUAACAAAACQAJAK6qqqoCAAAAsWKQwqyxhJ0AAAAAAAA6AFdPUktHUk9VUA==", "base64");
  test("parses (the bad TargetName is ignored), and the AUTHENTICATE falls back to OEM strings", () => {
    const c = parseNtlmChallenge(new Uint8Array(FAKE));
    expect(c.flags).toBe(0x2);
    expect(c.targetInfo.byteLength).toBe(0);
    const m = Buffer.from(
      makeNtlmAuthenticate(crypto, {
        challenge: c, negotiate: makeNtlmNegotiate(), user: "ntlmuser", domain: "AGATE", password: "pw", workstation: "",
        clientChallenge: CLIENT_CHALLENGE, randomSessionKey: RANDOM_SESSION_KEY, filetime: 0n,
      }),
    );
    expect(m.toString("latin1")).toContain("AGATEntlmuser");
    expect(m.readUInt32LE(60)).toBe(0x6); // OEM | REQUEST_TARGET: no key exchange offered, none sent
    expect(m.readUInt16LE(52)).toBe(0);
  });
});

describe("config: upstream_proxy.auth", () => {
  const up = (u: Record<string, unknown>) => () => parseConfig({ upstream_proxy: { host: "proxy.corp", ...u } });
  test('defaults to "basic"; "ntlm" needs a user name; other values are refused with the choices', () => {
    expect(up({ username: "u", password: "p" })().upstream_proxy!.auth).toBe("basic");
    expect(up({ auth: "ntlm", username: "CORP\\u", password: "p" })().upstream_proxy!.auth).toBe("ntlm");
    expect(up({ auth: "ntlm" })).toThrow("upstream_proxy.auth: NTLM needs upstream_proxy.username");
    expect(up({ auth: "negotiate", username: "u" })).toThrow("upstream_proxy.auth: expected one of basic, ntlm");
    // ':' only matters to Basic's user:password
    expect(up({ auth: "basic", username: "a:b" })).toThrow("upstream_proxy.username");
  });
  test("the password is redacted", () => {
    const c = up({ auth: "ntlm", username: "CORP\\u", password: "Secret-Pw1" })();
    expect(JSON.stringify(redactConfig(c))).not.toContain("Secret-Pw1");
  });
});
