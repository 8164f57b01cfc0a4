/**
 * @module Messages between the supervisor and the workers: plain data, encoded with the one Packr (STYLE §12).
 * The only thing not sent through msgpackr is the admission SharedArrayBuffer, which rides beside
 * the init message as structured clone (msgpackr cannot share memory).
 */
import { Packr } from "msgpackr";
import type { Config } from "../core/config";
import type { CaPems } from "../store/ca-store";

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
  | { t: "config"; config: Config; ports: { proxy: number; cache: number }; ca: CaPems | null }
  | { t: "drain" }
  | { t: "crash" } // admin/test: make this worker die, to exercise the restart path
  | { t: "stop" };

export type WorkerToSupervisor =
  | { t: "ready"; index: number; ports: { proxy: number; cache: number } }
  | { t: "listen-error"; index: number; message: string }
  | { t: "stats"; index: number; counters: WorkerCounters; proxyIps: string[]; cacheIps: string[]; rss?: number }
  | { t: "log"; lines: string[] }
  | { t: "drained"; index: number };

export const encode = (m: SupervisorToWorker | WorkerToSupervisor): Uint8Array => packr.pack(m);
export const decode = <T extends SupervisorToWorker | WorkerToSupervisor>(b: Uint8Array): T => packr.unpack(b) as T;

/** Layout of the admission SharedArrayBuffer: slot 0 = appliance-wide open connections on the proxy port, slot 1+i = worker i's share. */
export const ADMISSION_SLOTS = 1 + 256;
