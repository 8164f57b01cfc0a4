/**
 * @module The supervisor (main thread): owns the config, the worker pool and the aggregated stats, and implements
 * `AdminDeps` (admin/deps.ts) for the management plane, which `main.ts` starts with it; the two never import each
 * other. Reload (SIGHUP or the admin API) validates first and keeps the old config on error; SIGTERM drains: health
 * turns 503 at once, listeners close, tunnels get `gateway.drain_grace_s`.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, appendFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { type Config, parseConfig } from "../core/config";
import { ConfigError } from "../core/errors";
import { countCache } from "../core/cache-counts";
import { BucketSeries, UniqueWindow } from "../core/stats-window";
import { Pool } from "./pool";
import { STORE_WRITES_SLOT, type WorkerCounters, type WorkerToSupervisor, emptyCounters } from "../workers/protocol";
import { shareWriteCount } from "../store/cache/index-db";
import { log, setLogSink } from "../log";
import type { AdminDeps, HealthReport, ServicePorts } from "../admin/deps";
import { loadActiveCa, type CaPems } from "../store/ca-store";
import { Store } from "../store/cache/store";
import { cacheBudget, cacheDir, patchDir } from "../store/cache/paths";
import { checkPatchVolume, patchBudget, volumeInfo } from "../store/patch-volume";
import { topObjects } from "../store/cache/report";
import { type CacheOps, makeCacheOps } from "./cache-ops";
import { DEFAULT_LOG_LIMITS, rotateLogFile } from "../store/log-store";
import { HealthMonitor } from "./health-monitor";
import { startAgentCheck } from "./agent-check";
import { FleetMonitor } from "../fleet/heartbeat";
import { FleetShare } from "../fleet/share";
import { loadLayered } from "../store/config-files";
import { checkApplicable } from "./preflight";
import { addHistograms } from "../core/histogram";
import { sinceBaseline, snapshot } from "./counters-baseline";

const HOUR = 3600_000;
const LOG_RING = 5000;

export type { HealthReport, StatsReport } from "../admin/deps";
export type Ports = ServicePorts;

/** AdminDeps, plus what only `main.ts` uses: the pool, the worker count, a CA change, and the drain. */
export type Supervisor = AdminDeps & {
  readonly ports: Ports;
  readonly workerCount: number;
  pool: Pool;
  /** Make `pems` the active CA (an assigned certificate): new handshakes use it at once, no restart. */
  setCa(pems: CaPems): void;
  /** Stop accepting, give open connections `gateway.drain_grace_s`, stop the workers, flush the log file. */
  drain(): Promise<void>;
};

function addCounters(into: WorkerCounters, c: WorkerCounters, withActive: boolean) {
  if (withActive) {
    into.activeTunnels += c.activeTunnels;
    into.activeConnections += c.activeConnections;
  }
  into.totalTunnels += c.totalTunnels;
  into.bytesUp += c.bytesUp;
  into.bytesDown += c.bytesDown;
  for (const [k, v] of Object.entries(c.refusals)) into.refusals[k] = (into.refusals[k] ?? 0) + v;
  for (const [k, v] of Object.entries(c.errors)) into.errors[k] = (into.errors[k] ?? 0) + v;
  if (c.durations) addHistograms((into.durations ??= {}), c.durations);
  if (c.cache) {
    into.cache ??= {};
    for (const [k, v] of Object.entries(c.cache)) into.cache[k] = (into.cache[k] ?? 0) + v;
  }
  if (c.cacheHosts) {
    into.cacheHosts ??= {};
    for (const [h, x] of Object.entries(c.cacheHosts)) {
      const t = (into.cacheHosts[h] ??= { hits: 0, misses: 0, bypass: 0 });
      t.hits += x.hits;
      t.misses += x.misses;
      t.bypass += x.bypass;
    }
  }
  if (c.patch) {
    into.patch ??= {};
    for (const [k, v] of Object.entries(c.patch)) {
      if (typeof v === "number") into.patch[k] = ((into.patch[k] as number) ?? 0) + v;
      else {
        const hosts = (into.patch[k] ??= {}) as Record<string, { fetched: number; served: number }>;
        for (const [h, x] of Object.entries(v)) {
          const t = (hosts[h] ??= { fetched: 0, served: 0 });
          t.fetched += x.fetched;
          t.served += x.served;
        }
      }
    }
  }
}

