/**
 * The patch-mode benchmark (issue 4, "Benchmark"): how fast does the gateway serve a vendor's 1 GB patch file it
 * has cached, compared with downloading it from the vendor directly; what does a cold object cost the origin when
 * 20 agents ask for it at once, and how soon do they get bytes; how many random 1 MB ranges per second does it serve.
 *
 *   bun bench/e2e/patch.ts [--size-mb 1024] [--waiters 20] [--tries 3] [--fill-scheme https|http] [--sha-waiters 2]
 *                          [--range-requests 1000] [--range-concurrency 8] [--range-kb 1024] [--slice-mb 4]
 *                          [--skip-hit] [--skip-fill] [--skip-ranges] [--workers N] [--tmp DIR] [--out DIR]
 *
 * Processes (each its own, so CPU figures are per role; every one stopped by its PID at the end):
 *   this one                  orchestration; /proc/<gateway>/{status,stat,task/*\/stat} sampled every 100 ms
 *   patch-origin-fixture.ts   the vendor: test/peers/range-origin.ts over HTTPS (test PKI) and plain HTTP, counting
 *                             the body bytes it sends and the requests per path
 *   the gateway               `bun src/main.ts --config FILE` via test/peers/gateway.ts: cache + patch mode, the patch
 *                             volume and data dir under the run's temp dir, [hosts] mapping the vendor to 127.0.0.1
 *   curl                      whole-file downloads: `-x http://127.0.0.1:<cache>` (CONNECT + TLS with the gateway's
 *                             CA for https, absolute-form for http), or straight to the origin (--resolve)
 *   patch-range-client.ts     the random-range load: keep-alive connections, every byte checked by its offset
 *
 * Files: two deterministic files of --size-mb (bench/e2e/patch-bytes.ts: every 4-byte word carries its offset, so
 * a misplaced slice is caught) under a fresh temp dir with the patch volume and the gateway's data; all of it is
 * deleted at the end, whatever happened.
 *
 * Phases (one gateway for the run; RSS peak, CPU seconds and CPU per thread name measured per phase):
 *   hit     warm: one download through the cache port per scheme (the origin must send one copy, then nothing for
 *           hits); verify: one more through the cache per scheme, piped to `openssl dgst -sha256`; then --tries rounds of four
 *           timed downloads to /dev/null — direct https, cache https, direct http, cache http (order reversed every
 *           other round) — curl's %{speed_download}, best and median per way, gateway CPU per download.
 *   fill    a new object, --waiters curl downloads started together through the cache port: origin bytes, each
 *           waiter's time to first byte (%{time_starttransfer}, and after its TLS set-up), total time; every
 *           waiter's size checked, --sha-waiters of them piped to `openssl dgst -sha256`.
 *   ranges  --range-requests random --range-kb ranges of the cached hot object, --range-concurrency keep-alive
 *           connections: through the cache port over https and over http, and straight to the origin (https) as
 *           the reference; ranges/s, MB/s, latency p50/p99; the origin must send nothing for the cached runs.
 *
 * Output: the JSON document on stdout and in bench/results/patch-<timestamp>.json, a human summary on stderr.
 * Exit 0 when every gate passes, 1 when one fails, 2 on bad arguments, 3 when the harness broke.
 * Gates: the warm fill costs the origin one copy (≤ 1.01×) and hits cost it nothing; every download through the
 * cache is byte-exact (sizes; SHA-256 where hashed); the cold fill with waiters costs the origin ≤ 1.05× the
 * object; every range is byte-exact, with 0 errors. Targets (reported pass/miss, not gated): cache hit ≥ 0.95×
 * direct per scheme (the concurrency benchmark's bar for a tunnel); gateway RSS growth per phase ≤ 256 MiB (the
 * e2e test's bound while serving a 1 GB file).
 */
import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync, readdirSync, readFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ROOT, startGateway, type Gateway } from "../../test/peers/gateway";
import { makeTestPki, type TestPki } from "../../test/peers/test-ca";
import { type Child, type CpuTimes, CLK_TCK, cpuTimes, median, ratio, round, rssKB, spawnChild, stopChildren } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, resultFile, verdictLines } from "./harness";
import { writePatchFile } from "./patch-bytes";

const HOST = "download.windowsupdate.example";
const BUN = process.execPath;
const HERE = import.meta.dir;
const MIB = 1024 * 1024;
const SAMPLE_MS = 100;
/** workers report their counters to the supervisor once a second */
const STATS_SETTLE_MS = 1300;
const WARM_MAX_RATIO = 1.01;
const FILL_MAX_RATIO = 1.05;
const TARGET_HIT_RATIO = 0.95;
const TARGET_RSS_GROWTH_KB = 256 * 1024;
const HOT = { path: "/kb/hot-cumulative.msu", etag: '"hot-v1"', seed: 1 };
const COLD = { path: "/kb/cold-cumulative.msu", etag: '"cold-v1"', seed: 2 };

// ---- options ----------------------------------------------------------------------------------------------

type Scheme = "https" | "http";
type Options = {
  sizeMb: number;
  waiters: number;
  tries: number;
  fillScheme: Scheme;
  shaWaiters: number;
  rangeRequests: number;
  rangeConcurrency: number;
  rangeKb: number;
  sliceMb: number;
  hit: boolean;
  fill: boolean;
  ranges: boolean;
  workers: number;
  tmp: string;
  out: string;
};

const usage: (msg?: string) => never = makeUsage(
  "patch",
  "usage: bun bench/e2e/patch.ts [--size-mb 1024] [--waiters 20] [--tries 3] [--fill-scheme https|http] [--sha-waiters 2]\n" +
    "         [--range-requests 1000] [--range-concurrency 8] [--range-kb 1024] [--slice-mb 4]\n" +
    "         [--skip-hit] [--skip-fill] [--skip-ranges] [--workers N] [--tmp DIR] [--out DIR]",
);

