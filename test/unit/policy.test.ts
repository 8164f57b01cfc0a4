/**
 * Destination and client policy (src/core/policy.ts; DESIGN.md "Connection security").
 * Table-driven: every row states the full expected verdict, so a wrong action, rule, mapping or cacheability fails.
 */
import { describe, expect, test } from "bun:test";
import { PLATFORM_DOMAINS, parseConfig } from "../../src/core/config";
import { ConfigError } from "../../src/core/errors";
import {
  classifyAddress,
  compileCidr,
  compileNetworks,
  compilePolicy,
  compileUserAgent,
  decide,
  decideAddress,
  decideClient,
  isInNetworks,
  isPublicAddress,
  matchDomain,
  parseIPv4,
  parseIPv6Words,
  type AddressClass,
  type PolicyRule,
  type PolicyVerdict,
} from "../../src/core/policy";
import type { ClientInfo, Target } from "../../src/core/types";

// ---- fixtures ------------------------------------------------------------------------------------------------

const PATCH = { enabled: true, volume: "/mnt/patch", client_networks: ["10.0.0.0/8", "2001:db8:aa::/48"] };

const proxyOnly = compilePolicy(parseConfig({}));
const withAllowed = compilePolicy(parseConfig({ cache: { allowed_domains: ["microsoft.com", "windowsupdate.com"] } }));
const cacheMode = compilePolicy(parseConfig({ cache: { enabled: true, allowed_domains: ["microsoft.com"] } }));
const patchMode = compilePolicy(parseConfig({ cache: { enabled: true, allowed_domains: ["microsoft.com"] }, patch: PATCH }));
const mapped = compilePolicy(
  parseConfig({
    cache: { enabled: true },
    hosts: { "origin.qualys.com": "127.0.0.1", "intranet.example": "10.9.9.9", origin: "::1" },
  }),
);
const mappedPatch = compilePolicy(
  parseConfig({
    cache: { enabled: true },
    patch: PATCH,
    hosts: { "origin.qualys.com": "127.0.0.1", "intranet.example": "10.9.9.9" },
  }),
);
const twoPorts = compilePolicy(parseConfig({ destinations: { ports: [443, 8443] } }));

const PROXY: ClientInfo = { ip: "10.1.2.3", port: "proxy" };
const CACHE: ClientInfo = { ip: "10.1.2.3", port: "cache" };
const STRANGER: ClientInfo = { ip: "192.168.7.7", port: "cache" };

const IPV4 = /^\d+\.\d+\.\d+\.\d+$/;
const T = (host: string, port = 443): Target => ({ host, port, isIp: IPV4.test(host) || host.includes(":") });

const TUNNEL_PLATFORM: PolicyVerdict = { action: "tunnel", rule: "platform-domain" };
const INTERCEPT_PLATFORM: PolicyVerdict = { action: "intercept", rule: "platform-domain", cacheable: true };
const TUNNEL_ALLOWED: PolicyVerdict = { action: "tunnel", rule: "allowed-domain" };
const PATCH_ANY: PolicyVerdict = { action: "intercept", rule: "patch-any", cacheable: true };

// ---- domains ---------------------------------------------------------------------------------------------------

const PODS = ["qg1.apps.qualys.com", "qg2.apps.qualys.eu", "qg1.apps.qualys.co.uk", "qg3.apps.qualys.com", "qg1.apps.qualys.in", "qg1.apps.qualys.ca", "qg1.apps.qualys.ae", "qg1.apps.qualys.com.au", "qg1.apps.qualysksa.com"];
const POD_HOSTS = PODS.flatMap((pod) => ["qagpublic", "camspublic", "camspm", "camsrepo", "cask"].map((p) => `${p}.${pod}`));

