/**
 * The bandwidth-savings benchmark for cache mode: do 1,000 agents fetching one 2 MB manifest cost one 2 MB
 * download, how fast are they served compared with downloading straight from the origin, do 500 concurrent
 * first requests cost one fetch, and how many leaves and TLS handshakes per second does the cache port manage?
 *
 *   bun bench/e2e/savings.ts [--agents 1000] [--concurrency 50] [--keepalive 10] [--rounds 5] [--size BYTES]
 *                            [--stampede 500 | --skip-stampede] [--stampede-delay-ms 1000]
 *                            [--mint-hosts 500] [--handshakes 2000] [--skip-handshakes]
 *                            [--small-bytes 4096 | --skip-breakdown] [--verify sha256|size]
 *                            [--skip-manifest-1k] [--workers N] [--out DIR]
 *
 * Processes (each its own, so CPU figures are per role; every one stopped by its PID at the end):
 *   this one               orchestration; /proc/<pid>/stat of the gateway and origin around every pass
 *   origin-fixture.ts      the TLS origin, with --artifacts: cacheable artifacts (max-age=3600, ETag) and its own
 *                          count of requests and body bytes per path
 *   the gateway            `bun src/main.ts --config FILE` via test/peers/gateway.ts, cache mode on, one worker
 *                          per CPU, [hosts] mapping the platform host (and h0001… for the mint phase) to 127.0.0.1
 *   savings-client.ts      the agents, one process per pass: Bun.connect + CONNECT + upgradeTLS verifying the
 *                          gateway's CA (or TLS straight to the origin), bodies checked by size and SHA-256
 *
 * Phases (one gateway and one origin for the whole run):
 *   fetch       --rounds rounds of four passes, each --agents downloads of the manifest, --concurrency at a time:
 *               cache/fresh (CONNECT + TLS + GET on a new connection per agent), direct/fresh (TLS + GET straight
 *               to the origin), cache/keep-alive and direct/keep-alive (--keepalive GETs per connection, which
 *               isolates the serving path from TLS handshakes). Round 1 starts with cache/fresh on a cold cache:
 *               those are "the 1,000 agents". Later rounds alternate the order. The cache passes ask for
 *               /artifact/manifest.bin, the direct ones for the same bytes under another query, so the origin's
 *               count for the cache path is exactly what the cache cost upstream. Ratios: median of per-round.
 *   breakdown   the same four passes once with a --small-bytes object (cached first): with the manifest passes
 *               they split the gateway's CPU per request into handshake (fresh − keep-alive), HTTP + cache
 *               lookup (small keep-alive) and moving 2 MB (manifest − small, keep-alive).
 *   manifest1k  the four passes with a 1 KiB manifest (the platform's small JSON documents, issue 9), cached
 *               first: per-request costs (handshake, HTTP, lookup, Age and Cache-Status) dominate, not bytes;
 *               then the same for a 16 KiB object (issue 13 "small objects"; --skip-manifest-1k skips both).
 *   stampede    --stampede connections opened through the cache port first, then one GET each for a new object
 *               the origin answers after --stampede-delay-ms, all written at once.
 *   handshakes  --mint-hosts first handshakes for distinct names h0001.qg1.apps.qualys.com … (each a leaf to
 *               mint; the origin certificate carries *.qg1.apps.qualys.com), --handshakes repeated handshakes
 *               for the known platform host (leaf cached), and the same repeated handshakes straight to the
 *               origin for reference; all --concurrency at a time, closed after the handshake.
 *
 * Output: the JSON document on stdout and in bench/results/savings-<timestamp>.json, a human summary on stderr.
 * Exit 0 when every gate passes, 1 when one fails, 2 on bad arguments, 3 when the harness broke.
 * Gates: the cache path cost the origin exactly one full copy (one request, --size bytes) for every agent of
 * every round; the stampede cost exactly one fetch and every agent got the exact bytes; 0 errors anywhere.
 * Target (reported pass/miss, not gated): cache/fresh requests/s ≥ 0.75× direct/fresh (a TLS-terminating C
 * proxy manages 0.38× on the reference machine); the keep-alive ratio is reported against the same bar; keep-alive
 * hits ≥ 1.0× the origin's own rate, for the manifest and for the 1 KiB manifest (issue 9).
 */
import { readdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { ROOT, startGateway, type Gateway } from "../../test/peers/gateway";
import { makeTestPki, type TestPki } from "../../test/peers/test-ca";
import { waitFor } from "../../test/peers/helpers";
import { MANIFEST_BYTES, artifactBytes, sha256Hex } from "./artifact";
import { type Child, type CpuTimes, cpuTimes, median, ratio, round, rssKB, spawnChild, stopChildren } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, p50p99, resultFile, verdictLines } from "./harness";

const HOST = "qagpublic.qg1.apps.qualys.com";
const POD = "qg1.apps.qualys.com";
const MINT_PATTERN = `h{n}.${POD}`;
const BUN = process.execPath;
const HERE = import.meta.dir;
const TARGET_RPS_RATIO = 0.75;
const C_PROXY_RATIO = 0.38;
/** workers report their counters once a second */
const STATS_SETTLE_MS = 1150;

// ---- options ----------------------------------------------------------------------------------------------

type Options = {
  agents: number;
  concurrency: number;
  keepalive: number;
  rounds: number;
  size: number;
  stampede: number;
  stampedeDelayMs: number;
  mintHosts: number;
  handshakes: number;
  smallBytes: number;
  /** the 1 KiB manifest phase (issue 9) */
  manifest1k: boolean;
  breakdown: boolean;
  /** how the agents check each body: SHA-256 (default) or the size alone (a lighter client) */
  verify: "sha256" | "size";
  workers: number;
  out: string;
};

