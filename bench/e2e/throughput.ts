/**
 * The single-tunnel benchmarks (issue 13): one big download through one tunnel vs straight to the origin, with the
 * gateway's RSS watched; and the tunnel set-up rate (TCP + CONNECT + 200, a new connection each) vs new TCP
 * connections straight to the origin; both also through squid (plain CONNECT) when it is installed.
 *
 *   bun bench/e2e/throughput.ts [--mb 1024] [--rounds 3] [--setups 5000] [--concurrency 50] [--skip-download]
 *                               [--skip-setup] [--neighbour] [--no-squid] [--workers N] [--out DIR]
 *
 * download  curl fetches --mb MiB from origin-fixture.ts's /stream/<MB> through agate, straight, and through squid,
 *           the order rotating by round; the figure is the median of rounds (MB/s from curl's speed_download); the
 *           gateway's RSS is sampled every 50 ms during the downloads through it, against its RSS just before.
 * setup     bench/e2e/setup-client.ts in its own process, --setups connections --concurrency at a time, through
 *           agate, as new TCP to the origin, and through squid, the order rotating by round; the median rate of each.
 * Each phase gets a fresh origin, gateway and squid (squid from tunnel-kit.ts: no cache, no access log).
 * Gates (exit 1): median through ≥ 0.95× direct, RSS peak during a download ≤ 64 MB above idle, set-up rate ≥ 0.8×
 * the new-TCP rate, every download and set-up through agate and straight complete. Targets (reported): agate's
 * set-up rate ≥ squid's, agate's download ≥ squid's.
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { ROOT, curl, type Gateway } from "../../test/peers/gateway";
import { makeTestPki, type TestPki } from "../../test/peers/test-ca";
import { median, ratio, round, spawnChild, stopChildren } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, resultFile, verdictLines } from "./harness";
import { BUN, HERE, HOST, type Neighbour, type PlainSquid, RssSampler, squidBin, startNeighbour, startOrigin, startPlainSquid, startTunnelGateway, uptime } from "./tunnel-kit";

const GATE_THROUGHPUT = 0.95;
const GATE_RSS_ABOVE_IDLE_MB = 64;
const GATE_SETUP = 0.8;

type Options = { mb: number; rounds: number; setups: number; concurrency: number; download: boolean; setup: boolean; neighbour: boolean; squid: boolean; workers: number; out: string };
type DownloadWay = "tunnel" | "direct" | "squid";
type SetupWay = "tunnel" | "tcp" | "squid";
const usage = makeUsage(
  "throughput",
  "usage: bun bench/e2e/throughput.ts [--mb 1024] [--rounds 3] [--setups 5000] [--concurrency 50] [--skip-download] [--skip-setup] [--neighbour] [--no-squid] [--workers N] [--out DIR]",
);

function parseOptions(argv: string[]): Options {
  const o: Options = { mb: 1024, rounds: 3, setups: 5000, concurrency: 50, download: true, setup: true, neighbour: false, squid: true, workers: availableParallelism(), out: join(ROOT, "bench/results") };
  forEachFlag(argv, usage, o, ({ flag, arg, int }) => {
    switch (flag) {
      case "--mb": o.mb = int(1, 4096); break;
      case "--rounds": o.rounds = int(1, 20); break;
      case "--setups": o.setups = int(1, 20_000); break;
      case "--concurrency": o.concurrency = int(1, 1000); break;
      case "--skip-download": o.download = false; break;
      case "--skip-setup": o.setup = false; break;
      case "--neighbour": o.neighbour = true; break;
      case "--no-squid": o.squid = false; break;
      default: usage(`unknown argument ${arg}`);
    }
  });
  return o;
}

const log = makeLog("throughput");

/** `order` rotated by round `k`, so no way always runs first (two ways: alternating). */
const rotate = <T>(ways: readonly T[], k: number): T[] => ways.map((_, i) => ways[(i + k) % ways.length]!);

