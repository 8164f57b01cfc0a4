/**
 * @module Property tests of what a head asks for and of the ClientHello peek: CONNECT authorities and absolute-form
 * targets parse to a normalised Target or a ProxyError, the same Target again when written back, and agree with the
 * WHATWG URL parser that layer 2 uses; no spelling of an IP address (decimal, octal, hex, short, IPv6, IPv4-mapped)
 * ever gets a verdict other than deny; an allowed verdict is always inside a listed domain on a listed port. The
 * ClientHello fixtures, cut anywhere, are NEED_MORE; refragmented into records of any size, read the same; mutated,
 * they give a ClientHelloInfo or a ProxyError, nothing else.
 */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAuthority, toRequest } from "../../src/core/connect";
import { parseConfig } from "../../src/core/config";
import { NEED_MORE } from "../../src/core/http1/head";
import { compilePolicy, decide, isPublicAddress } from "../../src/core/policy";
import { peekClientHello } from "../../src/core/tls-peek";
import type { Target } from "../../src/core/types";
import { check, concatBytes, expectOnlyProxyError } from "./arbitraries";

const authorityChars = fc.constantFrom(..."abcxyz0179AFX.-_:[]@%/\\?#f:1.0x", "qualys", "com", "::", "ffff", "127", "0x7f", "00", "\u00e9", " ", "\t", "\x00");
const authority = fc.array(authorityChars, { maxLength: 16 }).map((cs) => cs.join(""));

const DNS = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
const QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const written = (t: Target) => `${t.host.includes(":") ? `[${t.host}]` : t.host}:${t.port}`;

describe("CONNECT authorities (RFC 9110 §9.3.6)", () => {
  test("random authorities: a normalised Target (or a ProxyError), which written back parses to itself", () => {
    check(
      "authority normal form",
      fc.property(authority, fc.option(fc.integer({ min: 1, max: 65535 })), (host, port) => {
        const s = port === null ? host : `${host}:${port}`;
        const r = expectOnlyProxyError(() => parseAuthority(s));
        if (!r.ok) return;
        const t = r.value as Target;
        expect(t.port).toBeGreaterThanOrEqual(1);
        expect(t.port).toBeLessThanOrEqual(65535);
        if (t.isIp) expect(QUAD.test(t.host) || t.host.includes(":")).toBe(true);
        else {
          expect(t.host).toMatch(DNS);
          expect(t.host.slice(t.host.lastIndexOf(".") + 1)).not.toMatch(/^(\d+|0x[0-9a-f]*)$/); // an address in disguise
        }
        expect(parseAuthority(written(t))).toEqual(t);
      }),
      4000,
      21,
    );
  });

  /** Spellings of 127.0.0.1 and ::1 that some resolver or URL parser reads as loopback. */
  const LOOPBACK = [
    "127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001", "127.1", "127.0.1", "0x7f.0.0.1", "0177.1", "017700000001",
    "127.0.0.1.", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:0:0:1]", "[::127.0.0.1]", "[0000::1]", "[::1%25lo]",
    "localhost", "localhost.", "LOCALHOST", "0", "0.0.0.0", "[::]", "127.000.000.001", "1.0.0.127.in-addr.arpa",
  ];
  const allowEverything = compilePolicy(parseConfig({ cache: { enabled: true, allowed_domains: ["microsoft.com"] }, destinations: { ports: [443, 80] } }));
  test("no spelling of loopback gets past decide(), on either port", () => {
    for (const h of LOOPBACK)
      for (const port of ["proxy", "cache"] as const) {
        const r = expectOnlyProxyError(() => parseAuthority(`${h}:443`));
        if (!r.ok) continue;
        const v = decide(allowEverything, r.value as Target, { ip: "127.0.0.1", port });
        expect({ h, port, action: v.action }).toEqual({ h, port, action: "deny" });
      }
  });

  const policy = compilePolicy(parseConfig({ cache: { enabled: true, allowed_domains: ["microsoft.com", "example.org"] }, destinations: { ports: [443, 8443] } }));
  const listed = ["qualys.com", "qualys.eu", "qualys.in", "qualys.ca", "qualys.ae", "qualys.co.uk", "qualys.com.au", "qualysksa.com", "microsoft.com", "example.org"];
  const nameish = fc.array(fc.constantFrom("a", "qualys", "com", "microsoft", "evil", "example", "org", "co", "uk", "ksa", "qualysksa", "-", "."), { minLength: 1, maxLength: 8 }).map((p) => p.join(""));
  test("an allowed verdict is always a name inside a listed domain on a listed port; denies carry a reason", () => {
    check(
      "decide oracle",
      fc.property(nameish, fc.constantFrom(443, 8443, 80, 22), fc.constantFrom("proxy" as const, "cache" as const), (name, port, on) => {
        const r = expectOnlyProxyError(() => parseAuthority(`${name}:${port}`));
        if (!r.ok) return;
        const t = r.value as Target;
        const v = decide(policy, t, { ip: "10.0.0.1", port: on });
        const inside = listed.some((d) => t.host === d || t.host.endsWith(`.${d}`));
        if (v.action === "deny") expect(v.reason ?? "").not.toBe("");
        else {
          expect(inside).toBe(true);
          expect([443, 8443]).toContain(port);
          expect(t.isIp).toBe(false);
        }
        if (inside && !t.isIp && (port === 443 || port === 8443)) expect(v.action).not.toBe("deny");
      }),
      3000,
      22,
    );
  });
});

