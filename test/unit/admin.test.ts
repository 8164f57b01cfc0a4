/**
 * The management plane's pure-ish parts: the TOML writer round-trips every config shape, the failure throttle,
 * log rotation and clean-up before the disk fills, the persisted stats series across a reopen, the diagnostics
 * archive's encryption, and the CLI's KEY=VALUE typing.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULTS, parseConfig } from "../../src/core/config";
import { configToToml } from "../../src/admin/toml";
import { FailureThrottle, readBodyLimited, BodyTooLarge, tokenFingerprint } from "../../src/admin/guard";
import { cleanLogs, readLogLinesNewestFirst, rotateLogFile, rotatedFiles, type LogLimits } from "../../src/store/log-store";
import { DAY, StatsDb } from "../../src/store/stats-db";
import { makeOneTimePassword, openArchive, sealArchive } from "../../src/admin/diagnostics";
import { partialFromAssignments } from "../../src/cli/main";
import { countCache } from "../../src/core/cache-counts";
import { handleApi } from "../../src/admin/api";
import { makeAdminContext } from "../../src/admin/context";
import type { AdminDeps, HealthReport, StatsReport } from "../../src/admin/deps";
import { cacheHealth } from "../../src/supervisor/supervisor";
import { emptyCounters, type WorkerCounters } from "../../src/workers/protocol";
import { ProxyError, statusFor } from "../../src/core/errors";

const tmp = (p: string) => mkdtempSync(join(tmpdir(), p));

describe("config → TOML", () => {
  test("the defaults round-trip", () => {
    expect(parseConfig(Bun.TOML.parse(configToToml(DEFAULTS)))).toEqual(DEFAULTS);
  });

  test("every section filled in round-trips, including hosts with dots, rules and secrets with quotes", () => {
    const c = parseConfig({
      gateway: { name: 'gw "east"', data_dir: "/var/lib/agate", workers: 4, drain_grace_s: 12.5 },
      proxy: { port: 3128, listen: "0.0.0.0" },
      cache: { enabled: true, port: 8081, min_tls: "1.3", allowed_domains: ["microsoft.com", "adobe.com"], rules: [{ host: "qualys.com", path: "/manifests/*", max_age_s: 600 }] },
      patch: { enabled: true, volume: "/mnt/patch", min_volume_bytes: 1000, client_networks: ["10.0.0.0/8", "fd00::/8"], agent_user_agents: ["QualysAgent"] },
      upstream_proxy: { host: "proxy.corp.example", port: 8080, username: "agate", password: 'p"a\\ss\nword' },
      hosts: { "qagpublic.qg1.apps.qualys.com": "10.1.2.3", origin: "127.0.0.1" },
      destinations: { ports: [443, 8443] },
      platform: { pod: "qg2.apps.qualys.eu" },
      tls: { upstream_ca: "/etc/ssl/extra.pem", ca: "customer", ca_cert: "/x/root.pem", ca_chain: "/x/chain.pem", ca_key: "/x/key.pem" },
      admin: { port: 9443, listen: "127.0.0.1", tls: true, token: "0123456789abcdef0123" },
    });
    const text = configToToml(c);
    expect(parseConfig(Bun.TOML.parse(text))).toEqual(c);
    expect(text).toContain('"qagpublic.qg1.apps.qualys.com" = "10.1.2.3"');
  });
});

describe("guard", () => {
  test("five failures in a minute lock an address out, with the seconds to wait; others are not affected", () => {
    const t = new FailureThrottle(5, 60_000);
    const t0 = 1_000_000;
    for (let i = 0; i < 4; i++) t.fail("10.0.0.1", t0 + i * 1000);
    expect(t.retryAfter("10.0.0.1", t0 + 4000)).toBe(0);
    t.fail("10.0.0.1", t0 + 4000);
    expect(t.retryAfter("10.0.0.1", t0 + 5000)).toBe(55);
    expect(t.retryAfter("10.0.0.2", t0 + 5000)).toBe(0);
    expect(t.retryAfter("10.0.0.1", t0 + 60_001)).toBe(0); // the first failure left the window
  });

  test("body limits hold for declared and for streamed (chunked) bodies", async () => {
    const big = new Request("http://x/", { method: "POST", body: "x".repeat(2000), headers: { "content-length": "2000" } });
    await expect(readBodyLimited(big, 1000)).rejects.toBeInstanceOf(BodyTooLarge);
    const chunked = new Request("http://x/", { method: "POST", body: new Blob([new Uint8Array(600), new Uint8Array(600)]).stream() });
    await expect(readBodyLimited(chunked, 1000)).rejects.toBeInstanceOf(BodyTooLarge);
    expect((await readBodyLimited(new Request("http://x/", { method: "POST", body: "ok" }), 1000)).byteLength).toBe(2);
  });

  test("the audit log names a token by a fingerprint, never the token", () => {
    const f = tokenFingerprint("test-token-0123456789abcdef");
    expect(f).toMatch(/^sha256:[0-9a-f]{12}$/);
    expect(f).not.toContain("test-token");
  });
});

describe("log files", () => {
  const limits = (o: Partial<LogLimits> = {}): LogLimits => ({ fileMaxBytes: 1000, keep: 3, capBytes: 1e9, minFreeFraction: 0, minFreeBytes: 0, ...o });

  test("rotation by size keeps N files, newest as .1", () => {
    const dir = tmp("agate-logs-");
    const log = join(dir, "agate.log");
    for (let i = 0; i < 6; i++) {
      writeFileSync(log, `{"n":${i}}\n` + "x".repeat(1100));
      expect(rotateLogFile(log, limits())).toBe(true);
    }
    expect(rotatedFiles(log).map((f) => f.n)).toEqual([1, 2, 3]);
    const lines = [...readLogLinesNewestFirst(log)].filter((l) => l.startsWith("{"));
    expect(lines).toEqual(['{"n":5}', '{"n":4}', '{"n":3}']);
    writeFileSync(log, "small\n");
    expect(rotateLogFile(log, limits())).toBe(false);
  });

  test("oldest rotated files go first when the cap or the disk reserve is reached; the live file stays", () => {
    const dir = tmp("agate-logs-");
    const log = join(dir, "agate.log");
    writeFileSync(log, "live\n");
    for (let n = 1; n <= 4; n++) writeFileSync(`${log}.${n}`, "y".repeat(1000));
    expect(cleanLogs(log, limits({ capBytes: 2500 })).map((p) => p.slice(-2))).toEqual([".4", ".3"]);
    // A nearly full disk: 100 bytes free of 10,000 with a 15% reserve → remove until 1,500 would be free.
    const removed = cleanLogs(log, limits({ minFreeFraction: 0.15 }), () => ({ freeBytes: 100, totalBytes: 10_000 }));
    expect(removed.map((p) => p.slice(-2))).toEqual([".2", ".1"]);
    expect(existsSync(log)).toBe(true);
    expect(readdirSync(dir)).toEqual(["agate.log"]);
  });
});

describe("persisted stats", () => {
  test("agents over 7 days, savings over 30 days and the graph survive a reopen; old rows age out", () => {
    const dir = tmp("agate-stats-");
    const path = join(dir, "stats.db");
    const now = Date.UTC(2026, 0, 10, 12, 0, 0);
    let db = new StatsDb(path);
    db.recordIps("cache", ["10.0.0.1", "10.0.0.2"], now - 6 * DAY);
    db.sample(now - 6 * DAY, { tunnels: 5, served: 10_000, fetched: 2_000, hits: 4, misses: 1 });
    db.recordIps("cache", ["10.0.0.3"], now - 8 * DAY); // outside 7 days
    db.recordIps("proxy", ["192.0.2.1"], now - 60_000);
    db.sample(now - 60_000, { tunnels: 8, served: 15_000, fetched: 2_000, hits: 6, misses: 1 });
    db.close();

    db = new StatsDb(path); // a restart: the process's counters start again from zero
    db.recordIps("cache", ["10.0.0.2", "10.0.0.4"], now);
    db.sample(now, { tunnels: 1, served: 1_000, fetched: 0, hits: 1, misses: 0 });
    const s = db.summary(now);
    expect(s.total_agents_7d).toBe(3); // .1 .2 .4
    expect(s.unique_ips_7d).toBe(1);
    expect(s.savings_30d).toEqual({ served_bytes: 16_000, fetched_bytes: 2_000, saved_bytes: 14_000, hits: 7, misses: 1 });
    const pts = db.series(now, 3_600_000, 60);
    expect(pts).toHaveLength(60);
    expect(pts.at(-1)).toMatchObject({ cache_ips: 2, connections: 1 });
    expect(pts.at(-2)).toMatchObject({ proxy_ips: 1, connections: 3 });

    db.prune(now + 31 * DAY);
    expect(db.summary(now + 31 * DAY)).toMatchObject({ total_agents_7d: 0, savings_30d: { saved_bytes: 0 } });
    db.close();
  });
});

describe("diagnostics archive", () => {
  test("an age file (passphrase mode) that opens with its one-time password and not with another", async () => {
    const pw = makeOneTimePassword();
    expect(pw).toMatch(/^([2-9A-HJ-NP-Z]{4}-){9}[2-9A-HJ-NP-Z]{4}$/);
    const sealed = await sealArchive({ hello: "world", n: [1, 2] }, pw);
    expect(Buffer.from(sealed).includes(Buffer.from("world"))).toBe(false);
    // age-encryption.org/v1 header with one scrypt stanza (the passphrase recipient), work factor 15
    expect(Buffer.from(sealed).subarray(0, 100).toString("latin1")).toMatch(/^age-encryption\.org\/v1\n-> scrypt \S+ 15\n/);
    expect(await openArchive(sealed, pw)).toEqual({ hello: "world", n: [1, 2] });
    expect(openArchive(sealed, makeOneTimePassword())).rejects.toThrow("wrong password");
    expect(openArchive(new TextEncoder().encode("AGATEDIAG1xxxx"), pw)).rejects.toThrow("not an age file");
  });
});

describe("CLI KEY=VALUE", () => {
  test("values take the type of the current value; hosts and upstream_proxy are merged whole", () => {
    const cur = { proxy: { port: 1080 }, cache: { enabled: false, allowed_domains: [] }, destinations: { ports: [443] }, hosts: { a: "10.0.0.1" }, upstream_proxy: null };
    expect(
      partialFromAssignments(cur, ["proxy.port=1081", "cache.enabled=true", "cache.allowed_domains=microsoft.com, adobe.com", "destinations.ports=443,8443", "hosts.b.example=10.0.0.2", "hosts.a="]),
    ).toEqual({
      proxy: { port: 1081 },
      cache: { enabled: true, allowed_domains: ["microsoft.com", "adobe.com"] },
      destinations: { ports: [443, 8443] },
      hosts: { "b.example": "10.0.0.2" },
    });
    expect(partialFromAssignments(cur, ["upstream_proxy.host=proxy.corp", "upstream_proxy.port=3128"])).toEqual({ upstream_proxy: { host: "proxy.corp", port: 3128 } });
  });
});

describe("one counting of cache hits", () => {
  // whole objects on the cache port and slices in patch mode: health once counted only the former, metrics both
  const totals = (): WorkerCounters => ({
    ...emptyCounters(),
    cache: { hits: 5, misses: 2, collapsed: 1, bytes_served: 5000, bytes_fetched: 2000 },
    patch: { slice_hits: 7, slice_misses: 3, slice_collapsed: 4, bytes_served: 700, bytes_fetched: 300, by_host: { "x.example": { fetched: 300, served: 700 } } },
  });

  test("countCache adds patch slices to whole objects, and ignores what is not a number", () => {
    expect(countCache(totals())).toEqual({ hits: 12, misses: 5, collapsed: 5, bytes_served: 5700, bytes_fetched: 2300, savings: 3400 });
    expect(countCache({})).toEqual({ hits: 0, misses: 0, collapsed: 0, bytes_served: 0, bytes_fetched: 0, savings: 0 });
    expect(countCache({ cache: { hits: Number.NaN }, patch: { slice_hits: "3" } })).toMatchObject({ hits: 0 });
  });

  test("/healthz, /api/stats and /metrics report the same hits, misses and bytes for the same totals", async () => {
    const dir = tmp("agate-counts-");
    const t = totals();
    const health: HealthReport = {
      status: "ok", health: "Normal", reasons: [], workers: { alive: 1, total: 1 }, uptime_s: 1, active_tunnels: 0, open_connections: 0,
      ports: { proxy: 1, cache: 2 }, ca: null, patch_volume: null, cache: cacheHealth(t, 1), // the supervisor's own counting
    };
    const stats: StatsReport = { totals: t, unique_ips_60m: 0, active_agents_60m: 1, open_connections: 0, workers: [], connections_over_time: [], cache_objects: [] };
    const deps = {
      config: parseConfig({ gateway: { data_dir: dir }, admin: { port: 0, token: "test-token-0123456789abcdef" } }),
      ports: { proxy: 1, cache: 2 }, startedAt: 0, draining: false, token: "test-token-0123456789abcdef", ca: null, configPath: null, dataDir: dir,
      health: () => health, stats: () => stats, recentLogs: () => [], reloadFromFile: async () => ({ ok: true }), apply: async () => {},
      setConfigPath: () => {}, crashWorker: () => false, onClientIps: () => {},
    } satisfies AdminDeps;
    const ctx = makeAdminContext(deps);
    try {
      const ask = (path: string) => handleApi(new Request(`http://127.0.0.1${path}`, { headers: { authorization: "Bearer test-token-0123456789abcdef" } }), deps, ctx, "127.0.0.1");
      const h = await (await ask("/healthz")).json();
      const s = await (await ask("/api/stats")).json();
      const m = await (await ask("/metrics")).text();
      const metric = (name: string) => Number(new RegExp(`^${name.replace(/[{}"]/g, "\\$&")} (\\d+)$`, "m").exec(m)?.[1]);
      const fromHealth = { hits: h.cache.hits, misses: h.cache.misses, served: h.cache.bytes_served, fetched: h.cache.bytes_fetched };
      const fromStats = { hits: s.cache.hits, misses: s.cache.misses, served: s.cache.served_bytes, fetched: s.cache.fetched_bytes };
      const fromMetrics = {
        hits: metric('agate_cache_requests_total{result="hit"}'),
        misses: metric('agate_cache_requests_total{result="miss"}'),
        served: metric('agate_cache_bytes_total{kind="served"}'),
        fetched: metric('agate_cache_bytes_total{kind="fetched"}'),
      };
      expect(fromHealth).toEqual({ hits: 12, misses: 5, served: 5700, fetched: 2300 });
      expect(fromStats).toEqual(fromHealth);
      expect(fromMetrics).toEqual(fromHealth);
      expect(h.cache.savings).toBe(3400);
    } finally {
      ctx.close();
    }
  });
});

describe("statuses of errors that reach the admin API", () => {
  const TOKEN = "test-token-0123456789abcdef";
  const withApi = async (apply: AdminDeps["apply"], run: (put: (body: unknown) => Promise<Response>) => Promise<void>) => {
    const dir = tmp("agate-status-");
    const health = { status: "ok", health: "Normal", reasons: [], workers: { alive: 1, total: 1 }, uptime_s: 1, active_tunnels: 0, open_connections: 0, ports: { proxy: 1, cache: 2 }, ca: null, patch_volume: null, cache: null } satisfies HealthReport;
    const deps = {
      config: parseConfig({ gateway: { data_dir: dir }, admin: { port: 0, token: TOKEN } }),
      ports: { proxy: 1, cache: 2 }, startedAt: 0, draining: false, token: TOKEN, ca: null, configPath: null, dataDir: dir,
      health: () => health, stats: (): StatsReport => ({ totals: emptyCounters(), unique_ips_60m: 0, active_agents_60m: 0, open_connections: 0, workers: [], connections_over_time: [], cache_objects: [] }), recentLogs: () => [], reloadFromFile: async () => ({ ok: true }) as const, apply,
      setConfigPath: () => {}, crashWorker: () => false, onClientIps: () => {},
    } satisfies AdminDeps;
    const ctx = makeAdminContext(deps);
    try {
      await run((body) => handleApi(new Request("http://127.0.0.1/api/config", { method: "PUT", headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) }), deps, ctx, "127.0.0.1"));
    } finally {
      ctx.close();
    }
  };

  test("a ProxyError keeps its code and gets its status from statusFor", async () => {
    const e = new ProxyError("PX_DRAINING", "internal", "shutting down");
    await withApi(async () => { throw e; }, async (put) => {
      const r = await put({ proxy: { port: 1081 } });
      expect({ status: r.status, body: await r.json() }).toEqual({ status: statusFor(e), body: { error: "shutting down", code: "PX_DRAINING" } });
      expect(r.status).toBe(503);
    });
  });

  test("a CA that does not check out is a refused config value naming tls.ca_cert (400), not an internal 500", async () => {
    await withApi(async () => { throw new ProxyError("PX_CA_INVALID", "internal", "customer CA: the key file holds no private key"); }, async (put) => {
      const r = await put({ proxy: { port: 1081 } });
      expect(r.status).toBe(400);
      expect(await r.json()).toEqual({ error: "tls.ca_cert: customer CA: the key file holds no private key", field: "tls.ca_cert" });
    });
  });
});
