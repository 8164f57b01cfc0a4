/**
 * The tunnel tail benchmark (issue 13): request p99 with C agents' tunnels open at once, through agate vs straight
 * to the origin vs through squid (plain CONNECT), in the same run, order rotating by round; optionally with a
 * CPU-bound neighbour (one busy loop per core, nice 0) running the whole time; and the gateway's memory per idle
 * tunnel (RSS at the barrier, every tunnel open with TLS done inside and idle, minus RSS before the ramp).
 *
 *   bun bench/e2e/tunnels.ts [--conns 3000,9000] [--requests 3] [--rounds 3] [--batch 200] [--neighbour]
 *                            [--no-squid] [--workers N] [--out DIR]
 *
 * Each connection sends one untimed GET as soon as it is set up (load-fixture --prime: the origin closes TLS
 * connections that sent nothing for 10 s, and a 9,000 ramp beside a busy neighbour takes longer).
 * The load generator is bench/e2e/load-fixture.ts in its own process (never in the gateway's), the origin is
 * origin-fixture.ts in another. Each C gets a fresh gateway, origin and squid.
 * Gates (exit 1 when one fails): 0 errors everywhere; p99 through agate ≤ 2× direct at every C (the median of
 * per-round ratios); idle memory ≤ 20 KB per tunnel at the largest C. Targets (reported): ≤ 1.5× at 3,000, and
 * agate's p99 below squid's.
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { ROOT, type Gateway } from "../../test/peers/gateway";
import { makeTestPki, type TestPki } from "../../test/peers/test-ca";
import { cpuTimes, median, ratio, round, spawnChild, stopChildren } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, resultFile, verdictLines } from "./harness";
import { BUN, HERE, HOST, type Neighbour, type PlainSquid, RssSampler, startNeighbour, startOrigin, startPlainSquid, startTunnelGateway, uptime } from "./tunnel-kit";

const GATE_P99_RATIO = 2;
const TARGET_P99_RATIO_3000 = 1.5;
const GATE_KB_PER_IDLE_TUNNEL = 20;

type Way = "agate" | "direct" | "squid";
type Options = { conns: number[]; requests: number; rounds: number; batch: number; neighbour: boolean; squid: boolean; workers: number; out: string };

const usage = makeUsage(
  "tunnels",
  "usage: bun bench/e2e/tunnels.ts [--conns 3000,9000] [--requests 3] [--rounds 3] [--batch 200] [--neighbour] [--no-squid] [--workers N] [--out DIR]",
);

function parseOptions(argv: string[]): Options {
  const o: Options = { conns: [3000, 9000], requests: 3, rounds: 3, batch: 200, neighbour: false, squid: true, workers: availableParallelism(), out: join(ROOT, "bench/results") };
  forEachFlag(argv, usage, o, ({ flag, arg, value, int }) => {
    switch (flag) {
      case "--conns":
        o.conns = value().split(",").map((s) => Number(s.trim()));
        if (!o.conns.length || o.conns.some((n) => !Number.isInteger(n) || n < 1 || n > 9000)) usage("--conns: integers 1–9000 (20,000 descriptors per process), comma-separated");
        break;
      case "--requests": o.requests = int(1, 100); break;
      case "--rounds": o.rounds = int(1, 20); break;
      case "--batch": o.batch = int(1, 5000); break;
      case "--neighbour": o.neighbour = true; break;
      case "--no-squid": o.squid = false; break;
      default: usage(`unknown argument ${arg}`);
    }
  });
  return o;
}

const log = makeLog("tunnels");

/** One pass of load-fixture.ts: ramp C connections, barrier (`atReady`), R GETs each, close. */
async function pass(pki: TestPki, originPort: number, way: Way, proxyPort: number, conns: number, o: Options, proxyPid: number, atReady?: () => Promise<void>) {
  const mode = way === "direct" ? "direct" : "tunnel";
  const f = spawnChild(`load(${way} ×${conns})`, [
    BUN, join(HERE, "load-fixture.ts"), "--mode", mode, "--conns", String(conns), "--batch", String(o.batch), "--requests", String(o.requests),
    "--origin-port", String(originPort), "--host", HOST, "--ca", pki.caPath, "--deadline-s", "300", "--prime",
    ...(mode === "tunnel" ? ["--proxy-port", String(proxyPort)] : []),
  ]);
  try {
    const ready = await f.next("ready", 120_000 + conns * 30);
    await atReady?.();
    const cpu0 = proxyPid ? cpuTimes(proxyPid) : null;
    f.send("go");
    const done = await f.next("done", 240_000);
    const cpu1 = proxyPid ? cpuTimes(proxyPid) : null;
    f.send("close");
    await f.next("closed", 60_000);
    const errors = { ...ready.errors, ...done.errors } as Record<string, number>;
    const errorCount = Object.values(errors).reduce((a, b) => a + b, 0);
    return {
      opened: ready.opened as number,
      requestsOk: done.requestsOk as number,
      clean: ready.opened === conns && done.stillOpenAtGo === conns && done.requestsOk === conns * o.requests && errorCount === 0,
      errors,
      rampMs: ready.rampMs as number,
      latencyMs: done.latencyMs,
      requestsPerSecond: done.requestsPerSecond as number,
      // the proxy's CPU (all threads, user + sys) per request during the request phase
      proxyCpuUsPerRequest: cpu0 && cpu1 ? round(((cpu1.user + cpu1.sys - cpu0.user - cpu0.sys) * 1e6) / Math.max(1, done.requestsOk), 1) : null,
    };
  } finally {
    await f.stop();
  }
}

