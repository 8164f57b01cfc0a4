/**
 * @module The duration histograms of /metrics, one per port (Prometheus text format 0.0.4: `_bucket{le}` cumulative,
 * `_sum` in seconds, `_count`): how long tunnels and intercepted connections lasted (`agate_connection_duration_seconds`,
 * port="proxy" | "cache"), and how long each cache-port request took (`agate_request_duration_seconds`, port="cache").
 */
import { cumulative, emptyHistogram, type DurationKind, type Histogram } from "../core/histogram";
import type { WorkerCounters } from "../workers/protocol";

const FAMILIES: { name: string; help: string; kinds: [DurationKind, string][] }[] = [
  {
    name: "agate_connection_duration_seconds",
    help: "How long tunnels and intercepted connections lasted, by port (observed when they close).",
    kinds: [["connection:proxy", "proxy"], ["connection:cache", "cache"]],
  },
  { name: "agate_request_duration_seconds", help: "How long requests answered by the cache took, head to last byte.", kinds: [["request:cache", "cache"]] },
];

export function durationMetrics(t: WorkerCounters): string[] {
  const out: string[] = [];
  for (const f of FAMILIES) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} histogram`);
    for (const [kind, port] of f.kinds) {
      const h: Histogram = t.durations?.[kind] ?? emptyHistogram();
      for (const [le, n] of cumulative(h)) out.push(`${f.name}_bucket{port="${port}",le="${le}"} ${n}`);
      out.push(`${f.name}_sum{port="${port}"} ${h.sum}`, `${f.name}_count{port="${port}"} ${h.count}`);
    }
  }
  return out;
}