/** squid for a phase, or null (and why) when it is off or not installed. */
async function phaseSquid(o: Options, originPort: number): Promise<PlainSquid | null> {
  if (!o.squid) return null;
  const s = await startPlainSquid(originPort);
  if (!s) log("squid: not installed (/usr/sbin/squid, /usr/bin/squid): skipping the squid passes");
  return s;
}

/** Why there are no squid figures (null when there are). */
const squidSkipped = (o: Options): string | null => (!o.squid ? "--no-squid" : squidBin() ? null : "squid not installed (/usr/sbin/squid, /usr/bin/squid)");

async function runDownload(o: Options, pki: TestPki, originPort: number, gw: Gateway, squid: PlainSquid | null) {
  const url = `https://${HOST}:${originPort}/stream/${o.mb}`;
  const expect = o.mb * 1024 * 1024;
  const common = ["--cacert", pki.caPath, "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", url];
  const ways: Record<DownloadWay, string[]> = {
    tunnel: ["-x", `http://127.0.0.1:${gw.ports.proxy}`, ...common],
    direct: ["--resolve", `${HOST}:${originPort}:127.0.0.1`, ...common],
    squid: squid ? ["-x", `http://127.0.0.1:${squid.port}`, ...common] : [],
  };
  const order: DownloadWay[] = squid ? ["tunnel", "direct", "squid"] : ["tunnel", "direct"];
  const rss = new RssSampler(gw.proc.pid, 50);
  const rounds: any[] = [];
  let failures = 0;
  let squidFailures = 0;
  try {
    for (let k = 0; k < o.rounds; k++) {
      const r: any = { order: rotate(order, k), load: uptime() };
      for (const way of r.order as DownloadWay[]) {
        if (way === "tunnel") {
          await Bun.sleep(500);
          r.idleRssKB = rss.sample();
          rss.mark();
        }
        const res = await curl(ways[way], 240_000);
        const [code, size, speed] = res.stdout.trim().split(" ");
        const ok = res.code === 0 && code === "200" && Number(size) === expect;
        if (!ok && way === "squid") squidFailures++;
        else if (!ok) failures++;
        r[way] = ok ? round(Number(speed) / 1e6, 1) : null;
        if (way === "tunnel") r.peakRssKB = rss.peak;
      }
      r.ratio = ratio(r.tunnel, r.direct);
      r.squidRatio = squid ? ratio(r.tunnel, r.squid) : null;
      r.rssAboveIdleMB = round((r.peakRssKB - r.idleRssKB) / 1024, 1);
      const viaSquid = squid ? `, squid ${r.squid} MB/s (agate/squid ${r.squidRatio}×)` : "";
      log(`download round ${k + 1}: through ${r.tunnel} MB/s, direct ${r.direct} MB/s (${r.ratio}×)${viaSquid}; RSS +${r.rssAboveIdleMB} MB`);
      rounds.push(r);
    }
  } finally {
    rss.stop();
  }
  return {
    mb: o.mb,
    unit: "MB/s (10^6 bytes per second, curl speed_download)",
    tunnelMBps: median(rounds.map((r) => r.tunnel)),
    directMBps: median(rounds.map((r) => r.direct)),
    ratio: median(rounds.map((r) => r.ratio)),
    squidMBps: squid ? median(rounds.map((r) => r.squid)) : null,
    // agate / squid, the median of per-round ratios
    squidRatio: squid ? median(rounds.map((r) => r.squidRatio)) : null,
    squidSkipped: squid ? null : squidSkipped(o),
    rssAboveIdleMaxMB: Math.max(...rounds.map((r) => r.rssAboveIdleMB)),
    failures,
    squidFailures: squid ? squidFailures : null,
    perRound: rounds,
  };
}

/** One setup-client process; squid is a CONNECT proxy like agate, so its passes use the client's tunnel mode. */
async function setupPass(o: Options, way: SetupWay, port: number, originPort: number) {
  const mode = way === "tcp" ? "tcp" : "tunnel";
  const c = spawnChild(`setup(${way})`, [BUN, join(HERE, "setup-client.ts"), "--mode", mode, "--port", String(port), "--origin-port", String(originPort), "--n", String(o.setups), "--concurrency", String(o.concurrency)]);
  try {
    return await c.next("done", 120_000);
  } finally {
    await c.stop();
  }
}