describe("platform domains", () => {
  const names = PLATFORM_DOMAINS.flatMap((d) => [d, `www.${d}`, `a.b.c.${d}`]);
  test.each([...names, ...POD_HOSTS])("%s tunnels on the proxy port and is intercepted on the cache port", (host) => {
    expect(decide(proxyOnly, T(host), PROXY)).toEqual(TUNNEL_PLATFORM);
    expect(decide(cacheMode, T(host), CACHE)).toEqual(INTERCEPT_PLATFORM);
    expect(matchDomain(proxyOnly, host)).toBe("platform");
  });

  test("the explicit pod hosts from DESIGN.md match", () => {
    for (const h of ["qagpublic.qg1.apps.qualys.com", "camsrepo.qg2.apps.qualys.eu", "cask.qg1.apps.qualys.co.uk"])
      expect(decide(proxyOnly, T(h), PROXY).rule).toBe("platform-domain");
  });

  test.each([
    "evilqualys.com",
    "qualys.com.evil.net",
    "xqualys.eu",
    "qualys.co.uk.attacker.com",
    "qualysksa.com.evil",
    "ksa.com",
    "qualys.comm",
    "qualys.co",
    "qualys.uk",
    "co.uk",
    "com.au",
    "com",
    "qualys",
    "ualys.com",
    "qualys-com.net",
    "qualys.com-evil.net",
    "www.qualys.com.au.evil.org",
    "qualys.com.au2",
    "example.org",
  ])("%s is not a platform domain (label boundary)", (host) => {
    expect(matchDomain(proxyOnly, host)).toBeNull();
    const v = decide(proxyOnly, T(host), PROXY);
    expect(v.action).toBe("deny");
    expect(v.rule).toBe("deny-domain");
    expect(decide(cacheMode, T(host), CACHE).rule).toBe("deny-domain");
  });

  test.each([
    ["QUALYS.COM", "platform"],
    ["Qagpublic.QG1.Apps.Qualys.Com", "platform"],
    ["qualys.com.", "platform"],
    ["qagpublic.qg1.apps.qualys.com.", "platform"],
    ["CAMSREPO.qg2.apps.QUALYS.EU.", "platform"],
    ["xn--bcher-kva.qualys.com", "platform"],
    ["EvilQualys.com", null],
    ["qualys.com..", null],
  ] as const)("matchDomain(%p) = %p (case-insensitive, trailing dot tolerated)", (host, kind) => {
    expect(matchDomain(proxyOnly, host)).toBe(kind);
  });

  test.each(["QUALYS.COM", "Cask.Qg1.Apps.Qualys.Co.Uk.", "qualys.eu."])("decide normalises %s", (host) => {
    expect(decide(proxyOnly, T(host), PROXY)).toEqual(TUNNEL_PLATFORM);
  });

  test("the domain list comes from the config: narrowing platform.domains drops the others", () => {
    const p = compilePolicy(parseConfig({ platform: { domains: ["qualys.eu"] } }));
    expect(decide(p, T("a.qualys.eu"), PROXY)).toEqual(TUNNEL_PLATFORM);
    expect(decide(p, T("qagpublic.qg1.apps.qualys.com"), PROXY).rule).toBe("deny-domain");
  });
});

describe("host syntax", () => {
  test.each([
    ["bücher.qualys.com", /punycode/],
    ["qualys.com\u00a0", /punycode/],
    ["ｑualys.com", /punycode/],
  ])("non-ASCII %p is denied with a hint to use punycode", (host, re) => {
    for (const [p, c] of [[proxyOnly, PROXY], [patchMode, CACHE]] as const) {
      const v = decide(p, T(host), c);
      expect(v).toMatchObject({ action: "deny", rule: "deny-bad-host" });
      expect(v.reason).toMatch(re);
    }
  });

  test.each(["", ".", "qualys.com..", ".qualys.com", "a..qualys.com", "qual ys.com", "qualys.com/x", "qualys.com@evil.net", `${"a".repeat(64)}.qualys.com`, `${"a.".repeat(130)}qualys.com`])(
    "malformed host %p is denied as deny-bad-host, also in patch mode",
    (host) => {
      expect(decide(proxyOnly, { host, port: 443, isIp: false }, PROXY).rule).toBe("deny-bad-host");
      expect(decide(patchMode, { host, port: 443, isIp: false }, CACHE).rule).toBe("deny-bad-host");
    },
  );

  test.each(["a-b.qualys.com", "a_b.qualys.com", `${"a".repeat(63)}.qualys.com`, "0.qualys.com", "123.qualys.com"])("valid host %p passes", (host) => {
    expect(decide(proxyOnly, T(host), PROXY)).toEqual(TUNNEL_PLATFORM);
  });
});

describe("allowed domains", () => {
  test.each([
    ["microsoft.com", TUNNEL_ALLOWED],
    ["www.microsoft.com", TUNNEL_ALLOWED],
    ["WWW.Microsoft.COM.", TUNNEL_ALLOWED],
    ["download.windowsupdate.com", TUNNEL_ALLOWED],
    ["qagpublic.qg1.apps.qualys.com", TUNNEL_PLATFORM],
  ])("proxy port: %s", (host, want) => {
    expect(decide(withAllowed, T(host), PROXY)).toEqual(want);
  });

  test.each(["notmicrosoft.com", "microsoft.com.evil.net", "microsoft.co", "icrosoft.com", "windowsupdate.co", "microsoftcom"])("%s is not allowed", (host) => {
    expect(decide(withAllowed, T(host), PROXY)).toMatchObject({ action: "deny", rule: "deny-domain" });
    expect(matchDomain(withAllowed, host)).toBeNull();
  });

  test("allowed domains are only allowed when configured", () => {
    expect(decide(proxyOnly, T("www.microsoft.com"), PROXY).rule).toBe("deny-domain");
    expect(matchDomain(withAllowed, "www.microsoft.com")).toBe("allowed");
  });

  test("cache port: allowed domains are tunnelled untouched, never intercepted or cached", () => {
    const v = decide(cacheMode, T("www.microsoft.com"), CACHE);
    expect(v).toEqual(TUNNEL_ALLOWED);
    expect(v.cacheable).toBeUndefined();
  });

  test("the most specific listed domain wins; the same domain in both lists is platform", () => {
    const p = compilePolicy(parseConfig({ cache: { enabled: true, allowed_domains: ["cdn.qualys.com", "qualys.eu"] } }));
    expect(decide(p, T("x.cdn.qualys.com"), CACHE)).toEqual(TUNNEL_ALLOWED);
    expect(decide(p, T("x.qualys.com"), CACHE)).toEqual(INTERCEPT_PLATFORM);
    expect(decide(p, T("x.qualys.eu"), CACHE)).toEqual(INTERCEPT_PLATFORM);
    expect(matchDomain(p, "qualys.eu")).toBe("platform");
  });
});