function parseOptions(argv: string[]): Options {
  const o: Options = {
    sizeMb: 1024,
    waiters: 20,
    tries: 3,
    fillScheme: "https",
    shaWaiters: 2,
    rangeRequests: 1000,
    rangeConcurrency: 8,
    rangeKb: 1024,
    sliceMb: 4,
    hit: true,
    fill: true,
    ranges: true,
    workers: availableParallelism(),
    tmp: tmpdir(),
    out: join(ROOT, "bench/results"),
  };
  forEachFlag(argv, usage, o, ({ flag, arg: a, value: v, int }) => {
    switch (flag) {
      case "--size-mb": o.sizeMb = int(1, 16_384); break;
      case "--waiters": o.waiters = int(1, 200); break;
      case "--tries": o.tries = int(1, 20); break;
      case "--fill-scheme": {
        const s = v();
        if (s !== "https" && s !== "http") usage("--fill-scheme: https or http");
        o.fillScheme = s;
        break;
      }
      case "--sha-waiters": o.shaWaiters = int(0, 200); break;
      case "--range-requests": o.rangeRequests = int(1, 1_000_000); break;
      case "--range-concurrency": o.rangeConcurrency = int(1, 1000); break;
      case "--range-kb": o.rangeKb = int(1, 1024 * 1024); break;
      case "--slice-mb": o.sliceMb = int(1, 64); break;
      case "--skip-hit": o.hit = false; break;
      case "--skip-fill": o.fill = false; break;
      case "--skip-ranges": o.ranges = false; break;
      case "--tmp": o.tmp = resolve(v()); break;
      default:
        usage(`unknown argument ${a}`);
    }
  });
  if (o.rangeKb * 1024 > o.sizeMb * MIB) usage("--range-kb is larger than the object (--size-mb)");
  o.shaWaiters = Math.min(o.shaWaiters, o.waiters);
  return o;
}

// ---- measuring the gateway: RSS peak, CPU seconds, CPU per thread name -------------------------------------

/** Per-thread CPU seconds by tid, with the thread's name (Bun names its worker threads "Worker"). */
function threadTimes(pid: number): Map<string, { name: string; s: number }> {
  const out = new Map<string, { name: string; s: number }>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = s.slice(s.indexOf("(") + 1, s.lastIndexOf(")"));
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      out.set(tid, { name, s: (Number(f[11]) + Number(f[12])) / CLK_TCK });
    } catch {
      // the thread ended between readdir and read
    }
  }
  return out;
}

/** CPU seconds spent between two thread snapshots: per thread name (summed), and the busiest single thread. */
function threadDelta(a: Map<string, { name: string; s: number }>, b: Map<string, { name: string; s: number }>) {
  const byName: Record<string, number> = {};
  let busiest = { name: "", s: 0 };
  for (const [tid, t] of b) {
    const d = t.s - (a.get(tid)?.s ?? 0);
    if (d <= 0) continue;
    byName[t.name] = round((byName[t.name] ?? 0) + d);
    if (d > busiest.s) busiest = { name: t.name, s: round(d) };
  }
  return { byName, busiest };
}

type ProcIo = { rchar: number; wchar: number; syscr: number; syscw: number; read_bytes: number; write_bytes: number };

/** /proc/<pid>/io: rchar counts every byte read(2)/pread(2) returned, page cache included (socket recv(2) not). */
function procIo(pid: number): ProcIo | null {
  try {
    const o: Record<string, number> = {};
    for (const line of readFileSync(`/proc/${pid}/io`, "utf8").split("\n")) {
      const m = /^(\w+): (\d+)$/.exec(line);
      if (m) o[m[1]!] = Number(m[2]);
    }
    return o as ProcIo;
  } catch {
    return null;
  }
}

/** MB (10^6) read and written by the process between two readings: syscalls (page cache included) and disk. */
function ioDelta(a: ProcIo | null, b: ProcIo | null) {
  if (!a || !b) return null;
  const mb = (x: number) => round(x / 1e6, 1);
  return {
    readMB: mb(b.rchar - a.rchar),
    writtenMB: mb(b.wchar - a.wchar),
    readCalls: b.syscr - a.syscr,
    writeCalls: b.syscw - a.syscw,
    diskReadMB: mb(b.read_bytes - a.read_bytes),
    diskWrittenMB: mb(b.write_bytes - a.write_bytes),
  };
}

const cpuDelta = (a: CpuTimes | null, b: CpuTimes | null) => (a && b ? { user: round(b.user - a.user), sys: round(b.sys - a.sys), total: round(b.user + b.sys - a.user - a.sys) } : null);

/** One phase's view of a process: RSS sampled every 100 ms (peak over the phase), CPU and threads at both ends. */
class PhaseMeter {
  private peak = 0;
  private timer: ReturnType<typeof setInterval>;
  private cpu0: CpuTimes | null;
  private threads0: Map<string, { name: string; s: number }>;
  private io0: ProcIo | null;
  private t0 = performance.now();
  readonly startRssKB: number;
  constructor(readonly pid: number) {
    this.startRssKB = rssKB(pid) ?? 0;
    this.peak = this.startRssKB;
    this.cpu0 = cpuTimes(pid);
    this.threads0 = threadTimes(pid);
    this.io0 = procIo(pid);
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }
  private sample() {
    const r = rssKB(this.pid);
    if (r !== null && r > this.peak) this.peak = r;
  }
  finish() {
    clearInterval(this.timer);
    this.sample();
    const wallS = (performance.now() - this.t0) / 1000;
    const cpu = cpuDelta(this.cpu0, cpuTimes(this.pid));
    return {
      wallS: round(wallS, 1),
      startRssKB: this.startRssKB,
      peakRssKB: this.peak,
      endRssKB: rssKB(this.pid),
      rssGrowthKB: this.peak - this.startRssKB,
      cpuS: cpu,
      cpuPerWallS: cpu ? round(cpu.total / wallS) : null,
      threads: threadDelta(this.threads0, threadTimes(this.pid)),
      io: ioDelta(this.io0, procIo(this.pid)),
    };
  }
}