async function runSetup(o: Options, originPort: number, gw: Gateway, squid: PlainSquid | null) {
  const portOf = (w: SetupWay) => (w === "tunnel" ? gw.ports.proxy : w === "squid" ? squid!.port : originPort);
  const order: SetupWay[] = squid ? ["tunnel", "tcp", "squid"] : ["tunnel", "tcp"];
  // warm-up: the gateway's JIT, squid's first allocations
  for (const w of order) if (w !== "tcp") await setupPass({ ...o, setups: Math.min(500, o.setups) }, w, portOf(w), originPort);
  const rounds: any[] = [];
  for (let k = 0; k < o.rounds; k++) {
    const r: any = { order: rotate(order, k), load: uptime() };
    for (const w of r.order as SetupWay[]) r[w] = await setupPass(o, w, portOf(w), originPort);
    r.ratio = ratio(r.tunnel.perSecond, r.tcp.perSecond);
    r.squidRatio = squid ? ratio(r.tunnel.perSecond, r.squid.perSecond) : null;
    const viaSquid = squid ? `, squid ${r.squid.perSecond}/s (agate/squid ${r.squidRatio}×, failed ${r.squid.failed})` : "";
    log(`setup round ${k + 1}: tunnel ${r.tunnel.perSecond}/s, new TCP ${r.tcp.perSecond}/s (${r.ratio}×)${viaSquid}; failed ${r.tunnel.failed}+${r.tcp.failed}`);
    rounds.push(r);
  }
  return {
    n: o.setups,
    concurrency: o.concurrency,
    tunnelPerSecond: median(rounds.map((r) => r.tunnel.perSecond)),
    tcpPerSecond: median(rounds.map((r) => r.tcp.perSecond)),
    ratio: median(rounds.map((r) => r.ratio)),
    squidPerSecond: squid ? median(rounds.map((r) => r.squid.perSecond)) : null,
    // agate / squid, the median of per-round ratios
    squidRatio: squid ? median(rounds.map((r) => r.squidRatio)) : null,
    squidSkipped: squid ? null : squidSkipped(o),
    failures: rounds.reduce((a, r) => a + r.tunnel.failed + r.tcp.failed, 0),
    squidFailures: squid ? rounds.reduce((a, r) => a + r.squid.failed, 0) : null,
    errors: rounds.map((r) => ({ tunnel: r.tunnel.errors, tcp: r.tcp.errors, ...(squid ? { squid: r.squid.errors } : {}) })),
    perRound: rounds,
  };
}

