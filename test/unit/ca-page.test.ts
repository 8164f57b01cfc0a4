/**
 * The CA where agents are (core/ca-page.ts, issue 11): which paths an agent port answers, the three answers as
 * bytes, the install page (per-OS commands, escaping, the Host echo), and layer 1 (core/conn-session) answering
 * them on both ports with no token while everything else of the management plane stays unreachable. No sockets.
 */
import { describe, expect, test } from "bun:test";
import { type AgentCa, type CaAsk, type CaRoute, caRouteOf, makeCaAnswer as makeCaAnswerOrRefusal, makeCaPage } from "../../src/core/ca-page";
import { type ConnCommand, type PortKind, type SessionCtx, makeSession, onData, onOpen } from "../../src/core/conn-session";
import { parseConfig } from "../../src/core/config";
import { compilePolicy } from "../../src/core/policy";

const NOW = 1_700_000_000_000;
const ascii = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const PEM = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBATAKBggqhkjOPQQDAjAA\n-----END CERTIFICATE-----\n";
const CA: AgentCa = {
  pem: ascii(PEM),
  der: Uint8Array.of(0x30, 0x82, 0x01, 0x77, 0x00, 0xff),
  sha256: "AB:CD:EF",
  commonName: "agate appliance CA",
  notAfter: Date.UTC(2036, 0, 2),
};

const ask = (route: CaRoute, next = false): CaAsk => ({ route, next });
/** the answer's bytes; a refusal fails the test with its reason */
function makeCaAnswer(ca: AgentCa | null, a: CaAsk | CaRoute, o: { headOnly: boolean; host: string | null }): Uint8Array {
  const r = makeCaAnswerOrRefusal(ca, typeof a === "string" ? ask(a) : a, o);
  if (!(r instanceof Uint8Array)) throw new Error(`refused ${r.refuse}: ${r.reason}`);
  return r;
}
const NEXT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBeDCCAR6gAwIBAgIBAjAKBggqhkjOPQQDAjAA\n-----END CERTIFICATE-----\n";
const NEXT = { pem: ascii(NEXT_PEM), der: Uint8Array.of(0x30, 0x82, 0x01, 0x78, 0x02), sha256: "12:34:56", commonName: "agate next CA", notAfter: Date.UTC(2037, 5, 1) };
const MSI = { bytes: Uint8Array.of(0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1) };

/** status line, headers (lower-case names) and body of a serialized answer */
function parse(bytes: Uint8Array) {
  const raw = new TextDecoder("latin1").decode(bytes);
  const end = raw.indexOf("\r\n\r\n");
  const [status, ...lines] = raw.slice(0, end).split("\r\n");
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  return { status, headers, body: bytes.subarray(end + 4) };
}

describe("caRouteOf: only the CA paths, GET or HEAD, origin-form; ?next=1 asks for the next CA", () => {
  test.each([
    ["GET", "/ca.pem", "pem", false],
    ["GET", "/ca.der", "der", false],
    ["GET", "/ca", "page", false],
    ["HEAD", "/ca", "page", false],
    ["GET", "/ca.msi", "msi", false],
    ["GET", "/ca-bundle.pem", "bundle", false],
    ["GET", "/ca.pem?next=0", "pem", false],
    ["GET", "/ca.pem?next=false", "pem", false],
    ["GET", "/ca.pem?x=1", "pem", false],
    ["GET", "/ca.pem?next=1", "pem", true],
    ["GET", "/ca.der?a=b&next=1", "der", true],
    ["GET", "/ca.msi?next", "msi", true],
    ["GET", "/ca.pem?nextx=1", "pem", false],
  ] as const)("%s %s → %s, next %p", (m, t, route, next) => expect(caRouteOf(m, t)).toEqual({ route, next }));

  test.each([
    ["POST", "/ca.pem"],
    ["GET", "/ca.key"],
    ["GET", "/ca/"],
    ["GET", "/CA.PEM"],
    ["GET", "/ca.pem/../api/config"],
    ["GET", "/api/config"],
    ["GET", "/api/health"],
    ["GET", "/"],
    ["GET", "http://gateway/ca.pem"],
    ["GET", "/ca.msi.exe"],
    ["GET", "/ca-bundle"],
  ])("%s %s → not a CA route", (m, t) => expect(caRouteOf(m, t)).toBeNull());
});