const usage: (msg?: string) => never = makeUsage(
  "savings",
  "usage: bun bench/e2e/savings.ts [--agents 1000] [--concurrency 50] [--keepalive 10] [--rounds 3] [--size BYTES]\n" +
    "         [--stampede 500 | --skip-stampede] [--stampede-delay-ms 1000] [--mint-hosts 500] [--handshakes 2000] [--skip-handshakes]\n" +
    "         [--small-bytes 4096 | --skip-breakdown] [--verify sha256|size] [--workers N] [--out DIR]",
);

function parseOptions(argv: string[]): Options {
  const o: Options = {
    agents: 1000,
    concurrency: 50,
    keepalive: 10,
    // the box is shared by agents, gateway and origin (and whatever else runs): five paired rounds, median ratio
    rounds: 5,
    size: MANIFEST_BYTES,
    stampede: 500,
    stampedeDelayMs: 1000,
    mintHosts: 500,
    handshakes: 2000,
    smallBytes: 4096,
    manifest1k: true,
    breakdown: true,
    verify: "sha256",
    workers: availableParallelism(),
    out: join(ROOT, "bench/results"),
  };
  forEachFlag(argv, usage, o, ({ flag, arg: a, value: v, int }) => {
    switch (flag) {
      case "--agents": o.agents = int(1, 100_000); break;
      case "--concurrency": o.concurrency = int(1, 2000); break;
      case "--keepalive": o.keepalive = int(2, 10_000); break;
      case "--rounds": o.rounds = int(1, 20); break;
      case "--size": o.size = int(1, 256 * 1024 * 1024); break;
      case "--stampede": o.stampede = int(1, 5000); break;
      case "--skip-stampede": o.stampede = 0; break;
      case "--stampede-delay-ms": o.stampedeDelayMs = int(0, 30_000); break;
      case "--mint-hosts": o.mintHosts = int(0, 9999); break;
      case "--handshakes": o.handshakes = int(0, 100_000); break;
      case "--skip-handshakes": o.mintHosts = 0; o.handshakes = 0; break;
      case "--small-bytes": o.smallBytes = int(1, 1024 * 1024); break;
      case "--skip-breakdown": o.breakdown = false; break;
      case "--skip-manifest-1k": o.manifest1k = false; break;
      case "--verify": {
        const x = v();
        if (x !== "sha256" && x !== "size") usage("--verify: sha256 or size");
        o.verify = x;
        break;
      }
      default:
        usage(`unknown argument ${a}`);
    }
  });
  return o;
}

const log = makeLog("savings");

// ---- the run's fixtures -----------------------------------------------------------------------------------

type Env = {
  opts: Options;
  pki: TestPki;
  origin: Child;
  originPort: number;
  gw: Gateway;
  gatewayCaPath: string;
};

type Artifact = { name: string; size: number; sha256: string; cachePath: string; directPath: string };

function artifact(name: string, size: number, query = ""): Artifact {
  const base = `/artifact/${name}?size=${size}${query}`;
  return { name, size, sha256: sha256Hex(artifactBytes(name, size)), cachePath: base, directPath: `${base}&via=direct` };
}

async function originCounts(env: Env): Promise<Record<string, { requests: number; full: number; notModified: number; bytes: number }>> {
  env.origin.send("stats");
  return (await env.origin.next("stats", 10_000)).artifacts;
}

type CacheTotals = { hits: number; misses: number; collapsed: number; revalidations: number; bytes_fetched: number; bytes_served: number; [k: string]: number };

async function cacheTotals(env: Env, settle = true): Promise<CacheTotals | null> {
  if (settle) await Bun.sleep(STATS_SETTLE_MS);
  try {
    const r = await env.gw.admin("/api/stats");
    const s = (await r.json()) as any;
    return (s.totals?.cache as CacheTotals) ?? null;
  } catch {
    return null;
  }
}

function cacheDelta(a: CacheTotals | null, b: CacheTotals | null) {
  if (!a || !b) return null;
  const d: Record<string, number> = {};
  for (const k of Object.keys(b)) if (typeof b[k] === "number") d[k] = b[k] - (a[k] ?? 0);
  const lookups = (d.hits ?? 0) + (d.misses ?? 0) + (d.collapsed ?? 0);
  return {
    ...(d as { hits?: number; misses?: number; collapsed?: number } & Record<string, number>),
    hitRatio: lookups ? round((d.hits ?? 0) / lookups, 4) : null,
    // hits plus the waiters collapsed onto the one fill: every request that cost no upstream download of its own
    servedWithoutOwnFetch: lookups ? round(((d.hits ?? 0) + (d.collapsed ?? 0)) / lookups, 4) : null,
  };
}

const cpuDelta = (a: CpuTimes | null, b: CpuTimes | null) =>
  a && b ? { user: round(b.user - a.user), sys: round(b.sys - a.sys), total: round(b.user - a.user + b.sys - a.sys) } : null;

