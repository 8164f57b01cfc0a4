/**
 * @module The persisted visibility series: `<data_dir>/stats.db` (bun:sqlite, WAL), so that the 7- and 30-day
 * windows of DESIGN "Visibility" survive restarts. The supervisor's own windows are in memory and last 60 minutes;
 * this file keeps what outlives them:
 *   - `agents`: one row per (port, client IP) with its last sighting, for clients served (a tunnel or a cache answer,
 *     never /healthz probes or refused clients) → active agents over 24 hours and total agents over 7 days and
 *     unique client IPs over 7 days (proxy port);
 *   - `series`: per minute and port, distinct client IPs and new connections → the connections-over-time graph;
 *   - `savings`: per hour, bytes served from the cache and bytes fetched for it, hits and misses → 30-day savings.
 * Counters from the workers are monotonic within one process; `sample` turns them into deltas (a counter that went
 * backwards restarted from zero). Time is always passed in (STYLE §2).
 */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

export const SCHEMA_VERSION = 1;
export const MINUTE = 60_000;
export const HOUR = 3_600_000;
export const DAY = 86_400_000;
/** DESIGN: total agents over 7 days. */
export const AGENTS_WINDOW_MS = 7 * DAY;
/** DESIGN: bandwidth savings over 30 days. */
export const SAVINGS_WINDOW_MS = 30 * DAY;
export const SERIES_BUCKET_MS = MINUTE;
/** The graph's rows are kept as long as the agents window. */
const SERIES_KEEP_MS = 7 * DAY;

export type PortKind = "proxy" | "cache";
/** Monotonic counters as the workers report them (summed over workers). */
export type CounterSample = { tunnels: number; served: number; fetched: number; hits: number; misses: number };
export type StatsSummary = {
  /** agents (clients served: a tunnel or a cache-port answer) seen in the last 24 hours: the seed's "Active Agents (24 Hours)" */
  active_agents_24h: number;
  total_agents_7d: number;
  unique_ips_7d: number;
  savings_30d: { served_bytes: number; fetched_bytes: number; saved_bytes: number; hits: number; misses: number };
};
export type SeriesPoint = { t: number; proxy_ips: number; cache_ips: number; connections: number };

const ZERO: CounterSample = { tunnels: 0, served: 0, fetched: 0, hits: 0, misses: 0 };