/** Health's cache block: the one counting (`countCache`, as /api/stats and /metrics), plus agents seen in 60 minutes. */
export function cacheHealth(t: WorkerCounters, activeAgents60m: number): NonNullable<HealthReport["cache"]> {
  return { ...countCache(t), active_agents_60m: activeAgents60m };
}

/** Read and validate a TOML config file; errors name the file, the key and the rule. */
export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError("(file)", `cannot read ${path}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = Bun.TOML.parse(text);
  } catch (e) {
    throw new ConfigError("(file)", `${path} is not valid TOML: ${(e as Error).message}`);
  }
  return parseConfig(raw);
}

/** Port 0 means "any free port": pick one here so that every worker binds the same one. */
function pickFreePort(hostname: string): number {
  const l = Bun.listen({ hostname, port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

function resolvePorts(c: Config, prev?: { config: Config; ports: Ports }): { proxy: number; cache: number } {
  const keep = (k: "proxy" | "cache") =>
    prev && prev.config[k].port === c[k].port && prev.config[k].listen === c[k].listen && prev.ports[k] !== 0 ? prev.ports[k] : 0;
  const proxy = c.proxy.port || keep("proxy") || pickFreePort(c.proxy.listen);
  const cache = c.cache.enabled ? c.cache.port || keep("cache") || pickFreePort(c.cache.listen) : 0;
  return { proxy, cache };
}

/** The admin token: from the config, or generated once into the data directory (mode 0600). */
function loadToken(c: Config): string {
  if (c.admin.token) return c.admin.token;
  const path = join(c.gateway.data_dir, "admin.token");
  if (existsSync(path)) return readFileSync(path, "utf8").trim();
  const t = randomBytes(24).toString("base64url");
  writeFileSync(path, t + "\n", { mode: 0o600 });
  chmodSync(path, 0o600);
  return t;
}

export async function startSupervisor(opts: { config: Config; configPath: string | null }): Promise<Supervisor> {
  let config = opts.config;
  // Patch mode needs its volume; without it the gateway says why and runs proxy and cache mode only.
  let patchRefused: string | null = null;
  if (config.patch.enabled) {
    const v = checkPatchVolume(config);
    if (!v.ok) {
      patchRefused = v.reason;
      config = Object.freeze({ ...config, patch: Object.freeze({ ...config.patch, enabled: false }) });
    }
  }
  const dataDir = resolve(config.gateway.data_dir);
  mkdirSync(join(dataDir, "logs"), { recursive: true });

  // Logs: stdout and the log file, plus a ring for the admin API.
  const logPath = join(dataDir, "logs", "agate.log");
  const ring: string[] = [];
  let pendingFile: string[] = [];
  // The ring may hold up to twice LOG_RING before it is cut back (one splice per LOG_RING lines, not a 5,000-slot
  // move per line); readers get the last LOG_RING.
  const keep = (line: string) => {
    ring.push(line);
    if (ring.length > 2 * LOG_RING) ring.splice(0, ring.length - LOG_RING);
    pendingFile.push(line);
  };
  const writeLine = (line: string) => {
    process.stdout.write(line + "\n");
    keep(line);
  };
  /** a worker's batch: one stdout write for all of its lines */
  const writeLines = (lines: string[]) => {
    if (lines.length === 0) return;
    process.stdout.write(lines.join("\n") + "\n");
    for (const l of lines) keep(l);
  };
  const flushFile = () => {
    if (!pendingFile.length) return;
    const chunk = pendingFile.join("\n") + "\n";
    pendingFile = [];
    try {
      appendFileSync(logPath, chunk);
      // by size into agate.log.1…N, oldest removed before the disk or gateway.log_cap_bytes fills
      rotateLogFile(logPath, { ...DEFAULT_LOG_LIMITS, capBytes: config.gateway.log_cap_bytes });
    } catch {
      // TODO: surface a full disk in health; logs must never take the gateway down.
    }
  };
  setLogSink(writeLine, "supervisor");

  let token = loadToken(config);
  let baseline: WorkerCounters | null = null; // totals at the last reset: stats since then (counters-baseline.ts)
  // The active CA: needed by cache mode, and served at /ca.pem for agents to install.
  let ca: CaPems | null = await loadActiveCa(config);
  const startedAt = Date.now();
  let draining = false;
  const workerCount = config.gateway.workers || navigator.hardwareConcurrency || 1;
  let ports = resolvePorts(config);

  const latest: (WorkerCounters | null)[] = Array.from({ length: workerCount }, () => null);
  const retired = emptyCounters();
  const proxyIps = new UniqueWindow(HOUR);
  const cacheIps = new UniqueWindow(HOUR);
  const series = new BucketSeries(60_000, 60);

  const ipListeners: ((port: "proxy" | "cache", ips: string[], now: number) => void)[] = [];
  let configPath = opts.configPath;
  let fleetShare: FleetShare | null = null; // [fleet] share_cache: made with the fleet below, after the workers start
  const onMessage = (m: WorkerToSupervisor) => {
    switch (m.t) {
      case "ready":
        healthMon.onReady(m.index); // a (re)started worker gets the current /healthz answer
        fleetShare?.onReady(m.index); // ...and the live cache sharers
        return;
      case "listen-error":
        log("error", "worker cannot listen", { worker: m.index, error: m.message });
        return;
      case "stats": {
        latest[m.index] = m.counters;
        const now = Date.now();
        healthMon.onStats(m.index, m, now);
        for (const ip of m.proxyIps) {
          proxyIps.add(ip, now);
          series.add(ip, now);
        }
        for (const ip of m.cacheIps) cacheIps.add(ip, now);
        for (const cb of ipListeners) {
          if (m.proxyIps.length) cb("proxy", m.proxyIps, now);
          if (m.cacheIps.length) cb("cache", m.cacheIps, now);
        }
        return;
      }
      case "log":
        writeLines(m.lines);
        return;
      case "drained":
      case "config-applied": // the pool keeps the acks (pool.confirm)
        return;
      case "prefill-progress":
        cacheOps.onProgress(m);
        return;
      default: {
        const never: never = m;
        return never;
      }
    }
  };
  const onExit = (index: number) => {
    const last = latest[index];
    if (last) addCounters(retired, last, false);
    latest[index] = null;
    healthMon.onWorkerExit(index);
    cacheOps.onWorkerExit(index);
  };

  if (config.cache.enabled) {
    // Crash leftovers (temp files, dead fills, index rows without blobs) are repaired once, before any worker opens the store.
    // staleMs 0: no worker runs yet, so every 'filling' row and temp file belongs to the previous (dead) process.
    const st = Store.open(cacheDir(config), { maxBytes: cacheBudget(config), owner: `${process.pid}:supervisor`, recover: true, staleMs: 0 });
    const r = st.recovery;
    if (r.tmpFiles || r.fills || r.rows || r.blobs) log("warn", "cache store repaired after a crash", { ...r });
    st.close();
  }
  if (patchRefused) log("error", "patch mode not enabled", { reason: patchRefused });
  if (config.patch.enabled) {
    const st = Store.open(patchDir(config), { maxBytes: patchBudget(config), owner: `${process.pid}:supervisor`, recover: true, staleMs: 0 });
    const r = st.recovery;
    if (r.tmpFiles || r.fills || r.rows || r.blobs) log("warn", "patch store repaired after a crash", { ...r });
    st.close();
  }
  const pool = new Pool(config, ports, ca, workerCount, { onMessage, onExit });
  // this thread's index writes (purge, usage reports, recovery on a config change) count where the workers look
  shareWriteCount(pool.adm, STORE_WRITES_SLOT);
  // Health that means "can serve agents" (core/health.ts): the facts, the platform link, maintenance.
  const healthMon = new HealthMonitor({ dataDir, workerCount, pool, getConfig: () => config, getCa: () => ca, isDraining: () => draining, getPatchRefused: () => patchRefused });
  const cacheOps: CacheOps = makeCacheOps({ config: () => config, pool });
  pool.start();

  // Wait for the workers to listen (or fail) before announcing the ports.
  const deadline = Date.now() + 10_000;
  while (pool.alive() < workerCount && Date.now() < deadline) await Bun.sleep(10);
  if (pool.alive() === 0) {
    await pool.terminate(200);
    throw new Error(`no worker could listen on ${config.proxy.listen}:${ports.proxy}; see the log above`);
  }

  const timers = [setInterval(flushFile, 200)];
  healthMon.start();
  const agentCheck = startAgentCheck(() => config, () => healthMon.decide(), () => pool.openConnections());
  // The fleet (issue 14): heartbeats to [fleet] peers; their status never enters this gateway's own health.
  const fleet = new FleetMonitor(() => config);
  fleet.apply(config);
  fleetShare = new FleetShare(fleet, () => config, pool); // share_cache: the live sharers, pushed to the workers

  const totals = (): WorkerCounters => {
    const t = emptyCounters();
    addCounters(t, retired, false);
    for (const c of latest) if (c) addCounters(t, c, true);
    return sinceBaseline(t, baseline);
  };

  const sup: Supervisor = {
    get config() {
      return config;
    },
    get ports() {
      return { ...ports };
    },
    workerCount,
    startedAt,
    get draining() {
      return draining;
    },
    get token() {
      return token;
    },
    resetStats() {
      baseline = null;
      baseline = snapshot(totals());
      proxyIps.clear();
      cacheIps.clear();
      series.clear();
    },
    resetToken() {
      if (config.admin.token) return null; // the admin's file sets it: not ours to change
      rmSync(join(dataDir, "admin.token"), { force: true });
      token = loadToken(config); // a new one, written mode 0600
      return token;
    },
    get ca() {
      return ca;
    },
    pool,
    health() {
      const alive = pool.alive();
      const now = Date.now();
      const d = draining ? healthMon.decide(now) : healthMon.push(); // decided by core/health.ts
      const caDays = ca ? Math.floor((ca.notAfter - now) / 86_400_000) : null;
      let patch: { path: string; size: number; used: number; free: number } | null = null;
      if (config.patch.enabled && config.patch.volume) {
        try {
          patch = volumeInfo(config.patch.volume);
        } catch {
          patch = null; // the patch volume's own problem is in d.problems (not writable / no space)
        }
      }
      const t = totals();
      const m = healthMon.maintenance;
      return {
        status: draining ? "draining" : d.health === "Down" ? "down" : d.health === "Degraded" ? "degraded" : "ok",
        health: d.health,
        reasons: d.problems.map((p) => p.text),
        problems: d.problems,
        agent_ports: d.ports,
        platform: healthMon.link.report(),
        maintenance: { on: m.on, since: m.since ? new Date(m.since).toISOString() : null },
        workers: { alive, total: workerCount },
        uptime_s: Math.round((now - startedAt) / 1000),
        active_tunnels: t.activeTunnels,
        open_connections: pool.openConnections(),
        ports: sup.ports,
        ca: ca && { kind: ca.kind, common_name: ca.commonName, not_after: new Date(ca.notAfter).toISOString(), expires_in_days: caDays },
        patch_volume: patch,
        cache: config.cache.enabled ? cacheHealth(t, cacheIps.count(now)) : null,
      };
    },
    stats() {
      const now = Date.now();
      return {
        totals: totals(),
        unique_ips_60m: proxyIps.count(now),
        active_agents_60m: cacheIps.count(now),
        open_connections: pool.openConnections(),
        workers: pool.workerStates().map((w) => ({ ...w, counters: latest[w.index] ?? null })),
        connections_over_time: series.series(now),
        cache_objects: config.cache.enabled ? topObjects(cacheDir(config)) : [],
      };
    },
    recentLogs: () => ring.slice(-LOG_RING),
    async reloadFromFile() {
      try {
        const next = loadLayered(configPath).config; // the file, and the admin API's overlay on top
        await sup.apply(next);
        log("info", "config reloaded", { file: configPath, overlay: join(dataDir, "agate.auto.toml") });
        return { ok: true };
      } catch (e) {
        const error = (e as Error).message;
        log("error", "config reload failed; keeping the running config", { file: configPath, error });
        return { ok: false, error };
      }
    },
    async apply(next: Config) {
      checkApplicable(next, { config, ports }); // ports free and permitted, named files readable (preflight.ts)
      if (next.patch.enabled) {
        const v = checkPatchVolume(next);
        if (!v.ok) throw new ConfigError(v.key, v.reason);
      }
      const nextCa = await loadActiveCa(next); // a CA that does not check out keeps the running config
      const nextPorts = resolvePorts(next, { config, ports });
      config = next;
      ports = nextPorts;
      ca = nextCa;
      pool.setConfig(next, nextPorts, nextCa);
      patchRefused = null;
      agentCheck.apply(next);
      fleet.apply(next);
      healthMon.push();
      const w = await pool.confirm(); // the answer waits for the workers' switch (bounded): "applied" means applied
      if (!w.confirmed) log("warn", "config applied; a worker did not confirm", { reason: w.reason });
    },
    confirmWorkers: () => pool.confirm(),
    setCa(pems: CaPems) {
      ca = pems;
      pool.setConfig(config, ports, pems);
      log("info", "active CA changed", { kind: pems.kind, common_name: pems.commonName });
    },
    get configPath() {
      return configPath;
    },
    setConfigPath(path: string) {
      configPath = path;
    },
    onClientIps(cb) {
      ipListeners.push(cb);
    },
    dataDir,
    async drain() {
      if (draining) return;
      draining = true;
      const grace = config.gateway.drain_grace_s * 1000;
      log("info", "draining", { grace_s: config.gateway.drain_grace_s, open: pool.openConnections() });
      pool.stopAccepting();
      const end = Date.now() + grace;
      while (Date.now() < end && pool.openConnections() > 0) await Bun.sleep(50);
      log("info", "stopped", { open_at_exit: pool.openConnections() });
      await pool.terminate(1000);
      flushFile();
      for (const t of timers) clearInterval(t);
      healthMon.stop();
      agentCheck.stop();
      fleet.stop();
    },
    setMaintenance(on: boolean) {
      const m = healthMon.setMaintenance(on);
      return { on: m.on, since: m.since ? new Date(m.since).toISOString() : null };
    },
    crashWorker(index: number) {
      if (index < 0 || index >= workerCount) return false;
      pool.send(index, { t: "crash" });
      return true;
    },
    cacheUsage: (withObjects = true) => cacheOps.usage(totals(), withObjects),
    purgeCache: (sel) => cacheOps.purge(sel),
    startPrefill: (urls) => cacheOps.startPrefill(urls),
    prefillJobs: () => cacheOps.prefillJobs(),
    fleet: () => ({ ...fleet.report(), share_peers: fleetShare?.current()?.peers.map((p) => p.name) ?? null }),
    isFleetPeer: (addr) => fleet.isPeerAddr(addr),
  };

  return sup;
}