/** One savings-client process: spawn, wait for its "done", stop; the gateway's and origin's CPU around it. */
async function clientPass(env: Env, label: string, args: string[], work: number) {
  const { opts } = env;
  const timeoutMs = 60_000 + work * 200;
  const g0 = cpuTimes(env.gw.proc.pid);
  const o0 = cpuTimes(env.origin.pid);
  const c = spawnChild(
    `savings-client(${label})`,
    [
      BUN,
      join(HERE, "savings-client.ts"),
      "--origin-port", String(env.originPort),
      "--proxy-port", String(env.gw.ports.cache),
      "--concurrency", String(opts.concurrency),
      "--deadline-s", String(Math.ceil(timeoutMs / 1000)),
      ...args,
    ],
    (o) => {
      if (o.ev === "progress" && work >= 1000 && o.done % 1000 === 0) log(`  ${label}: ${o.done} done, ${o.errors} errors, ${o.ms} ms`);
    },
  );
  let done: any;
  try {
    done = await c.next("done", timeoutMs + 5000);
  } finally {
    await c.stop();
  }
  const gatewayCpuS = cpuDelta(g0, cpuTimes(env.gw.proc.pid));
  const originCpuS = cpuDelta(o0, cpuTimes(env.origin.pid));
  const { ev: _e, ...r } = done;
  const units = r.requestsOk ?? r.handshakesOk ?? 0;
  return {
    label,
    ...r,
    gatewayCpuS,
    originCpuS,
    gatewayCpuMsPer: gatewayCpuS && units ? round((gatewayCpuS.total * 1000) / units, 3) : null,
    originCpuMsPer: originCpuS && units ? round((originCpuS.total * 1000) / units, 3) : null,
    clientCpuMsPer: r.clientCpuS && units ? round(((r.clientCpuS.user + r.clientCpuS.sys) * 1000) / units, 3) : null,
  };
}

type Way = "cache" | "direct";
type Conn = "fresh" | "keepalive";

/** One pass of downloads; `withStats` reads the gateway's cache counters around it (a ~1 s wait for the report). */
async function fetchPass(env: Env, a: Artifact, way: Way, conn: Conn, label: string, withStats = false, agents = env.opts.agents) {
  const { opts } = env;
  const caPath = way === "cache" ? env.gatewayCaPath : env.pki.caPath;
  const before = withStats ? await cacheTotals(env, false) : null;
  const p = await clientPass(
    env,
    label,
    [
      "--mode", "fetch",
      "--via", way,
      "--ca", caPath,
      "--host", HOST,
      "--path", way === "cache" ? a.cachePath : a.directPath,
      "--expect-size", String(a.size),
      "--expect-sha256", a.sha256,
      "--agents", String(agents),
      "--per-conn", String(conn === "fresh" ? 1 : opts.keepalive),
      ...(opts.verify === "size" ? ["--size-only"] : []),
    ],
    agents,
  );
  const cache = withStats ? cacheDelta(before, await cacheTotals(env)) : null;
  log(
    `${label}: ${p.requestsOk}/${agents} ok, ${p.requestsPerSecond} req/s, ${p.MBps} MB/s, p50 ${p.latencyMs.p50} / p99 ${p.latencyMs.p99} ms, ` +
      `gateway ${p.gatewayCpuMsPer ?? "-"} ms CPU/req${cache ? `, hit ratio ${cache.hitRatio}` : ""}${p.errorCount ? `, ERRORS ${JSON.stringify(p.errors)}` : ""}`,
  );
  return { ...p, cache };
}

const summarizePasses = (ps: any[]) => ({
  requestsOk: ps.reduce((s, p) => s + (p.requestsOk ?? 0), 0),
  requestsFailed: ps.reduce((s, p) => s + (p.requestsFailed ?? 0), 0),
  errorCount: ps.reduce((s, p) => s + (p.errorCount ?? 0), 0),
  requestsPerSecond: median(ps.map((p) => p.requestsPerSecond)),
  MBps: median(ps.map((p) => p.MBps)),
  latencyMs: { p50: median(ps.map((p) => p.latencyMs?.p50)), p99: median(ps.map((p) => p.latencyMs?.p99)) },
  handshakeMs: { p50: median(ps.map((p) => p.handshakeMs?.p50)), p99: median(ps.map((p) => p.handshakeMs?.p99)) },
  gatewayCpuMsPerRequest: median(ps.map((p) => p.gatewayCpuMsPer)),
  gatewayCpuUserMsPerRequest: median(ps.map((p) => (p.gatewayCpuS && p.requestsOk ? round((p.gatewayCpuS.user * 1000) / p.requestsOk, 3) : null))),
  gatewayCpuSysMsPerRequest: median(ps.map((p) => (p.gatewayCpuS && p.requestsOk ? round((p.gatewayCpuS.sys * 1000) / p.requestsOk, 3) : null))),
  originCpuMsPerRequest: median(ps.map((p) => p.originCpuMsPer)),
  clientCpuMsPerRequest: median(ps.map((p) => p.clientCpuMsPer)),
});

// ---- phase: the agents fetch the manifest -----------------------------------------------------------------

