/**
 * @module concurrency.ts's load phase: C tunnels through the proxy held open together, R requests each, and the
 * same workload straight to the origin, in rounds alternating the order; the gateway's RSS, descriptors and CPU
 * by stage watched during the passes through it.
 */
import type { Gateway } from "../../test/peers/gateway";
import { cpuTimes, median, ratio, round } from "./children";
import { type Env, RssSampler, cpuSeconds, fdCount, loadFixture, log, readyTimeout, startBenchGateway, stopGateway, waitGatewayQuiet, workerSpread } from "./concurrency-kit";

const WARMUP_CONNS = 200;

// ---- phase: C concurrent tunnels, then the same straight to the origin ------------------------------------

/** One pass of the load fixture: ramp, barrier, requests, close. `during` runs while all are open. */
async function runPass(env: Env, mode: "tunnel" | "direct", conns: number, requests: number, proxyPort: number, hooks: {
  atReady?: () => Promise<void> | void;
  atDone?: () => Promise<void> | void;
} = {}) {
  const f = loadFixture(env, mode, conns, ["--requests", String(requests), "--deadline-s", "900"], proxyPort);
  const cpu0 = { client: 0, origin: cpuSeconds(env.origin.pid) ?? 0 };
  try {
    const ready = await f.next("ready", readyTimeout(conns));
    const cpuReady = { client: cpuSeconds(f.pid) ?? 0, origin: cpuSeconds(env.origin.pid) ?? 0 };
    await hooks.atReady?.();
    f.send("go");
    const done = await f.next("done", 300_000);
    const cpuDone = { client: cpuSeconds(f.pid) ?? 0, origin: cpuSeconds(env.origin.pid) ?? 0 };
    await hooks.atDone?.();
    f.send("close");
    await f.next("closed", 60_000);
    const { ev: _r, ...r } = ready;
    const { ev: _d, errors: doneErrors, ...d } = done;
    return {
      ...r,
      ...d,
      errors: doneErrors,
      errorCount: Object.values(doneErrors as Record<string, number>).reduce((a, b) => a + b, 0),
      cpuS: {
        clientRamp: round(cpuReady.client - cpu0.client),
        clientRequests: round(cpuDone.client - cpuReady.client),
        originRamp: round(cpuReady.origin - cpu0.origin),
        originRequests: round(cpuDone.origin - cpuReady.origin),
      },
    };
  } finally {
    await f.stop();
  }
}

/** One pass through the proxy, with the gateway watched: RSS idle → all open → peak, descriptors, CPU by stage. */
async function tunnelPass(env: Env, gw: Gateway, rss: RssSampler, conns: number, requests: number, label: string) {
  const pid = gw.proc.pid;
  const fdIdle = fdCount(pid) ?? 0;
  const idleRss = rss.sample();
  rss.mark();
  const cpu: Record<string, { user: number; sys: number } | null> = { start: cpuTimes(pid) };
  let allOpenRss = 0;
  let fdAllOpen = 0;
  let spread: unknown = null;
  log(`${label}: ${conns} tunnels through the proxy (idle gateway RSS ${idleRss} kB, ${fdIdle} fds)`);
  const pass = await runPass(env, "tunnel", conns, requests, gw.ports.proxy, {
    atReady: async () => {
      cpu.ready = cpuTimes(pid);
      allOpenRss = rss.sample();
      fdAllOpen = fdCount(pid) ?? 0;
      await Bun.sleep(1100); // workers report counters every second
      spread = await workerSpread(gw);
      cpu.go = cpuTimes(pid);
      log(`${label}: all open (${fdAllOpen} gateway fds, RSS ${allOpenRss} kB); requests`);
    },
    atDone: () => {
      cpu.done = cpuTimes(pid);
    },
  });
  const peakRss = rss.peak;
  const quiet = await waitGatewayQuiet(gw, fdIdle);
  cpu.closed = cpuTimes(pid);
  const sum = (t: { user: number; sys: number } | null | undefined) => (t ? t.user + t.sys : null);
  const d = (a: string, b: string) => (sum(cpu[a]) != null && sum(cpu[b]) != null ? round(sum(cpu[b])! - sum(cpu[a])!) : null);
  const gateway = {
    idleRssKB: idleRss,
    allOpenRssKB: allOpenRss,
    peakRssKB: peakRss,
    rssPerTunnelKB: round((peakRss - idleRss) / conns),
    rssPerTunnelAllOpenKB: round((allOpenRss - idleRss) / conns),
    fdsIdle: fdIdle,
    fdsAllOpen: fdAllOpen,
    tornDownAfterClose: quiet,
    cpuS: {
      ramp: d("start", "ready"),
      requests: d("go", "done"),
      teardown: d("done", "closed"),
      total: d("start", "closed"),
      // of the total: JS and runtime (user) vs the kernel's socket work (sys)
      user: cpu.start && cpu.closed ? round(cpu.closed.user - cpu.start.user) : null,
      sys: cpu.start && cpu.closed ? round(cpu.closed.sys - cpu.start.sys) : null,
    },
    cpuMsPerTunnelSetup: d("start", "ready") != null ? round((d("start", "ready")! * 1000) / conns, 3) : null,
    cpuUsPerRequest: d("go", "done") != null ? round((d("go", "done")! * 1e6) / Math.max(1, (pass as any).requestsOk), 1) : null,
    stats: spread,
  };
  return { pass, gateway };
}

/** Clean = every connection opened, all still open at the barrier, every request answered, no error. */
const isClean = (p: any, conns: number, requests: number) =>
  p.opened === conns && p.failed === 0 && p.stillOpenAtGo === conns && p.errorCount === 0 && p.requestsOk === conns * requests;

