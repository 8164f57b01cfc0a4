/**
 * @module The one per-worker runtime (issue 8 §4): everything a worker's socket code needs, built once by
 * `worker.ts` and passed down — to the listener's handlers (made once per listener, never per socket), to the
 * cache-port request story, to fills and to the origin client. No module in `src/workers` keeps mutable state of
 * its own beyond the Bun handler objects; what changes on a config push changes here.
 *
 * Types only, plus the factory: it imports nothing that imports it, so it sits below every worker module.
 */
import type { Config } from "../core/config";
import type { Policy } from "../core/policy";
import type { WorkerCounters } from "./protocol";

/** Milliseconds since the epoch. The worker passes `Date.now`; session tests pass a fixed clock. */
export type Clock = () => number;

/**
 * Per-worker services. TODO(issue 8, layer 2): give each its concrete type from a module that does not import this
 * one (no import circles, `import type` included).
 */
export type WorkerServices = {
  /** cache mode's whole-object store (src/store/cache), null when cache mode is off */
  cacheStore: unknown;
  /** patch mode's sliced store on the patch volume, null when patch mode is off */
  patchStore: unknown;
  /** TLS termination state: the active CA, leaf keys, leaf cache (workers/intercept.ts) */
  tls: unknown;
  /** kept-alive connections to origins (workers/origin-client.ts) */
  origins: unknown;
};

export type WorkerRuntime = WorkerServices & {
  index: number;
  /** made once by the supervisor at start: blobs are verified once per process life */
  bootId: string;
  config: Config;
  policy: Policy;
  draining: boolean;
  /** Int32Array over the supervisor's SharedArrayBuffer: [0] = appliance-wide, [1+i] = worker i */
  admission: Int32Array | null;
  /** exact time for logs, durations and freshness */
  now: Clock;
  /** request and connection ids (one hyperid per worker) */
  makeId: () => string;
  counters: WorkerCounters;
  /** distinct client IPs since the last stats report */
  proxyIps: Set<string>;
  cacheIps: Set<string>;
};
