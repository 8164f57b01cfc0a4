/**
 * @module Per-host counts of what the cache port did (hits, misses, bypasses), for the admin's hit ratio by host
 * (GET /api/cache, /api/stats, /metrics). Fed once per request from the access-log step of `cache-request.ts`, so it
 * counts exactly the phases the access lines show; reported with the worker's counters (`cacheHosts`).
 */
import { MAX_HOSTS } from "../core/cache-ops";
import type { WorkerRuntime } from "./runtime";

export type HostCounts = { hits: number; misses: number; bypass: number };

/** Count one answered request for `host` by its cache phase ("hit", "stale", "revalidated", "miss", "bypass:…"). */
export function countHostPhase(rt: WorkerRuntime, host: string, phase: string): void {
  if (host === "") return;
  const hosts = (rt.counters.cacheHosts ??= {});
  let h = hosts[host];
  if (h === undefined) {
    if (Object.keys(hosts).length >= MAX_HOSTS) host = "(other)";
    h = hosts[host] ??= { hits: 0, misses: 0, bypass: 0 };
  }
  // served from the store: a fresh hit, a stale one the RFCs allowed, or one a 304 just confirmed
  if (phase === "hit" || phase === "stale" || phase === "revalidated") h.hits++;
  else if (phase.startsWith("bypass")) h.bypass++;
  else h.misses++;
}