async function runFetch(env: Env, manifest: Artifact) {
  const { opts } = env;
  const rounds: any[] = [];
  const before = await originCounts(env);
  const stats0 = await cacheTotals(env, false);
  for (let k = 0; k < opts.rounds; k++) {
    const r: any = {};
    // Round 1 begins with the cold cache/fresh pass (the "A agents"); then the order alternates per round.
    const order: [Way, Conn][] =
      k % 2 === 0
        ? [["cache", "fresh"], ["direct", "fresh"], ["cache", "keepalive"], ["direct", "keepalive"]]
        : [["direct", "fresh"], ["cache", "fresh"], ["direct", "keepalive"], ["cache", "keepalive"]];
    for (const [way, conn] of order) {
      const cold = k === 0 && way === "cache" && conn === "fresh";
      r[`${way}_${conn}`] = await fetchPass(env, manifest, way, conn, `fetch round ${k + 1}/${opts.rounds} ${way}/${conn}`, cold);
    }
    r.ratios = {
      fresh: ratio(r.cache_fresh.requestsPerSecond, r.direct_fresh.requestsPerSecond),
      keepalive: ratio(r.cache_keepalive.requestsPerSecond, r.direct_keepalive.requestsPerSecond),
    };
    log(`fetch round ${k + 1}: cache/direct requests/s fresh ${r.ratios.fresh}×, keep-alive ${r.ratios.keepalive}×`);
    rounds.push(r);
  }
  const after = await originCounts(env);
  const allCache = cacheDelta(stats0, await cacheTotals(env));
  const count = (c: typeof after, p: string) => c[p] ?? { requests: 0, full: 0, notModified: 0, bytes: 0 };
  const sub = (p: string) => {
    const a = count(after, p);
    const b = count(before, p);
    return { requests: a.requests - b.requests, full: a.full - b.full, notModified: a.notModified - b.notModified, bytes: a.bytes - b.bytes };
  };
  const cold = rounds[0].cache_fresh;
  const upstream = sub(manifest.cachePath);
  const cacheRequests = rounds.reduce((s, r) => s + r.cache_fresh.requestsOk + r.cache_keepalive.requestsOk, 0);
  const pick = (way: Way, conn: Conn) => summarizePasses(rounds.map((r) => r[`${way}_${conn}`]));
  return {
    manifest: { path: manifest.cachePath, bytes: manifest.size, sha256: manifest.sha256 },
    coldAgents: {
      agents: opts.agents,
      requestsOk: cold.requestsOk,
      hitRatio: cold.cache?.hitRatio ?? null,
      gatewayCounters: cold.cache,
      requestsPerSecond: cold.requestsPerSecond,
      MBps: cold.MBps,
      latencyMs: cold.latencyMs,
    },
    upstream: {
      // the origin's own count for the path only the cache asked for, over every round
      originRequests: upstream.requests,
      originFullResponses: upstream.full,
      originBytes: upstream.bytes,
      originNotModified: upstream.notModified,
      agentRequestsThroughCache: cacheRequests,
      bytesServedToAgents: cacheRequests * manifest.size,
      // cross-check: the direct passes' path, which the gateway never saw
      directOriginRequests: sub(manifest.directPath).requests,
      // the gateway's own counters over the whole fetch phase
      gatewayCounters: allCache,
      hitRatio: allCache?.hitRatio ?? null,
    },
    cache: { fresh: pick("cache", "fresh"), keepalive: pick("cache", "keepalive") },
    direct: { fresh: pick("direct", "fresh"), keepalive: pick("direct", "keepalive") },
    // CPU per request of the gateway serving a hit vs the origin serving the same bytes (native Bun TLS): a figure
    // that does not depend on how busy the box was, unlike requests/s
    cpuVsOrigin: {
      fresh: ratio(median(rounds.map((r) => r.cache_fresh.gatewayCpuMsPer)), median(rounds.map((r) => r.direct_fresh.originCpuMsPer))),
      keepalive: ratio(median(rounds.map((r) => r.cache_keepalive.gatewayCpuMsPer)), median(rounds.map((r) => r.direct_keepalive.originCpuMsPer))),
    },
    ratios: {
      fresh: median(rounds.map((r) => r.ratios.fresh)),
      keepalive: median(rounds.map((r) => r.ratios.keepalive)),
      freshPerRound: rounds.map((r) => r.ratios.fresh),
      keepalivePerRound: rounds.map((r) => r.ratios.keepalive),
    },
    perRound: rounds,
  };
}

// ---- phase: where the gateway's CPU goes -------------------------------------------------------------------

async function runBreakdown(env: Env, manifestFetch: any) {
  const { opts } = env;
  const small = artifact("small.bin", opts.smallBytes);
  log(`breakdown: the same passes with a ${opts.smallBytes}-byte object`);
  // Fill it first, so the passes below are all hits.
  await fetchPass(env, small, "cache", "keepalive", "breakdown warm-up", false, Math.min(opts.agents, opts.keepalive));
  const r: any = {};
  for (const [way, conn] of [["cache", "fresh"], ["cache", "keepalive"], ["direct", "fresh"], ["direct", "keepalive"]] as [Way, Conn][])
    r[`${way}_${conn}`] = await fetchPass(env, small, way, conn, `breakdown ${way}/${conn} ${opts.smallBytes} B`);
  const m = manifestFetch.cache;
  const cpu = (p: any) => p.gatewayCpuMsPer as number | null;
  const diff = (a: number | null, b: number | null) => (a !== null && b !== null ? round(a - b, 3) : null);
  const smallKa = cpu(r.cache_keepalive);
  const smallFresh = cpu(r.cache_fresh);
  return {
    smallBytes: opts.smallBytes,
    passes: r,
    // gateway CPU ms per request, split by what differs between the passes
    gatewayCpuMsPerRequest: {
      manifestFresh: m.fresh.gatewayCpuMsPerRequest,
      manifestKeepalive: m.keepalive.gatewayCpuMsPerRequest,
      smallFresh,
      smallKeepalive: smallKa,
      connectionSetup: diff(smallFresh, smallKa), // TCP accept + CONNECT + policy + TLS handshake (+ teardown)
      httpAndLookup: smallKa, // parse, route, cache lookup, head, a tiny body, all inside TLS
      moveManifestBytes: diff(m.keepalive.gatewayCpuMsPerRequest, smallKa), // read the blob, encrypt, write 2 MB
    },
    requestsPerSecond: {
      smallCacheFresh: r.cache_fresh.requestsPerSecond,
      smallDirectFresh: r.direct_fresh.requestsPerSecond,
      smallCacheKeepalive: r.cache_keepalive.requestsPerSecond,
      smallDirectKeepalive: r.direct_keepalive.requestsPerSecond,
      ratioFresh: ratio(r.cache_fresh.requestsPerSecond, r.direct_fresh.requestsPerSecond),
      ratioKeepalive: ratio(r.cache_keepalive.requestsPerSecond, r.direct_keepalive.requestsPerSecond),
    },
    originCpuMsPerRequest: {
      manifestFresh: manifestFetch.direct.fresh.originCpuMsPerRequest,
      manifestKeepalive: manifestFetch.direct.keepalive.originCpuMsPerRequest,
      smallFresh: r.direct_fresh.originCpuMsPer,
      smallKeepalive: r.direct_keepalive.originCpuMsPer,
    },
  };
}

