import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ProxyError } from "../../src/core/errors";
import { errorOf } from "../peers/helpers";
import { NEED_MORE } from "../../src/core/http1/head";
import { peekClientHello } from "../../src/core/tls-peek";

// Real first records from real clients, captured by scripts/capture-client-hello.ts (regenerate with it).
const FIX = join(import.meta.dir, "..", "fixtures");
const load = async (name: string) => new Uint8Array(await Bun.file(join(FIX, name)).arrayBuffer());
const OPENSSL_SNI = await load("client-hello-openssl-sni.bin");
const OPENSSL_NOSNI = await load("client-hello-openssl-nosni.bin");
const OPENSSL_TLS12 = await load("client-hello-openssl-tls12.bin");
const CURL_ALPN = await load("client-hello-curl-alpn.bin");
const SNI = "qagpublic.qg1.apps.qualys.com";

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One TLS record around `payload` (type 22 unless told). */
function record(payload: Uint8Array, type = 22, version = 0x0301): Uint8Array {
  return concat(Uint8Array.of(type, version >> 8, version & 255, payload.length >> 8, payload.length & 255), payload);
}

/** The handshake message inside a single-record capture. */
const handshakeOf = (rec: Uint8Array) => rec.subarray(5, 5 + ((rec[3] << 8) | rec[4]));

/** Split the handshake message of `rec` into records at `cuts` (offsets into the message). */
function fragment(rec: Uint8Array, ...cuts: number[]): Uint8Array {
  const hs = handshakeOf(rec);
  const edges = [0, ...cuts, hs.length];
  const recs: Uint8Array[] = [];
  for (let i = 0; i + 1 < edges.length; i++) recs.push(record(hs.subarray(edges[i], edges[i + 1])));
  return concat(...recs);
}

