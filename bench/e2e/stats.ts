/**
 * @module Latency figures shared by the benchmarks' client processes (load-fixture.ts, savings-client.ts,
 * patch-range-client.ts). No imports, so a client process pulls in nothing else.
 */

/** Nearest-rank percentiles and the mean of `xs` (ms), each rounded to 3 decimals; null when empty. */
export function stats(xs: ArrayLike<number>) {
  const a = Float64Array.from(xs).sort();
  const q = (p: number) => (a.length ? a[Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1))]! : null);
  let sum = 0;
  for (const x of a) sum += x;
  const r = (x: number | null) => (x === null ? null : Math.round(x * 1000) / 1000);
  return { n: a.length, p50: r(q(50)), p90: r(q(90)), p99: r(q(99)), max: r(q(100)), mean: r(a.length ? sum / a.length : null) };
}

/** This process's CPU seconds (user, sys; 2 decimals) since `since` (a process.cpuUsage() taken earlier). */
export function cpuSince(since: NodeJS.CpuUsage) {
  const u = process.cpuUsage(since);
  return { user: Math.round(u.user / 1e4) / 100, sys: Math.round(u.system / 1e4) / 100 };
}

/** A tally of error codes: `bump(code)` counts one, `count()` is the total. */
export function errorTally() {
  const errors: Record<string, number> = {};
  const bump = (k: string) => (errors[k] = (errors[k] ?? 0) + 1);
  const count = () => Object.values(errors).reduce((a, b) => a + b, 0);
  return { errors, bump, count };
}