// ---- curl -------------------------------------------------------------------------------------------------

const W_FORMAT = "%{http_code} %{size_download} %{speed_download} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}";

type CurlResult = {
  ok: boolean;
  exit: number;
  status: number;
  bytes: number;
  MBps: number;
  /** seconds from curl's start: TCP to the proxy or origin, TLS done (0 for http), first body byte, end */
  connectS: number;
  tlsS: number;
  ttfbS: number;
  totalS: number;
  sha256: string | null;
  /** curl's own CPU (and the hasher's, when hashed) */
  clientCpuS: number | null;
  detail?: string;
};

/** a download slower than ~3.4 MB/s (or 120 s) is cut: every wait is bounded */
let curlMaxS = 300;

/**
 * One download with curl. `hash`: the body goes through a pipe to `openssl dgst -sha256` (the timings then include
 * the pipe) and the -w figures to stderr (curl's `%{stderr}`); otherwise the body goes to /dev/null. Not coreutils
 * sha256sum: on the reference machine it costs ~4.7 CPU-s per GB against ~0.8 for openssl (SHA-NI), and the cold
 * fill phase shares two CPUs between the gateway and every client.
 */
async function download(args: string[], expectBytes: number, hash: boolean): Promise<CurlResult> {
  const base = ["curl", "-sS", "--max-time", String(curlMaxS)];
  const cmd = hash
    ? ["bash", "-o", "pipefail", "-c", `"$@" | openssl dgst -sha256 -r`, "bash", ...base, ...args, "-o", "-", "-w", `%{stderr}${W_FORMAT}\n`]
    : [...base, ...args, "-o", "/dev/null", "-w", `${W_FORMAT}\n`];
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const killer = setTimeout(() => p.kill("SIGKILL"), (curlMaxS + 30) * 1000);
  const [out, err, exit] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(killer);
  const ru = p.resourceUsage();
  const figures = (hash ? err : out).trim().split("\n").pop() ?? "";
  const [code, size, speed, tc, ta, ts, tt] = figures.split(" ");
  const bytes = Number(size);
  const status = Number(code);
  const sha256 = hash ? (/^([0-9a-f]{64})\b/.exec(out.trim())?.[1] ?? null) : null;
  const ok = exit === 0 && status === 200 && bytes === expectBytes;
  const messages = (hash ? err.split("\n").slice(0, -2).join("\n") : err).trim();
  return {
    ok,
    exit,
    status,
    bytes,
    MBps: round(Number(speed) / 1e6, 1),
    connectS: round(Number(tc), 4),
    tlsS: round(Number(ta), 4),
    ttfbS: round(Number(ts), 4),
    totalS: round(Number(tt), 3),
    sha256,
    clientCpuS: ru ? round(Number(ru.cpuTime.total) / 1e6) : null,
    ...(ok ? {} : { detail: `curl exit ${exit}, http ${code}, ${size} bytes; ${messages.slice(0, 300)}` }),
  };
}

// ---- the fixtures -----------------------------------------------------------------------------------------

type Env = {
  opts: Options;
  pki: TestPki;
  work: string;
  origin: Child;
  ports: Record<Scheme, number>;
  gw: Gateway;
  gatewayCa: string;
  files: { hot: { file: string; bytes: number; sha256: string }; cold: { file: string; bytes: number; sha256: string } | null };
};

type OriginCount = { bytes: number; requests: number; ranged: number; byPath: Record<string, { requests: number; ranged: number; statuses: Record<string, number> }> };

async function originStats(env: Pick<Env, "origin">): Promise<Record<Scheme, OriginCount>> {
  env.origin.send(JSON.stringify({ cmd: "stats" }));
  const s = await env.origin.next("stats", 10_000);
  return { https: s.https, http: s.http };
}

async function patchStats(gw: Gateway): Promise<Record<string, any> | null> {
  await Bun.sleep(STATS_SETTLE_MS);
  try {
    const r = await gw.admin("/api/stats");
    const s = (await r.json()) as any;
    return s.totals?.patch ?? null;
  } catch {
    return null;
  }
}

/** Numeric counters of totals.patch, after − before (by_host left out). */
function patchDelta(a: Record<string, any> | null, b: Record<string, any> | null) {
  if (!a || !b) return null;
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (typeof v === "number") out[k] = v - (typeof a[k] === "number" ? a[k] : 0);
  return out;
}

const url = (env: Env, scheme: Scheme, path: string) => `${scheme}://${HOST}:${env.ports[scheme]}${path}`;

/** curl arguments for a download through the cache port, or straight to the origin. */
function way(env: Env, via: "cache" | "direct", scheme: Scheme, path: string): string[] {
  const u = url(env, scheme, path);
  if (via === "cache") return ["-x", `http://127.0.0.1:${env.gw.ports.cache}`, ...(scheme === "https" ? ["--cacert", env.gatewayCa] : []), u];
  return ["--resolve", `${HOST}:${env.ports[scheme]}:127.0.0.1`, ...(scheme === "https" ? ["--cacert", env.pki.caPath] : []), u];
}

const log = makeLog("patch");

// ---- phase: cache-hit throughput --------------------------------------------------------------------------