describe("destination ports", () => {
  test("the exact reason for a wrong port", () => {
    expect(decide(proxyOnly, T("qualys.com", 8443), PROXY)).toEqual({
      action: "deny",
      rule: "deny-port",
      reason: "CONNECT to qualys.com:8443 denied: port 8443 is not an allowed destination port (allowed: 443)",
    });
  });

  test.each([
    [proxyOnly, "qualys.com", 443, "platform-domain"],
    [proxyOnly, "qualys.com", 80, "deny-port"],
    [proxyOnly, "qualys.com", 22, "deny-port"],
    [proxyOnly, "qualys.com", 8443, "deny-port"],
    [twoPorts, "qualys.com", 8443, "platform-domain"],
    [twoPorts, "qualys.com", 443, "platform-domain"],
    [twoPorts, "qualys.com", 444, "deny-port"],
    [withAllowed, "microsoft.com", 80, "deny-port"],
    [proxyOnly, "example.org", 8443, "deny-domain"], // a wrong domain is the first thing to fix
  ] as const)("%#: %s:%d → %s", (p, host, port, rule) => {
    expect(decide(p, T(host, port), PROXY).rule).toBe(rule);
  });

  test.each([
    [patchMode, "dl.google.com", 80],
    [patchMode, "qualys.com", 8443],
    [cacheMode, "qualys.com", 80],
  ] as const)("%#: cache port %s:%d is refused on the port", (p, host, port) => {
    expect(decide(p, T(host, port), CACHE).rule).toBe("deny-port");
  });

  test("the reason lists every allowed port", () => {
    expect(decide(twoPorts, T("qualys.com", 1), PROXY).reason).toContain("(allowed: 443, 8443)");
  });
});

describe("IP literals", () => {
  const literals = ["10.0.0.1", "8.8.8.8", "127.0.0.1", "0.0.0.0", "::1", "2001:4860::8888", "::ffff:127.0.0.1", "fe80::1"];
  test.each(literals)("%s is refused on every port and in every mode", (host) => {
    for (const [p, c] of [[proxyOnly, PROXY], [cacheMode, CACHE], [patchMode, CACHE], [patchMode, PROXY], [mapped, PROXY]] as const) {
      const v = decide(p, T(host), c);
      expect(v).toMatchObject({ action: "deny", rule: "deny-ip-literal" });
      expect(v.reason).toContain("connect by host name");
    }
  });

  test("an IPv6 literal is shown in brackets", () => {
    expect(decide(proxyOnly, T("::1"), PROXY).reason).toStartWith("CONNECT to [::1]:443 denied:");
  });

  test.each(["127.1", "2130706433", "0x7f000001", "0X7F.0.0.1", "10.0.0.1", "qualys.com.1", "0177.0.0.1"])(
    "%s is a numeric host a resolver reads as an address: refused even when isIp is false",
    (host) => {
      for (const [p, c] of [[proxyOnly, PROXY], [patchMode, CACHE]] as const)
        expect(decide(p, { host, port: 443, isIp: false }, c).rule).toBe("deny-ip-literal");
    },
  );

  test.each(["0x.qualys.com", "0xz.qualys.com", "1x.qualys.com"])("%s is a name, not a number", (host) => {
    expect(decide(proxyOnly, T(host), PROXY).rule).toBe("platform-domain");
  });
});

