/**
 * @module What the management plane needs from the rest of the gateway, as types only: `AdminDeps` (status, stats,
 * config get/apply/reload, the active CA, workers, logs) and the reports it answers with. The supervisor implements
 * it and `main.ts` hands the supervisor to `startAdminServer`, so the admin plane never imports the supervisor
 * (STYLE module map: neither imports the other; `test/unit/layering.test.ts` checks it).
 */
import type { Config } from "../core/config";
import type { CacheCounts } from "../core/cache-counts";
import type { WorkerCounters } from "../workers/protocol";
import type { CaPems } from "../store/ca-store";
import type { ObjectReport } from "../store/cache/report";

/** The ports the workers listen on (the chosen ones when the config says 0). The admin plane adds its own. */
export type ServicePorts = { proxy: number; cache: number };
export type Ports = ServicePorts & { admin: number };

export type HealthReport = {
  status: "ok" | "degraded" | "draining" | "down";
  health: "Normal" | "Degraded" | "Down";
  reasons: string[];
  workers: { alive: number; total: number };
  uptime_s: number;
  active_tunnels: number;
  open_connections: number;
  ports: ServicePorts;
  ca: { kind: string; common_name: string; not_after: string; expires_in_days: number | null } | null;
  patch_volume: { path: string; size: number; used: number; free: number } | null;
  /** `countCache` of the totals (the same numbers as /api/stats and /metrics), plus agents seen in 60 minutes */
  cache: (CacheCounts & { active_agents_60m: number }) | null;
};

export type StatsReport = {
  totals: WorkerCounters;
  unique_ips_60m: number;
  active_agents_60m: number;
  open_connections: number;
  workers: { index: number; alive: boolean; starts: number; counters: WorkerCounters | null }[];
  connections_over_time: { t: number; n: number }[];
  /** per object: the cache's top objects by bytes served */
  cache_objects: ObjectReport[];
};

export type AdminDeps = {
  readonly config: Config;
  readonly ports: ServicePorts;
  readonly startedAt: number;
  readonly draining: boolean;
  readonly token: string;
  readonly ca: CaPems | null;
  readonly configPath: string | null;
  readonly dataDir: string;
  health(): HealthReport;
  stats(): StatsReport;
  recentLogs(): string[];
  reloadFromFile(): Promise<{ ok: true } | { ok: false; error: string }>;
  /** Validate and apply live; throws ConfigError (or a ProxyError for a CA that does not check out) and keeps the old. */
  apply(next: Config): Promise<void>;
  /** The config file changes when a gateway started on the defaults first saves its config. */
  setConfigPath(path: string): void;
  crashWorker(index: number): boolean;
  /** Client IPs as the workers report them (every second), for the persisted 7-day series. */
  onClientIps(cb: (port: "proxy" | "cache", ips: string[], now: number) => void): void;
};
