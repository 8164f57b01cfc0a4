/**
 * @module Micro-benchmark of what issue 9 added to every hit: the ttl (lifetimeOf + currentAge), the Age value, the
 * serve plan (conditionals, Range: core/cache/serve.ts) and the Cache-Status field (core/cache/cache-status.ts).
 * Bounded iterations after a warm-up; prints one JSON line { bench, iterations, ms, usPerHit }.
 * Run: `bun bench/micro/hit-answer.bench.ts [iterations]`.
 */
import { type Headers, type StoredResponse, CACHE_DEFAULTS, ageHeaderValue, ccOf, currentAge, lifetimeOf } from "../../src/core/cache/freshness";
import { planServe } from "../../src/core/cache/serve";
import { emptyCacheStatus, formatCacheStatus } from "../../src/core/cache/cache-status";

const N = Number(process.argv[2] ?? 200_000);
const now = Date.UTC(2025, 0, 15, 12, 0, 0);
const s: StoredResponse = {
  status: 200,
  headers: [["Date", new Date(now - 60_000).toUTCString()], ["Cache-Control", "max-age=3600"], ["ETag", '"m1"'], ["Content-Type", "application/json"]],
  requestTime: now - 60_000,
  responseTime: now - 60_000,
  url: "https://qagpublic.qg1.apps.qualys.com/manifest.json",
  method: "GET",
  requestHeaders: [],
};
const req: Headers = [["Host", "qagpublic.qg1.apps.qualys.com"], ["User-Agent", "agent/1"], ["Accept", "*/*"]];
let sink = 0;
function once() {
  const cs = emptyCacheStatus();
  cs.hit = true;
  cs.ttl = lifetimeOf(s, ccOf(s.headers), CACHE_DEFAULTS).seconds - currentAge(s, now);
  const p = planServe("GET", req, 200, s.headers, 1024);
  sink += formatCacheStatus(cs).length + p.do.length + ageHeaderValue(s, now).length;
}
for (let i = 0; i < Math.min(N, 10_000); i++) once();
const t0 = performance.now();
for (let i = 0; i < N; i++) once();
const ms = performance.now() - t0;
console.log(JSON.stringify({ bench: "hit-answer", iterations: N, ms: Math.round(ms), usPerHit: Number(((ms * 1000) / N).toFixed(2)), sink: sink > 0 }));
