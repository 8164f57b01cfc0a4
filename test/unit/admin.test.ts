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
  test("opens with its one-time password and not with another", () => {
    const pw = makeOneTimePassword();
    expect(pw).toMatch(/^([2-9A-HJ-NP-Z]{4}-){9}[2-9A-HJ-NP-Z]{4}$/);
    const sealed = sealArchive({ hello: "world", n: [1, 2] }, pw);
    expect(Buffer.from(sealed).includes(Buffer.from("world"))).toBe(false);
    expect(openArchive(sealed, pw)).toEqual({ hello: "world", n: [1, 2] });
    expect(() => openArchive(sealed, makeOneTimePassword())).toThrow("wrong password");
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