async function runHit(env: Env) {
  const { opts, gw } = env;
  const size = env.files.hot.bytes;
  const meter = new PhaseMeter(gw.proc.pid);
  const stats0 = await patchStats(gw);
  log(`hit: warming the cache with ${opts.sizeMb} MiB over https and http (one download each through the cache port)`);
  const warm: Record<string, unknown> = {};
  for (const scheme of ["https", "http"] as const) {
    const o0 = await originStats(env);
    const g0 = cpuTimes(gw.proc.pid);
    const r = await download(way(env, "cache", scheme, HOT.path), size, false);
    const o1 = await originStats(env);
    const originBytes = o1[scheme].bytes - o0[scheme].bytes;
    warm[scheme] = {
      ...r,
      originBytes,
      originRequests: o1[scheme].requests - o0[scheme].requests,
      originCopies: round(originBytes / size, 4),
      gatewayCpuS: cpuDelta(g0, cpuTimes(gw.proc.pid)),
    };
    log(`  warm ${scheme}: ${r.ok ? `${r.MBps} MB/s` : r.detail}; origin sent ${originBytes} bytes (${round(originBytes / size, 4)} copies) in ${o1[scheme].requests - o0[scheme].requests} requests`);
  }

  log("hit: one verified download per scheme through the cache (body piped to openssl dgst -sha256)");
  const verify: Record<string, unknown> = {};
  let hitOriginBytes = 0;
  for (const scheme of ["https", "http"] as const) {
    const o0 = await originStats(env);
    const r = await download(way(env, "cache", scheme, HOT.path), size, true);
    const o1 = await originStats(env);
    hitOriginBytes += o1[scheme].bytes - o0[scheme].bytes;
    verify[scheme] = { ...r, shaMatches: r.sha256 === env.files.hot.sha256 };
  }

  log(`hit: ${opts.tries} round(s) of direct/cache × https/http downloads to /dev/null`);
  type Run = CurlResult & {
    round: number;
    gatewayCpuS: ReturnType<typeof cpuDelta>;
    gatewayThreads: ReturnType<typeof threadDelta>;
    gatewayIo: ReturnType<typeof ioDelta>;
    originCpuS: ReturnType<typeof cpuDelta>;
    originBytes: number;
    /** (server CPU + curl CPU) / wall: how many of the machine's CPUs the download kept busy */
    cpusBusy: number | null;
  };
  const keys = ["direct-https", "cache-https", "direct-http", "cache-http"] as const;
  const runs: Record<(typeof keys)[number], Run[]> = { "direct-https": [], "cache-https": [], "direct-http": [], "cache-http": [] };
  for (let t = 0; t < opts.tries; t++) {
    const order = t % 2 === 0 ? keys : [...keys].reverse();
    for (const k of order) {
      const [via, scheme] = k.split("-") as ["cache" | "direct", Scheme];
      const o0 = await originStats(env);
      const g0 = cpuTimes(gw.proc.pid);
      const th0 = threadTimes(gw.proc.pid);
      const io0 = procIo(gw.proc.pid);
      const oc0 = cpuTimes(env.origin.pid);
      const r = await download(way(env, via, scheme, HOT.path), size, false);
      const g1 = cpuTimes(gw.proc.pid);
      const th1 = threadTimes(gw.proc.pid);
      const io1 = procIo(gw.proc.pid);
      const oc1 = cpuTimes(env.origin.pid);
      const o1 = await originStats(env);
      const originBytes = o1[scheme].bytes - o0[scheme].bytes;
      if (via === "cache") hitOriginBytes += originBytes;
      const gatewayCpuS = cpuDelta(g0, g1);
      const originCpuS = cpuDelta(oc0, oc1);
      const serverCpu = via === "cache" ? gatewayCpuS?.total : originCpuS?.total;
      const cpusBusy = r.ok && serverCpu !== undefined && r.clientCpuS !== null ? round((serverCpu + r.clientCpuS) / r.totalS) : null;
      runs[k].push({ ...r, round: t + 1, gatewayCpuS, gatewayThreads: threadDelta(th0, th1), gatewayIo: ioDelta(io0, io1), originCpuS, originBytes, cpusBusy });
      log(`  round ${t + 1} ${k}: ${r.ok ? `${r.MBps} MB/s in ${r.totalS}s` : r.detail}`);
    }
  }
  const stats1 = await patchStats(gw);
  const best = (xs: Run[]) => Math.max(0, ...xs.filter((x) => x.ok).map((x) => x.MBps)) || null;
  const med = (xs: Run[]) => median(xs.filter((x) => x.ok).map((x) => x.MBps));
  const perGB = (xs: Run[], f: (r: Run) => number | null | undefined) => median(xs.map((r) => { const v = f(r); return v === null || v === undefined ? null : round(v / (size / 1e9), 3); }));
  type Way = (typeof keys)[number];
  const summarise = (k: Way) => ({
    bestMBps: best(runs[k]),
    medianMBps: med(runs[k]),
    // per 10^9 bytes moved, medians over the tries: where the CPU went
    gatewayCpuSPerGB: k.startsWith("cache") ? perGB(runs[k], (r) => r.gatewayCpuS?.total) : null,
    gatewayBusiestThreadSPerGB: k.startsWith("cache") ? perGB(runs[k], (r) => r.gatewayThreads.busiest.s) : null,
    originCpuSPerGB: k.startsWith("direct") ? perGB(runs[k], (r) => r.originCpuS?.total) : null,
    clientCpuSPerGB: perGB(runs[k], (r) => r.clientCpuS),
    cpusBusy: median(runs[k].map((r) => r.cpusBusy)),
    // bytes the gateway read from files (page cache included) per byte it served
    gatewayReadPerByteServed: k.startsWith("cache") ? median(runs[k].map((r) => (r.gatewayIo ? round((r.gatewayIo.readMB * 1e6) / size, 3) : null))) : null,
    failures: runs[k].filter((r) => !r.ok).length,
  });
  const ways = {} as Record<Way, ReturnType<typeof summarise>>;
  for (const k of keys) ways[k] = summarise(k);
  const result = {
    bytes: size,
    unit: "MB/s (10^6 bytes per second, curl speed_download)",
    warm,
    verify,
    hitOriginBytes,
    ways,
    ratios: {
      https: ratio(ways["cache-https"].bestMBps, ways["direct-https"].bestMBps),
      http: ratio(ways["cache-http"].bestMBps, ways["direct-http"].bestMBps),
      httpsMedian: ratio(ways["cache-https"].medianMBps, ways["direct-https"].medianMBps),
      httpMedian: ratio(ways["cache-http"].medianMBps, ways["direct-http"].medianMBps),
      cacheHttpsVsCacheHttp: ratio(ways["cache-https"].bestMBps, ways["cache-http"].bestMBps),
    },
    patchCounters: patchDelta(stats0, stats1),
    gateway: meter.finish(),
    runs,
  };
  log(
    `hit: https cache ${ways["cache-https"].bestMBps} vs direct ${ways["direct-https"].bestMBps} MB/s (${result.ratios.https}×); ` +
      `http cache ${ways["cache-http"].bestMBps} vs direct ${ways["direct-http"].bestMBps} MB/s (${result.ratios.http}×)`,
  );
  return result;
}