// ---- phase: a 1 KiB manifest (issue 9) ---------------------------------------------------------------------

const MANIFEST_1K = 1024;

/** issue 13 "small objects": the same four passes for a 16 KiB object (one full TLS record of plaintext) */
const OBJECT_16K = 16 * 1024;

async function runManifest1k(env: Env, name = "manifest-1k.json", bytes = MANIFEST_1K) {
  const { opts } = env;
  const m = artifact(name, bytes);
  const MANIFEST_1K_ = bytes;
  log(`${name}: the four passes with a ${bytes}-byte object`);
  await fetchPass(env, m, "cache", "keepalive", `${name} warm-up`, false, Math.min(opts.agents, opts.keepalive));
  const r: any = {};
  for (const [way, conn] of [["cache", "keepalive"], ["direct", "keepalive"], ["cache", "fresh"], ["direct", "fresh"]] as [Way, Conn][])
    r[`${way}_${conn}`] = await fetchPass(env, m, way, conn, `${name} ${way}/${conn}`);
  return {
    bytes: MANIFEST_1K_,
    passes: r,
    requestsPerSecond: {
      cacheKeepalive: r.cache_keepalive.requestsPerSecond,
      directKeepalive: r.direct_keepalive.requestsPerSecond,
      cacheFresh: r.cache_fresh.requestsPerSecond,
      directFresh: r.direct_fresh.requestsPerSecond,
      ratioKeepalive: ratio(r.cache_keepalive.requestsPerSecond, r.direct_keepalive.requestsPerSecond),
      ratioFresh: ratio(r.cache_fresh.requestsPerSecond, r.direct_fresh.requestsPerSecond),
    },
  };
}

// ---- phase: the cold stampede -----------------------------------------------------------------------------

async function runStampede(env: Env) {
  const { opts } = env;
  const a = artifact(`stampede-${Date.now()}.bin`, opts.size, `&delay_ms=${opts.stampedeDelayMs}`);
  log(`stampede: ${opts.stampede} connections, then one GET each for a new object the origin answers after ${opts.stampedeDelayMs} ms`);
  const o0 = await originCounts(env);
  const s0 = await cacheTotals(env); // settled: the phases before must not leak into the delta
  const p = await clientPass(
    env,
    "stampede",
    [
      "--mode", "stampede",
      "--via", "cache",
      "--ca", env.gatewayCaPath,
      "--host", HOST,
      "--path", a.cachePath,
      "--expect-size", String(a.size),
      "--expect-sha256", a.sha256,
      "--agents", String(opts.stampede),
    ],
    opts.stampede * 4,
  );
  const o1 = await originCounts(env);
  const cache = cacheDelta(s0, await cacheTotals(env));
  const c = o1[a.cachePath] ?? { requests: 0, full: 0, notModified: 0, bytes: 0 };
  const c0 = o0[a.cachePath] ?? { requests: 0, full: 0, notModified: 0, bytes: 0 };
  const result = {
    agents: opts.stampede,
    path: a.cachePath,
    originDelayMs: opts.stampedeDelayMs,
    originRequests: c.requests - c0.requests,
    originBytes: c.bytes - c0.bytes,
    ...p,
    gatewayCounters: cache,
  };
  log(
    `stampede: ${p.requestsOk}/${opts.stampede} bodies exact, origin saw ${result.originRequests} request(s) (${result.originBytes} bytes); ` +
      `gateway misses ${cache?.misses}, collapsed ${cache?.collapsed}; latency p50 ${p.latencyMs.p50} / p99 ${p.latencyMs.p99} ms (ramp ${p.rampMs} ms)`,
  );
  return result;
}

// ---- phase: leaf minting and handshakes -------------------------------------------------------------------

function leafFiles(env: Env): number | null {
  try {
    const dir = join(env.gw.dir, "data", "leaves");
    return readdirSync(dir).reduce((n, ca) => n + readdirSync(join(dir, ca)).filter((f) => f.endsWith(".pem")).length, 0);
  } catch {
    return null;
  }
}

async function runHandshakes(env: Env) {
  const { opts } = env;
  const out: any = {};
  if (opts.mintHosts) {
    const leaves0 = leafFiles(env);
    log(`handshakes: ${opts.mintHosts} first handshakes for distinct hosts (${MINT_PATTERN.replace("{n}", "0001")} …), each a new leaf`);
    const p = await clientPass(
      env,
      "mint",
      ["--mode", "handshake", "--via", "cache", "--ca", env.gatewayCaPath, "--host-pattern", MINT_PATTERN, "--agents", String(opts.mintHosts)],
      opts.mintHosts * 2,
    );
    const leaves1 = leafFiles(env);
    out.mint = { ...p, mintsPerSecond: p.handshakesPerSecond, leafFilesWritten: leaves0 !== null && leaves1 !== null ? leaves1 - leaves0 : null };
    log(`  mint: ${p.handshakesOk}/${opts.mintHosts} ok, ${p.handshakesPerSecond} first handshakes/s, handshake p50 ${p.handshakeMs.p50} / p99 ${p.handshakeMs.p99} ms, gateway ${p.gatewayCpuMsPer} ms CPU each`);
  }
  if (opts.handshakes) {
    for (const way of ["cache", "direct"] as Way[]) {
      log(`handshakes: ${opts.handshakes} repeated handshakes for ${HOST}, ${way === "cache" ? "through the cache port (leaf cached)" : "straight to the origin"}`);
      const p = await clientPass(
        env,
        `handshake-${way}`,
        ["--mode", "handshake", "--via", way, "--ca", way === "cache" ? env.gatewayCaPath : env.pki.caPath, "--host", HOST, "--agents", String(opts.handshakes)],
        opts.handshakes,
      );
      out[way === "cache" ? "repeat" : "direct"] = p;
      log(`  ${way}: ${p.handshakesOk}/${opts.handshakes} ok, ${p.handshakesPerSecond} handshakes/s, p50 ${p.handshakeMs.p50} / p99 ${p.handshakeMs.p99} ms, gateway ${p.gatewayCpuMsPer ?? "-"} ms CPU each`);
    }
    out.ratio = ratio(out.repeat?.handshakesPerSecond, out.direct?.handshakesPerSecond);
  }
  return out;
}