describe("absolute-form targets (RFC 9112 §3.2.2)", () => {
  const urlish = fc
    .tuple(fc.constantFrom("http://", "HTTP://", "http:/", "https://", "ftp://", "http:\\\\"), authority, fc.constantFrom("", "/", "/x?y", "?q", "#f", "\\x", "/a@b"))
    .map(([a, b, c]) => a + b + c);
  test("random targets: an absolute request or a ProxyError; an accepted one names the host WHATWG URL names", () => {
    check(
      "absolute-form vs URL",
      fc.property(urlish, (t) => {
        const r = expectOnlyProxyError(() => toRequest({ method: "GET", target: t, version: "1.1", headers: [], headBytes: 0 }, { allowAbsolute: true }));
        if (!r.ok) return;
        const req = r.value as { kind: string; target: Target; url: { path: string } };
        expect(req.kind).toBe("absolute");
        // layer 2 routes with new URL(): both readings must name one destination, or the policy judged another host
        const u = new URL(t);
        const host = u.hostname.replace(/^\[|\]$/g, "").replace(/\.$/, "");
        expect({ host: req.target.host, port: req.target.port }).toEqual({ host, port: u.port === "" ? 80 : Number(u.port) });
      }),
      3000,
      23,
    );
  });
});

describe("ClientHello peek (RFC 8446 §4.1.2)", () => {
  const dir = join(import.meta.dir, "../fixtures");
  const fixtures = ["client-hello-curl-alpn.bin", "client-hello-openssl-nosni.bin", "client-hello-openssl-sni.bin", "client-hello-openssl-tls12.bin"].map(
    (f) => new Uint8Array(readFileSync(join(dir, f))),
  );
  const fixture = fc.constantFrom(...fixtures.keys());

  /** The handshake message of a one-record fixture, cut into records of the given sizes (RFC 8446 §5.1 allows it). */
  function refragment(rec: Uint8Array, sizes: number[]): Uint8Array {
    const msg = rec.subarray(5, 5 + ((rec[3]! << 8) | rec[4]!));
    const out: Uint8Array[] = [];
    let i = 0;
    let k = 0;
    while (i < msg.length) {
      const n = Math.min(msg.length - i, 1 + (sizes[k++ % Math.max(1, sizes.length)] ?? msg.length));
      out.push(new Uint8Array([22, 3, 1, n >> 8, n & 255]), msg.subarray(i, i + n));
      i += n;
    }
    return concatBytes(out);
  }

  test("every strict prefix of a fixture is NEED_MORE, and the whole one reads its SNI and ALPN", () => {
    for (const f of fixtures) {
      const whole = peekClientHello(f);
      expect(whole).not.toBe(NEED_MORE);
      for (let n = 0; n < f.length; n++) expect(peekClientHello(f.subarray(0, n))).toBe(NEED_MORE);
    }
  });

  test("refragmented into records of any size: the same ClientHelloInfo, and its prefixes NEED_MORE", () => {
    check(
      "client hello refragmented",
      fc.property(fixture, fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 6 }), fc.nat(), (i, sizes, cut) => {
        const f = fixtures[i]!;
        const re = refragment(f, sizes);
        expect(peekClientHello(re)).toEqual(peekClientHello(f));
        expect(peekClientHello(re.subarray(0, cut % re.length))).toBe(NEED_MORE);
      }),
      400,
      24,
    );
  });

  test("mutated (bytes flipped, inserted, removed, lengths stretched): ClientHelloInfo, NEED_MORE or a ProxyError", () => {
    const mutation = fc.oneof(
      fc.tuple(fc.constant("set" as const), fc.nat(), fc.integer({ min: 0, max: 255 })),
      fc.tuple(fc.constant("insert" as const), fc.nat(), fc.integer({ min: 0, max: 255 })),
      fc.tuple(fc.constant("delete" as const), fc.nat(), fc.constant(0)),
    );
    check(
      "client hello mutations",
      fc.property(fixture, fc.array(mutation, { minLength: 1, maxLength: 4 }), (i, ms) => {
        let b = Array.from(fixtures[i]!);
        for (const [op, at, v] of ms) {
          const p = at % (b.length + 1);
          if (op === "set" && p < b.length) b[p] = v;
          else if (op === "insert") b.splice(p, 0, v);
          else if (op === "delete") b.splice(p, 1);
        }
        const r = expectOnlyProxyError(() => peekClientHello(new Uint8Array(b)));
        if (r.ok && r.value !== NEED_MORE) {
          const info = r.value as { sni: string | null };
          if (info.sni !== null) expect(info.sni).toMatch(/^[\x21-\x7e]+$/); // printable ASCII only: it goes into logs and certs
        }
      }),
      3000,
      25,
    );
  });

  test("random bytes after a TLS record header: only ProxyError", () => {
    check(
      "client hello random",
      fc.property(fc.uint8Array({ maxLength: 200 }), (tail) => {
        expectOnlyProxyError(() => peekClientHello(concatBytes([new Uint8Array([22, 3, 1, tail.length >> 8, tail.length & 255, 1]), tail])));
      }),
      2000,
      26,
    );
  });

  test("isPublicAddress never calls loopback, private or mapped forms public", () => {
    for (const ip of ["127.0.0.1", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "fe80::1", "fd00::1", "0.0.0.0", "::", "64:ff9b::7f00:1", "2002:7f00:1::"])
      expect({ ip, pub: isPublicAddress(ip) }).toEqual({ ip, pub: false });
  });
});