describe("mapped names ([hosts])", () => {
  test.each([
    [mapped, "origin.qualys.com", PROXY, { ...TUNNEL_PLATFORM, mappedIp: "127.0.0.1" }],
    [mapped, "ORIGIN.Qualys.com.", PROXY, { ...TUNNEL_PLATFORM, mappedIp: "127.0.0.1" }],
    [mapped, "origin.qualys.com", CACHE, { ...INTERCEPT_PLATFORM, mappedIp: "127.0.0.1" }],
    [mapped, "other.qualys.com", PROXY, TUNNEL_PLATFORM],
    [mappedPatch, "intranet.example", CACHE, { ...PATCH_ANY, mappedIp: "10.9.9.9" }],
    [mappedPatch, "origin.qualys.com", CACHE, { ...INTERCEPT_PLATFORM, mappedIp: "127.0.0.1" }],
  ] as const)("%#: %s", (p, host, client, want) => {
    expect(decide(p, T(host), client)).toEqual(want);
  });

  test.each([
    [mapped, "intranet.example", PROXY],
    [mapped, "intranet.example", CACHE],
    [mapped, "origin", PROXY],
    [mappedPatch, "intranet.example", PROXY],
  ] as const)("%#: a mapped name %s still has to pass the domain check", (p, host, client) => {
    expect(decide(p, T(host), client).rule).toBe("deny-domain");
  });

  test("a mapped name still has to use an allowed port", () => {
    expect(decide(mapped, T("origin.qualys.com", 8443), PROXY).rule).toBe("deny-port");
  });

  test.each([
    [mapped, "origin.qualys.com", "127.0.0.1"],
    [mapped, "Origin.Qualys.Com.", "127.0.0.1"],
    [mapped, "origin.qualys.com", "10.0.0.1"],
    [mappedPatch, "intranet.example", "10.9.9.9"],
  ] as const)("%#: decideAddress admits %s → %s because the admin mapped it", (p, host, ip) => {
    expect(decideAddress(p, T(host), ip)).toBeNull();
  });

  test("an unmapped sibling of a mapped name resolving to loopback is refused", () => {
    expect(decideAddress(mapped, T("other.qualys.com"), "127.0.0.1")).toMatchObject({ action: "deny", rule: "deny-private-address" });
  });

  test("object-prototype names are not 'mapped' (constructor, __proto__)", () => {
    for (const host of ["constructor", "__proto__", "tostring"]) {
      expect(decide(mappedPatch, T(host), CACHE)).toEqual(PATCH_ANY);
      expect(decideAddress(mappedPatch, T(host), "127.0.0.1")?.rule).toBe("deny-private-address");
    }
  });
});

// ---- addresses ---------------------------------------------------------------------------------------------------

const ADDRESSES: [string, AddressClass | null][] = [
  ["127.0.0.1", "loopback"],
  ["127.255.255.254", "loopback"],
  ["10.1.2.3", "private"],
  ["172.16.0.1", "private"],
  ["172.31.255.255", "private"],
  ["172.15.255.255", null],
  ["172.32.0.1", null],
  ["192.168.0.1", "private"],
  ["192.169.0.1", null],
  ["169.254.1.1", "link-local"],
  ["169.254.169.254", "link-local"],
  ["169.253.0.1", null],
  ["100.64.0.1", "cgnat"],
  ["100.127.255.255", "cgnat"],
  ["100.63.255.255", null],
  ["100.128.0.1", null],
  ["0.0.0.0", "unspecified"],
  ["0.1.2.3", "reserved"],
  ["224.0.0.1", "multicast"],
  ["239.255.255.255", "multicast"],
  ["240.0.0.1", "reserved"],
  ["255.255.255.255", "broadcast"],
  ["192.0.2.1", "documentation"],
  ["198.51.100.7", "documentation"],
  ["203.0.113.9", "documentation"],
  ["198.18.0.1", "benchmarking"],
  ["198.20.0.1", null],
  ["192.0.0.8", "reserved"],
  ["8.8.8.8", null],
  ["1.1.1.1", null],
  ["11.0.0.1", null],
  ["126.255.255.255", null],
  ["128.0.0.1", null],
  ["223.255.255.255", null],
  ["::1", "loopback"],
  ["::", "unspecified"],
  ["0:0:0:0:0:0:0:1", "loopback"],
  ["fe80::1", "link-local"],
  ["febf:ffff::1", "link-local"],
  ["fe80::1%eth0", "link-local"],
  ["fec0::1", "site-local"],
  ["fd12::1", "unique-local"],
  ["fc00::1", "unique-local"],
  ["ff02::1", "multicast"],
  ["100::1", "reserved"],
  ["::2", "reserved"],
  ["::ffff:10.0.0.1", "private"],
  ["::ffff:127.0.0.1", "loopback"],
  ["::FFFF:7f00:1", "loopback"],
  ["0:0:0:0:0:ffff:a9fe:a9fe", "link-local"],
  ["::ffff:8.8.8.8", null],
  ["64:ff9b::a00:1", "private"],
  ["64:ff9b::808:808", null],
  ["2002:7f00:1::", "loopback"],
  ["2002:808:808::1", null],
  ["2001::1", "reserved"],
  ["2001:db8::1", "documentation"],
  ["3fff::1", "documentation"],
  ["2001:4860::8888", null],
  ["2001:4860:4860::8888", null],
  ["2606:4700::1111", null],
  ["2a00:1450:4001:80b::200e", null],
  ["[2001:4860::8888]", null],
  ["[::1]", "loopback"],
  ["not-an-ip", "invalid"],
  ["1.2.3", "invalid"],
  ["01.2.3.4", "invalid"],
  ["1.2.3.256", "invalid"],
  ["1.2.3.4.5", "invalid"],
  ["", "invalid"],
  ["1::2::3", "invalid"],
  ["12345::1", "invalid"],
  ["1:2:3:4:5:6:7:8:9", "invalid"],
  ["1:2:3:4:5:6:7", "invalid"],
  [":::1", "invalid"],
  ["::ffff:1.2.3.999", "invalid"],
];

