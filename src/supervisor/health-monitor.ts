/**
 * @module The supervisor's health shell (issue 10): gathers the facts core/health.ts decides from — workers alive,
 * the platform link's last rounds (platform-link.ts), the data disk and the patch volume (statfs, writable), the
 * workers' cache-disk-full state, the active CA, draining, maintenance (maintenance.ts) — and pushes each change of
 * the per-port answer to the workers, whose `GET /healthz` and fail-fast refusals read it (core/conn-session.ts).
 */
import { accessSync, constants, statfsSync } from "node:fs";
import type { Config } from "../core/config";
import { type DiskFact, type HealthDecision, type HealthFacts, decideHealth, portHealthOf } from "../core/health";
import type { CaPems } from "../store/ca-store";
import type { Pool } from "./pool";
import { PlatformLink, type ProbeFn } from "./platform-link";
import { type Maintenance, loadMaintenance, saveMaintenance } from "./maintenance";
import { log } from "../log";

export type HealthMonitorDeps = {
  dataDir: string;
  workerCount: number;
  pool: Pool;
  getConfig: () => Config;
  getCa: () => CaPems | null;
  isDraining: () => boolean;
  getPatchRefused: () => string | null;
  probe?: ProbeFn;
};

/** statfs + a write-permission check: cheap enough to run on every decision (once a second). */
function diskFact(path: string): DiskFact {
  try {
    const s = statfsSync(path);
    let writable = true;
    let error: string | undefined;
    try {
      accessSync(path, constants.W_OK);
    } catch (e) {
      writable = false;
      error = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    }
    return { path, free: s.bavail * s.bsize, size: s.blocks * s.bsize, writable, ...(error ? { error } : {}) };
  } catch (e) {
    return { path, free: 0, size: 0, writable: false, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
}

export class HealthMonitor {
  readonly link: PlatformLink;
  private maint: Maintenance;
  private cacheNoSpace: (number | null)[];
  private pushed = "";
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(private d: HealthMonitorDeps) {
    this.link = new PlatformLink(d.getConfig, d.probe);
    this.maint = loadMaintenance(d.dataDir);
    this.cacheNoSpace = Array.from({ length: d.workerCount }, () => null);
    this.link.onRound = () => this.push();
    if (this.maint.on) log("warn", "in maintenance (from the last run): new connections are refused until it is turned off", { since: this.maint.since });
  }

  start() {
    this.link.start();
    this.push();
    this.timer = setInterval(() => this.push(), 1000);
  }

  stop() {
    this.link.stop();
    if (this.timer) clearInterval(this.timer);
  }

  get maintenance(): Maintenance {
    return { ...this.maint };
  }

  setMaintenance(on: boolean, now = Date.now()): Maintenance {
    if (on !== this.maint.on) {
      this.maint = on ? { on: true, since: now } : { on: false, since: null };
      saveMaintenance(this.d.dataDir, this.maint);
      log("warn", on ? "maintenance on: new connections are refused with 503" : "maintenance off: serving again", {});
    }
    this.push();
    return this.maintenance;
  }

  /** A worker's stats report: its cache disk state and the platform hosts its traffic reached. */
  onStats(index: number, m: { cacheNoSpace?: number | null; platformSeen?: string[] }, now: number) {
    this.cacheNoSpace[index] = m.cacheNoSpace ?? null;
    if (m.platformSeen?.length) this.link.noteTraffic(m.platformSeen, now);
  }

  /** A worker (re)started: give it the current answer, it does not remember the last one. */
  onReady(index: number) {
    this.d.pool.send(index, { t: "health", health: portHealthOf(this.decide()) });
  }

  onWorkerExit(index: number) {
    this.cacheNoSpace[index] = null;
  }

  facts(now = Date.now()): HealthFacts {
    const c = this.d.getConfig();
    const ca = this.d.getCa();
    const full = this.cacheNoSpace.filter((x): x is number => x !== null);
    return {
      now,
      workers: { alive: this.d.pool.alive(), total: this.d.workerCount },
      draining: this.d.isDraining(),
      maintenance: this.maintenance,
      cacheEnabled: c.cache.enabled,
      platform: { rounds: this.link.rounds(), trafficAt: this.link.trafficAt() },
      upstreamProxy: c.upstream_proxy ? `${c.upstream_proxy.host}:${c.upstream_proxy.port}` : null,
      dataDisk: diskFact(this.d.dataDir),
      patchVolume: c.patch.enabled && c.patch.volume ? diskFact(c.patch.volume) : null,
      patchRefused: this.d.getPatchRefused(),
      cacheNoSpace: full.length ? { workers: full.length, needed: Math.max(...full) } : null,
      ca: ca ? { kind: ca.kind, notAfter: ca.notAfter } : null,
    };
  }

  decide(now = Date.now()): HealthDecision {
    return decideHealth(this.facts(now));
  }

  /** Send the workers the per-port answer when it changed (a restarted worker gets it from onReady). */
  push(): HealthDecision {
    const d = this.decide();
    const ph = portHealthOf(d);
    const key = JSON.stringify(ph);
    if (key !== this.pushed) {
      this.pushed = key;
      this.d.pool.broadcast({ t: "health", health: ph });
    }
    return d;
  }
}
