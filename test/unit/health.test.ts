/** core/health.ts: facts → Normal | Degraded | Down, per-port /healthz, fail fast, agent-check. Fixed clock. */
import { describe, expect, test } from "bun:test";
import { type HealthFacts, agentCheckReply, decideHealth, retryAfterSeconds } from "../../src/core/health";
import { parseConfig } from "../../src/core/config";

const NOW = Date.parse("2026-12-01T12:00:00Z");
const DAY = 86_400_000;
const GiB = 1024 ** 3;

const ok = { at: 0, reachable: 3, total: 3, error: null };
const fail = (at: number, hop = "tcp") => ({ at, reachable: 0, total: 3, error: { host: "qagpublic.qg1.apps.qualys.com", hop, reason: "connection refused" } });

function facts(over: Partial<HealthFacts> = {}): HealthFacts {
  return {
    now: NOW,
    workers: { alive: 2, total: 2 },
    draining: false,
    maintenance: { on: false, since: null },
    cacheEnabled: true,
    platform: { rounds: [{ ...ok, at: NOW - 60_000 }, { ...ok, at: NOW }], trafficAt: null },
    upstreamProxy: null,
    dataDisk: { path: "/data", free: 50 * GiB, size: 100 * GiB, writable: true },
    patchVolume: null,
    patchRefused: null,
    cacheNoSpace: null,
    ca: { kind: "appliance", notAfter: NOW + 365 * DAY },
    ...over,
  };
}

type Row = [name: string, over: Partial<HealthFacts>, health: string, codes: string[], proxy: number, cache: number];
const ROWS: Row[] = [
  ["all well", {}, "Normal", [], 200, 200],
  ["no probe yet", { platform: { rounds: [], trafficAt: null } }, "Normal", [], 200, 200],
  ["one failed probe is a blip", { platform: { rounds: [{ ...ok, at: NOW - 60_000 }, fail(NOW)], trafficAt: null } }, "Degraded", ["platform-unreachable-once"], 200, 200],
  ["two failed probes: Down", { platform: { rounds: [fail(NOW - 60_000), fail(NOW)], trafficAt: null } }, "Down", ["platform-down"], 503, 503],
  [
    "two failed probes through a dead upstream proxy name it",
    { upstreamProxy: "10.0.0.9:3128", platform: { rounds: [fail(NOW - 60_000, "upstream-proxy"), fail(NOW, "upstream-proxy")], trafficAt: null } },
    "Down",
    ["platform-down", "upstream-proxy"],
    503,
    503,
  ],
  ["real traffic since the older failed probe keeps it up", { platform: { rounds: [fail(NOW - 60_000), fail(NOW)], trafficAt: NOW - 30_000 } }, "Degraded", ["platform-unreachable-once"], 200, 200],
  ["real traffic after the last failed probe: Normal", { platform: { rounds: [fail(NOW - 60_000), fail(NOW)], trafficAt: NOW } }, "Normal", [], 200, 200],
  [
    "every host answers but TLS does not verify: Degraded, not Down (agents verify with their own roots)",
    { platform: { rounds: [{ ...fail(NOW - 60_000, "tls"), reached: 3 }, { ...fail(NOW, "tls"), reached: 3 }], trafficAt: null } },
    "Degraded",
    ["platform-tls"],
    200,
    200,
  ],
  ["maintenance", { maintenance: { on: true, since: NOW - 1000 } }, "Down", ["maintenance"], 503, 503],
  ["draining", { draining: true }, "Down", ["draining"], 503, 503],
  ["no live worker", { workers: { alive: 0, total: 2 } }, "Down", ["no-worker"], 503, 503],
  ["a worker restarting", { workers: { alive: 1, total: 2 } }, "Degraded", ["workers-restarting"], 200, 200],
  ["data disk nearly full", { dataDisk: { path: "/data", free: 100 * 1024 * 1024, size: 100 * GiB, writable: true } }, "Degraded", ["data-disk-low"], 200, 200],
  ["data disk not writable", { dataDisk: { path: "/data", free: 50 * GiB, size: 100 * GiB, writable: false, error: "EROFS" } }, "Degraded", ["data-disk-unwritable"], 200, 200],
  ["patch volume full", { patchVolume: { path: "/patch", free: 0, size: 300 * GiB, writable: true } }, "Degraded", ["patch-volume-low"], 200, 200],
  ["cache disk full in a worker", { cacheNoSpace: { workers: 1, needed: 64 * 1024 * 1024 } }, "Degraded", ["cache-disk-full"], 200, 200],
  ["CA expired, cache mode on: the cache port is Down, the proxy port serves", { ca: { kind: "appliance", notAfter: NOW - DAY } }, "Down", ["ca-expired"], 200, 503],
  ["CA expired, cache mode off", { cacheEnabled: false, ca: { kind: "appliance", notAfter: NOW - DAY } }, "Degraded", ["ca-expired"], 200, 200],
  ["CA expiring in 10 days", { ca: { kind: "customer", notAfter: NOW + 10 * DAY } }, "Degraded", ["ca-expiring"], 200, 200],
  ["cache mode without a CA", { ca: null }, "Down", ["ca-missing"], 200, 503],
];