describe("addresses after DNS", () => {
  test.each(ADDRESSES)("classifyAddress(%p) = %p", (ip, cls) => {
    expect(classifyAddress(ip)).toBe(cls);
    expect(isPublicAddress(ip)).toBe(cls === null);
  });

  test.each(ADDRESSES)("decideAddress for a name resolving to %p (%p)", (ip, cls) => {
    const v = decideAddress(patchMode, T("dl.example.com"), ip);
    if (cls === null) expect(v).toBeNull();
    else {
      expect(v).toMatchObject({ action: "deny", rule: "deny-private-address" });
      expect(v!.reason).toContain("[hosts]");
      expect(v!.reason).toContain(cls === "invalid" ? ", not an IP address;" : ` ${cls} address;`);
    }
  });

  test("the reason names the host, the address and the way out", () => {
    expect(decideAddress(proxyOnly, T("intranet.qualys.com"), "10.1.2.3")?.reason).toBe(
      "CONNECT to intranet.qualys.com:443 denied: the name resolves to 10.1.2.3, a private address; map the name in [hosts] if this destination is intended",
    );
  });

  test.each([
    ["1.2.3.4", [0x0102, 0x0304]],
    ["255.255.255.255", [0xffff, 0xffff]],
  ])("parseIPv4(%s)", (s, [hi, lo]) => {
    expect(parseIPv4(s)).toBe(hi! * 65536 + lo!);
  });

  test.each([
    ["::", [0, 0, 0, 0, 0, 0, 0, 0]],
    ["1::", [1, 0, 0, 0, 0, 0, 0, 0]],
    ["1:2:3:4:5:6:7::", [1, 2, 3, 4, 5, 6, 7, 0]],
    ["::ffff:1.2.3.4", [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]],
    ["a:B:c::D", [10, 11, 12, 0, 0, 0, 0, 13]],
    ["1:2:3:4:5:6:1.2.3.4", [1, 2, 3, 4, 5, 6, 0x0102, 0x0304]],
  ] as const)("parseIPv6Words(%s)", (s, words) => {
    expect(parseIPv6Words(s)).toEqual([...words]);
  });
});

// ---- clients -------------------------------------------------------------------------------------------------------

const clientPolicy = (client_networks: string[], agent_user_agents: string[] = []) =>
  compilePolicy(parseConfig({ cache: { enabled: true }, patch: { ...PATCH, client_networks, agent_user_agents } }));