// ---- gates, targets, summary ------------------------------------------------------------------------------

function judge(doc: any) {
  const gates: Check[] = [];
  const targets: Check[] = [];
  const f = doc.fetch;
  if (f) {
    const u = f.upstream;
    gates.push({
      name: `one upstream copy for ${u.agentRequestsThroughCache} agent downloads through the cache`,
      pass: u.originRequests === 1 && u.originFullResponses === 1 && u.originBytes === f.manifest.bytes,
      value: { originRequests: u.originRequests, originBytes: u.originBytes },
      want: `1 request, ${f.manifest.bytes} bytes`,
    });
    const errs = ["cache", "direct"].flatMap((w) => ["fresh", "keepalive"].map((c) => f[w][c]));
    gates.push({
      name: `fetch passes: 0 errors, every body ${doc.options.verify === "sha256" ? "byte-exact (SHA-256)" : "of the right size (--verify size)"}`,
      pass: errs.every((s) => s.errorCount === 0 && s.requestsFailed === 0),
      value: Object.fromEntries(["cache", "direct"].flatMap((w) => ["fresh", "keepalive"].map((c) => [`${w}/${c}`, { failed: f[w][c].requestsFailed, errors: f[w][c].errorCount }]))),
      want: "0 failed, 0 errors",
    });
    targets.push({
      name: `cache hits, fresh connection per agent: requests/s ≥ ${TARGET_RPS_RATIO}× direct (C proxy: ${C_PROXY_RATIO}×)`,
      pass: f.ratios.fresh !== null && f.ratios.fresh >= TARGET_RPS_RATIO,
      value: `${f.cache.fresh.requestsPerSecond} vs ${f.direct.fresh.requestsPerSecond} req/s = ${f.ratios.fresh}× (rounds: ${f.ratios.freshPerRound.join(", ")})`,
      want: `≥ ${TARGET_RPS_RATIO}×`,
    });
    targets.push({
      name: `cache hits, keep-alive (${doc.options.keepalive} per connection): requests/s ≥ ${TARGET_RPS_RATIO}× direct`,
      pass: f.ratios.keepalive !== null && f.ratios.keepalive >= TARGET_RPS_RATIO,
      value: `${f.cache.keepalive.requestsPerSecond} vs ${f.direct.keepalive.requestsPerSecond} req/s = ${f.ratios.keepalive}× (rounds: ${f.ratios.keepalivePerRound.join(", ")})`,
      want: `≥ ${TARGET_RPS_RATIO}×`,
    });
  }
  if (doc.breakdown) {
    const b = doc.breakdown.passes;
    gates.push({
      name: "breakdown passes: 0 errors",
      pass: Object.values(b).every((p: any) => p.errorCount === 0 && p.requestsFailed === 0),
      value: Object.fromEntries(Object.entries(b).map(([k, p]: [string, any]) => [k, p.errorCount + p.requestsFailed])),
      want: "0",
    });
  }
  if (f) {
    targets.push({
      name: "manifest hits, keep-alive: requests/s ≥ 1.0× the origin's own (issue 9)",
      pass: f.ratios.keepalive !== null && f.ratios.keepalive >= 1,
      value: `${f.ratios.keepalive}×`,
      want: "≥ 1.0×",
    });
  }
  if (doc.manifest1k) {
    const m = doc.manifest1k;
    gates.push({
      name: "1 KiB manifest passes: 0 errors",
      pass: Object.values(m.passes).every((p: any) => p.errorCount === 0 && p.requestsFailed === 0),
      value: Object.fromEntries(Object.entries(m.passes).map(([k, p]: [string, any]) => [k, p.errorCount + p.requestsFailed])),
      want: "0",
    });
    targets.push({
      name: "1 KiB manifest hits, keep-alive: requests/s ≥ 1.0× the origin's own (issue 9)",
      pass: m.requestsPerSecond.ratioKeepalive !== null && m.requestsPerSecond.ratioKeepalive >= 1,
      value: `${m.requestsPerSecond.cacheKeepalive} vs ${m.requestsPerSecond.directKeepalive} req/s = ${m.requestsPerSecond.ratioKeepalive}× (fresh connections: ${m.requestsPerSecond.ratioFresh}×)`,
      want: "≥ 1.0×",
    });
  }
  if (doc.object16k) {
    const m = doc.object16k;
    gates.push({
      name: "16 KiB object passes: 0 errors",
      pass: Object.values(m.passes).every((p: any) => p.errorCount === 0 && p.requestsFailed === 0),
      value: Object.fromEntries(Object.entries(m.passes).map(([k, p]: [string, any]) => [k, p.errorCount + p.requestsFailed])),
      want: "0",
    });
    targets.push({
      name: "16 KiB object hits, keep-alive: requests/s ≥ 1.0× the origin's own (issue 13)",
      pass: m.requestsPerSecond.ratioKeepalive !== null && m.requestsPerSecond.ratioKeepalive >= 1,
      value: `${m.requestsPerSecond.cacheKeepalive} vs ${m.requestsPerSecond.directKeepalive} req/s = ${m.requestsPerSecond.ratioKeepalive}× (fresh connections: ${m.requestsPerSecond.ratioFresh}×)`,
      want: "≥ 1.0×",
    });
  }
  if (doc.stampede) {
    const s = doc.stampede;
    gates.push({
      name: `cold stampede: ${s.agents} concurrent first requests → exactly one upstream fetch`,
      pass: s.originRequests === 1 && s.originBytes === doc.options.size,
      value: { originRequests: s.originRequests, originBytes: s.originBytes },
      want: `1 request, ${doc.options.size} bytes`,
    });
    gates.push({
      name: `cold stampede: all ${s.agents} got the byte-exact body, 0 errors`,
      pass: s.requestsOk === s.agents && s.errorCount === 0,
      value: { requestsOk: s.requestsOk, errors: s.errors },
      want: `${s.agents} ok`,
    });
  }
  if (doc.handshakes) {
    const h = doc.handshakes;
    for (const k of ["mint", "repeat", "direct"]) {
      const p = h[k];
      if (!p) continue;
      gates.push({
        name: `handshakes (${k}): 0 errors`,
        pass: p.handshakesOk === p.agents && p.errorCount === 0,
        value: { ok: p.handshakesOk, errors: p.errors },
        want: `${p.agents} ok`,
      });
    }
  }
  return { gates, targets };
}

