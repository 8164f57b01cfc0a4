/**
 * @module What the management plane keeps between requests: the failure throttle, the audit log, the persisted
 * stats series (sampled from the supervisor every SAMPLE_MS), the uploaded certificates, the one-time diagnostics
 * archives, and the periodic log clean-up. Made when the admin server starts, closed when it stops.
 */
import { join } from "node:path";
import type { Supervisor, StatsReport } from "../supervisor/supervisor";
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
 * Bytes served to agents by the cache layers and bytes they fetched from origins, with hits and misses: the cache
 * port's (`workers/fill.ts`: bytes_served, bytes_fetched, hits, misses) plus patch mode's (`workers/patch.ts`:
 * bytes_served, bytes_fetched, slice_hits, slice_misses), from the supervisor's totals (which include workers that
 * have exited). Savings = served − fetched.
 */
export function cacheCounters(s: StatsReport): { served_bytes: number; fetched_bytes: number; hits: number; misses: number } {
  const c = (s.totals.cache ?? {}) as Record<string, number>;
  const p = (s.totals.patch ?? {}) as Record<string, unknown>;
  const n = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  return {
    served_bytes: n(c.bytes_served) + n(p.bytes_served),
    fetched_bytes: n(c.bytes_fetched) + n(p.bytes_fetched),
    hits: n(c.hits) + n(p.slice_hits),
    misses: n(c.misses) + n(p.slice_misses),
  };
}

export function makeAdminContext(sup: Supervisor): AdminContext {
  const dataDir = sup.dataDir;
  const ctx: AdminContext = {
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
        const s = sup.stats();
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
  sup.onClientIps((port, ips, now) => ctx.stats.recordIps(port, ips, now));
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