function judge(doc: any) {
  const gates: Check[] = [];
  const targets: Check[] = [];
  const d = doc.download;
  if (d) {
    gates.push({ name: "downloads complete", pass: d.failures === 0, value: d.failures, want: "every curl 200 with every byte" });
    gates.push({ name: `single-stream ${d.mb} MiB: through ≥ ${GATE_THROUGHPUT}× direct (median of ${d.perRound.length})`, pass: d.ratio >= GATE_THROUGHPUT, value: `${d.tunnelMBps} vs ${d.directMBps} MB/s = ${d.ratio}× (rounds ${d.perRound.map((r: any) => r.ratio).join(", ")})`, want: `≥ ${GATE_THROUGHPUT}×` });
    gates.push({ name: `gateway RSS during a ${d.mb} MiB download ≤ ${GATE_RSS_ABOVE_IDLE_MB} MB above idle`, pass: d.rssAboveIdleMaxMB <= GATE_RSS_ABOVE_IDLE_MB, value: `+${d.rssAboveIdleMaxMB} MB (worst round)`, want: `≤ ${GATE_RSS_ABOVE_IDLE_MB} MB` });
    if (d.squidMBps !== null) targets.push({ name: `single-stream ${d.mb} MiB: agate ≥ squid`, pass: d.squidRatio !== null && d.squidRatio >= 1 && d.squidFailures === 0, value: `${d.tunnelMBps} vs ${d.squidMBps} MB/s = ${d.squidRatio}× (rounds ${d.perRound.map((r: any) => r.squidRatio).join(", ")}; squid failures ${d.squidFailures})`, want: "≥ 1×" });
  }
  const s = doc.setup;
  if (s) {
    gates.push({ name: "set-ups complete", pass: s.failures === 0, value: s.errors, want: "0 failed" });
    gates.push({ name: `tunnel set-up rate ≥ ${GATE_SETUP}× new TCP to the origin`, pass: s.ratio >= GATE_SETUP, value: `${s.tunnelPerSecond}/s vs ${s.tcpPerSecond}/s = ${s.ratio}×`, want: `≥ ${GATE_SETUP}×` });
    if (s.squidPerSecond !== null) targets.push({ name: "agate set-up rate ≥ squid's", pass: s.squidRatio !== null && s.squidRatio >= 1 && s.squidFailures === 0, value: `${s.tunnelPerSecond}/s vs ${s.squidPerSecond}/s = ${s.squidRatio}× (rounds ${s.perRound.map((r: any) => r.squidRatio).join(", ")}; squid failed ${s.squidFailures})`, want: "≥ 1×" });
  }
  return { gates, targets };
}

function summary(doc: any): string {
  const out = [`agate single-tunnel benchmark${doc.options.neighbour ? " (CPU-bound neighbour)" : ""}: ${doc.machine.cpus} CPUs, ${doc.options.workers} workers, ${doc.elapsedS}s`, `load: ${doc.uptimeStart} → ${doc.uptimeEnd}`];
  const d = doc.download;
  const viaSquid = (x: any, rate: string) => (x.squidSkipped ? `   squid: skipped (${x.squidSkipped})` : `   squid ${rate}   agate/squid ${x.squidRatio}×`);
  if (d) out.push(`\n  download ${d.mb} MiB  through ${d.tunnelMBps} MB/s   direct ${d.directMBps} MB/s   ${d.ratio}×${viaSquid(d, `${d.squidMBps} MB/s`)}   gateway RSS +${d.rssAboveIdleMaxMB} MB above idle`);
  const s = doc.setup;
  if (s) out.push(`  set-up (${s.n} new, ${s.concurrency} at a time)  tunnel ${s.tunnelPerSecond}/s   new TCP ${s.tcpPerSecond}/s   ${s.ratio}×${viaSquid(s, `${s.squidPerSecond}/s`)}`);
  out.push(...checkLines(doc, true), ...verdictLines(doc));
  return out.join("\n");
}

async function main() {
  const o = parseOptions(process.argv.slice(2));
  const { started, file } = resultFile(o.out, "throughput");
  const doc: any = { ...docHead("throughput", started, machineInfo(), o), uptimeStart: uptime(), download: null, setup: null };
  let neighbour: Neighbour | null = null;
  let error: string | null = null;
  onInterrupt(log, "interrupted: stopping children", async () => {
    await neighbour?.stop();
    await stopChildren();
  });
  try {
    const pki = makeTestPki([HOST]);
    if (o.neighbour) neighbour = startNeighbour();
    if (o.download) {
      const { origin, port } = await startOrigin(pki);
      const gw = await startTunnelGateway(port, o.workers, 3000);
      let squid: PlainSquid | null = null;
      try {
        squid = await phaseSquid(o, port);
        doc.download = await runDownload(o, pki, port, gw, squid);
      } finally {
        await squid?.stop();
        await gw.stop();
        await origin.stop();
      }
    }
    if (o.setup) {
      const { origin, port } = await startOrigin(pki);
      const gw = await startTunnelGateway(port, o.workers, 3000);
      let squid: PlainSquid | null = null;
      try {
        squid = await phaseSquid(o, port);
        doc.setup = await runSetup(o, port, gw, squid);
      } finally {
        await squid?.stop();
        await gw.stop();
        await origin.stop();
      }
    }
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
