/**
 * @module The worker pool: one worker thread per CPU by default; a worker that dies is replaced (with a
 * growing delay if it keeps dying), and its share of the admission budget is returned, while the other
 * workers' tunnels are untouched.
 */
import { type Config } from "../core/config";
import { SHARED_SLOTS, type SupervisorToWorker, type WorkerToSupervisor, decode, encode } from "../workers/protocol";
import { log } from "../log";
import type { CaPems } from "../store/ca-store";

export type PoolEvents = {
  onMessage: (m: WorkerToSupervisor) => void;
  onExit: (index: number, code: number) => void;
};

type Slot = {
  worker: Worker | null;
  ready: boolean;
  drained?: boolean;
  starts: number;
  lastStart: number;
  restartTimer?: ReturnType<typeof setTimeout>;
  /** the config generation this worker confirmed ("config-applied"), or started with; and why it could not apply */
  acked: number;
  ackError?: string;
  initGen: number;
};

/** Whether every live worker switched to the current config (pool.confirm). */
export type WorkersConfirm = { confirmed: true } | { confirmed: false; reason: string };

/** Bound of the wait for the workers' "config-applied": a worker busy past it is named, not waited for. */
export const CONFIRM_TIMEOUT_MS = 5_000;

const WORKER_URL = new URL("../workers/worker.ts", import.meta.url).href;

export class Pool {
  readonly admission = new SharedArrayBuffer(SHARED_SLOTS * 4);
  readonly adm = new Int32Array(this.admission);
  private slots: Slot[] = [];
  private stopping = false;
  /** one id per process life: store blobs are verified once per boot, not once per worker */
  readonly bootId = `${process.pid}-${Date.now()}`;
  config: Config;
  ports: { proxy: number; cache: number };
  ca: CaPems | null;
  /** bumped by every setConfig; the workers answer "config-applied" with it */
  private gen = 0;

  constructor(
    config: Config,
    ports: { proxy: number; cache: number },
    ca: CaPems | null,
    readonly size: number,
    private events: PoolEvents,
  ) {
    this.config = config;
    this.ports = ports;
    this.ca = ca;
    for (let i = 0; i < size; i++) this.slots.push({ worker: null, ready: false, starts: 0, lastStart: 0, acked: 0, initGen: 0 });
  }

  start() {
    for (let i = 0; i < this.size; i++) this.spawn(i);
  }

  private spawn(index: number) {
    const slot = this.slots[index]!;
    slot.starts++;
    slot.lastStart = Date.now();
    slot.ready = false;
    slot.initGen = this.gen; // the init below carries this generation's config
    slot.ackError = undefined;
    const w = new Worker(WORKER_URL, { smol: false } as WorkerOptions);
    slot.worker = w;
    w.addEventListener("message", (ev: MessageEvent) => {
      const m = decode<WorkerToSupervisor>(ev.data as Uint8Array);
      if (m.t === "ready") {
        slot.ready = true;
        slot.acked = Math.max(slot.acked, slot.initGen);
      }
      if (m.t === "config-applied" && m.gen >= slot.acked) {
        slot.acked = m.gen;
        slot.ackError = m.error;
      }
      if (m.t === "drained") slot.drained = true;
      this.events.onMessage(m);
    });
    w.addEventListener("error", (ev: ErrorEvent) => {
      log("error", "worker error", { worker: index, error: ev.message });
    });
    w.addEventListener("close", (ev: Event) => {
      const code = (ev as CloseEvent).code ?? 0;
      if (slot.worker !== w) return;
      slot.worker = null;
      slot.ready = false;
      // Return the dead worker's share of the admission budget: its sockets died with it.
      const share = Atomics.exchange(this.adm, 1 + index, 0);
      Atomics.sub(this.adm, 0, share);
      this.events.onExit(index, code);
      if (this.stopping) return;
      // A worker that dies within 10 s of starting waits longer each time (crash loop), up to 10 s.
      const quick = Date.now() - slot.lastStart < 10_000;
      const delay = quick ? Math.min(10_000, 100 * 2 ** Math.min(slot.starts, 7)) : 100;
      log("warn", "worker exited; restarting", { worker: index, code, in_ms: delay });
      slot.restartTimer = setTimeout(() => this.spawn(index), delay);
    });
    this.send(index, { t: "init", index, config: this.config, ports: this.ports, ca: this.ca, bootId: this.bootId }, true);
  }

  send(index: number, m: SupervisorToWorker, withAdmission = false) {
    const w = this.slots[index]?.worker;
    if (!w) return;
    w.postMessage(withAdmission ? { msg: encode(m), admission: this.admission } : { msg: encode(m) });
  }

  broadcast(m: SupervisorToWorker) {
    for (let i = 0; i < this.size; i++) this.send(i, m);
  }

  alive(): number {
    return this.slots.filter((s) => s.worker && s.ready).length;
  }

  workerStates() {
    return this.slots.map((s, i) => ({ index: i, alive: !!s.worker && s.ready, starts: s.starts }));
  }

  /** Open connections across the appliance, live (not from the last stats report). */
  openConnections(): number {
    return Atomics.load(this.adm, 0);
  }

  setConfig(config: Config, ports: { proxy: number; cache: number }, ca: CaPems | null) {
    this.config = config;
    this.ports = ports;
    this.ca = ca;
    this.gen++;
    this.broadcast({ t: "config", gen: this.gen, config, ports, ca });
  }

  /**
   * Resolves when every live worker confirmed the current config generation (each answers "config-applied" once
   * its CA, cache mode and ports switched), or after `timeoutMs` naming the first worker that did not. A worker
   * that dies meanwhile is not waited for: its replacement starts with the current config. Without this an
   * "applied" answer raced the workers (the fleet e2e tests had to wait up to 10 s for the first new handshake).
   */
  async confirm(timeoutMs = CONFIRM_TIMEOUT_MS): Promise<WorkersConfirm> {
    const gen = this.gen;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const live = this.slots.map((s, i) => ({ s, i })).filter(({ s }) => s.worker && s.ready);
      const failed = live.find(({ s }) => s.acked >= gen && s.ackError);
      if (failed) return { confirmed: false, reason: `worker ${failed.i} could not apply it: ${failed.s.ackError}` };
      const waiting = live.find(({ s }) => s.acked < gen);
      if (!waiting) return { confirmed: true };
      if (Date.now() >= deadline) return { confirmed: false, reason: `worker ${waiting.i} did not confirm within ${Math.round(timeoutMs / 100) / 10} s` };
      await Bun.sleep(5); // bounded by the deadline; the acks come within milliseconds
    }
  }

  stopAccepting() {
    this.stopping = true;
    this.broadcast({ t: "drain" });
  }

  async terminate(waitMs = 1000) {
    this.stopping = true;
    for (const s of this.slots) clearTimeout(s.restartTimer);
    this.broadcast({ t: "stop" });
    const deadline = Date.now() + waitMs;
    // Wait for each worker's last counters and logs (it answers "drained"), then end the threads.
    while (Date.now() < deadline && this.slots.some((s) => s.worker && !s.drained)) await Bun.sleep(20);
    for (const s of this.slots) s.worker?.terminate();
  }
}
