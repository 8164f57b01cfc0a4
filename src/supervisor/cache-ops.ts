/**
 * @module The supervisor's side of the admin's cache operations (issue 9): usage (the store's own counts plus the
 * workers' per-host phases), purge (one write transaction of the store, through `report.ts`'s reader Store), and
 * prefill jobs (handed to one live worker as a `prefill` message; the worker runs each URL through the cache port's
 * story and sends `prefill-progress` snapshots back, kept here for GET /api/cache/prefill). Jobs live in memory: a
 * restart forgets them, and a worker that dies fails what it had not finished.
 */
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import type { Config } from "../core/config";
import { type CacheUsage, type PrefillJob, type PurgeResult, type PurgeSelector, PREFILL_CONCURRENCY, hostUsage, summariseJob } from "../core/cache-ops";
import { cacheBudget, cacheDir, patchDir, storeOnVolume } from "../store/cache/paths";
import { purgeStore, storeUsage } from "../store/cache/report";
import type { WorkerCounters, WorkerToSupervisor } from "../workers/protocol";
import type { Pool } from "./pool";
import { log } from "../log";

/** Jobs kept for GET /api/cache/prefill; the oldest finished ones go first. */
const MAX_JOBS = 50;

export type PrefillStart = { ok: true; job: PrefillJob } | { ok: false; status: 409 | 503; error: string };

export type CacheOps = {
  usage(totals: WorkerCounters, withObjects?: boolean): CacheUsage;
  purge(sel: PurgeSelector): PurgeResult;
  startPrefill(urls: string[]): PrefillStart;
  prefillJobs(): PrefillJob[];
  onProgress(m: Extract<WorkerToSupervisor, { t: "prefill-progress" }>): void;
  onWorkerExit(index: number): void;
};

export function makeCacheOps(o: { config: () => Config; pool: Pool }): CacheOps {
  const jobs = new Map<string, PrefillJob>();
  let turn = 0;

  /** The store directories a purge must reach: the cache-mode store and, when it is elsewhere, patch mode's. */
  const dirs = (c: Config) => {
    const out = new Set<string>([cacheDir(c)]);
    if (c.patch.enabled && c.patch.volume) out.add(patchDir(c));
    return [...out].filter((d) => existsSync(d));
  };

  return {
    usage(totals, withObjects = true) {
      const c = o.config();
      const dir = cacheDir(c);
      const u = storeUsage(dir, withObjects ? 10 : 0);
      let capacity = 0;
      try {
        capacity = cacheBudget(c);
      } catch {
        // the volume vanished between the check and statfs: capacity unknown for this answer
      }
      return {
        enabled: c.cache.enabled,
        dir,
        location: storeOnVolume(c) ? "patch-volume" : "data-dir",
        entries: u.entries,
        bytes: u.bytes,
        capacity,
        evictions: u.evictions,
        largest: u.largest,
        most_served: u.most_served,
        by_host: hostUsage(totals.cacheHosts ?? {}),
      };
    },

    purge(sel) {
      const total: PurgeResult = { objects: 0, bytes: 0 };
      for (const d of dirs(o.config())) {
        const r = purgeStore(d, sel);
        total.objects += r.objects;
        total.bytes += r.bytes;
      }
      log("info", "cache purged", { selector: sel, ...total });
      return total;
    },

    startPrefill(urls) {
      const c = o.config();
      if (!c.cache.enabled) return { ok: false, status: 409, error: "cache mode is off: turn it on ([cache] enabled = true) before prefilling" };
      const alive = o.pool.workerStates().filter((w) => w.alive);
      if (alive.length === 0) return { ok: false, status: 503, error: "no live worker to run the prefill; try again when health is Normal" };
      const worker = alive[turn++ % alive.length]!.index;
      const id = randomBytes(6).toString("base64url");
      const items = urls.map((url) => ({ url, state: "queued" as const, bytes: 0, status: 0, stored: false, error: null }));
      const job: PrefillJob = { id, created: new Date().toISOString(), worker, ...summariseJob(items), items };
      jobs.set(id, job);
      for (const [k, j] of jobs) {
        if (jobs.size <= MAX_JOBS) break;
        if (j.finished) jobs.delete(k);
      }
      o.pool.send(worker, { t: "prefill", job: id, urls, concurrency: PREFILL_CONCURRENCY });
      log("info", "cache prefill started", { job: id, worker, urls: urls.length });
      return { ok: true, job };
    },

    prefillJobs: () => [...jobs.values()].reverse(),

    onProgress(m) {
      const job = jobs.get(m.job);
      if (job === undefined || job.finished) return;
      job.items = m.items;
      Object.assign(job, summariseJob(m.items));
      job.finished = m.finished;
      if (m.finished) log("info", "cache prefill finished", { job: job.id, done: job.done, failed: job.failed, bytes: job.bytes });
    },

    onWorkerExit(index) {
      for (const job of jobs.values()) {
        if (job.finished || job.worker !== index) continue;
        for (const it of job.items) {
          if (it.state === "done" || it.state === "failed") continue;
          it.state = "failed";
          it.error = "the worker running it stopped before this URL finished";
        }
        Object.assign(job, summariseJob(job.items));
        job.finished = true;
      }
    },
  };
}