describe("decideHealth", () => {
  for (const [name, over, health, codes, proxy, cache] of ROWS)
    test(name, () => {
      const d = decideHealth(facts(over));
      expect(d.health).toBe(health as any);
      expect(d.problems.map((p) => p.code)).toEqual(codes as any);
      expect([d.ports.proxy.status, d.ports.cache.status]).toEqual([proxy, cache] as any);
      // every problem is said in words on the ports it affects
      for (const p of d.problems) for (const port of p.ports) expect(d.ports[port].reasons).toContain(p.text);
    });

  test("fail fast: platform Down refuses platform CONNECTs; maintenance refuses all", () => {
    expect(decideHealth(facts()).failFast).toBeNull();
    expect(decideHealth(facts({ platform: { rounds: [fail(NOW - 60_000), fail(NOW)], trafficAt: null } })).failFast).toMatchObject({ scope: "platform", code: "PX_PLATFORM_DOWN" });
    expect(decideHealth(facts({ maintenance: { on: true, since: NOW } })).failFast).toMatchObject({ scope: "all", code: "PX_MAINTENANCE" });
  });
});

describe("retryAfterSeconds", () => {
  test("base plus jitter from the shell's random, clamped", () => {
    expect(retryAfterSeconds(0)).toBe(30);
    expect(retryAfterSeconds(0.5)).toBe(45);
    expect(retryAfterSeconds(0.9999)).toBe(60);
    expect(retryAfterSeconds(5)).toBe(60);
    expect(retryAfterSeconds(Number.NaN)).toBe(30);
  });
});

describe("agentCheckReply (HAProxy agent-check)", () => {
  const rows: [string, Partial<HealthFacts>, { open: number; max: number }, string][] = [
    ["idle", {}, { open: 0, max: 3000 }, "up ready 100%\n"],
    ["three quarters loaded", {}, { open: 2250, max: 3000 }, "up ready 25%\n"],
    ["full still has weight 1", {}, { open: 3000, max: 3000 }, "up ready 1%\n"],
    ["maintenance", { maintenance: { on: true, since: NOW } }, { open: 0, max: 3000 }, "maint\n"],
    ["draining", { draining: true }, { open: 0, max: 3000 }, "drain\n"],
  ];
  for (const [name, over, load, want] of rows) test(name, () => expect(agentCheckReply(decideHealth(facts(over)), load)).toBe(want));
  test("platform Down: down#reason on one line", () => {
    const r = agentCheckReply(decideHealth(facts({ platform: { rounds: [fail(NOW - 60_000), fail(NOW)], trafficAt: null } })), { open: 0, max: 10 });
    expect(r.startsWith("down #platform-down: no platform host reachable")).toBe(true);
    expect(r.indexOf("\n")).toBe(r.length - 1);
  });
});

describe("config keys of issue 10", () => {
  const keyOf = (raw: unknown) => {
    try {
      parseConfig(raw);
      return "ok";
    } catch (e) {
      return (e as { key?: string }).key ?? String(e);
    }
  };
  test("platform.probe_interval_s: default 60, 1 and 0 (off) accepted, fractions and negatives refused", () => {
    expect(parseConfig({}).platform.probe_interval_s).toBe(60);
    expect(parseConfig({ platform: { probe_interval_s: 1 } }).platform.probe_interval_s).toBe(1);
    expect(parseConfig({ platform: { probe_interval_s: 0 } }).platform.probe_interval_s).toBe(0);
    expect(keyOf({ platform: { probe_interval_s: 1.5 } })).toBe("platform.probe_interval_s");
    expect(keyOf({ platform: { probe_interval_s: -1 } })).toBe("platform.probe_interval_s");
  });
  test("admin.agent_check_port: off unless set; a real port, not another of ours", () => {
    expect(parseConfig({}).admin.agent_check_port).toBeNull();
    expect(parseConfig({ admin: { agent_check_port: 1099 } }).admin.agent_check_port).toBe(1099);
    expect(keyOf({ admin: { agent_check_port: 0 } })).toBe("admin.agent_check_port");
    expect(keyOf({ admin: { agent_check_port: 8443 } })).toBe("admin.agent_check_port");
    expect(keyOf({ proxy: { port: 1099 }, admin: { agent_check_port: 1099 } })).toBe("admin.agent_check_port");
  });
});