/** RSS once it has settled (two samples 100 ms apart within 1 %), not after a fixed wait; at most ~5 s of polling. */
async function settledRss(rss: RssSampler): Promise<number> {
  let last = rss.sample();
  for (let i = 0; i < 50; i++) {
    await Bun.sleep(100);
    const now = rss.sample();
    if (Math.abs(now - last) <= Math.max(256, last * 0.01)) return now;
    last = now;
  }
  return last;
}

async function runC(pki: TestPki, o: Options, conns: number) {
  const { origin, port: originPort } = await startOrigin(pki);
  let gw: Gateway | null = null;
  let squid: PlainSquid | null = null;
  try {
    gw = await startTunnelGateway(originPort, o.workers, Math.max(3000, conns + 100));
    squid = o.squid ? await startPlainSquid(originPort) : null;
    const rss = new RssSampler(gw.proc.pid);
    const ways: Way[] = squid ? ["agate", "direct", "squid"] : ["agate", "direct"];
    const portOf = (w: Way) => (w === "agate" ? gw!.ports.proxy : w === "squid" ? squid!.port : 0);
    const pidOf = (w: Way) => (w === "agate" ? gw!.proc.pid : w === "squid" ? squid!.pid : 0);
    // warm-up: JIT, the origin's and squid's first allocations
    for (const w of ways) await pass(pki, originPort, w, portOf(w), Math.min(conns, 200), { ...o, requests: 2 }, 0);
    const rounds: any[] = [];
    let memory: any = null;
    for (let k = 0; k < o.rounds; k++) {
      const order = ways.map((_, i) => ways[(i + k) % ways.length]!); // rotate: nobody always runs first
      const r: any = { order, load: uptime() };
      for (const w of order) {
        let idle = 0;
        if (w === "agate") {
          idle = await settledRss(rss); // the previous pass's teardown and GC settled: the baseline
        }
        r[w] = await pass(pki, originPort, w, portOf(w), conns, o, pidOf(w), async () => {
          if (w !== "agate" || memory) return;
          const open = await settledRss(rss); // every tunnel idle (TLS done inside, no request yet) and RSS steady
          memory = { idleRssKB: idle, allOpenRssKB: open, kbPerIdleTunnel: round((open - idle) / conns, 2) };
        });
        log(`${conns} round ${k + 1}/${o.rounds} ${w}: p99 ${r[w].latencyMs?.p99} ms, p50 ${r[w].latencyMs?.p50} ms, ${r[w].requestsOk} ok, clean ${r[w].clean}`);
      }
      r.ratioP99 = ratio(r.agate.latencyMs?.p99, r.direct.latencyMs?.p99);
      r.squidRatioP99 = squid ? ratio(r.squid.latencyMs?.p99, r.direct.latencyMs?.p99) : null;
      rounds.push(r);
    }
    rss.stop();
    const med = (w: Way, f: (p: any) => number | null) => median(rounds.map((r) => (r[w] ? f(r[w]) : null)));
    const figure = (w: Way) =>
      rounds[0][w]
        ? {
            clean: rounds.every((r) => r[w].clean),
            errors: rounds.map((r) => r[w].errors),
            p50: med(w, (p) => p.latencyMs?.p50),
            p99: med(w, (p) => p.latencyMs?.p99),
            requestsPerSecond: med(w, (p) => p.requestsPerSecond),
            rampMs: med(w, (p) => p.rampMs),
            proxyCpuUsPerRequest: med(w, (p) => p.proxyCpuUsPerRequest),
          }
        : null;
    return {
      conns,
      agate: figure("agate"),
      direct: figure("direct"),
      squid: figure("squid"),
      ratioP99: median(rounds.map((r) => r.ratioP99)),
      squidRatioP99: squid ? median(rounds.map((r) => r.squidRatioP99)) : null,
      memory,
      perRound: rounds,
    };
  } finally {
    await squid?.stop();
    if (gw) await gw.stop();
    await origin.stop();
  }
}