/** Medians across rounds, and everything that went wrong in any round. */
function combine(passes: any[], conns: number, requests: number) {
  const errors: Record<string, number> = {};
  for (const p of passes) for (const [k, v] of Object.entries(p.errors ?? {})) errors[k] = (errors[k] ?? 0) + (v as number);
  const med = (f: (p: any) => number | null | undefined) => median(passes.map(f));
  return {
    clean: passes.every((p) => isClean(p, conns, requests)),
    openedMin: Math.min(...passes.map((p) => p.opened ?? 0)),
    requestsOk: passes.reduce((a, p) => a + (p.requestsOk ?? 0), 0),
    requestsExpected: passes.length * conns * requests,
    errors,
    errorCount: Object.values(errors).reduce((a, b) => a + b, 0),
    latencyMs: { p50: med((p) => p.latencyMs?.p50), p99: med((p) => p.latencyMs?.p99) },
    handshakeMs: { p50: med((p) => p.handshakeMs?.p50), p99: med((p) => p.handshakeMs?.p99) },
    connectAnswerMs: { p50: med((p) => p.connectAnswerMs?.p50), p99: med((p) => p.connectAnswerMs?.p99) },
    setupMs: { p50: med((p) => p.setupMs?.p50), p99: med((p) => p.setupMs?.p99) },
    rampMs: med((p) => p.rampMs),
    requestsPerSecond: med((p) => p.requestsPerSecond),
  };
}

export async function runLoad(env: Env, conns: number) {
  const { opts } = env;
  const maxConnections = opts.maxConnections || Math.max(3000, conns);
  log(`load ${conns}: starting a gateway (${opts.workers} workers, max_connections ${maxConnections})`);
  const gw = await startBenchGateway(env, maxConnections);
  const rss = new RssSampler(gw.proc.pid);
  try {
    const fdStart = fdCount(gw.proc.pid) ?? 0;
    if (opts.warmup) {
      const w = Math.min(conns, WARMUP_CONNS);
      log(`load ${conns}: warm-up, ${w} tunnels + ${w} direct`);
      await runPass(env, "tunnel", w, 2, gw.ports.proxy);
      await runPass(env, "direct", w, 2, 0);
      await waitGatewayQuiet(gw, fdStart);
      await Bun.sleep(500);
    }
    // Rounds alternate the order (through first, then direct first) so neither side always runs on a warmer box.
    const rounds: any[] = [];
    for (let k = 0; k < opts.rounds; k++) {
      const label = `load ${conns} round ${k + 1}/${opts.rounds}`;
      const r: any = {};
      for (const mode of k % 2 === 0 ? ["tunnel", "direct"] : ["direct", "tunnel"]) {
        if (mode === "tunnel") Object.assign(r, await tunnelPass(env, gw, rss, conns, opts.requests, label).then(({ pass, gateway }) => ({ tunnel: pass, gateway })));
        else {
          log(`${label}: ${conns} straight to the origin`);
          r.direct = await runPass(env, "direct", conns, opts.requests, 0);
        }
      }
      r.ratios = {
        latencyP50: ratio(r.tunnel.latencyMs?.p50, r.direct.latencyMs?.p50),
        latencyP99: ratio(r.tunnel.latencyMs?.p99, r.direct.latencyMs?.p99),
        requestsPerSecond: ratio(r.tunnel.requestsPerSecond, r.direct.requestsPerSecond),
      };
      log(
        `${label}: through ${r.tunnel.opened}/${conns} open, ${r.tunnel.requestsOk} ok, ${r.tunnel.errorCount} errors; ` +
          `p99 ${r.tunnel.latencyMs?.p99} ms vs direct ${r.direct.latencyMs?.p99} ms (${r.ratios.latencyP99}×); RSS/tunnel ${r.gateway.rssPerTunnelKB} kB`,
      );
      rounds.push(r);
    }
    const tunnel = combine(rounds.map((r) => r.tunnel), conns, opts.requests);
    const direct = combine(rounds.map((r) => r.direct), conns, opts.requests);
    const first = rounds[0].gateway;
    return {
      conns,
      requests: opts.requests,
      rounds: rounds.length,
      tunnel,
      direct,
      // per-round ratios are paired (same minute, same box); their median is the headline
      ratios: {
        latencyP50: median(rounds.map((r) => r.ratios.latencyP50)),
        latencyP99: median(rounds.map((r) => r.ratios.latencyP99)),
        requestsPerSecond: median(rounds.map((r) => r.ratios.requestsPerSecond)),
        handshakeP50: ratio(tunnel.handshakeMs.p50, direct.handshakeMs.p50),
      },
      // memory from round 1 (the first time this gateway holds C tunnels); CPU as the median over rounds
      gateway: {
        workers: opts.workers,
        maxConnections,
        ...first,
        rssPerTunnelKB: first.rssPerTunnelKB,
        peakRssAllRoundsKB: rss.peak > 0 ? Math.max(...rounds.map((r) => r.gateway.peakRssKB)) : null,
        cpuS: {
          ramp: median(rounds.map((r) => r.gateway.cpuS.ramp)),
          requests: median(rounds.map((r) => r.gateway.cpuS.requests)),
          teardown: median(rounds.map((r) => r.gateway.cpuS.teardown)),
          user: median(rounds.map((r) => r.gateway.cpuS.user)),
          sys: median(rounds.map((r) => r.gateway.cpuS.sys)),
        },
        cpuMsPerTunnelSetup: median(rounds.map((r) => r.gateway.cpuMsPerTunnelSetup)),
        cpuUsPerRequest: median(rounds.map((r) => r.gateway.cpuUsPerRequest)),
      },
      perRound: rounds,
    };
  } finally {
    rss.stop();
    await stopGateway(gw);
  }
}
