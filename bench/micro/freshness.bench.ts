/**
 * @module Micro-benchmark of the cache's per-request decisions (src/core/cache/freshness.ts, key.ts): parse
 * Cache-Control, decide storability, decide the lookup phase, build the primary and Vary keys. Each case runs a
 * bounded number of iterations after a warm-up and prints one JSON line: { bench, case, iterations, ms, opsPerSec }.
 * Run: `bun bench/micro/freshness.bench.ts [iterations]`.
 */
import {
  type CacheDefaults,
  type Headers,
  type StoredResponse,
  isStorable,
  parseCacheControl,
} from "../../src/core/cache/freshness";
import { lookupPhase } from "../../src/core/cache/plan";
import { primaryKey, varyKey } from "../../src/core/cache/key";

const ITERATIONS = Math.min(Math.max(Number(process.argv[2] ?? 200_000) || 200_000, 1_000), 10_000_000);
const WARMUP = Math.min(10_000, ITERATIONS);
const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
const D: CacheDefaults = {
  heuristicFraction: 0.1,
  heuristicMaxS: 86_400,
  rules: [{ host: "example.com", path: "/agent/*.msi", max_age_s: 604_800 }],
};
const RES_HEADERS: Headers = [
  ["Date", new Date(NOW - 60_000).toUTCString()],
  ["Content-Type", "application/octet-stream"],
  ["Content-Length", "2097152"],
  ["Cache-Control", 'public, max-age=3600, s-maxage=7200, no-cache="Set-Cookie"'],
  ["ETag", '"5f3c-1a2b"'],
  ["Last-Modified", new Date(NOW - 86_400_000 * 10).toUTCString()],
  ["Vary", "Accept-Encoding"],
];
const REQ_HEADERS: Headers = [
  ["Host", "dl.example.com"],
  ["User-Agent", "QualysAgent/6.0"],
  ["Accept-Encoding", "gzip, deflate"],
  ["Cache-Control", "max-stale=60"],
];
const STORED: StoredResponse = {
  status: 200,
  headers: RES_HEADERS,
  requestTime: NOW - 60_100,
  responseTime: NOW - 60_000,
  url: "https://dl.example.com/agent/setup.msi",
  method: "GET",
  requestHeaders: REQ_HEADERS,
};

let sink = 0;
const CASES: [string, () => void][] = [
  ["parseCacheControl", () => void (sink += Object.keys(parseCacheControl(RES_HEADERS[3]![1])).length)],
  ["isStorable", () => void (sink += isStorable("GET", REQ_HEADERS, 200, RES_HEADERS).ok ? 1 : 0)],
  ["lookupPhase", () => void (sink += lookupPhase(STORED, REQ_HEADERS, NOW, D).phase.length)],
  ["primaryKey+varyKey", () => void (sink += primaryKey("HEAD", STORED.url).length + (varyKey("Accept-Encoding", REQ_HEADERS)?.length ?? 0))],
];

for (const [name, fn] of CASES) {
  for (let i = 0; i < WARMUP; i++) fn();
  const t0 = performance.now();
  for (let i = 0; i < ITERATIONS; i++) fn();
  const ms = performance.now() - t0;
  console.log(
    JSON.stringify({ bench: "freshness", case: name, iterations: ITERATIONS, ms: +ms.toFixed(2), opsPerSec: Math.round((ITERATIONS / ms) * 1000) }),
  );
}
if (sink === -1) console.log("unreachable"); // keeps the results observable so the loops are not optimised away
