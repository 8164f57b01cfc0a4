/**
 * conn-session with the supervisor's health pushed in (issue 10), fixed clock: each port's /healthz answers what
 * core/health.ts decided for *that* port; while the platform link is Down a platform CONNECT is refused at once with
 * 503 + a Retry-After from the shell's random (no dial); in maintenance every new request is.
 */
import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../src/core/config";
import { compilePolicy } from "../../src/core/policy";
import { type HealthFacts, decideHealth, portHealthOf, type PortHealth } from "../../src/core/health";
import { type ConnCommand, type PortKind, type SessionCtx, makeSession, onData, onOpen } from "../../src/core/conn-session";

const NOW = 1_700_000_000_000;
const HOST = "qagpublic.qg1.apps.qualys.com";
const ascii = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | null | undefined) => (b ? new TextDecoder("latin1").decode(b) : "");

function facts(over: Partial<HealthFacts> = {}): HealthFacts {
  return {
    now: NOW,
    workers: { alive: 1, total: 1 },
    draining: false,
    maintenance: { on: false, since: null },
    cacheEnabled: true,
    platform: { rounds: [], trafficAt: null },
    upstreamProxy: null,
    dataDisk: null,
    patchVolume: null,
    patchRefused: null,
    cacheNoSpace: null,
    ca: { kind: "appliance", notAfter: NOW + 400 * 86_400_000 },
    ...over,
  };
}
const down = (at: number) => ({ at, reachable: 0, total: 5, error: { host: HOST, hop: "tcp", reason: "connection refused" } });

function ctx(health: PortHealth | null): SessionCtx {
  const config = parseConfig({ cache: { enabled: true, allowed_domains: ["microsoft.com"] } });
  return { config, policy: compilePolicy(config), draining: false, index: 0, intercepting: false, health };
}
function send(c: SessionCtx, bytes: string, port: PortKind = "proxy", jitter = 0): ConnCommand[] {
  const s = makeSession(c, { id: "c1", ip: "10.0.0.5", remotePort: 4000, port, admitted: true, jitter }, NOW);
  return [...onOpen(s, NOW), ...onData(s, ascii(bytes), NOW)];
}
const written = (cmds: ConnCommand[]) => text((cmds.find((c) => c.do === "writeClient" || (c.do === "refuse" && c.bytes)) as { bytes: Uint8Array } | undefined)?.bytes);

describe("per-port /healthz and fail fast", () => {
  test("an expired CA: the cache port's /healthz is 503 with the reason, the proxy port's 200", () => {
    const c = ctx(portHealthOf(decideHealth(facts({ ca: { kind: "appliance", notAfter: NOW - 1 } }))));
    const proxy = written(send(c, "GET /healthz HTTP/1.1\r\n\r\n", "proxy"));
    const cache = written(send(c, "GET /healthz HTTP/1.1\r\n\r\n", "cache"));
    expect(proxy).toStartWith("HTTP/1.1 200 ");
    expect(cache).toStartWith("HTTP/1.1 503 ");
    expect(JSON.parse(cache.slice(cache.indexOf("\r\n\r\n") + 4))).toMatchObject({ status: "down", port: "cache", reasons: [expect.stringContaining("CA expired")] });
  });

  test("platform Down: a platform CONNECT gets 503 + Retry-After at once (no dial); another allowed domain still dials", () => {
    const c = ctx(portHealthOf(decideHealth(facts({ platform: { rounds: [down(NOW - 5000), down(NOW)], trafficAt: null } }))));
    const cmds = send(c, `CONNECT ${HOST}:443 HTTP/1.1\r\nHost: ${HOST}:443\r\n\r\n`, "proxy", 0.5);
    expect(cmds.some((x) => x.do === "dial")).toBe(false);
    const r = cmds.find((x) => x.do === "refuse");
    expect(r).toMatchObject({ do: "refuse", code: "PX_PLATFORM_DOWN", status: 503, rule: "PX_PLATFORM_DOWN" });
    const ans = written(cmds);
    expect(ans).toContain("\r\nRetry-After: 45\r\n"); // 30 + floor(0.5 × 31)
    expect(ans).toContain("platform cannot be reached");
    expect(cmds.find((x) => x.do === "log")).toMatchObject({ fields: { rule: "PX_PLATFORM_DOWN" } });
    // jitter differs per connection: the shell's random goes straight into Retry-After
    expect(written(send(c, `CONNECT ${HOST}:443 HTTP/1.1\r\n\r\n`, "proxy", 0))).toContain("\r\nRetry-After: 30\r\n");
    expect(send(c, "CONNECT www.microsoft.com:443 HTTP/1.1\r\n\r\n", "cache").some((x) => x.do === "dial")).toBe(true);
  });

  test("maintenance: every new request is refused with 503 + Retry-After; /healthz says why", () => {
    const c = ctx(portHealthOf(decideHealth(facts({ maintenance: { on: true, since: NOW } }))));
    for (const req of [`CONNECT ${HOST}:443 HTTP/1.1\r\n\r\n`, "CONNECT www.microsoft.com:443 HTTP/1.1\r\n\r\n"]) {
      const cmds = send(c, req, "cache", 0.99);
      expect(cmds.find((x) => x.do === "refuse")).toMatchObject({ code: "PX_MAINTENANCE", status: 503 });
      expect(written(cmds)).toContain("\r\nRetry-After: 60\r\n");
    }
    const hz = written(send(c, "GET /healthz HTTP/1.1\r\n\r\n"));
    expect(hz).toStartWith("HTTP/1.1 503 ");
    expect(hz).toContain("in maintenance");
  });

  test("no health pushed yet (a worker just started): /healthz 200, nothing refused", () => {
    const c = ctx(null);
    expect(written(send(c, "GET /healthz HTTP/1.1\r\n\r\n"))).toStartWith("HTTP/1.1 200 ");
    expect(send(c, `CONNECT ${HOST}:443 HTTP/1.1\r\n\r\n`).some((x) => x.do === "dial")).toBe(true);
  });
});
