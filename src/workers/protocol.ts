/**
 * @module Messages between the supervisor and the workers: plain data, encoded with the one Packr (STYLE §12).
 * The only thing not sent through msgpackr is the admission SharedArrayBuffer, which rides beside
 * the init message as structured clone (msgpackr cannot share memory).
 */
import type { DurationKind, Histogram } from "../core/histogram";
import { Packr } from "msgpackr";
import type { Config } from "../core/config";
import type { CaPems } from "../store/ca-store";
import type { PrefillItem } from "../core/cache-ops";
import type { PortHealth } from "../core/health";
import type { ShareView } from "../core/fleet-share";

export const packr = new Packr({ structuredClone: false, useRecords: false });

/** Counters a worker reports; all monotonic except `active*`. */
export type WorkerCounters = {
  activeTunnels: number;
  totalTunnels: number;
  activeConnections: number;
  bytesUp: number; // client → origin
  bytesDown: number; // origin → client
  refusals: Record<string, number>; // by reason code / rule
  errors: Record<string, number>; // by error code
  /** cache port (cache mode) */
  cache?: Record<string, number>;
  /** patch mode: totals and per host */
  patch?: Record<string, number | Record<string, { fetched: number; served: number }>>;
  /** cache port: requests per host by phase (workers/cache-hosts.ts), for the hit ratio by host */
  cacheHosts?: Record<string, { hits: number; misses: number; bypass: number }>;
  /** duration histograms per port (core/histogram.ts), for /metrics */
  durations?: Partial<Record<DurationKind, Histogram>>;
};

export const emptyCounters = (): WorkerCounters => ({
  activeTunnels: 0,
  totalTunnels: 0,
  activeConnections: 0,
  bytesUp: 0,
  bytesDown: 0,
  refusals: {},
  errors: {},
});

export type SupervisorToWorker =
  | { t: "init"; index: number; config: Config; ports: { proxy: number; cache: number }; ca: CaPems | null; bootId: string }
  /** `gen`: the pool's config generation; the worker answers "config-applied" with it once it switched (pool.confirm) */
  | { t: "config"; gen: number; config: Config; ports: { proxy: number; cache: number }; ca: CaPems | null }
  /** health as the supervisor decided it (core/health.ts): what /healthz answers on each port, fail fast */
  | { t: "health"; health: PortHealth }
  | { t: "drain" }
  | { t: "crash" } // admin/test: make this worker die, to exercise the restart path
  | { t: "stop" }
  /** warm the cache: run `urls` through the cache port's story, `concurrency` at a time (workers/prefill.ts) */
  | { t: "prefill"; job: string; urls: string[]; concurrency: number }
  /** `[fleet] share_cache`: the live sharers from the heartbeats (src/fleet/share.ts); null: fill every miss from the origin */
  | { t: "fleet"; share: ShareView | null };

export type WorkerToSupervisor =
  | { t: "ready"; index: number; ports: { proxy: number; cache: number } }
  | { t: "listen-error"; index: number; message: string }
  | {
      t: "stats";
      index: number;
      counters: WorkerCounters;
      proxyIps: string[];
      cacheIps: string[];
      rss?: number;
      /** health facts: bytes the cache store waits for while its disk is full (null: not full); platform hosts
       * a tunnel or fill reached since the last report (real traffic counts as "connected on") */
      cacheNoSpace?: number | null;
      platformSeen?: string[];
    }
  | { t: "log"; lines: string[] }
  | { t: "drained"; index: number }
  /** the answer to "config": this worker switched to generation `gen` (its CA, cache mode, ports); `error` when it could not */
  | { t: "config-applied"; index: number; gen: number; error?: string }
  | { t: "prefill-progress"; index: number; job: string; items: PrefillItem[]; finished: boolean };

export const encode = (m: SupervisorToWorker | WorkerToSupervisor): Uint8Array => packr.pack(m);
export const decode = <T extends SupervisorToWorker | WorkerToSupervisor>(b: Uint8Array): T => packr.unpack(b) as T;

/** Layout of the admission SharedArrayBuffer: slot 0 = appliance-wide open connections on the proxy port, slot 1+i = worker i's share. */
export const ADMISSION_SLOTS = 1 + 256;
/**
 * One more slot after the admission slots: the cache disk is known to be full, with the KiB an object needed
 * (0 = not known full). A worker that finds the disk full sets it, so every worker passes objects through from then
 * on, not only the one that found out (issue 12, defect 5: an object without a length landing on another worker was
 * cut at the disk's end); the worker that finds space again clears it.
 */
export const NO_SPACE_SLOT = ADMISSION_SLOTS;
/** The count of index write transactions in the process, bumped after each COMMIT (store/cache/index-db.ts `shareWriteCount`). */
export const STORE_WRITES_SLOT = ADMISSION_SLOTS + 1;
export const SHARED_SLOTS = ADMISSION_SLOTS + 2;