// ---- phase: cold fill with concurrent waiters -------------------------------------------------------------

async function runFill(env: Env) {
  const { opts, gw } = env;
  const cold = env.files.cold!;
  const scheme = opts.fillScheme;
  log(`fill: ${opts.waiters} downloads of a new ${opts.sizeMb} MiB object over ${scheme}, started together (${opts.shaWaiters} hashed)`);
  const meter = new PhaseMeter(gw.proc.pid);
  const stats0 = await patchStats(gw);
  const o0 = await originStats(env);
  const oc0 = cpuTimes(env.origin.pid);
  const t0 = performance.now();
  const waiters = await Promise.all(
    Array.from({ length: opts.waiters }, (_, i) => download(way(env, "cache", scheme, COLD.path), cold.bytes, i < opts.shaWaiters)),
  );
  const wallS = (performance.now() - t0) / 1000;
  const originCpuS = cpuDelta(oc0, cpuTimes(env.origin.pid));
  const o1 = await originStats(env);
  const gateway = meter.finish();
  const clientsCpuS = round(waiters.reduce((a, w) => a + (w.clientCpuS ?? 0), 0));
  const usedS = (gateway.cpuS?.total ?? 0) + clientsCpuS + (originCpuS?.total ?? 0);
  const stats1 = await patchStats(gw);
  const originBytes = o1[scheme].bytes - o0[scheme].bytes;
  const hashed = waiters.slice(0, opts.shaWaiters);
  const q = (xs: number[], p: number) => {
    const a = [...xs].sort((x, y) => x - y);
    return a.length ? a[Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1))]! : null;
  };
  const ttfb = waiters.map((w) => w.ttfbS * 1000);
  const afterTls = waiters.map((w) => (w.ttfbS - Math.max(w.tlsS, w.connectS)) * 1000);
  const result = {
    scheme,
    bytes: cold.bytes,
    waiters: opts.waiters,
    wallS: round(wallS, 2),
    originBytes,
    originCopies: round(originBytes / cold.bytes, 4),
    originRequests: o1[scheme].requests - o0[scheme].requests,
    completeExact: waiters.filter((w) => w.ok).length,
    hashed: hashed.length,
    hashedMatching: hashed.filter((w) => w.sha256 === cold.sha256).length,
    // ms from each curl's start (CONNECT and TLS with the gateway included), and after its TLS set-up
    ttfbMs: { p50: round(q(ttfb, 50) ?? 0, 1), max: round(Math.max(...ttfb), 1), min: round(Math.min(...ttfb), 1) },
    ttfbAfterSetupMs: { p50: round(q(afterTls, 50) ?? 0, 1), max: round(Math.max(...afterTls), 1) },
    totalS: { p50: round(q(waiters.map((w) => w.totalS), 50) ?? 0, 2), max: round(Math.max(...waiters.map((w) => w.totalS)), 2) },
    perWaiterMBps: { p50: q(waiters.map((w) => w.MBps), 50), min: Math.min(...waiters.map((w) => w.MBps)) },
    aggregateMBps: round((waiters.filter((w) => w.ok).length * cold.bytes) / 1e6 / wallS, 1),
    // Where the machine's CPU went during the phase: a box with few CPUs runs the gateway, every curl (TLS
    // decryption; openssl dgst for the hashed ones) and the origin at once.
    cpuBudget: {
      gatewayS: gateway.cpuS?.total ?? null,
      gatewaySPerGBServed: gateway.cpuS ? round(gateway.cpuS.total / ((opts.waiters * cold.bytes) / 1e9), 3) : null,
      clientsS: clientsCpuS,
      originS: originCpuS?.total ?? null,
      availableS: round(gateway.wallS * availableParallelism(), 1),
      utilisation: round(usedS / (gateway.wallS * availableParallelism()), 2),
    },
    patchCounters: patchDelta(stats0, stats1),
    gateway,
    failures: waiters.filter((w) => !w.ok).map((w) => w.detail),
    perWaiter: waiters.map(({ detail: _d, ...w }) => w),
  };
  log(
    `fill: origin sent ${originBytes} bytes (${result.originCopies} copies); ${result.completeExact}/${opts.waiters} complete, ` +
      `${result.hashedMatching}/${result.hashed} SHA-256 match; TTFB p50 ${result.ttfbMs.p50} ms max ${result.ttfbMs.max} ms; ${result.wallS}s in all`,
  );
  return result;
}

// ---- phase: random ranges ---------------------------------------------------------------------------------