describe("decideClient: client networks in patch mode", () => {
  test.each([
    [["0.0.0.0/0"], "1.2.3.4", true],
    [["0.0.0.0/0"], "255.255.255.255", true],
    [["0.0.0.0/0"], "::ffff:1.2.3.4", true],
    [["0.0.0.0/0"], "2001:4860::1", false],
    [["10.0.0.0/8"], "10.0.0.0", true],
    [["10.0.0.0/8"], "10.255.255.255", true],
    [["10.0.0.0/8"], "::ffff:10.1.2.3", true],
    [["10.0.0.0/8"], "11.0.0.0", false],
    [["10.0.0.0/8"], "9.255.255.255", false],
    [["10.0.0.0/8"], "::ffff:11.1.2.3", false],
    [["10.1.2.3/8"], "10.200.0.1", true], // host bits masked off
    [["192.168.1.7/32"], "192.168.1.7", true],
    [["192.168.1.7/32"], "192.168.1.8", false],
    [["192.168.1.7"], "192.168.1.7", true],
    [["192.168.1.7"], "192.168.1.6", false],
    [["192.168.1.0/24"], "192.168.1.0", true],
    [["192.168.1.0/24"], "192.168.1.255", true],
    [["192.168.1.0/24"], "192.168.2.0", false],
    [["192.168.1.0/24"], "192.168.0.255", false],
    [["172.16.0.0/12"], "172.31.255.255", true],
    [["172.16.0.0/12"], "172.32.0.0", false],
    [["128.0.0.0/1"], "200.1.1.1", true], // sign bit: masks must stay unsigned
    [["128.0.0.0/1"], "127.255.255.255", false],
    [["2001:db8:aa::/48"], "2001:db8:aa::1", true],
    [["2001:db8:aa::/48"], "2001:db8:aa:ffff:ffff:ffff:ffff:ffff", true],
    [["2001:db8:aa::/48"], "2001:db8:ab::1", false],
    [["2001:db8:aa::/48"], "10.0.0.1", false],
    [["2001:db8::5/128"], "2001:db8::5", true],
    [["2001:db8::5/128"], "2001:db8::6", false],
    [["2001:db8::5"], "2001:db8:0:0:0:0:0:5", true],
    [["::/0"], "2001:4860::1", true],
    [["::/0"], "fe80::1", true],
    [["::/0"], "10.0.0.1", false], // IPv4 clients match IPv4 networks only
    [["::/0"], "::ffff:10.0.0.1", false],
    [["::ffff:10.0.0.0/104"], "10.2.3.4", true], // an IPv4 block written the IPv6 way
    [["::ffff:10.0.0.0/104"], "::ffff:10.2.3.4", true],
    [["::ffff:10.0.0.0/104"], "11.2.3.4", false],
    [["fe80::/10"], "fe80::1%eth0", true],
    [["10.0.0.0/8", "fd00::/8"], "fd12::1", true],
    [["10.0.0.0/8", "fd00::/8"], "10.9.9.9", true],
    [["10.0.0.0/8", "fd00::/8"], "fe80::1", false],
    [["0.0.0.0/0", "::/0"], "not-an-ip", false],
    [["0.0.0.0/0", "::/0"], "", false],
  ])("%p admits %p: %p", (nets, ip, admitted) => {
    expect(isInNetworks(ip, compileNetworks(nets))).toBe(admitted);
    const v = decideClient(clientPolicy(nets), { ip, port: "cache" });
    if (admitted) expect(v).toBeNull();
    else expect(v).toMatchObject({ action: "deny", rule: "deny-client-network" });
  });

  test("the reason names the client and the configured networks", () => {
    expect(decideClient(patchMode, STRANGER)?.reason).toBe(
      "client 192.168.7.7 denied on the cache port: patch mode admits only patch.client_networks (10.0.0.0/8, 2001:db8:aa::/48)",
    );
  });

  test("the proxy port always admits: its destination rules do not change in patch mode", () => {
    expect(decideClient(patchMode, { ip: "203.0.113.1", port: "proxy" })).toBeNull();
    expect(decideClient(clientPolicy(["10.0.0.0/8"], ["QualysAgent"]), { ip: "203.0.113.1", port: "proxy", userAgent: "curl/8" })).toBeNull();
  });

  test("outside patch mode every client is admitted on both ports", () => {
    expect(decideClient(cacheMode, STRANGER)).toBeNull();
    expect(decideClient(proxyOnly, { ip: "203.0.113.1", port: "proxy" })).toBeNull();
  });

  test.each([
    ["10.0.0.0/33", /0–32/],
    ["2001:db8::/129", /0–128/],
    ["10.0.0/8", /not a CIDR/],
    ["10.0.0.0/x", /not a CIDR/],
    ["10.0.0.0/8/8", /not a CIDR/],
  ])("compileCidr(%p) throws a ConfigError", (cidr, re) => {
    expect(() => compileCidr(cidr, "patch.client_networks[0]")).toThrow(ConfigError);
    expect(() => compileCidr(cidr)).toThrow(re);
  });

  test.each([
    ["10.1.2.3/8", { v: 4, base: 10 * 2 ** 24, mask: 0xff000000 }],
    ["0.0.0.0/0", { v: 4, base: 0, mask: 0 }],
    ["1.2.3.4", { v: 4, base: 0x01020304, mask: 0xffffffff }],
    ["::ffff:1.2.3.0/120", { v: 4, base: 0x01020300, mask: 0xffffff00 }],
    ["fd00::/8", { v: 6, base: 0xfdn << 120n, mask: 0xffn << 120n }],
  ] as const)("compileCidr(%p)", (cidr, want) => {
    expect(compileCidr(cidr)).toMatchObject(want);
  });
});

