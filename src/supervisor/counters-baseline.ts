/**
 * @module Counters since a reset: the workers' counters are monotonic for the life of the process, so "stats start
 * from zero" after `POST /api/reset` is the totals minus the totals at the moment of the reset. Gauges (what is
 * open now) are never subtracted.
 */
import type { WorkerCounters } from "../workers/protocol";

const GAUGES: ReadonlySet<string> = new Set(["activeTunnels", "activeConnections"]);

function sub(v: unknown, b: unknown, top: boolean, key: string): unknown {
  if (typeof v === "number") return top && GAUGES.has(key) ? v : Math.max(0, v - (typeof b === "number" ? b : 0));
  if (Array.isArray(v)) return v.map((x, i) => sub(x, Array.isArray(b) ? b[i] : undefined, false, String(i)));
  if (v && typeof v === "object") {
    const base = b && typeof b === "object" ? (b as Record<string, unknown>) : {};
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, sub(x, base[k], false, k)]));
  }
  return v;
}

/** `t − base`, field by field (maps by key), gauges kept; null base = no reset yet. */
export function sinceBaseline(t: WorkerCounters, base: WorkerCounters | null): WorkerCounters {
  if (!base) return t;
  const out = {} as Record<string, unknown>;
  for (const [k, v] of Object.entries(t)) out[k] = sub(v, (base as unknown as Record<string, unknown>)[k], true, k);
  return out as WorkerCounters;
}

/** A deep copy, taken at the reset. */
export const snapshot = (t: WorkerCounters): WorkerCounters => structuredClone(t);