async function runRanges(env: Env) {
  const { opts, gw } = env;
  const hot = env.files.hot;
  const meter = new PhaseMeter(gw.proc.pid);
  const stats0 = await patchStats(gw);
  // the hit phase cached the object; without it, fill it here first (one download per scheme)
  if (!opts.hit) {
    log("ranges: caching the hot object first (the hit phase was skipped)");
    for (const scheme of ["https", "http"] as const) {
      const r = await download(way(env, "cache", scheme, HOT.path), hot.bytes, false);
      if (!r.ok) throw new Error(`caching ${scheme} ${HOT.path} failed: ${r.detail}`);
    }
  }
  const passes: { via: "cache" | "direct"; scheme: Scheme }[] = [
    { via: "cache", scheme: "https" },
    { via: "cache", scheme: "http" },
    { via: "direct", scheme: "https" },
  ];
  const out: Record<string, any> = {};
  for (const p of passes) {
    const key = `${p.via}-${p.scheme}`;
    log(`ranges: ${opts.rangeRequests} random ${opts.rangeKb} KiB ranges ${key}, ${opts.rangeConcurrency} connections`);
    const o0 = await originStats(env);
    const g0 = cpuTimes(gw.proc.pid);
    const th0 = threadTimes(gw.proc.pid);
    const io0 = procIo(gw.proc.pid);
    const c = spawnChild(`patch-range-client(${key})`, [
      BUN,
      join(HERE, "patch-range-client.ts"),
      "--via", p.via,
      "--scheme", p.scheme,
      "--host", HOST,
      "--origin-port", String(env.ports[p.scheme]),
      ...(p.via === "cache" ? ["--proxy-port", String(gw.ports.cache)] : []),
      ...(p.scheme === "https" ? ["--ca", p.via === "cache" ? env.gatewayCa : env.pki.caPath] : []),
      "--path", HOT.path,
      "--size", String(hot.bytes),
      "--seed", String(HOT.seed),
      "--requests", String(opts.rangeRequests),
      "--concurrency", String(opts.rangeConcurrency),
      "--range-bytes", String(opts.rangeKb * 1024),
      "--deadline-s", "300",
    ]);
    try {
      const done = await c.next("done", 330_000);
      const o1 = await originStats(env);
      const { ev: _e, ...r } = done;
      const gatewayCpuS = p.via === "cache" ? cpuDelta(g0, cpuTimes(gw.proc.pid)) : null;
      const gatewayIo = p.via === "cache" ? ioDelta(io0, procIo(gw.proc.pid)) : null;
      const served = r.requestsOk * opts.rangeKb * 1024;
      out[key] = {
        ...r,
        originBytes: o1[p.scheme].bytes - o0[p.scheme].bytes,
        gatewayCpuS,
        gatewayCpuMsPerRange: gatewayCpuS && r.requestsOk ? round((gatewayCpuS.total * 1000) / r.requestsOk, 3) : null,
        gatewayThreads: p.via === "cache" ? threadDelta(th0, threadTimes(gw.proc.pid)) : null,
        gatewayIo,
        // bytes the gateway read from slice files (page cache included) per byte of ranges it served
        gatewayReadPerByteServed: gatewayIo && served ? round((gatewayIo.readMB * 1e6) / served, 2) : null,
      };
      log(`  ${key}: ${r.rangesPerSecond} ranges/s (${r.MBps} MB/s), latency p50 ${r.latencyMs.p50} ms p99 ${r.latencyMs.p99} ms, ${r.errorCount} errors`);
    } finally {
      await c.stop();
    }
  }
  const stats1 = await patchStats(gw);
  return {
    requests: opts.rangeRequests,
    concurrency: opts.rangeConcurrency,
    rangeBytes: opts.rangeKb * 1024,
    objectBytes: hot.bytes,
    passes: out,
    ratios: {
      cacheHttpsVsDirect: ratio(out["cache-https"]?.rangesPerSecond, out["direct-https"]?.rangesPerSecond),
      cacheHttpVsDirectHttps: ratio(out["cache-http"]?.rangesPerSecond, out["direct-https"]?.rangesPerSecond),
    },
    patchCounters: patchDelta(stats0, stats1),
    gateway: meter.finish(),
  };
}

// ---- gates, targets, summary ------------------------------------------------------------------------------

function judge(doc: any, opts: Options) {
  const gates: Check[] = [];
  const targets: Check[] = [];
  const h = doc.hit;
  if (h) {
    for (const s of ["https", "http"]) {
      const w = h.warm[s];
      gates.push({
        name: `hit: warming over ${s} costs the origin one copy`,
        pass: w.ok && w.originBytes >= h.bytes && w.originBytes <= h.bytes * WARM_MAX_RATIO,
        value: { ok: w.ok, originBytes: w.originBytes, copies: w.originCopies },
        want: `a complete download, origin bytes in [1, ${WARM_MAX_RATIO}] × ${h.bytes}`,
      });
      gates.push({
        name: `hit: a download through the cache over ${s} is byte-exact`,
        pass: h.verify[s].ok && h.verify[s].shaMatches,
        value: { ok: h.verify[s].ok, bytes: h.verify[s].bytes, sha256: h.verify[s].sha256 },
        want: `${h.bytes} bytes with the file's SHA-256`,
      });
    }
    gates.push({
      name: "hit: cache hits cost the origin nothing",
      pass: h.hitOriginBytes === 0,
      value: h.hitOriginBytes,
      want: "0 bytes from the origin during the verified and timed downloads through the cache",
    });
    const failures = Object.values(h.ways).reduce((a: number, w: any) => a + w.failures, 0);
    gates.push({ name: "hit: every timed download complete (200, every byte)", pass: failures === 0, value: failures, want: "0 failures" });
    for (const s of ["https", "http"] as const) {
      const r = h.ratios[s];
      targets.push({
        name: `hit ${s}: cache ≥ ${TARGET_HIT_RATIO}× direct (best of ${opts.tries})`,
        pass: r !== null && r >= TARGET_HIT_RATIO,
        value: `${h.ways[`cache-${s}`].bestMBps} MB/s vs ${h.ways[`direct-${s}`].bestMBps} MB/s = ${r}× (medians ${h.ratios[`${s}Median`]}×)`,
        want: `≥ ${TARGET_HIT_RATIO}×`,
      });
    }
  }
  const f = doc.fill;
  if (f) {
    gates.push({
      name: `fill: ${f.waiters} concurrent waiters cost the origin ≤ ${FILL_MAX_RATIO}× the object`,
      pass: f.originBytes <= f.bytes * FILL_MAX_RATIO,
      value: { originBytes: f.originBytes, copies: f.originCopies },
      want: `≤ ${Math.floor(f.bytes * FILL_MAX_RATIO)} bytes`,
    });
    gates.push({
      name: `fill: all ${f.waiters} waiters byte-exact`,
      pass: f.completeExact === f.waiters && f.hashedMatching === f.hashed,
      value: { complete: f.completeExact, hashed: f.hashed, hashedMatching: f.hashedMatching, failures: f.failures },
      want: `${f.waiters} × 200 with ${f.bytes} bytes; every hashed body with the file's SHA-256`,
    });
  }
  const r = doc.ranges;
  if (r) {
    for (const [k, p] of Object.entries<any>(r.passes)) {
      gates.push({
        name: `ranges ${k}: every range byte-exact, 0 errors`,
        pass: p.requestsOk === r.requests && p.errorCount === 0,
        value: { ok: p.requestsOk, failed: p.requestsFailed, errors: p.errors },
        want: `${r.requests} × 206 with the right Content-Range and bytes`,
      });
      if (k.startsWith("cache"))
        gates.push({ name: `ranges ${k}: the cached object costs the origin nothing`, pass: p.originBytes === 0, value: p.originBytes, want: "0 bytes" });
    }
  }
  for (const [phase, g] of [["hit", h?.gateway], ["fill", f?.gateway], ["ranges", r?.gateway]] as const) {
    if (!g) continue;
    targets.push({
      name: `${phase}: gateway RSS growth ≤ ${TARGET_RSS_GROWTH_KB / 1024} MiB`,
      pass: g.rssGrowthKB <= TARGET_RSS_GROWTH_KB,
      value: `${Math.round(g.rssGrowthKB / 1024)} MiB (${Math.round(g.startRssKB / 1024)} → peak ${Math.round(g.peakRssKB / 1024)} MiB)`,
      want: `≤ ${TARGET_RSS_GROWTH_KB / 1024} MiB`,
    });
  }
  return { gates, targets };
}

