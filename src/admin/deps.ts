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
import type { AgentPort, HealthProblem, PortVerdict } from "../core/health";
import type { FleetStatus } from "../core/fleet";

/** The platform link (supervisor/platform-link.ts): per host and overall, for /api/status, the dashboard, /metrics. */
export type LinkStatus = "Connected" | "Not connected" | "Unknown";
export type HostLink = {
  host: string;
  port: number;
  status: LinkStatus;
  /** ISO time of the last success (a probe or real traffic), null: never since start */
  connected_on: string | null;
  last_error: { hop: string; reason: string; status?: number; at: string } | null;
  latency_ms: number | null;
  via: "direct" | "upstream";
};
export type PlatformLinkReport = {
  status: LinkStatus;
  pod: string;
  connected_on: string | null;
  last_error: { host: string; hop: string; reason: string; at: string } | null;
  probe_interval_s: number;
  last_probe_at: string | null;
  /** what the last round cost: wall time and the supervisor's CPU time (process.cpuUsage) */
  last_round: { ms: number; cpu_ms: number; hosts: number } | null;
  rounds: number;
  hosts: HostLink[];
};
import type { CacheUsage, PrefillJob, PurgeResult, PurgeSelector } from "../core/cache-ops";

/** The ports the workers listen on (the chosen ones when the config says 0). The admin plane adds its own. */
export type ServicePorts = { proxy: number; cache: number };
export type Ports = ServicePorts & { admin: number };

export type HealthReport = {
  status: "ok" | "degraded" | "draining" | "down";
  health: "Normal" | "Degraded" | "Down";
  reasons: string[];
  /** every reason as a value (core/health.ts), with its severity and the agent ports it affects */
  problems: HealthProblem[];
  /** what each agent port's own GET /healthz answers now */
  agent_ports: Record<AgentPort, PortVerdict>;
  platform: PlatformLinkReport;
  maintenance: { on: boolean; since: string | null };
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
  /** Whether every live worker confirmed the current config (waits, bounded): what "applied" may claim (issue 14). */
  confirmWorkers?(): Promise<{ confirmed: true } | { confirmed: false; reason: string }>;
  /** The config file changes when a gateway started on the defaults first saves its config. */
  setConfigPath(path: string): void;
  crashWorker(index: number): boolean;
  /** Maintenance mode (issue 10): persisted in data_dir; health 503 everywhere, new connections refused. */
  setMaintenance(on: boolean): { on: boolean; since: string | null };
  /** The cache store's usage (GET /api/cache); `withObjects` false skips the largest / most served lists. */
  cacheUsage(withObjects?: boolean): CacheUsage;
  /** Remove what the selector names from the store(s); throws what the store throws (PX_STORE_*). */
  purgeCache(sel: PurgeSelector): PurgeResult;
  /** Start a prefill job on a live worker, or say why not (409 cache off, 503 no live worker). */
  startPrefill(urls: string[]): { ok: true; job: PrefillJob } | { ok: false; status: 409 | 503; error: string };
  /** Prefill jobs, newest first. */
  prefillJobs(): PrefillJob[];
  /** Reset: counters, windows and series start from zero (the workers' monotonic counters are offset). */
  resetStats(): void;
  /** Reset: a new generated admin token (file mode 0600), returned; null when the config file sets the token. */
  resetToken(): string | null;
  /** Client IPs as the workers report them (every second), for the persisted 7-day series. */
  onClientIps(cb: (port: "proxy" | "cache", ips: string[], now: number) => void): void;
  /** The peers as the heartbeats see them (src/fleet/heartbeat.ts); absent: no fleet (test doubles). */
  fleet?(): FleetPeersReport;
  /** Whether a caller's address is one of `[fleet] peers` (their hosts, resolved): the self route's second door. */
  isFleetPeer?(addr: string): boolean;
};

/** What a gateway says about itself to its peers (GET /api/fleet/self) and is shown as in the fleet view (issue 14). */
export type FleetMember = {
  name: string;
  location: string;
  version: string;
  health: "Normal" | "Degraded" | "Down";
  reasons: string[];
  platform: { status: LinkStatus; connected_on: string | null };
  active_agents_60m: number;
  active_agents_24h: number;
  savings_30d: { served_bytes: number; fetched_bytes: number; saved_bytes: number };
  open_connections: number;
  /** proxy.max_connections: what open_connections is measured against */
  capacity: number;
  uptime_s: number;
  /** `[fleet] share_cache` on with cache mode: where its cache port is and the root its leaves chain to (src/fleet/share.ts) */
  share?: { cache_port: number; ca_pem: string } | null;
};

/** One row of the fleet view: a peer (its last report, null before it ever answered) or this gateway itself. */
export type FleetRow = {
  /** "host:port" as in [fleet] peers, or "self" */
  peer: string;
  self: boolean;
  status: FleetStatus;
  last_heartbeat: string | null;
  missed_heartbeats: number;
  last_error: string | null;
  member: FleetMember | null;
};

export type FleetPeersReport = {
  peers: FleetRow[];
  heartbeat_s: number;
  missed_heartbeats: number;
  /** webhook notices: sent, failed for good, waiting for a retry; the URL is not shown (it often holds a secret) */
  webhook: { configured: boolean; sent: number; failed: number; pending: number; last_error: string | null };
  /** share_cache: the names of the peers this gateway's workers now route misses to (null: sharing is off) */
  share_peers?: string[] | null;
};
