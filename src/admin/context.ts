/**
 * @module What the management plane keeps between requests: the failure throttle, the audit log, the persisted
 * stats series (sampled from the supervisor every SAMPLE_MS), the uploaded certificates, the one-time diagnostics
 * archives, and the periodic log clean-up. Made when the admin server starts, closed when it stops.
 */
import { join } from "node:path";
import type { AdminDeps, StatsReport } from "./deps";
import { countCache } from "../core/cache-counts";
import { StatsDb, type CounterSample } from "../store/stats-db";
import { CertDb } from "../store/cert-db";
import { cleanLogs } from "../store/log-store";
import { AuditLog, FailureThrottle } from "./guard";
import { log } from "../log";

export const SAMPLE_MS = 10_000;
const CLEAN_MS = 60_000;
/** A diagnostics archive waits this long for its one download. */
export const ARCHIVE_TTL_MS = 15 * 60_000;

export type Archive = { bytes: Uint8Array; expires: number; name: string };

export type AdminContext = {
  /** the management port, once it listens (the config may say 0); the admin plane adds it to the ports it reports */
  port: number;
  throttle: FailureThrottle;
  audit: AuditLog;
  stats: StatsDb;
  certs: CertDb;
  archives: Map<string, Archive>;
  /** log lines older than this are hidden (a reset removes logs; the supervisor's ring outlives it) */
  logsSince: number;
  logPath: string;
  /** one config change at a time */
  configLock: Promise<unknown>;
  lastSample: number;
  sampleNow(): void;
  /** after a reset: close and reopen the stores whose files were removed */
  reopenStores(): void;
  closeStores(): void;
  close(): void;
};

/**
 * /api/stats' `cache` block and the persisted samples: `countCache` of the supervisor's totals (which include
 * workers that have exited), the same counting as health and /metrics. Savings = served − fetched.
 */
export function cacheCounters(s: StatsReport): { served_bytes: number; fetched_bytes: number; hits: number; misses: number } {
  const c = countCache(s.totals);
  return { served_bytes: c.bytes_served, fetched_bytes: c.bytes_fetched, hits: c.hits, misses: c.misses };
}

export function makeAdminContext(deps: AdminDeps): AdminContext {
  const dataDir = deps.dataDir;
  const ctx: AdminContext = {
    port: deps.config.admin.port,
    throttle: new FailureThrottle(),
    audit: new AuditLog(join(dataDir, "audit.log")),
    stats: new StatsDb(join(dataDir, "stats.db")),
    certs: new CertDb(dataDir),
    archives: new Map(),
    logsSince: 0,
    logPath: join(dataDir, "logs", "agate.log"),
    configLock: Promise.resolve(),
    lastSample: 0,
    sampleNow() {
      ctx.lastSample = Date.now();
      try {
        const s = deps.stats();
        const c = cacheCounters(s);
        const sample: CounterSample = { tunnels: s.totals.totalTunnels, served: c.served_bytes, fetched: c.fetched_bytes, hits: c.hits, misses: c.misses };
        ctx.stats.sample(Date.now(), sample);
      } catch (e) {
        log("warn", "stats sample failed", { error: (e as Error).message });
      }
    },
    reopenStores() {
      ctx.stats = new StatsDb(join(dataDir, "stats.db"));
      ctx.certs = new CertDb(dataDir);
    },
    closeStores() {
      ctx.stats.close();
      ctx.certs.close();
    },
    close() {
      clearInterval(sampler);
      clearInterval(cleaner);
      ctx.sampleNow();
      ctx.closeStores();
    },
  };
  deps.onClientIps((port, ips, now) => ctx.stats.recordIps(port, ips, now));
  const sampler = setInterval(() => ctx.sampleNow(), SAMPLE_MS);
  const cleaner = setInterval(() => {
    const now = Date.now();
    try {
      ctx.stats.prune(now);
    } catch {
      // a locked db waits for the next round
    }
    const removed = cleanLogs(ctx.logPath);
    if (removed.length) log("warn", "old log files removed to keep disk space", { removed });
    for (const [id, a] of ctx.archives) if (a.expires < now) ctx.archives.delete(id);
  }, CLEAN_MS);
  return ctx;
}