function summary(doc: any): string {
  const out: string[] = [];
  const o = doc.options;
  const ms = p50p99;
  const ms1 = (s: any) => (s && s.p50 !== null ? `${round(s.p50, 1)} / ${round(s.p99, 1)}` : "-");
  out.push(
    `agate savings benchmark (${doc.machine.cpus} CPUs, ${o.workers} workers, ${o.agents} agents × ${round(o.size / 1e6, 2)} MB, ${o.concurrency} at a time, ` +
      `${o.rounds} round(s), bodies checked by ${o.verify}, ${doc.elapsedS}s; load average ${doc.machine.loadAvgStart?.[0]} before, ${doc.machine.loadAvgEnd?.[0]} after)`,
  );
  const f = doc.fetch;
  if (f) {
    const u = f.upstream;
    out.push(
      `\nupstream: the origin sent ${u.originRequests} response(s), ${u.originBytes} bytes, for ${u.agentRequestsThroughCache} agent downloads ` +
        `(${round(u.bytesServedToAgents / 1e9, 2)} GB served to agents, which without the cache would all have come from upstream)`,
    );
    const c = f.coldAgents;
    out.push(`first ${c.agents} agents (cold cache): hit ratio ${c.hitRatio}, ${c.gatewayCounters?.servedWithoutOwnFetch} without a fetch of their own (${JSON.stringify({ hits: c.gatewayCounters?.hits, misses: c.gatewayCounters?.misses, collapsed: c.gatewayCounters?.collapsed })}), ${c.requestsPerSecond} req/s, ${c.MBps} MB/s, ${ms(c.latencyMs)}`);
    out.push(`all cache passes: hit ratio ${u.hitRatio}; gateway bytes_fetched ${u.gatewayCounters?.bytes_fetched}, bytes_served ${u.gatewayCounters?.bytes_served}`);
    out.push(`\n  (medians over rounds)     req/s     MB/s   latency p50/p99 ms   handshake p50/p99 ms   CPU ms/req: gateway (user+sys)  origin  client`);
    for (const conn of ["fresh", "keepalive"]) {
      for (const way of ["cache", "direct"]) {
        const s = f[way][conn];
        out.push(
          `  ${`${way}/${conn}`.padEnd(22)} ${String(s.requestsPerSecond).padStart(8)} ${String(s.MBps).padStart(8)}   ${ms1(s.latencyMs).padEnd(19)}  ${ms1(s.handshakeMs).padEnd(21)}  ` +
            `${way === "cache" ? `${s.gatewayCpuMsPerRequest} (${s.gatewayCpuUserMsPerRequest}+${s.gatewayCpuSysMsPerRequest})` : "-"}`.padEnd(28) +
            `${String(s.originCpuMsPerRequest).padStart(6)}  ${String(s.clientCpuMsPerRequest).padStart(6)}`,
        );
      }
    }
    out.push(`  gateway CPU per hit ÷ origin CPU per download: fresh ${f.cpuVsOrigin.fresh}×, keep-alive ${f.cpuVsOrigin.keepalive}×`);
    out.push(`  ratio cache/direct requests/s: fresh ${f.ratios.fresh}× (rounds ${f.ratios.freshPerRound.join(", ")}), keep-alive ${f.ratios.keepalive}× (rounds ${f.ratios.keepalivePerRound.join(", ")})`);
  }
  if (doc.breakdown) {
    const g = doc.breakdown.gatewayCpuMsPerRequest;
    const r = doc.breakdown.requestsPerSecond;
    out.push(
      `\ngateway CPU per request (ms): connection setup ${g.connectionSetup} + HTTP & lookup ${g.httpAndLookup} + moving the manifest ${g.moveManifestBytes} ` +
        `(fresh ${g.manifestFresh}, keep-alive ${g.manifestKeepalive}; ${doc.breakdown.smallBytes} B object: fresh ${g.smallFresh}, keep-alive ${g.smallKeepalive})`,
    );
    out.push(`  ${doc.breakdown.smallBytes} B object req/s: fresh ${r.smallCacheFresh} vs direct ${r.smallDirectFresh} (${r.ratioFresh}×), keep-alive ${r.smallCacheKeepalive} vs ${r.smallDirectKeepalive} (${r.ratioKeepalive}×)`);
  }
  if (doc.manifest1k) {
    const r = doc.manifest1k.requestsPerSecond;
    out.push(`\n1 KiB manifest req/s: keep-alive ${r.cacheKeepalive} vs direct ${r.directKeepalive} (${r.ratioKeepalive}×), fresh ${r.cacheFresh} vs ${r.directFresh} (${r.ratioFresh}×)`);
  }
  if (doc.object16k) {
    const r = doc.object16k.requestsPerSecond;
    out.push(`16 KiB object req/s: keep-alive ${r.cacheKeepalive} vs direct ${r.directKeepalive} (${r.ratioKeepalive}×), fresh ${r.cacheFresh} vs ${r.directFresh} (${r.ratioFresh}×)`);
  }
  if (doc.stampede) {
    const s = doc.stampede;
    out.push(
      `\nstampede: ${s.agents} concurrent first requests (origin delay ${s.originDelayMs} ms): origin saw ${s.originRequests} request(s), ${s.originBytes} bytes; ` +
        `${s.requestsOk} bodies exact; gateway misses ${s.gatewayCounters?.misses} collapsed ${s.gatewayCounters?.collapsed}; ${ms(s.latencyMs)} (connections opened in ${s.rampMs} ms)`,
    );
  }
  if (doc.handshakes) {
    const h = doc.handshakes;
    if (h.mint) out.push(`\nleaf minting: ${h.mint.mintsPerSecond} first handshakes/s for new hosts (${h.mint.handshakesOk} hosts, ${h.mint.leafFilesWritten} leaves written), handshake ${ms(h.mint.handshakeMs)}, gateway ${h.mint.gatewayCpuMsPer} ms CPU each`);
    if (h.repeat) out.push(`handshakes, known host: ${h.repeat.handshakesPerSecond}/s through the cache port (${ms(h.repeat.handshakeMs)}, gateway ${h.repeat.gatewayCpuMsPer} ms CPU each) vs ${h.direct?.handshakesPerSecond}/s straight to the origin (${h.ratio}×)`);
  }
  out.push(...checkLines(doc, false));
  if (doc.gatewayAtEnd) out.push(`gateway counters at the end: errors ${JSON.stringify(doc.gatewayAtEnd.errors)}, refusals ${JSON.stringify(doc.gatewayAtEnd.refusals)}`);
  out.push(...verdictLines(doc));
  return out.join("\n");
}