describe("makeCaAnswer", () => {
  test("/ca.pem: the PEM bytes, as a download, framed, connection closed", () => {
    const a = parse(makeCaAnswer(CA, "pem", { headOnly: false, host: null })!);
    expect(a.status).toBe("HTTP/1.1 200 OK");
    expect(a.headers["content-type"]).toBe("application/x-pem-file");
    expect(a.headers["content-disposition"]).toBe('attachment; filename="agate-ca.pem"');
    expect(a.headers["content-length"]).toBe(String(PEM.length));
    expect(a.headers.connection).toBe("close");
    expect(text(a.body)).toBe(PEM);
  });

  test("/ca.der: the DER bytes exactly", () => {
    const a = parse(makeCaAnswer(CA, "der", { headOnly: false, host: null })!);
    expect(a.headers["content-type"]).toBe("application/x-x509-ca-cert");
    expect([...a.body]).toEqual([...CA.der]);
  });

  test("HEAD: the same head with the body's length, and no body", () => {
    const get = parse(makeCaAnswer(CA, "page", { headOnly: false, host: "gw:8080" })!);
    const head = parse(makeCaAnswer(CA, "page", { headOnly: true, host: "gw:8080" })!);
    expect(head.headers["content-length"]).toBe(String(get.body.byteLength));
    expect(head.body.byteLength).toBe(0);
  });

  test("no CA loaded: a refusal (layer 1 refuses 404 with the reason)", () => {
    expect(makeCaAnswerOrRefusal(null, ask("pem"), { headOnly: false, host: null })).toEqual({ refuse: "PX_NOT_FOUND", reason: "no CA loaded yet: ask the gateway's admin" });
  });

  test("/ca.msi: the package bytes as an MSI download", () => {
    const a = parse(makeCaAnswer({ ...CA, msi: MSI }, "msi", { headOnly: false, host: null }));
    expect(a.headers["content-type"]).toBe("application/x-msi");
    expect(a.headers["content-disposition"]).toBe('attachment; filename="agate-ca.msi"');
    expect([...a.body]).toEqual([...MSI.bytes]);
  });

  test("/ca.msi without a package: 503's code with the reason that names the package to install", () => {
    const why = "the Windows installer package cannot be built here: /usr/bin/wixl is missing (install Debian's msitools package: apt-get install msitools)";
    expect(makeCaAnswerOrRefusal({ ...CA, msi: { unavailable: why } }, ask("msi"), { headOnly: false, host: null })).toEqual({ refuse: "PX_CA_MSI_UNAVAILABLE", reason: why });
    expect(makeCaAnswerOrRefusal(CA, ask("msi"), { headOnly: false, host: null })).toMatchObject({ refuse: "PX_CA_MSI_UNAVAILABLE" });
  });

  test("?next=1 gives the next CA's PEM, DER and package, under -next file names", () => {
    const ca: AgentCa = { ...CA, msi: MSI, next: { ...NEXT, msi: { bytes: Uint8Array.of(7, 7) } } };
    const pem = parse(makeCaAnswer(ca, ask("pem", true), { headOnly: false, host: null }));
    expect(text(pem.body)).toBe(NEXT_PEM);
    expect(pem.headers["content-disposition"]).toBe('attachment; filename="agate-ca-next.pem"');
    expect([...parse(makeCaAnswer(ca, ask("der", true), { headOnly: false, host: null })).body]).toEqual([...NEXT.der]);
    expect([...parse(makeCaAnswer(ca, ask("msi", true), { headOnly: false, host: null })).body]).toEqual([7, 7]);
  });

  test("?next=1 with no next CA: 404's code with a reason that says how one is published", () => {
    for (const r of ["pem", "der", "msi"] as const) {
      const got = makeCaAnswerOrRefusal({ ...CA, next: null }, ask(r, true), { headOnly: false, host: null });
      expect(got).toMatchObject({ refuse: "PX_NOT_FOUND" });
      expect((got as { reason: string }).reason).toContain("POST /api/ca/next");
    }
  });

  test("/ca-bundle.pem: current then next, each on its own line; just the current CA when no next is set", () => {
    const both = parse(makeCaAnswer({ ...CA, next: NEXT }, "bundle", { headOnly: false, host: null }));
    expect(both.headers["content-disposition"]).toBe('attachment; filename="agate-ca-bundle.pem"');
    expect(text(both.body)).toBe(PEM + NEXT_PEM);
    const noNewline = PEM.trimEnd();
    expect(text(parse(makeCaAnswer({ ...CA, pem: ascii(noNewline), next: NEXT }, "bundle", { headOnly: false, host: null })).body)).toBe(noNewline + "\n" + NEXT_PEM);
    expect(text(parse(makeCaAnswer(CA, "bundle", { headOnly: false, host: null })).body)).toBe(PEM);
  });

  test("the page loads and runs nothing (CSP), and is not sniffed", () => {
    const a = parse(makeCaAnswer(CA, "page", { headOnly: false, host: null })!);
    expect(a.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(a.headers["content-security-policy"]).toBe("default-src 'none'; style-src 'unsafe-inline'");
    expect(a.headers["x-content-type-options"]).toBe("nosniff");
  });
});

describe("the install page", () => {
  test("names the install command of each system, with download links and the fingerprint", () => {
    const p = makeCaPage(CA, "10.0.0.5:8080");
    for (const cmd of [
      "certutil -addstore Root agate-ca.der",
      "Import-Certificate -FilePath agate-ca.der -CertStoreLocation Cert:\\LocalMachine\\Root",
      "sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain agate-ca.pem",
      "sudo update-ca-certificates",
      "sudo update-ca-trust",
      "curl -o agate-ca.der http://10.0.0.5:8080/ca.der",
    ])
      expect(p).toContain(cmd);
    expect(p).toContain('<a href="ca.pem">');
    expect(p).toContain('<a href="ca.der">');
    expect(p).toContain("AB:CD:EF");
    expect(p).toContain("agate appliance CA");
    expect(p).toContain("2036-01-02");
  });

  test("with a package: links ca.msi and gives the msiexec command; without: says why and points to PowerShell", () => {
    const withMsi = makeCaPage({ ...CA, msi: MSI }, "gw:8080");
    expect(withMsi).toContain('<a href="ca.msi">ca.msi</a>');
    expect(withMsi).toContain("msiexec /i agate-ca.msi /qn");
    const without = makeCaPage({ ...CA, msi: { unavailable: "wixl is missing (install Debian's msitools package)" } }, "gw:8080");
    expect(without).not.toContain('href="ca.msi"');
    expect(without).toContain("wixl is missing (install Debian&#39;s msitools package)");
    expect(without).toContain("-CertStoreLocation Cert:\\LocalMachine\\Root");
  });

  test("a published next CA: its name, fingerprint and the rollover links", () => {
    const p = makeCaPage({ ...CA, next: NEXT }, null);
    for (const s of ["agate next CA", "12:34:56", '<a href="ca.pem?next=1">', '<a href="ca.der?next=1">', '<a href="ca-bundle.pem">', "2037-06-01"]) expect(p).toContain(s);
    expect(makeCaPage(CA, null)).not.toContain("ca-bundle.pem");
  });

  test("a CA name with markup is escaped", () => {
    const p = makeCaPage({ ...CA, commonName: `<script>alert(1)</script> & "Co"` }, null);
    expect(p).not.toContain("<script>");
    expect(p).toContain("&#60;script&#62;alert(1)&#60;/script&#62; &#38; &#34;Co&#34;");
  });

  test.each([`x"><script>alert(1)</script>`, "gw 8080", "a/b", ""])("a Host header like %j is not echoed: a placeholder instead", (host) => {
    const p = makeCaPage(CA, host);
    expect(p).toContain("http://GATEWAY:PORT/ca.der");
    expect(p).not.toContain("<script>");
  });

  test("an IPv6 literal Host is echoed", () => {
    expect(makeCaPage(CA, "[fd00::5]:8080")).toContain("http://[fd00::5]:8080/ca.pem");
  });
});

describe("layer 1 answers the CA on both agent ports", () => {
  const config = parseConfig({});
  const ctx = (agentCa: AgentCa | null): SessionCtx => ({ config, policy: compilePolicy(config), draining: false, index: 0, intercepting: true, agentCa });
  const run = (c: SessionCtx, port: PortKind, req: string): ConnCommand[] => {
    const s = makeSession(c, { id: "c1", ip: "10.1.2.3", remotePort: 5555, port, admitted: true }, NOW);
    expect(onOpen(s, NOW)).toEqual([]);
    return onData(s, ascii(req), NOW);
  };

  test.each(["proxy", "cache"] as const)("%s port: GET /ca.pem is answered 200 with the PEM, no token, then a lingering close", (port) => {
    const cmds = run(ctx(CA), port, "GET /ca.pem HTTP/1.1\r\nHost: gw\r\n\r\n");
    expect(cmds.map((c) => c.do)).toEqual(["writeClient", "close"]);
    const w = cmds[0] as Extract<ConnCommand, { do: "writeClient" }>;
    expect(text(parse(w.bytes).body)).toBe(PEM);
    expect(cmds[1]).toEqual({ do: "close", reason: "ca", how: "linger" });
  });

  test("no CA loaded: 404 with a reason, not 405", () => {
    const r = run(ctx(null), "proxy", "GET /ca HTTP/1.1\r\n\r\n").find((c) => c.do === "refuse");
    expect(r).toMatchObject({ code: "PX_NOT_FOUND", status: 404 });
    expect(text((r as Extract<ConnCommand, { do: "refuse" }>).bytes!)).toContain("no CA loaded yet");
  });

  test("GET /ca.msi with no package: 503 with the reason, on the proxy port too", () => {
    const r = run(ctx({ ...CA, msi: { unavailable: "wixl is missing: install msitools" } }), "proxy", "GET /ca.msi HTTP/1.1\r\n\r\n").find((c) => c.do === "refuse");
    expect(r).toMatchObject({ code: "PX_CA_MSI_UNAVAILABLE", status: 503 });
    expect(text((r as Extract<ConnCommand, { do: "refuse" }>).bytes!)).toContain("wixl is missing: install msitools");
  });

  test("GET /ca.pem?next=1 with no next CA: 404 with the reason", () => {
    const r = run(ctx(CA), "cache", "GET /ca.pem?next=1 HTTP/1.1\r\n\r\n").find((c) => c.do === "refuse");
    expect(r).toMatchObject({ code: "PX_NOT_FOUND", status: 404 });
    expect(text((r as Extract<ConnCommand, { do: "refuse" }>).bytes!)).toContain("no next CA is published");
  });

  test.each(["/api/config", "/api/health", "/", "/ca.key", "/index.html", "/api/ca/next"])("GET %s stays refused 405 on the cache port", (path) => {
    const r = run(ctx(CA), "cache", `GET ${path} HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n`).find((c) => c.do === "refuse");
    expect(r).toMatchObject({ code: "PX_METHOD_NOT_ALLOWED", status: 405 });
  });
});
