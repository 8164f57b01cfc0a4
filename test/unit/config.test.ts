/** Config validation: every refusal names the key and the rule (STYLE §7). */
import { describe, expect, test } from "bun:test";
import { DEFAULTS, mergeConfig, parseConfig, redactConfig } from "../../src/core/config";
import { ConfigError } from "../../src/core/errors";

function refusal(raw: unknown): string {
  try {
    parseConfig(raw);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("defaults", () => {
  test("an empty file gives the embedded defaults of the spec", () => {
    const c = parseConfig({});
    expect(c.proxy.port).toBe(1080);
    expect(c.cache.port).toBe(8080);
    expect(c.cache.min_tls).toBe("1.2");
    expect(c.proxy.max_connections).toBe(3000);
    expect(c.destinations.ports).toEqual([443]);
    expect(c.admin).toMatchObject({ port: 8443, listen: "127.0.0.1", tls: false });
    expect(c.platform.domains).toContain("qualysksa.com");
    expect(c.platform.domains).toHaveLength(8);
    expect(Object.isFrozen(c.proxy)).toBe(true);
  });
});

describe("refusals name the key and the rule", () => {
  test.each([
    [{ proxy: { port: 22 } }, "proxy.port: port 22 is reserved"],
    [{ proxy: { port: 48085 } }, "proxy.port: port 48085 is reserved"],
    [{ proxy: { port: 70000 } }, "proxy.port: 70000 is out of range: a port is 1–65535"],
    [{ proxy: { port: -1 } }, "proxy.port: -1 is out of range"],
    [{ proxy: { port: 1.5 } }, "proxy.port: expected an integer port, got 1.5"],
    [{ proxy: { port: "1080" } }, `proxy.port: expected an integer port, got '1080'`],
    [{ cache: { enabled: true, port: 1080 } }, "cache.port: 1080 is already proxy.port; the two ports differ"],
    [{ cache: { port: 2379 } }, "cache.port: port 2379 is reserved"],
    [{ cache: { allowed_domains: Array.from({ length: 11 }, (_, i) => `d${i}.com`) } }, "cache.allowed_domains: 11 entries, at most 10"],
    [{ cache: { allowed_domains: ["ok.com", "x.com", "https://www.microsoft.com"] } }, "cache.allowed_domains[2]: 'https://www.microsoft.com': write the bare domain, e.g. microsoft.com"],
    [{ cache: { allowed_domains: ["microsoft.com/updates"] } }, "cache.allowed_domains[0]: 'microsoft.com/updates': no path; write the bare domain, e.g. microsoft.com"],
    [{ cache: { allowed_domains: ["microsoft.com:443"] } }, "cache.allowed_domains[0]: 'microsoft.com:443': no port"],
    [{ cache: { allowed_domains: ["*.microsoft.com"] } }, "no wildcard"],
    [{ cache: { allowed_domains: ["bücher.de"] } }, "punycode"],
    [{ cache: { allowed_domains: ["10.0.0.1"] } }, "an IP address is not a domain"],
    [{ cache: { allowed_domains: ["localhost"] } }, "is not a valid domain name"],
    [{ cache: { allowed_domains: ["a.com", "A.com."] } }, "'a.com' is listed twice"],
    [{ cache: { min_tls: "1.4" } }, "cache.min_tls: expected one of 1.0, 1.1, 1.2, 1.3, got '1.4'"],
    [{ cache: { rules: [{ host: "qualys.com", path: "manifests/*", max_age_s: 60 }] } }, "cache.rules[0].path"],
    [{ patch: { enabled: true } }, "patch.enabled: patch mode builds on cache mode"],
    [{ cache: { enabled: true }, patch: { enabled: true } }, "patch.volume: patch mode needs the secondary volume"],
    [{ cache: { enabled: true }, patch: { enabled: true, volume: "/srv/patch" } }, "patch.client_networks"],
    [{ patch: { client_networks: ["10.0.0.0/33"] } }, "patch.client_networks[0]: '10.0.0.0/33': prefix length must be 0–32"],
    [{ patch: { client_networks: ["not-a-net"] } }, "is not a CIDR block"],
    [{ upstream_proxy: { host: "http://proxy.corp", port: 3128 } }, "upstream_proxy.host"],
    [{ upstream_proxy: { host: "proxy.corp", port: 0 } }, "upstream_proxy.port: expected 1–65535, got 0"],
    [{ upstream_proxy: { host: "proxy.corp", port: 3128, password: "x" } }, "upstream_proxy.password: a password needs upstream_proxy.username"],
    [{ hosts: { "origin.example": "not-an-ip" } }, "hosts.origin.example: expected an IP address"],
    [{ destinations: { ports: [] } }, "destinations.ports: expected a non-empty list"],
    [{ destinations: { ports: [443, 0] } }, "destinations.ports[1]"],
    [{ admin: { token: "short" } }, "admin.token: at least 16 characters"],
    [{ admin: { port: 1080 } }, "admin.port: 1080 is already proxy.port"],
    [{ proxy: { prot: 1 } }, "proxy.prot: unknown key"],
    [{ proxxy: {} }, "proxxy: unknown section"],
    [{ gateway: { workers: -1 } }, "gateway.workers: expected 0–256, got -1"],
  ])("%j → %s", (raw, message) => {
    expect(refusal(raw)).toContain(message);
  });
});

describe("accepted values are normalised", () => {
  test("domains are lower-cased without a trailing dot", () => {
    const c = parseConfig({ cache: { allowed_domains: ["MicroSoft.COM.", "xn--bcher-kva.de"] } });
    expect(c.cache.allowed_domains).toEqual(["microsoft.com", "xn--bcher-kva.de"]);
  });
  test("an upstream proxy with credentials, and [hosts] mappings", () => {
    const c = parseConfig({ upstream_proxy: { host: "Proxy.Corp.", port: 8080, username: "u", password: "p" }, hosts: { "Origin.Test": "127.0.0.1", v6: "::1" } });
    expect(c.upstream_proxy).toEqual({ host: "proxy.corp", port: 8080, username: "u", password: "p", auth: "basic" });
    expect(c.hosts).toEqual({ "origin.test": "127.0.0.1", v6: "::1" });
  });
  test("port 0 means any free port (tests)", () => {
    expect(parseConfig({ proxy: { port: 0 } }).proxy.port).toBe(0);
  });
  test("patch mode with its volume and networks", () => {
    const c = parseConfig({ cache: { enabled: true }, patch: { enabled: true, volume: "/srv/p", client_networks: ["10.0.0.0/8", "fd00::/8"] } });
    expect(c.patch.enabled).toBe(true);
  });
});

describe("merge and redact", () => {
  test("a partial object changes only what it names, with the same validation", () => {
    const base = parseConfig({ cache: { enabled: true, port: 8081 } });
    const next = mergeConfig(base, { proxy: { port: 1081 } });
    expect(next.proxy.port).toBe(1081);
    expect(next.cache.port).toBe(8081);
    expect(() => mergeConfig(base, { proxy: { port: 22 } })).toThrow("proxy.port: port 22 is reserved");
  });
  test("secrets are replaced for display", () => {
    const c = parseConfig({ upstream_proxy: { host: "p.corp", port: 3128, username: "u", password: "hunter2" }, admin: { token: "0123456789abcdef0123" } });
    const r = JSON.stringify(redactConfig(c));
    expect(r).not.toContain("hunter2");
    expect(r).not.toContain("0123456789abcdef0123");
    expect(DEFAULTS.upstream_proxy).toBeNull();
  });
});

describe("TLS towards agents", () => {
  test.each(["1.0", "1.1", "1.2", "1.3"] as const)("min_tls %s is accepted: every version is offered (issue 11)", (v) => {
    expect(parseConfig({ cache: { min_tls: v } }).cache.min_tls).toBe(v);
  });
  test("a common CA needs its certificate and key files", () => {
    expect(refusal({ tls: { ca: "common" } })).toContain("tls.ca_cert: the common CA needs its certificate file");
    expect(refusal({ tls: { ca: "customer", ca_cert: "/x/root.pem" } })).toContain("tls.ca_key");
    expect(refusal({ tls: { ca: "vendor" } })).toContain("tls.ca: expected appliance, common or customer");
  });
});