describe("decideClient: agent User-Agent patterns", () => {
  const ua = clientPolicy(["10.0.0.0/8"], ["QualysAgent", "qualys-cloud-agent/*linux*", "a.c*"]);
  test.each([
    ["Mozilla/5.0 QualysAgent/5.0", true],
    ["qualysagent", true],
    ["QUALYSAGENT/1", true],
    ["Qualys Agent", false],
    ["Qualys-Cloud-Agent/6.1 (Linux x86_64)", true],
    ["qualys-cloud-agent/linux", true],
    ["qualys-cloud-agent/6.1 (Windows)", false],
    ["x qualys-cloud-agent/6.1 linux", false], // globs are anchored at both ends
    ["a.cde", true],
    ["abcde", false], // '.' in a glob is a literal dot
    ["curl/8.5.0", false],
    ["", false],
    [undefined, false],
  ])("User-Agent %p admitted: %p", (userAgent, admitted) => {
    const v = decideClient(ua, { ip: "10.1.2.3", port: "cache", userAgent });
    if (admitted) expect(v).toBeNull();
    else expect(v).toMatchObject({ action: "deny", rule: "deny-user-agent" });
  });

  test("the network is checked before the User-Agent", () => {
    expect(decideClient(ua, { ip: "192.168.1.1", port: "cache", userAgent: "QualysAgent" })?.rule).toBe("deny-client-network");
  });

  test("without patterns any User-Agent (or none) is admitted from the client networks", () => {
    expect(decideClient(patchMode, { ip: "10.1.2.3", port: "cache" })).toBeNull();
    expect(decideClient(patchMode, { ip: "10.1.2.3", port: "cache", userAgent: "curl/8" })).toBeNull();
  });

  test("'*' alone admits any agent, even one without a User-Agent", () => {
    const star = clientPolicy(["10.0.0.0/8"], ["*"]);
    expect(decideClient(star, { ip: "10.1.2.3", port: "cache" })).toBeNull();
    expect(decideClient(star, { ip: "10.1.2.3", port: "cache", userAgent: "anything" })).toBeNull();
  });

  test("the reason names the User-Agent and the patterns", () => {
    expect(decideClient(ua, { ip: "10.1.2.3", port: "cache", userAgent: "curl/8" })?.reason).toBe(
      'client 10.1.2.3 denied on the cache port: User-Agent "curl/8" matches none of patch.agent_user_agents ("QualysAgent", "qualys-cloud-agent/*linux*", "a.c*")',
    );
    expect(decideClient(ua, { ip: "10.1.2.3", port: "cache" })?.reason).toContain("User-Agent (none)");
  });

  test.each(["", "   "])("an empty pattern %p is a ConfigError at compile time (it would admit everybody)", (p) => {
    expect(() => clientPolicy(["10.0.0.0/8"], [p])).toThrow(ConfigError);
  });

  test.each([
    ["ag*nt", "AGENT", true],
    ["ag*nt", "agnt", true],
    ["ag*nt", "agentx", false],
    ["*agent*", "my agent here", true],
    ["(agent)", "x (Agent) y", true],
    ["(agent)*", "(agent) 1", true],
    ["[a]*", "a", false],
  ])("compileUserAgent(%p) on %p: %p", (p, s, want) => {
    expect(compileUserAgent(p)(s.toLowerCase())).toBe(want);
  });
});

// ---- modes ---------------------------------------------------------------------------------------------------------

describe("actions by port and mode", () => {
  test.each([
    ["proxy only, proxy port, platform", proxyOnly, PROXY, "camspm.qg1.apps.qualys.com", TUNNEL_PLATFORM],
    ["cache mode, proxy port, platform", cacheMode, PROXY, "camspm.qg1.apps.qualys.com", TUNNEL_PLATFORM],
    ["cache mode, proxy port, allowed", cacheMode, PROXY, "www.microsoft.com", TUNNEL_ALLOWED],
    ["cache mode, cache port, platform", cacheMode, CACHE, "camspm.qg1.apps.qualys.com", INTERCEPT_PLATFORM],
    ["cache mode, cache port, allowed", cacheMode, CACHE, "www.microsoft.com", TUNNEL_ALLOWED],
    ["cache mode, cache port, other client ip (no client rules)", cacheMode, STRANGER, "qualys.com", INTERCEPT_PLATFORM],
    ["patch mode, cache port, platform", patchMode, CACHE, "qagpublic.qg1.apps.qualys.com", INTERCEPT_PLATFORM],
    ["patch mode, cache port, allowed", patchMode, CACHE, "www.microsoft.com", TUNNEL_ALLOWED],
    ["patch mode, cache port, any vendor", patchMode, CACHE, "dl.google.com", PATCH_ANY],
    ["patch mode, cache port, any vendor (IPv6 agent)", patchMode, { ip: "2001:db8:aa::7", port: "cache" }, "download.adobe.com", PATCH_ANY],
    ["patch mode, cache port, mapped-looking IPv4 agent", patchMode, { ip: "::ffff:10.0.0.5", port: "cache" }, "dl.google.com", PATCH_ANY],
    ["patch mode, proxy port, platform", patchMode, PROXY, "qagpublic.qg1.apps.qualys.com", TUNNEL_PLATFORM],
  ] as const)("%s", (_name, p, client, host, want) => {
    expect(decide(p, T(host), client)).toEqual(want);
  });

  test.each([
    ["patch mode, proxy port, any vendor", patchMode, PROXY, "dl.google.com", "deny-domain"],
    ["proxy only, cache port while cache mode is off", proxyOnly, CACHE, "qualys.com", "deny-cache-disabled"],
    ["cache mode, cache port, other domain", cacheMode, CACHE, "dl.google.com", "deny-domain"],
    ["patch mode, cache port, stranger, any vendor", patchMode, STRANGER, "dl.google.com", "deny-client-network"],
    ["patch mode, cache port, stranger, even a platform host", patchMode, STRANGER, "qualys.com", "deny-client-network"],
    ["patch mode, cache port, IP literal", patchMode, CACHE, "93.184.216.34", "deny-ip-literal"],
    ["patch mode, cache port, IPv6 literal", patchMode, CACHE, "2606:2800:220:1::", "deny-ip-literal"],
  ] as const)("%s → %s", (_name, p, client, host, rule) => {
    const v = decide(p, T(host), client);
    expect(v.action).toBe("deny");
    expect(v.rule).toBe(rule);
  });

  test("patch mode with agent patterns: decide refuses a non-agent User-Agent itself", () => {
    const p = clientPolicy(["10.0.0.0/8"], ["QualysAgent"]);
    expect(decide(p, T("dl.google.com"), { ip: "10.1.2.3", port: "cache", userAgent: "curl/8" }).rule).toBe("deny-user-agent");
    expect(decide(p, T("dl.google.com"), { ip: "10.1.2.3", port: "cache", userAgent: "QualysAgent/6" })).toEqual(PATCH_ANY);
  });

  test("patch-any still refuses private addresses after DNS, unless mapped", () => {
    expect(decideAddress(patchMode, T("dl.google.com"), "142.250.1.1")).toBeNull();
    expect(decideAddress(patchMode, T("evil-rebind.example"), "127.0.0.1")?.rule).toBe("deny-private-address");
    expect(decideAddress(patchMode, T("evil-rebind.example"), "::ffff:169.254.169.254")?.rule).toBe("deny-private-address");
  });
});