function threadsLine(t: any) {
  if (!t) return "-";
  const parts = Object.entries<number>(t.byName)
    .filter(([, s]) => s >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .map(([n, s]) => `${n} ${s}s`);
  return `${parts.join(", ")}; busiest thread ${t.busiest.name} ${t.busiest.s}s`;
}

function gwLine(g: any) {
  return (
    (g.io ? `gateway read ${g.io.readMB} MB (disk ${g.io.diskReadMB}), wrote ${g.io.writtenMB} MB (disk ${g.io.diskWrittenMB}); ` : "") +
    `gateway RSS ${Math.round(g.startRssKB / 1024)} → peak ${Math.round(g.peakRssKB / 1024)} MiB (+${Math.round(g.rssGrowthKB / 1024)}), ` +
    `CPU ${g.cpuS?.total}s (user ${g.cpuS?.user} / sys ${g.cpuS?.sys}) over ${g.wallS}s = ${g.cpuPerWallS} CPUs; threads: ${threadsLine(g.threads)}`
  );
}

function summary(doc: any): string {
  const out: string[] = [];
  out.push(
    `agate patch benchmark (${doc.machine.cpus} CPUs, ${doc.options.workers} workers, ${doc.options.sizeMb} MiB objects, ` +
      `${doc.options.sliceMb} MiB slices, ${doc.elapsedS}s; load average ${doc.machine.loadAvgStart?.[0]} before, ${doc.machine.loadAvgEnd?.[0]} after)`,
  );
  const h = doc.hit;
  if (h) {
    out.push(`\ncache-hit throughput (best / median of ${doc.options.tries}, MB/s)`);
    for (const k of ["direct-https", "cache-https", "direct-http", "cache-http"]) {
      const w = h.ways[k];
      const cpu = k.startsWith("cache")
        ? `gateway CPU ${w.gatewayCpuSPerGB} s/GB (busiest thread ${w.gatewayBusiestThreadSPerGB} s/GB)`
        : `origin CPU ${w.originCpuSPerGB} s/GB`;
      const read = k.startsWith("cache") ? `; gateway read ${w.gatewayReadPerByteServed} B/B served` : "";
      out.push(`  ${k.padEnd(13)} ${String(w.bestMBps).padStart(7)} / ${String(w.medianMBps).padStart(7)}   ${cpu}, curl ${w.clientCpuSPerGB} s/GB; ${w.cpusBusy} CPUs busy${read}`);
    }
    out.push(`  ratios: https ${h.ratios.https}× (median ${h.ratios.httpsMedian}×), http ${h.ratios.http}× (median ${h.ratios.httpMedian}×); cache https / cache http ${h.ratios.cacheHttpsVsCacheHttp}×`);
    for (const s of ["https", "http"])
      out.push(`  warm ${s}: ${h.warm[s].MBps} MB/s (a single cold download), origin ${h.warm[s].originCopies} copies in ${h.warm[s].originRequests} requests`);
    out.push(`  origin bytes during hits: ${h.hitOriginBytes}`);
    out.push(`  ${gwLine(h.gateway)}`);
  }
  const f = doc.fill;
  if (f) {
    out.push(`\ncold fill: ${f.waiters} waiters over ${f.scheme} for a new ${Math.round(f.bytes / MIB)} MiB object`);
    out.push(`  origin sent ${f.originBytes} bytes = ${f.originCopies} copies in ${f.originRequests} requests; ${f.completeExact}/${f.waiters} complete, ${f.hashedMatching}/${f.hashed} SHA-256 match`);
    out.push(`  TTFB p50 ${f.ttfbMs.p50} ms, max ${f.ttfbMs.max} ms (after TLS set-up: p50 ${f.ttfbAfterSetupMs.p50}, max ${f.ttfbAfterSetupMs.max} ms)`);
    out.push(`  total ${f.wallS}s (per waiter p50 ${f.totalS.p50}s, max ${f.totalS.max}s; ${f.perWaiterMBps.p50} MB/s each, ${f.aggregateMBps} MB/s served in all)`);
    const b = f.cpuBudget;
    out.push(`  CPU: gateway ${b.gatewayS}s (${b.gatewaySPerGBServed} s/GB served), curl clients ${b.clientsS}s, origin ${b.originS}s of ${b.availableS}s available = ${b.utilisation} of the machine`);
    out.push(`  patch counters: ${JSON.stringify(f.patchCounters)}`);
    out.push(`  ${gwLine(f.gateway)}`);
  }
  const r = doc.ranges;
  if (r) {
    out.push(`\nrandom ranges: ${r.requests} × ${r.rangeBytes / 1024} KiB of a cached ${Math.round(r.objectBytes / MIB)} MiB object, ${r.concurrency} keep-alive connections`);
    for (const [k, p] of Object.entries<any>(r.passes))
      out.push(
        `  ${k.padEnd(13)} ${String(p.rangesPerSecond).padStart(7)} ranges/s (${p.MBps} MB/s), latency p50 ${p.latencyMs.p50} / p99 ${p.latencyMs.p99} ms, ` +
          `TTFB p50 ${p.ttfbMs.p50} ms; ${p.errorCount} errors; ${p.connectionsOpened} connections` +
          (p.gatewayCpuS ? `; gateway ${p.gatewayCpuMsPerRange} CPU-ms/range, read ${p.gatewayReadPerByteServed} B/B served` : ""),
      );
    out.push(`  ${gwLine(r.gateway)}`);
  }
  out.push(...checkLines(doc, true), ...verdictLines(doc));
  return out.join("\n");
}

// ---- main -------------------------------------------------------------------------------------------------

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const { started, file } = resultFile(opts.out, "patch");
  const size = opts.sizeMb * MIB;
  curlMaxS = Math.max(120, Math.ceil(opts.sizeMb * 0.3));
  const doc: any = {
    ...docHead("patch", started, machineInfo({ curl: Bun.spawnSync(["curl", "--version"], { stdout: "pipe" }).stdout.toString().split("\n")[0] ?? null }), opts),
    files: null,
    hit: null,
    fill: null,
    ranges: null,
  };
  let work: string | null = null;
  let gw: Gateway | null = null;
  let pki: TestPki | null = null;
  let harnessError: string | null = null;
  const cleanup = async () => {
    await stopChildren();
    if (gw) {
      const g = gw;
      gw = null;
      await g.stop();
    }
    if (work) rmSync(work, { recursive: true, force: true });
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  };
  onInterrupt(log, "interrupted: stopping children and removing the temp dir", cleanup);
  try {
    // origin files (2 × size) + the patch volume's copies (up to 3 × size) + slack
    const need = 5 * size + 512 * MIB;
    const fs = statfsSync(opts.tmp);
    const free = fs.bavail * fs.bsize;
    if (free < need) throw new Error(`${opts.tmp} has ${Math.round(free / MIB)} MiB free; this run needs about ${Math.round(need / MIB)} MiB (--tmp DIR elsewhere, or a smaller --size-mb)`);
    work = mkdtempSync(join(opts.tmp, "agate-bench-patch-"));
    pki = makeTestPki([HOST]);
    log(`writing the origin's files (${opts.sizeMb} MiB each) under ${work}`);
    const hotFile = join(work, "hot.bin");
    const hot = { file: hotFile, bytes: size, sha256: writePatchFile(hotFile, size, HOT.seed) };
    const coldFile = join(work, "cold.bin");
    const cold = opts.fill ? { file: coldFile, bytes: size, sha256: writePatchFile(coldFile, size, COLD.seed) } : null;
    doc.files = { hot: { bytes: hot.bytes, sha256: hot.sha256 }, cold: cold ? { bytes: cold.bytes, sha256: cold.sha256 } : null };

    const origin = spawnChild("patch-origin-fixture", [BUN, join(HERE, "patch-origin-fixture.ts"), "--cert", pki.certPath, "--key", pki.keyPath]);
    const l = await origin.next("listening", 15_000);
    for (const [o, f] of [[HOT, hot], [COLD, cold]] as const) {
      if (!f) continue;
      origin.send(JSON.stringify({ cmd: "set", path: o.path, file: f.file, etag: o.etag }));
      await origin.next("set", 5000);
    }
    const ports = { https: Number(l.https), http: Number(l.http) };
    const vol = join(work, "patch-volume");
    mkdirSync(vol);
    const gwDir = join(work, "gateway");
    mkdirSync(gwDir);
    gw = await startGateway(
      {
        gateway: { workers: opts.workers },
        cache: { enabled: true, port: 0, listen: "127.0.0.1" },
        patch: { enabled: true, volume: vol, min_volume_bytes: 1, allow_same_device: true, client_networks: ["127.0.0.0/8"], slice_bytes: opts.sliceMb * MIB },
        tls: { upstream_ca: pki.caPath },
        destinations: { ports: [ports.https, ports.http] },
        hosts: { [HOST]: "127.0.0.1" },
      },
      { dir: gwDir },
    );
    if (!gw.ports.cache) throw new Error(`the gateway has no cache port; stderr: ${gw.stderr().slice(-2000)}`);
    const gatewayCa = join(work, "gateway-ca.pem");
    const caRes = await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`);
    if (!caRes.ok) throw new Error(`GET /ca.pem answered ${caRes.status}`);
    writeFileSync(gatewayCa, await caRes.text());
    const env: Env = { opts, pki, work, origin, ports, gw, gatewayCa, files: { hot, cold } };
    doc.gatewayIdleRssKB = rssKB(gw.proc.pid);
    log(`gateway pid ${gw.proc.pid}: cache port ${gw.ports.cache}, ${opts.workers} workers; origin https ${ports.https}, http ${ports.http}`);
    if (opts.hit) doc.hit = await runHit(env);
    if (opts.fill) doc.fill = await runFill(env);
    if (opts.ranges) doc.ranges = await runRanges(env);
    doc.gatewayFinalPatchStats = await patchStats(gw);
  } catch (e) {
    harnessError = String((e as Error)?.stack ?? e);
    if (gw) harnessError += `\ngateway stderr (tail): ${(gw as Gateway).stderr().slice(-1500)}`;
  } finally {
    await cleanup();
  }
  finishRun(doc, { started, file, error: harnessError, ...judge(doc, opts), summary });
}

await main();