export class StatsDb {
  private db: Database;
  private prev: CounterSample = { ...ZERO };
  /** IPs seen since the last flush: port → ip → last time */
  private seen: Record<PortKind, Map<string, number>> = { proxy: new Map(), cache: new Map() };
  /** distinct IPs per minute bucket, for buckets not yet final: `${port}:${bucket}` → set */
  private buckets = new Map<string, Set<string>>();

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { create: true });
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 2000;");
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS agents (port TEXT NOT NULL, ip TEXT NOT NULL, last_seen INTEGER NOT NULL, PRIMARY KEY (port, ip));
      CREATE INDEX IF NOT EXISTS agents_seen ON agents (port, last_seen);
      CREATE TABLE IF NOT EXISTS series (bucket INTEGER NOT NULL, port TEXT NOT NULL, ips INTEGER NOT NULL DEFAULT 0,
        connections INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (bucket, port));
      CREATE TABLE IF NOT EXISTS savings (hour INTEGER PRIMARY KEY, served INTEGER NOT NULL DEFAULT 0,
        fetched INTEGER NOT NULL DEFAULT 0, hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0);
    `);
    const v = this.db.query<{ v: string }, []>("SELECT v FROM meta WHERE k = 'schema'").get();
    if (!v) this.db.run("INSERT INTO meta (k, v) VALUES ('schema', ?)", [String(SCHEMA_VERSION)]);
    else if (Number(v.v) !== SCHEMA_VERSION) throw new Error(`${path}: stats schema ${v.v}, this build reads ${SCHEMA_VERSION}`);
  }

  /** Client IPs a worker reported (batched every second). Kept in memory until the next `sample`. */
  recordIps(port: PortKind, ips: readonly string[], now: number) {
    const m = this.seen[port];
    const b = Math.floor(now / SERIES_BUCKET_MS) * SERIES_BUCKET_MS;
    const key = `${port}:${b}`;
    let set = this.buckets.get(key);
    if (!set) this.buckets.set(key, (set = new Set()));
    for (const ip of ips) {
      m.set(ip, now);
      set.add(ip);
    }
  }

  /**
   * Persist what was seen since the last call and the counters' growth. `c` holds monotonic counters; a value
   * lower than the previous one means the counter restarted (a restarted worker or process), so it counts whole.
   */
  sample(now: number, c: CounterSample) {
    const d = {} as CounterSample;
    for (const k of Object.keys(ZERO) as (keyof CounterSample)[]) {
      const cur = c[k] || 0;
      d[k] = cur >= this.prev[k] ? cur - this.prev[k] : cur;
    }
    this.prev = { ...c };
    const bucket = Math.floor(now / SERIES_BUCKET_MS) * SERIES_BUCKET_MS;
    const hour = Math.floor(now / HOUR) * HOUR;
    const upAgent = this.db.prepare("INSERT INTO agents (port, ip, last_seen) VALUES (?, ?, ?) ON CONFLICT (port, ip) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)");
    const upSeries = this.db.prepare(
      "INSERT INTO series (bucket, port, ips, connections) VALUES (?, ?, ?, ?) ON CONFLICT (bucket, port) DO UPDATE SET ips = MAX(ips, excluded.ips), connections = connections + excluded.connections",
    );
    const upSavings = this.db.prepare(
      "INSERT INTO savings (hour, served, fetched, hits, misses) VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour) DO UPDATE SET served = served + excluded.served, fetched = fetched + excluded.fetched, hits = hits + excluded.hits, misses = misses + excluded.misses",
    );
    this.db.transaction(() => {
      for (const port of ["proxy", "cache"] as const) {
        for (const [ip, t] of this.seen[port]) upAgent.run(port, ip, t);
        this.seen[port].clear();
      }
      for (const [key, set] of this.buckets) {
        const [port, b] = key.split(":") as [PortKind, string];
        upSeries.run(Number(b), port, set.size, 0);
        if (Number(b) < bucket) this.buckets.delete(key); // final: later IPs go to newer buckets
      }
      if (d.tunnels) upSeries.run(bucket, "proxy", 0, d.tunnels);
      if (d.served || d.fetched || d.hits || d.misses) upSavings.run(hour, d.served, d.fetched, d.hits, d.misses);
    })();
  }

  /** Drop rows past every window. */
  prune(now: number) {
    this.db.run("DELETE FROM agents WHERE last_seen < ?", [now - AGENTS_WINDOW_MS]);
    this.db.run("DELETE FROM series WHERE bucket < ?", [now - SERIES_KEEP_MS]);
    this.db.run("DELETE FROM savings WHERE hour < ?", [now - SAVINGS_WINDOW_MS - HOUR]);
  }

  summary(now: number): StatsSummary {
    const count = (port: PortKind, windowMs = AGENTS_WINDOW_MS) =>
      this.db.query<{ n: number }, [string, number]>("SELECT COUNT(*) AS n FROM agents WHERE port = ? AND last_seen >= ?").get(port, now - windowMs)!.n;
    // Include IPs seen since the last flush, so a fresh sighting counts at once.
    const pending = (port: PortKind, windowMs = AGENTS_WINDOW_MS) => {
      let n = 0;
      const known = this.db.prepare<{ one: number }, [string, string, number]>("SELECT 1 AS one FROM agents WHERE port = ? AND ip = ? AND last_seen >= ?");
      for (const ip of this.seen[port].keys()) if (!known.get(port, ip, now - windowMs)) n++;
      return n;
    };
    const s = this.db
      .query<{ served: number | null; fetched: number | null; hits: number | null; misses: number | null }, [number]>(
        "SELECT SUM(served) AS served, SUM(fetched) AS fetched, SUM(hits) AS hits, SUM(misses) AS misses FROM savings WHERE hour >= ?",
      )
      .get(Math.floor((now - SAVINGS_WINDOW_MS) / HOUR) * HOUR)!;
    const served = s.served ?? 0, fetched = s.fetched ?? 0;
    return {
      active_agents_24h: count("cache", DAY) + pending("cache", DAY),
      total_agents_7d: count("cache") + pending("cache"),
      unique_ips_7d: count("proxy") + pending("proxy"),
      savings_30d: { served_bytes: served, fetched_bytes: fetched, saved_bytes: Math.max(0, served - fetched), hits: s.hits ?? 0, misses: s.misses ?? 0 },
    };
  }

  /**
   * The graph: `points` buckets ending at `now`, each `spanMs / points` wide; distinct IPs per bucket are the
   * largest per-minute count inside it (distinct IPs do not add up across minutes), connections add up.
   */
  series(now: number, spanMs: number, points: number): SeriesPoint[] {
    const width = Math.max(SERIES_BUCKET_MS, Math.ceil(spanMs / points / SERIES_BUCKET_MS) * SERIES_BUCKET_MS);
    const end = Math.floor(now / width) * width;
    const start = end - (points - 1) * width;
    const out: SeriesPoint[] = [];
    for (let i = 0; i < points; i++) out.push({ t: start + i * width, proxy_ips: 0, cache_ips: 0, connections: 0 });
    const rows = this.db
      .query<{ bucket: number; port: string; ips: number; connections: number }, [number]>("SELECT bucket, port, ips, connections FROM series WHERE bucket >= ?")
      .all(start);
    const put = (bucket: number, port: string, ips: number, conns: number) => {
      const i = Math.floor((bucket - start) / width);
      const p = out[i];
      if (!p) return;
      if (port === "proxy") p.proxy_ips = Math.max(p.proxy_ips, ips);
      else p.cache_ips = Math.max(p.cache_ips, ips);
      p.connections += conns;
    };
    for (const r of rows) put(r.bucket, r.port, r.ips, r.connections);
    for (const [key, set] of this.buckets) {
      const [port, b] = key.split(":");
      put(Number(b), port!, set.size, 0);
    }
    return out;
  }

  close() {
    try {
      this.db.close();
    } catch {
      // already closed
    }
  }
}