function judge(doc: any): { gates: Check[]; targets: Check[] } {
  const gates: Check[] = [];
  const targets: Check[] = [];
  const v = doc.options.neighbour ? " with a CPU-bound neighbour" : "";
  for (const l of doc.load) {
    gates.push({ name: `${l.conns} tunnels${v}: every pass clean (all open, all requests ok, 0 errors)`, pass: l.agate.clean && l.direct.clean && (!l.squid || l.squid.clean), value: { agate: l.agate.errors, direct: l.direct.errors, squid: l.squid?.errors }, want: "0 errors" });
    gates.push({ name: `${l.conns} tunnels${v}: p99 through agate ≤ ${GATE_P99_RATIO}× direct`, pass: l.ratioP99 !== null && l.ratioP99 <= GATE_P99_RATIO, value: `${l.agate.p99} vs ${l.direct.p99} ms, ${l.ratioP99}× (rounds ${l.perRound.map((r: any) => r.ratioP99).join(", ")})`, want: `≤ ${GATE_P99_RATIO}×` });
    if (l.conns === 3000) targets.push({ name: `3000 tunnels${v}: p99 ≤ ${TARGET_P99_RATIO_3000}× direct`, pass: l.ratioP99 <= TARGET_P99_RATIO_3000, value: `${l.ratioP99}×`, want: `≤ ${TARGET_P99_RATIO_3000}×` });
    if (l.squid) targets.push({ name: `${l.conns} tunnels${v}: agate's p99 below squid's`, pass: l.ratioP99 < l.squidRatioP99, value: `agate ${l.ratioP99}×, squid ${l.squidRatioP99}× direct`, want: "agate < squid" });
  }
  const top = doc.load.reduce((a: any, l: any) => (!a || l.conns > a.conns ? l : a), null);
  if (top?.memory) gates.push({ name: `memory per idle tunnel at ${top.conns}`, pass: top.memory.kbPerIdleTunnel <= GATE_KB_PER_IDLE_TUNNEL, value: `${top.memory.kbPerIdleTunnel} KB ((${top.memory.allOpenRssKB} − ${top.memory.idleRssKB}) kB / ${top.conns})`, want: `≤ ${GATE_KB_PER_IDLE_TUNNEL} KB` });
  return { gates, targets };
}

function summary(doc: any): string {
  const out = [`agate tunnels benchmark${doc.options.neighbour ? " (CPU-bound neighbour: one busy loop per core)" : ""}: ${doc.machine.cpus} CPUs, ${doc.options.workers} workers, ${doc.options.requests} requests per tunnel, ${doc.options.rounds} rounds, ${doc.elapsedS}s`];
  out.push(`load: ${doc.uptimeStart} → ${doc.uptimeEnd}`);
  out.push("\n  tunnels | way    | p50 ms   | p99 ms   | p99 × direct | req/s  | proxy CPU µs/request");
  for (const l of doc.load)
    for (const w of ["agate", "direct", "squid"] as const) {
      const f = l[w];
      if (!f) continue;
      const x = w === "agate" ? l.ratioP99 : w === "squid" ? l.squidRatioP99 : 1;
      out.push(`  ${String(l.conns).padStart(7)} | ${w.padEnd(6)} | ${String(f.p50).padStart(8)} | ${String(f.p99).padStart(8)} | ${String(x).padStart(12)} | ${String(f.requestsPerSecond).padEnd(6)} | ${f.proxyCpuUsPerRequest ?? "-"}`);
    }
  for (const l of doc.load) if (l.memory) out.push(`  memory at ${l.conns}: ${l.memory.kbPerIdleTunnel} KB per idle tunnel (RSS ${l.memory.idleRssKB} → ${l.memory.allOpenRssKB} kB)`);
  out.push(...checkLines(doc, true), ...verdictLines(doc));
  return out.join("\n");
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const { started, file } = resultFile(opts.out, opts.neighbour ? "tunnels-neighbour" : "tunnels");
  const doc: any = { ...docHead("tunnels", started, machineInfo(), opts), uptimeStart: uptime(), load: [] };
  let neighbour: Neighbour | null = null;
  let error: string | null = null;
  onInterrupt(log, "interrupted: stopping children", async () => {
    await neighbour?.stop();
    await stopChildren();
  });
  try {
    const pki = makeTestPki([HOST]);
    if (opts.neighbour) {
      neighbour = startNeighbour();
      log(`neighbour: ${neighbour.pids.length} busy loops (pids ${neighbour.pids.join(", ")})`);
    }
    for (const c of opts.conns) doc.load.push(await runC(pki, opts, c));
  } catch (e) {
    error = String((e as Error)?.stack ?? e);
  } finally {
    await neighbour?.stop();
    await stopChildren();
  }
  doc.uptimeEnd = uptime();
  finishRun(doc, { started, file, error, ...judge(doc), needGates: true, summary });
}

await main();
