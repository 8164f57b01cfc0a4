/**
 * workers/probe.ts against real peers on loopback: a TLS origin named as a pod host via [hosts], directly and
 * through Debian's squid (Basic, wrong Basic credentials, NTLM with ntlm_fake_auth), and the hops that fail
 * (DNS, TCP, TLS, the upstream proxy's own name). Also podHosts for pods without `cask`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/core/config";
import { podHosts } from "../../src/core/platform-hosts";
import { probeHost } from "../../src/workers/probe";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { freePort } from "../peers/helpers";
import { squidMissing, squidNtlmMissing, startSquid, type Squid } from "../peers/squid";

const POD = "qg1.apps.qualys.eu";
const HOST = `qagpublic.${POD}`;
const pki = makeTestPki([HOST]);
const hosts = { [HOST]: "127.0.0.1" };
let origin: Origin;
beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

const cfg = (extra: Record<string, unknown> = {}) =>
  parseConfig({ hosts, tls: { upstream_ca: pki.caPath }, platform: { pod: POD }, destinations: { ports: [origin.port] }, ...extra });

describe("podHosts", () => {
  test("US4 and KSA1 have no cask; other pods and unknown pods have all five", () => {
    const names = (pod: string) => podHosts(parseConfig({ platform: { pod } })).map((h) => h.host.split(".")[0]);
    expect(names("qg4.apps.qualys.com")).toEqual(["qagpublic", "camspublic", "camspm", "camsrepo"]);
    expect(names("qg1.apps.qualysksa.com")).toEqual(["qagpublic", "camspublic", "camspm", "camsrepo"]);
    expect(names("qg1.apps.qualys.com")).toEqual(["qagpublic", "camspublic", "camspm", "camsrepo", "cask"]);
    expect(names("pod.example.test")).toEqual(["qagpublic", "camspublic", "camspm", "camsrepo", "cask"]);
  });
  test("the port is 443 when allowed, else the first destination port", () => {
    expect(podHosts(parseConfig({})).every((h) => h.port === 443)).toBe(true);
    expect(podHosts(parseConfig({ destinations: { ports: [8443, 9443] } }))[0]!.port).toBe(8443);
  });
});

describe("direct", () => {
  test("a pod host mapped in [hosts] to a loopback TLS origin: ok, with the TLS version", async () => {
    const r = await probeHost(cfg(), HOST, origin.port);
    expect(r).toMatchObject({ host: HOST, port: origin.port, ok: true, via: "direct" });
    if (r.ok) expect(r.tlsVersion).toMatch(/^TLSv1\.[23]$/);
  });
  test("without tls.upstream_ca the origin's certificate is not trusted: hop tls", async () => {
    const r = await probeHost(parseConfig({ hosts, platform: { pod: POD } }), HOST, origin.port);
    expect(r).toMatchObject({ ok: false, hop: "tls", via: "direct" });
    if (!r.ok) expect(r.reason).toContain("tls.upstream_ca");
  });
  test("a closed port: hop tcp", async () => {
    const port = freePort();
    const r = await probeHost(cfg(), HOST, port);
    expect(r).toMatchObject({ ok: false, hop: "tcp" });
    if (!r.ok) expect(r.reason).toContain("refused");
  });
  test("a name that does not resolve: hop dns, and the reason names [hosts]", async () => {
    const r = await probeHost(cfg(), "camspm.no-such-pod.invalid", 443);
    expect(r).toMatchObject({ ok: false, hop: "dns" });
    if (!r.ok) expect(r.reason).toContain("[hosts]");
  });
  test("a silent peer: the timeout bounds the probe and names the hop under way", async () => {
    // A listener that accepts and never answers the ClientHello.
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const r = await probeHost(cfg(), HOST, silent.port, { timeoutMs: 300 });
      expect(r).toMatchObject({ ok: false, hop: "tls" });
      if (!r.ok) expect(r.reason).toContain("no answer within 300 ms");
    } finally {
      silent.stop(true);
    }
  });
});

describe("through an upstream proxy", () => {
  test("the upstream proxy's own name is resolved through [hosts]; an unmapped bad name is hop dns", async () => {
    const bad = await probeHost(cfg({ upstream_proxy: { host: "squid.no-such.invalid", port: 3128 } }), HOST, origin.port);
    expect(bad).toMatchObject({ ok: false, hop: "dns", via: "upstream" });
    if (!bad.ok) expect(bad.reason).toContain("squid.no-such.invalid");
  });
  test("nothing listens on the upstream proxy's port: hop tcp", async () => {
    const r = await probeHost(cfg({ upstream_proxy: { host: "127.0.0.1", port: freePort() } }), HOST, origin.port);
    expect(r).toMatchObject({ ok: false, hop: "tcp", via: "upstream" });
  });
});

const noSquid = squidMissing();
if (noSquid) console.warn(`[skip] squid probe tests: ${noSquid}`);
describe.skipIf(!!noSquid)("through squid with Basic", () => {
  let squid: Squid;
  beforeAll(async () => {
    squid = await startSquid(hosts, "alice", "Right-Pass-1");
  });
  afterAll(async () => {
    await squid?.stop();
  });
  const up = (username: string, password: string) => ({
    upstream_proxy: { host: "squid.corp.test", port: squid.port, username, password },
    hosts: { ...hosts, "squid.corp.test": "127.0.0.1" },
  });
  test("right credentials, the proxy's address from [hosts]: ok via upstream", async () => {
    const r = await probeHost(cfg(up("alice", "Right-Pass-1")), HOST, origin.port);
    expect(r).toMatchObject({ ok: true, via: "upstream" });
  });
  test("wrong credentials: hop upstream-proxy, 407, a reason naming the user and never the password", async () => {
    const r = await probeHost(cfg(up("CORP\\alice", "Wrong-Pass-2")), HOST, origin.port);
    expect(r).toMatchObject({ ok: false, hop: "upstream-proxy", status: 407, via: "upstream" });
    if (!r.ok) {
      expect(r.reason).toBe(
        `upstream proxy squid.corp.test:${squid.port} refused the Basic credentials for CORP\\alice (407); check upstream_proxy.username and upstream_proxy.password`,
      );
      expect(JSON.stringify(r)).not.toContain("Wrong-Pass-2");
    }
  });
  test("a host squid cannot reach: hop upstream-proxy with squid's status", async () => {
    const r = await probeHost(cfg(up("alice", "Right-Pass-1")), HOST, freePort());
    expect(r).toMatchObject({ ok: false, hop: "upstream-proxy", via: "upstream" });
    if (!r.ok) expect([502, 503]).toContain(r.status!);
  });
});

const noNtlm = squidNtlmMissing();
if (noNtlm) console.warn(`[skip] NTLM squid probe tests: ${noNtlm}`);
describe.skipIf(!!noNtlm)("through squid with NTLM (ntlm_fake_auth)", () => {
  let squid: Squid;
  beforeAll(async () => {
    squid = await startSquid(hosts, "unused", "unused", { auth: "ntlm" });
  });
  afterAll(async () => {
    await squid?.stop();
  });
  test("the NTLM handshake on the CONNECT connection, then TLS: ok", async () => {
    const c = cfg({ upstream_proxy: { host: "127.0.0.1", port: squid.port, auth: "ntlm", username: "CORP\\alice", password: "Ntlm-Pass-3" } });
    const r = await probeHost(c, HOST, origin.port);
    expect(r).toMatchObject({ ok: true, via: "upstream" });
  });
  test("Basic against the NTLM-only squid: hop upstream-proxy, 407, says to set auth = ntlm", async () => {
    const c = cfg({ upstream_proxy: { host: "127.0.0.1", port: squid.port, username: "CORP\\alice", password: "Ntlm-Pass-3" } });
    const r = await probeHost(c, HOST, origin.port);
    expect(r).toMatchObject({ ok: false, hop: "upstream-proxy", status: 407 });
    if (!r.ok) expect(r.reason).toContain('upstream_proxy.auth = "ntlm"');
  });
});
