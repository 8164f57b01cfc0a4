/**
 * @module concurrency.ts's other phases: admission at the limit (max_connections = L, L + X connections CONNECT
 * and hold) and single-stream throughput (one curl download through the tunnel vs direct, best of N).
 */
import { curl } from "../../test/peers/gateway";
import { cpuTimes, median, ratio, round } from "./children";
import { type Env, HOST, REFUSAL_FAST_MS, RssSampler, loadFixture, log, readyTimeout, startBenchGateway, stopGateway, workerSpread } from "./concurrency-kit";

const HOLD_MS = 2500;

// ---- phase: admission at the limit ------------------------------------------------------------------------

export async function runAdmission(env: Env) {
  const { opts } = env;
  const limit = opts.admissionLimit;
  const total = limit + opts.admissionOver;
  log(`admission: max_connections ${limit}, opening ${total} connections that CONNECT and hold`);
  const gw = await startBenchGateway(env, limit);
  const rss = new RssSampler(gw.proc.pid);
  const f = loadFixture(env, "hold", total, ["--answer-timeout-ms", "5000", "--deadline-s", "300"], gw.ports.proxy);
  try {
    const ready = await f.next("ready", readyTimeout(total));
    // Hold past the gateway's linger on refused sockets (2 s), so its counters show only the admitted.
    await Bun.sleep(HOLD_MS);
    const spread = await workerSpread(gw);
    f.send("close");
    const closed = await f.next("closed", 60_000);
    const { ev: _e, ...r } = ready;
    const timeouts = (ready.errors?.["answer-timeout"] as number) ?? 0;
    const refused = ready.byStatus?.["503"] ?? 0;
    const admitted = ready.byStatus?.["200"] ?? 0;
    const other = Object.entries(ready.byStatus ?? {}).filter(([s]) => s !== "200" && s !== "503");
    const result = {
      limit,
      attempted: total,
      holdMs: HOLD_MS,
      ...r,
      stillOpenAfterHold: closed.stillOpen,
      admitted,
      refused,
      timeouts,
      otherStatuses: Object.fromEntries(other),
      gatewayStats: spread,
      peakRssKB: rss.peak,
      checks: {
        admittedExactly: admitted === limit,
        refusedExactly: refused === opts.admissionOver,
        allRefusalsHaveRetryAfter: ready.refusedWithRetryAfter === refused,
        refusalsFast: (ready.refusalMs?.max ?? Infinity) <= REFUSAL_FAST_MS || refused === 0,
        noTimeouts: timeouts === 0,
        noOtherFailures: ready.failed === 0 && other.length === 0,
        admittedHeld: ready.stillOpen === limit && closed.stillOpen === limit,
      },
    };
    log(
      `admission: ${admitted} admitted, ${refused} refused (503, ${ready.refusedWithRetryAfter} with Retry-After, max ${ready.refusalMs?.max} ms), ${timeouts} timeouts`,
    );
    return result;
  } finally {
    rss.stop();
    await f.stop();
    await stopGateway(gw);
  }
}

// ---- phase: single-stream throughput ----------------------------------------------------------------------

export async function runThroughput(env: Env) {
  const { opts } = env;
  log(`throughput: ${opts.throughputMb} MiB download with curl, through vs direct, best of ${opts.throughputTries}`);
  const gw = await startBenchGateway(env, 3000);
  try {
    const url = `https://${HOST}:${env.originPort}/stream/${opts.throughputMb}`;
    const expect = opts.throughputMb * 1024 * 1024;
    const common = ["--cacert", env.pki.caPath, "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", url];
    const ways = {
      tunnel: ["-x", `http://127.0.0.1:${gw.ports.proxy}`, ...common],
      direct: ["--resolve", `${HOST}:${env.originPort}:127.0.0.1`, ...common],
    };
    type Run = { mbps: number | null; ok: boolean; detail?: string; cpuS: Record<string, number | null> };
    const runs: Record<"tunnel" | "direct", Run[]> = { tunnel: [], direct: [] };
    const delta = (a: { user: number; sys: number } | null, b: { user: number; sys: number } | null) =>
      a && b ? { user: round(b.user - a.user), sys: round(b.sys - a.sys) } : null;
    for (let i = 0; i < opts.throughputTries; i++) {
      for (const way of ["direct", "tunnel"] as const) {
        const g0 = cpuTimes(gw.proc.pid);
        const o0 = cpuTimes(env.origin.pid);
        const r = await curl(ways[way], 180_000);
        const g1 = cpuTimes(gw.proc.pid);
        const o1 = cpuTimes(env.origin.pid);
        const [code, size, speed] = r.stdout.trim().split(" ");
        const ok = r.code === 0 && code === "200" && Number(size) === expect;
        const gd = delta(g0, g1);
        const od = delta(o0, o1);
        runs[way].push({
          mbps: ok ? round(Number(speed) / 1e6, 1) : null,
          ok,
          ...(ok ? {} : { detail: `curl exit ${r.code}, http ${code}, ${size} bytes; ${r.stderr.slice(0, 300)}` }),
          cpuS: { gatewayUser: gd?.user ?? null, gatewaySys: gd?.sys ?? null, originUser: od?.user ?? null, originSys: od?.sys ?? null },
        });
      }
    }
    const best = (xs: { mbps: number | null }[]) => Math.max(0, ...xs.map((x) => x.mbps ?? 0)) || null;
    const med = (xs: { mbps: number | null }[]) => median(xs.map((x) => x.mbps));
    const result = {
      bytes: expect,
      unit: "MB/s (10^6 bytes per second, curl speed_download)",
      tunnelMBps: best(runs.tunnel),
      directMBps: best(runs.direct),
      ratio: ratio(best(runs.tunnel), best(runs.direct)),
      // best-of is the headline; medians show how noisy the box was
      tunnelMedianMBps: med(runs.tunnel),
      directMedianMBps: med(runs.direct),
      medianRatio: ratio(med(runs.tunnel), med(runs.direct)),
      gatewayCpuSPerDownload: {
        user: median(runs.tunnel.map((r) => r.cpuS.gatewayUser)),
        sys: median(runs.tunnel.map((r) => r.cpuS.gatewaySys)),
      },
      failures: runs.tunnel.filter((r) => !r.ok).length + runs.direct.filter((r) => !r.ok).length,
      runs,
    };
    log(`throughput: tunnel ${result.tunnelMBps} MB/s, direct ${result.directMBps} MB/s, ratio ${result.ratio}`);
    return result;
  } finally {
    await stopGateway(gw);
  }
}
