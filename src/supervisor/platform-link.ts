/**
 * @module The platform link (issue 10): every `[platform] probe_interval_s` the supervisor probes the hosts the
 * configured pod has (core/platform-hosts.ts `podHosts`) with workers/probe.ts — DNS, TCP, the upstream proxy's
 * CONNECT with its authentication, a verified TLS handshake — and keeps per host and overall: Connected / Not
 * connected, "connected on" (the last success), the last error with its hop, and the latency. Real traffic counts
 * too: a tunnel or fill to a platform host that a worker reports (`platformSeen` in its stats) is a success without a
 * probe. core/health.ts reads the last two rounds (`rounds()`) to decide whether the link is Down.
 */
import type { Config } from "../core/config";
import type { ProbeRound } from "../core/health";
import { podHosts } from "../core/platform-hosts";
import { type ProbeResult, probeHost } from "../workers/probe";
import { log } from "../log";
import type { HostLink, LinkStatus, PlatformLinkReport } from "../admin/deps";

export type { HostLink, LinkStatus, PlatformLinkReport };

type HostState = { connectedOn: number | null; lastError: HostLink["last_error"]; latency: number | null; lastOk: boolean | null; via: "direct" | "upstream" };

const KEEP_ROUNDS = 2;
/** After a failed round the next one comes sooner (like HAProxy's `fastinter`): two failed rounds decide Down, and
 * waiting two whole probe_interval_s (2 minutes by default) would keep sending agents to a gateway that cannot serve;
 * while Down, the quick rounds also see the recovery within seconds (fail fast stops no probe). */
export const CONFIRM_AFTER_S = 5;
const MAX_PROBE_MS = 5000;

export type ProbeFn = (config: Config, host: string, port: number, opts?: { timeoutMs?: number }) => Promise<ProbeResult>;

export class PlatformLink {
  private hosts = new Map<string, HostState>();
  private recent: ProbeRound[] = [];
  private total = 0;
  private lastRound: PlatformLinkReport["last_round"] = null;
  private lastAt: number | null = null;
  private lastTraffic: number | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running: Promise<void> | null = null;
  private linkKey = "";
  private stopped = false;
  /** called after each round (the health monitor re-decides at once, not at its next tick) */
  onRound: () => void = () => {};

  constructor(
    private getConfig: () => Config,
    private probe: ProbeFn = probeHost,
  ) {}

  /** First round now, then every probe_interval_s (re-read each time: a reload changes it). */
  start() {
    this.stopped = false;
    const loop = async () => {
      if (this.stopped) return;
      if (this.getConfig().platform.probe_interval_s === 0) {
        // off: look again in a while, in case a reload turns it on
        this.timer = setTimeout(loop, CONFIRM_AFTER_S * 1000);
        return;
      }
      await this.probeNow();
      if (this.stopped) return;
      const every = this.getConfig().platform.probe_interval_s;
      const last = this.recent[this.recent.length - 1];
      // while not connected, also so that a recovery is seen (and fail fast ends) within seconds
      const next = last && last.reachable === 0 ? Math.min(every, CONFIRM_AFTER_S) : every;
      this.timer = setTimeout(loop, next * 1000);
    };
    void loop();
  }

  stop() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** A config change that changes the link (pod, upstream proxy, [hosts], upstream CA) starts its history afresh. */
  private resetIfChanged(c: Config) {
    const key = JSON.stringify([c.platform.pod, c.upstream_proxy, c.hosts, c.tls.upstream_ca, c.destinations.ports]);
    if (key === this.linkKey) return;
    this.linkKey = key;
    this.recent = [];
    this.hosts.clear();
  }

  /** One round over the pod's hosts, in parallel; a round still running is joined, not doubled. */
  probeNow(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round().finally(() => (this.running = null));
    return this.running;
  }

