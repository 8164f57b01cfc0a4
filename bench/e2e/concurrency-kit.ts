/**
 * @module What the phases of bench/e2e/concurrency.ts share: its options, constants, /proc sampling of the gateway
 * (CPU, descriptors, an RSS sampler every 100 ms), the gateways it started (each tracked and stopped), its log,
 * and the fixtures: a fresh origin per phase, the gateway, the load-fixture.ts client process.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { startGateway, type Gateway } from "../../test/peers/gateway";
import type { TestPki } from "../../test/peers/test-ca";
import { type Child, cpuTimes, rssKB, spawnChild, stopChildren } from "./children";
import { makeLog } from "./harness";

export const HOST = "qagpublic.qg1.apps.qualys.com";
export const BUN = process.execPath;
export const HERE = import.meta.dir;
export const SAMPLE_MS = 100;
export const REFUSAL_FAST_MS = 1000;

export type Options = {
  conns: number[];
  requests: number;
  rounds: number;
  batch: number;
  client: "bun" | "node";
  admission: boolean;
  admissionLimit: number;
  admissionOver: number;
  throughput: boolean;
  throughputMb: number;
  throughputTries: number;
  workers: number;
  /** the load phases' gateway limit; 0 = max(3000, C) */
  maxConnections: number;
  warmup: boolean;
  out: string;
};

// ---- /proc sampling ---------------------------------------------------------------------------------------

export function cpuSeconds(pid: number): number | null {
  const t = cpuTimes(pid);
  return t ? t.user + t.sys : null;
}

export function fdCount(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** Samples a process's RSS every 100 ms; `mark()` starts a new peak window. */
export class RssSampler {
  peak = 0;
  last = 0;
  samples = 0;
  private timer: ReturnType<typeof setInterval>;
  constructor(readonly pid: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }
  sample(): number {
    const r = rssKB(this.pid);
    if (r !== null) {
      this.last = r;
      this.samples++;
      if (r > this.peak) this.peak = r;
    }
    return this.last;
  }
  mark() {
    this.peak = this.sample();
  }
  stop() {
    clearInterval(this.timer);
  }
}

export async function waitUntil(pred: () => boolean, ms: number, stepMs = 100): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await Bun.sleep(stepMs);
  }
  return pred();
}

// ---- child processes: every one is tracked and stopped by PID --------------------------------------------

export const gateways = new Set<Gateway>();

export async function cleanup() {
  await stopChildren();
  await Promise.all([...gateways].map((g) => (gateways.delete(g), g.stop())));
}

export const log = makeLog("concurrency");

// ---- the fixtures -----------------------------------------------------------------------------------------

export type Env = { opts: Options; pki: TestPki; origin: Child; originPort: number };

/** Each phase gets a fresh origin: one that has served 100,000 connections streams noticeably slower after. */
export async function inPhase<T>(base: { opts: Options; pki: TestPki }, fn: (env: Env) => Promise<T>): Promise<T> {
  const { pki } = base;
  const origin = spawnChild("origin", [BUN, join(HERE, "origin-fixture.ts"), "--cert", pki.certPath, "--key", pki.keyPath]);
  try {
    const l = await origin.next("listening", 15_000);
    return await fn({ ...base, origin, originPort: Number(l.port) });
  } finally {
    await origin.stop();
  }
}

export async function startBenchGateway(env: Env, maxConnections: number): Promise<Gateway> {
  const gw = await startGateway({
    gateway: { workers: env.opts.workers, drain_grace_s: 2 },
    proxy: { max_connections: maxConnections, idle_timeout_s: 900, connect_timeout_s: 30 },
    destinations: { ports: [env.originPort] },
    hosts: { [HOST]: "127.0.0.1" },
  });
  gateways.add(gw);
  return gw;
}

export async function stopGateway(gw: Gateway) {
  gateways.delete(gw);
  await gw.stop();
}

export function loadFixture(env: Env, mode: "tunnel" | "direct" | "hold", conns: number, extra: string[], proxyPort = 0) {
  let lastShown = 0;
  return spawnChild(
    `load-fixture(${mode} ×${conns})`,
    [
      BUN,
      join(HERE, "load-fixture.ts"),
      "--mode", mode,
      "--client", env.opts.client,
      "--conns", String(conns),
      "--batch", String(env.opts.batch),
      "--origin-port", String(env.originPort),
      "--host", HOST,
      "--ca", env.pki.caPath,
      ...(proxyPort ? ["--proxy-port", String(proxyPort)] : []),
      ...extra,
    ],
    (o) => {
      if (o.ev === "progress" && conns >= 1000 && o.opened + o.failed - lastShown >= 1000) {
        lastShown = o.opened + o.failed;
        log(`  ${mode}: ${o.opened} open, ${o.failed} failed, ${o.ms} ms`);
      }
    },
  );
}

export const readyTimeout = (conns: number) => 120_000 + conns * 30;

/** Wait until the gateway holds no more descriptors than it did idle (tunnels torn down on both sides). */
export async function waitGatewayQuiet(gw: Gateway, fdBase: number) {
  return waitUntil(() => (fdCount(gw.proc.pid) ?? 0) <= fdBase + 4, 30_000);
}

export async function workerSpread(gw: Gateway) {
  try {
    const r = await gw.admin("/api/stats");
    const s = (await r.json()) as any;
    return {
      activeTunnels: s.totals?.activeTunnels ?? null,
      perWorker: (s.workers ?? []).map((w: any) => w.counters?.activeTunnels ?? null),
      refusals: s.totals?.refusals ?? {},
      errors: s.totals?.errors ?? {},
    };
  } catch (e) {
    return { error: String(e) };
  }
}