function indexOfBytes(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

describe("real ClientHellos", () => {
  test("the fixtures are single complete handshake records, as captured", () => {
    for (const f of [OPENSSL_SNI, OPENSSL_NOSNI, OPENSSL_TLS12, CURL_ALPN]) {
      expect(f[0]).toBe(22);
      expect(f.length).toBe(5 + ((f[3] << 8) | f[4]));
    }
  });

  test("openssl s_client -servername", () => {
    const info = peekClientHello(OPENSSL_SNI);
    expect(info).toEqual({ sni: SNI, alpn: [], legacyVersion: 0x0303, supportedVersions: expect.arrayContaining([0x0304, 0x0303]) });
  });

  test("openssl s_client -noservername → sni null", () => {
    expect(peekClientHello(OPENSSL_NOSNI)).toMatchObject({ sni: null, alpn: [], legacyVersion: 0x0303 });
  });

  test("openssl s_client -tls1_2 -alpn http/1.1 → no supported_versions", () => {
    expect(peekClientHello(OPENSSL_TLS12)).toEqual({ sni: SNI, alpn: ["http/1.1"], legacyVersion: 0x0303, supportedVersions: [] });
  });

  test("curl offers h2 then http/1.1", () => {
    const info = peekClientHello(CURL_ALPN);
    if (info === NEED_MORE) throw new Error("expected a ClientHello");
    expect(info.sni).toBe(SNI);
    expect(info.alpn).toEqual(["h2", "http/1.1"]);
    expect(info.supportedVersions[0]).toBe(0x0304);
  });

  test("every strict prefix is NEED_MORE", () => {
    for (const f of [OPENSSL_SNI, OPENSSL_NOSNI, OPENSSL_TLS12, CURL_ALPN]) {
      for (let i = 0; i < f.length; i++) {
        if (peekClientHello(f.subarray(0, i)) !== NEED_MORE) throw new Error(`prefix of ${i}/${f.length} bytes was not NEED_MORE`);
      }
      expect(peekClientHello(f)).not.toBe(NEED_MORE);
    }
  });

  test("bytes after the ClientHello (a ChangeCipherSpec, early data) are ignored", () => {
    const withCcs = concat(CURL_ALPN, Uint8Array.of(20, 3, 3, 0, 1, 1), Uint8Array.of(23, 3, 3, 0, 2, 9, 9));
    expect(peekClientHello(withCcs)).toEqual(peekClientHello(CURL_ALPN));
  });

  test("SNI is lower-cased and loses its trailing dot", () => {
    const f = OPENSSL_SNI.slice();
    const at = indexOfBytes(f, bytes(SNI));
    expect(at).toBeGreaterThan(0);
    f.set(bytes("QAGPUBLIC.QG1.apps.QUALYS.co."), at); // same length as SNI
    expect(peekClientHello(f)).toMatchObject({ sni: "qagpublic.qg1.apps.qualys.co" });
  });
});

describe("fragmented over several records (RFC 8446 §5.1)", () => {
  const whole = peekClientHello(CURL_ALPN);
  const len = handshakeOf(CURL_ALPN).length;
  const splits: number[][] = [[1], [2], [3], [4], [5], [100], [len - 1], [1, 2, 3], [50, 200, 400], [len >> 1]];
  for (const cuts of splits) {
    test(`split at ${cuts.join(",")} gives the same answer`, () => {
      const frag = fragment(CURL_ALPN, ...cuts);
      expect(frag.length).toBe(CURL_ALPN.length + 5 * cuts.length);
      expect(peekClientHello(frag)).toEqual(whole);
    });
  }

  test("every strict prefix of a fragmented hello is NEED_MORE", () => {
    const frag = fragment(OPENSSL_SNI, 3, 150);
    for (let i = 0; i < frag.length; i++) {
      if (peekClientHello(frag.subarray(0, i)) !== NEED_MORE) throw new Error(`prefix of ${i}/${frag.length} bytes was not NEED_MORE`);
    }
    expect(peekClientHello(frag)).toMatchObject({ sni: SNI });
  });

  test("a non-handshake record in the middle → PX_BAD_CLIENT_HELLO", () => {
    const hs = handshakeOf(OPENSSL_SNI);
    const bad = concat(record(hs.subarray(0, 100)), record(hs.subarray(100), 23));
    expect(errorOf(() => peekClientHello(bad)).code).toBe("PX_BAD_CLIENT_HELLO");
    // already visible from the first byte of the second record header
    expect(errorOf(() => peekClientHello(bad.subarray(0, 106))).code).toBe("PX_BAD_CLIENT_HELLO");
  });

  test("a hello claiming more than 64 KiB → PX_BAD_CLIENT_HELLO", () => {
    const hs = handshakeOf(OPENSSL_SNI).slice();
    hs.set([0x01, 0x00, 0x00], 1); // 65536 bytes of body
    expect(errorOf(() => peekClientHello(record(hs))).code).toBe("PX_BAD_CLIENT_HELLO");
    hs.set([0x00, 0xff, 0xfb], 1); // 65531 + 4 header = 65535: under the cap, so it waits for more records
    expect(peekClientHello(record(hs))).toBe(NEED_MORE);
  });
});

describe("not TLS, or not a well-formed ClientHello", () => {
  const notTls: [name: string, input: Uint8Array][] = [
    ["an HTTP request", bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
    ["a second CONNECT", bytes("CONNECT a:443 HTTP/1.1\r\n\r\n")],
    ["one wrong byte", bytes("G")],
    ["SSLv2-compatible hello", Uint8Array.of(0x80, 0x2e, 0x01, 0x03, 0x01)],
    ["handshake type, wrong record version", Uint8Array.of(22, 0x00, 0x01)],
    ["an alert record", Uint8Array.of(21, 3, 3, 0, 2, 2, 40)],
    ["application data", Uint8Array.of(23, 3, 3, 0, 1, 0)],
    ["a ServerHello", record(Uint8Array.of(2, 0, 0, 2, 3, 3))],
    ["a ServerHello, record incomplete", Uint8Array.of(22, 3, 3, 0, 100, 2)],
  ];
  for (const [name, input] of notTls) {
    test(`${name} → PX_NOT_TLS`, () => {
      const e = errorOf(() => peekClientHello(input));
      expect(e.code).toBe("PX_NOT_TLS");
      expect(e.side).toBe("client");
    });
  }

  test("the message escapes what it quotes", () => {
    const e = errorOf(() => peekClientHello(bytes("GET /\x00 HTTP/1.1\r\n")));
    expect(e.message).toContain("GET /\\u0000");
  });

  /** Copy of a fixture's handshake message with `edit` applied, wrapped in one record. */
  function mutated(edit: (hs: Uint8Array) => Uint8Array): Uint8Array {
    return record(edit(handshakeOf(OPENSSL_SNI).slice()));
  }
  const sidAt = 4 + 2 + 32; // handshake header, legacy_version, random
  const badHello: [name: string, input: Uint8Array][] = [
    ["zero-length record", Uint8Array.of(22, 3, 1, 0, 0)],
    ["record longer than 2^14", Uint8Array.of(22, 3, 1, 0x40, 0x01)],
    ["handshake length one byte short", mutated((hs) => (hs.set([0, (hs.length - 5) >> 8, (hs.length - 5) & 255], 1), hs))],
    ["session id of 33 bytes", mutated((hs) => ((hs[sidAt] = 33), hs))],
    ["session id running past the end", mutated((hs) => {
      const cut = hs.slice(0, sidAt + 10); // handshake length says the body ends inside the session id
      cut.set([0, 0, cut.length - 4], 1);
      cut[sidAt] = 32;
      return cut;
    })],
    ["odd cipher_suites length", mutated((hs) => ((hs[sidAt + 1 + hs[sidAt] + 1] |= 1), hs))],
    ["extensions length off by one", mutated((hs) => {
      const at = extensionsAt(hs);
      const n = ((hs[at] << 8) | hs[at + 1]) - 1;
      hs.set([n >> 8, n & 255], at);
      return hs;
    })],
    ["duplicate extension", mutated((hs) => {
      // rename the supported_versions extension (43) to server_name (0), which is already present
      const at = findExtension(hs, 43);
      hs.set([0, 0], at);
      return hs;
    })],
    ["server_name list length wrong", mutated((hs) => {
      const at = findExtension(hs, 0) + 4;
      hs[at + 1] ^= 1;
      return hs;
    })],
    ["NUL inside the server name", mutated((hs) => {
      const at = indexOfBytes(hs, bytes(SNI));
      hs[at + 3] = 0;
      return hs;
    })],
  ];
  for (const [name, input] of badHello) {
    test(`${name} → PX_BAD_CLIENT_HELLO`, () => {
      const e = errorOf(() => peekClientHello(input));
      expect(e.code).toBe("PX_BAD_CLIENT_HELLO");
      expect(e.side).toBe("client");
    });
  }

  test("every one-byte corruption of a real hello gives a value, NEED_MORE or a ProxyError, never a crash", () => {
    const codes = new Set<string>();
    for (const f of [OPENSSL_SNI, CURL_ALPN]) {
      for (let i = 0; i < f.length; i++) {
        for (const x of [0x00, 0xff, f[i] ^ 0x80, f[i] + 1]) {
          const g = f.slice();
          g[i] = x;
          try {
            peekClientHello(g);
          } catch (e) {
            if (!(e instanceof ProxyError)) throw new Error(`byte ${i} := ${x}: ${e}`);
            codes.add(e.code);
          }
        }
      }
    }
    expect([...codes].sort()).toEqual(["PX_BAD_CLIENT_HELLO", "PX_NOT_TLS"]);
  });
});

/** Offset of the 2-byte extensions length in a ClientHello handshake message. */
function extensionsAt(hs: Uint8Array): number {
  let p = 4 + 2 + 32;
  p += 1 + hs[p];
  p += 2 + ((hs[p] << 8) | hs[p + 1]);
  p += 1 + hs[p];
  return p;
}

/** Offset of the extension of `type` (its type field) in a ClientHello handshake message. */
function findExtension(hs: Uint8Array, type: number): number {
  let p = extensionsAt(hs) + 2;
  while (p < hs.length) {
    const t = (hs[p] << 8) | hs[p + 1];
    if (t === type) return p;
    p += 4 + ((hs[p + 2] << 8) | hs[p + 3]);
  }
  throw new Error(`extension ${type} not in fixture`);
}