// ---- main -------------------------------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const { started, file } = resultFile(opts.out, "savings");
  const doc: any = {
    ...docHead("savings", started, machineInfo(), opts),
    fetch: null,
    breakdown: null,
    manifest1k: null,
    object16k: null,
    stampede: null,
    handshakes: null,
  };
  let harnessError: string | null = null;
  let gw: Gateway | null = null;
  const cleanup = async () => {
    await stopChildren();
    if (gw) await gw.stop();
    gw = null;
  };
  onInterrupt(log, "interrupted: stopping children", cleanup);
  try {
    // A wildcard SAN covers the mint phase's h0001… names at the origin (openssl accepts *.pod in a SAN).
    const pki = makeTestPki([HOST, `*.${POD}`]);
    const origin = spawnChild("origin", [BUN, join(HERE, "origin-fixture.ts"), "--cert", pki.certPath, "--key", pki.keyPath, "--artifacts"]);
    const originPort = Number((await origin.next("listening", 15_000)).port);
    const hosts: Record<string, string> = { [HOST]: "127.0.0.1" };
    for (let i = 1; i <= opts.mintHosts; i++) hosts[MINT_PATTERN.replace("{n}", String(i).padStart(4, "0"))] = "127.0.0.1";
    log(`starting a gateway in cache mode (${opts.workers} workers), origin on ${originPort}`);
    gw = await startGateway({
      gateway: { workers: opts.workers, drain_grace_s: 2 },
      proxy: { max_connections: Math.max(3000, opts.stampede + 2 * opts.concurrency) },
      cache: { enabled: true, port: 0, listen: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
      destinations: { ports: [originPort] },
      hosts,
    });
    const caRes = await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`);
    if (!caRes.ok) throw new Error(`GET /ca.pem: ${caRes.status}`);
    const gatewayCaPath = join(gw.dir, "agent-ca.pem");
    writeFileSync(gatewayCaPath, await caRes.text());
    const env: Env = { opts, pki, origin, originPort, gw, gatewayCaPath };
    doc.machine.gatewayIdleRssKB = rssKB(gw.proc.pid);
    // Counters come from the workers' first report (once a second): wait for it, so deltas start at a real zero.
    await waitFor(() => cacheTotals(env, false), { timeoutMs: 5000, what: "the workers' first counter report", everyMs: 100 });
    const manifest = artifact("manifest.bin", opts.size);
    log(`fetch: ${opts.agents} agents × ${opts.size} bytes, ${opts.concurrency} at a time, ${opts.rounds} round(s)`);
    doc.fetch = await runFetch(env, manifest);
    if (opts.breakdown) doc.breakdown = await runBreakdown(env, doc.fetch);
    if (opts.manifest1k) doc.manifest1k = await runManifest1k(env);
    if (opts.manifest1k) doc.object16k = await runManifest1k(env, "object-16k.bin", OBJECT_16K);
    if (opts.stampede) doc.stampede = await runStampede(env);
    if (opts.mintHosts || opts.handshakes) doc.handshakes = await runHandshakes(env);
    doc.machine.gatewayEndRssKB = rssKB(gw.proc.pid);
    try {
      const st = (await (await gw.admin("/api/stats")).json()) as any;
      doc.gatewayAtEnd = { cache: st.totals?.cache ?? null, errors: st.totals?.errors ?? null, refusals: st.totals?.refusals ?? null };
    } catch (e) {
      doc.gatewayAtEnd = { error: String(e) };
    }
  } catch (e) {
    harnessError = String((e as Error)?.stack ?? e);
  } finally {
    await cleanup();
  }
  finishRun(doc, { started, file, error: harnessError, ...judge(doc), needGates: true, summary });
}

await main();