describe("verdict shape", () => {
  const DENIALS: [string, ReturnType<typeof decide> | null, PolicyRule][] = [
    ["domain", decide(proxyOnly, T("example.org"), PROXY), "deny-domain"],
    ["port", decide(proxyOnly, T("qualys.com", 8443), PROXY), "deny-port"],
    ["ip", decide(proxyOnly, T("10.0.0.1"), PROXY), "deny-ip-literal"],
    ["numeric", decide(proxyOnly, { host: "127.1", port: 443, isIp: false }, PROXY), "deny-ip-literal"],
    ["non-ascii", decide(proxyOnly, T("bücher.de"), PROXY), "deny-bad-host"],
    ["bad", decide(proxyOnly, { host: "a b", port: 443, isIp: false }, PROXY), "deny-bad-host"],
    ["cache off", decide(proxyOnly, T("qualys.com"), CACHE), "deny-cache-disabled"],
    ["address", decideAddress(proxyOnly, T("x.qualys.com"), "10.0.0.1"), "deny-private-address"],
    ["network", decideClient(patchMode, STRANGER), "deny-client-network"],
    ["ua", decideClient(clientPolicy(["10.0.0.0/8"], ["QualysAgent"]), CACHE), "deny-user-agent"],
    ["control bytes", decide(proxyOnly, { host: "evil\r\nx-injected: 1", port: 443, isIp: false }, PROXY), "deny-bad-host"],
  ];
  test.each(DENIALS)("%s: a deny with its rule and a one-line reason", (_n, v, rule) => {
    expect(v?.action).toBe("deny");
    expect(v?.rule).toBe(rule);
    expect(v?.reason).toBeString();
    expect(v!.reason!.length).toBeGreaterThan(20);
    expect(v!.reason).not.toMatch(/[\r\n]/);
  });

  test("the exact reason for a domain outside the allow-list", () => {
    expect(decide(proxyOnly, T("example.org"), PROXY).reason).toStartWith("CONNECT to example.org:443 denied: not an allowed domain");
  });

  test("allow verdicts carry no reason and are frozen (shared between calls)", () => {
    const v = decide(proxyOnly, T("qualys.com"), PROXY);
    expect(v.reason).toBeUndefined();
    expect(Object.isFrozen(v)).toBe(true);
    expect(() => {
      (v as { action: string }).action = "deny";
    }).toThrow();
    expect(decide(proxyOnly, T("qualys.com"), PROXY).action).toBe("tunnel");
  });

  test("a long peer-supplied host is truncated in the reason", () => {
    const host = `${"a".repeat(60)}.`.repeat(5) + "example.org";
    const v = decide(proxyOnly, T(host), PROXY);
    expect(v.rule).toBe("deny-bad-host");
    expect(v.reason).toContain("…");
    expect(v.reason).not.toContain(host);
  });
});
