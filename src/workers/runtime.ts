/**
 * @module The one per-worker runtime (issue 8 §4): everything a worker's socket code needs, built once by
 * `worker.ts` and passed down — to the listener's handlers (made once per listener, never per socket), to the
 * cache-port request story, to fills and to the origin client. No module in `src/workers` keeps mutable state of
 * its own beyond the Bun handler objects; what changes on a config push changes here.
 *
 * Types only: it imports nothing that imports it, so it sits below every worker module. `ClientConn` lives here so
 * that the listener (layer 1) and the interception code (layer 2) share it without importing each other.
 */
import type { Config } from "../core/config";
import type { Policy } from "../core/policy";
import type { ConnSession } from "../core/conn-session";
import type { WorkerCounters } from "./protocol";
import type { PipeEnd } from "./tunnel";
import type { SecureContext } from "node:tls";
import type { Ca, LeafKeys } from "../core/certs";
import type { LeafCache } from "../core/cert-cache";
import type { MinTls } from "../core/config";
import type { Store } from "../store/cache/store";
import type { Origins } from "./origin-client";
import type { AgentCa } from "../core/ca-page";
import type { PortHealth } from "../core/health";
import type { ShareView } from "../core/fleet-share";

/** Milliseconds since the epoch. The worker passes `Date.now`; session tests pass a fixed clock. */
export type Clock = () => number;

/**
 * TLS termination state of one worker (workers/intercept.ts uses it): the active CA, the one leaf key pair, leaves
 * and secure contexts cached per host. Defined here, not in intercept.ts, so this file imports nothing that imports it.
 */
export type TlsState = {
  ca: Ca | null;
  /** short hash of the active CA's certificate: a new one drops the cached leaves */
  caId: string;
  leafKeys: LeafKeys | null;
  leaves: LeafCache;
  contexts: Map<string, SecureContext>;
  minTls: MinTls;
  leafDir: string | null;
  /** leaves this worker minted (not read from disk) */
  mints: number;
};

/** Per-worker services (layer 2): concrete types from modules that do not import this one. */
export type WorkerServices = {
  /** cache mode's whole-object store (src/store/cache), null when cache mode is off */
  cacheStore: Store | null;
  /** patch mode's sliced store on the patch volume, null when patch mode is off */
  patchStore: Store | null;
  /** patch slices whose SHA-256 this worker checked since it opened the patch store */
  patchVerified: Set<string>;
  /** TLS termination state: the active CA, leaf keys, leaf cache (workers/intercept.ts) */
  tls: TlsState;
  /** kept-alive connections to origins (workers/origin-client.ts), or a test's double */
  origins: Origins;
  /**
   * Set while the cache store's disk cannot take new objects (issue 12, defect 5): requests are passed through and
   * nothing is stored until statfs shows `needed` bytes free again (looked at again after `checkedAt`).
   */
  cacheNoSpace: { needed: number; checkedAt: number } | null;
};

export type WorkerRuntime = WorkerServices & {
  index: number;
  /** made once by the supervisor at start: blobs are verified once per process life */
  bootId: string;
  config: Config;
  policy: Policy;
  draining: boolean;
  /** Int32Array over the supervisor's SharedArrayBuffer: [0] = appliance-wide, [1+i] = worker i, [NO_SPACE_SLOT] (protocol.ts) */
  admission: Int32Array | null;
  /** the cache port can terminate TLS (cache mode on and a CA loaded); conn-session reads it */
  intercepting: boolean;
  /** the active CA as agents download it on the agent ports (`GET /ca.pem`, `/ca.der`, `/ca`); worker.ts sets it */
  agentCa?: AgentCa | null;
  /** exact time for logs, durations and freshness */
  now: Clock;
  /** request and connection ids (one hyperid per worker) */
  makeId: () => string;
  counters: WorkerCounters;
  /** distinct client IPs since the last stats report */
  proxyIps: Set<string>;
  cacheIps: Set<string>;
  /** platform hosts reached by a tunnel or a fill since the last stats report (issue 10: real traffic counts) */
  platformSeen: Set<string>;
  /** the supervisor's health decision for this worker's ports (/healthz, fail fast); null until the first push */
  health: PortHealth | null;
  /** a random number in [0, 1) per connection, for the Retry-After jitter (core stays free of randomness) */
  random: () => number;
  /** `[fleet] share_cache`: the live sharers as the supervisor last pushed them (workers/peer-fill.ts); absent: none */
  share?: ShareView | null;
};

/**
 * What layer 2 installs on an intercepted connection: the listener calls these from the socket's handlers
 * (bytes from the agent, the socket can take more, the agent's FIN, the socket closed).
 */
export type InterceptHandle = {
  onData(bytes: Uint8Array): void;
  onDrain(): void;
  onEnd(): void;
  destroy(): void;
  /** close the connection (the listener's close command): set when the raw socket can no longer do it itself —
   * after Bun's `upgradeTLS` the accepted handle's end() and terminate() do nothing (measured 2026-12-02: a CONNECT
   * client saw its connection close only when the upgraded socket was ended) */
  close?(how: "end" | "abort"): void;
};

/**
 * The state of one accepted socket on the proxy or cache port: the sans-IO session's fields (core/conn-session)
 * plus what the shell keeps. The byte counts are exact: `bytesIn` is every byte the agent sent, `bytesOut` (the
 * Outbox of `writeOrPend`) every byte the socket took towards the agent, refusals and `200 Connection
 * established` included. Layer 2 writes to the agent only through `writeOrPend(sock, conn, bytes)`.
 */
export type ClientConn = ConnSession &
  PipeEnd & {
    /** bytes received from the agent */
    bytesIn: number;
    /** set by layer 2 when the connection is intercepted */
    intercept: InterceptHandle | null;
  };