  private async round() {
    const c = this.getConfig();
    this.resetIfChanged(c);
    const targets = podHosts(c);
    const timeoutMs = Math.min(MAX_PROBE_MS, Math.max(1000, c.platform.probe_interval_s * 1000));
    const t0 = performance.now();
    const started = Date.now();
    const cpu0 = process.cpuUsage();
    const results = await Promise.all(targets.map((t) => this.probe(c, t.host, t.port, { timeoutMs })));
    const cpu = process.cpuUsage(cpu0);
    const at = Date.now();
    this.lastRound = { ms: Math.round(performance.now() - t0), cpu_ms: Math.round((cpu.user + cpu.system) / 1000), hosts: targets.length };
    this.lastAt = at;
    this.total++;
    let reachable = 0;
    let reached = 0;
    let error: ProbeRound["error"] = null;
    const seen = new Set<string>();
    for (const r of results) {
      seen.add(r.host);
      const h = this.hostState(r.host, r.via);
      h.via = r.via;
      h.lastOk = r.ok;
      h.latency = r.ms;
      if (r.ok || r.hop === "tls") reached++;
      if (r.ok) {
        reachable++;
        h.connectedOn = at;
      } else {
        h.lastError = { hop: r.hop, reason: r.reason, ...(r.status !== undefined ? { status: r.status } : {}), at: new Date(at).toISOString() };
        error = { host: r.host, hop: r.hop, reason: r.reason };
      }
    }
    // hosts that are neither the pod's nor seen in traffic since this round's start go (the pod changed)
    for (const [k, h] of [...this.hosts]) if (!seen.has(k) && (h.connectedOn ?? 0) < started) this.hosts.delete(k);
    const wasUp = this.recent.length === 0 || this.recent[this.recent.length - 1]!.reachable > 0;
    this.recent.push({ at, reachable, reached, total: targets.length, error });
    if (this.recent.length > KEEP_ROUNDS) this.recent.shift();
    if (wasUp && reachable === 0) log("warn", "platform link: no platform host reachable", { pod: c.platform.pod, ...error });
    else if (!wasUp && reachable > 0) log("info", "platform link: connected again", { pod: c.platform.pod, reachable, total: targets.length });
    this.onRound();
  }

  private hostState(host: string, via: "direct" | "upstream"): HostState {
    let h = this.hosts.get(host);
    if (!h) this.hosts.set(host, (h = { connectedOn: null, lastError: null, latency: null, lastOk: null, via }));
    return h;
  }

  /** Workers saw a tunnel or fill to these platform hosts succeed: "connected on" now, no probe needed. */
  noteTraffic(hosts: readonly string[], now: number) {
    if (!hosts.length) return;
    this.lastTraffic = now;
    const via = this.getConfig().upstream_proxy ? "upstream" : "direct";
    for (const host of hosts) {
      const h = this.hostState(host, via);
      h.connectedOn = now;
      h.lastOk = true;
    }
  }

  /** The last rounds, oldest first (core/health.ts decides from them) and when real traffic last got through. */
  rounds(): ProbeRound[] {
    return this.recent.slice();
  }
  trafficAt(): number | null {
    return this.lastTraffic;
  }

  report(): PlatformLinkReport {
    const c = this.getConfig();
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    const hosts: HostLink[] = [...this.hosts.entries()].map(([host, h]) => ({
      host,
      port: podHosts(c).find((x) => x.host === host)?.port ?? 443,
      status: h.lastOk === null ? "Unknown" : h.lastOk ? "Connected" : "Not connected",
      connected_on: iso(h.connectedOn),
      last_error: h.lastError,
      latency_ms: h.latency,
      via: h.via,
    }));
    const last = this.recent[this.recent.length - 1];
    const connectedOn = Math.max(0, ...hosts.map((h) => (h.connected_on ? Date.parse(h.connected_on) : 0)), this.lastTraffic ?? 0);
    const trafficSinceLast = last && this.lastTraffic !== null && this.lastTraffic >= last.at;
    const status: LinkStatus = !last ? (this.lastTraffic !== null ? "Connected" : "Unknown") : last.reachable > 0 || trafficSinceLast ? "Connected" : "Not connected";
    return {
      status,
      pod: c.platform.pod,
      connected_on: connectedOn ? new Date(connectedOn).toISOString() : null,
      last_error: last?.error ? { ...last.error, at: new Date(last.at).toISOString() } : null,
      probe_interval_s: c.platform.probe_interval_s,
      last_probe_at: iso(this.lastAt),
      last_round: this.lastRound,
      rounds: this.total,
      hosts,
    };
  }
}
