/**
 * The single-tunnel benchmarks (issue 13): one big download through one tunnel vs straight to the origin, with the
 * gateway's RSS watched; and the tunnel set-up rate (TCP + CONNECT + 200, a new connection each) vs new TCP
 * connections straight to the origin.
 *
 *   bun bench/e2e/throughput.ts [--mb 1024] [--rounds 3] [--setups 5000] [--concurrency 50] [--skip-download]
 *                               [--skip-setup] [--neighbour] [--workers N] [--out DIR]
 *
 * download  curl fetches --mb MiB from origin-fixture.ts's /stream/<MB>, rounds alternating the order (through
 *           first, then direct first); the figure is the median of rounds (MB/s from curl's speed_download); the
 *           gateway's RSS is sampled every 50 ms during the downloads through it, against its RSS just before.
 * setup     bench/e2e/setup-client.ts in its own process, --setups connections --concurrency at a time; rounds
 *           alternating; the median rate of each.
 * Gates (exit 1): median through ≥ 0.95× direct, RSS peak during a download ≤ 64 MB above idle, set-up rate ≥ 0.8×
 * the new-TCP rate, every download and set-up complete.
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { ROOT, curl, type Gateway } from "../../test/peers/gateway";
import { makeTestPki, type TestPki } from "../../test/peers/test-ca";
import { median, ratio, round, spawnChild, stopChildren } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, resultFile, verdictLines } from "./harness";
import { BUN, HERE, HOST, type Neighbour, RssSampler, startNeighbour, startOrigin, startTunnelGateway, uptime } from "./tunnel-kit";

const GATE_THROUGHPUT = 0.95;
const GATE_RSS_ABOVE_IDLE_MB = 64;
const GATE_SETUP = 0.8;

type Options = { mb: number; rounds: number; setups: number; concurrency: number; download: boolean; setup: boolean; neighbour: boolean; workers: number; out: string };
const usage = makeUsage(
  "throughput",
  "usage: bun bench/e2e/throughput.ts [--mb 1024] [--rounds 3] [--setups 5000] [--concurrency 50] [--skip-download] [--skip-setup] [--neighbour] [--workers N] [--out DIR]",
);

function parseOptions(argv: string[]): Options {
  const o: Options = { mb: 1024, rounds: 3, setups: 5000, concurrency: 50, download: true, setup: true, neighbour: false, workers: availableParallelism(), out: join(ROOT, "bench/results") };
  forEachFlag(argv, usage, o, ({ flag, arg, int }) => {
    switch (flag) {
      case "--mb": o.mb = int(1, 4096); break;
      case "--rounds": o.rounds = int(1, 20); break;
      case "--setups": o.setups = int(1, 20_000); break;
      case "--concurrency": o.concurrency = int(1, 1000); break;
      case "--skip-download": o.download = false; break;
      case "--skip-setup": o.setup = false; break;
      case "--neighbour": o.neighbour = true; break;
      default: usage(`unknown argument ${arg}`);
    }
  });
  return o;
}

const log = makeLog("throughput");

async function runDownload(o: Options, pki: TestPki, originPort: number, gw: Gateway) {
  const url = `https://${HOST}:${originPort}/stream/${o.mb}`;
  const expect = o.mb * 1024 * 1024;
  const common = ["--cacert", pki.caPath, "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download}", url];
  const ways = { tunnel: ["-x", `http://127.0.0.1:${gw.ports.proxy}`, ...common], direct: ["--resolve", `${HOST}:${originPort}:127.0.0.1`, ...common] };
  const rss = new RssSampler(gw.proc.pid, 50);
  const rounds: any[] = [];
  let failures = 0;
  try {
    for (let k = 0; k < o.rounds; k++) {
      const r: any = { load: uptime() };
      for (const way of k % 2 === 0 ? (["tunnel", "direct"] as const) : (["direct", "tunnel"] as const)) {
        if (way === "tunnel") {
          await Bun.sleep(500);
          r.idleRssKB = rss.sample();
          rss.mark();
        }
        const res = await curl(ways[way], 240_000);
        const [code, size, speed] = res.stdout.trim().split(" ");
        const ok = res.code === 0 && code === "200" && Number(size) === expect;
        if (!ok) failures++;
        r[way] = ok ? round(Number(speed) / 1e6, 1) : null;
        if (way === "tunnel") r.peakRssKB = rss.peak;
      }
      r.ratio = ratio(r.tunnel, r.direct);
      r.rssAboveIdleMB = round((r.peakRssKB - r.idleRssKB) / 1024, 1);
      log(`download round ${k + 1}: through ${r.tunnel} MB/s, direct ${r.direct} MB/s (${r.ratio}×); RSS +${r.rssAboveIdleMB} MB`);
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
    rssAboveIdleMaxMB: Math.max(...rounds.map((r) => r.rssAboveIdleMB)),
    failures,
    perRound: rounds,
  };
}

async function setupPass(o: Options, mode: "tunnel" | "tcp", port: number, originPort: number) {
  const c = spawnChild(`setup(${mode})`, [BUN, join(HERE, "setup-client.ts"), "--mode", mode, "--port", String(port), "--origin-port", String(originPort), "--n", String(o.setups), "--concurrency", String(o.concurrency)]);
  try {
    return await c.next("done", 120_000);
  } finally {
    await c.stop();
  }
}

async function runSetup(o: Options, originPort: number, gw: Gateway) {
  await setupPass({ ...o, setups: Math.min(500, o.setups) }, "tunnel", gw.ports.proxy, originPort); // warm-up
  const rounds: any[] = [];
  for (let k = 0; k < o.rounds; k++) {
    const r: any = { load: uptime() };
    for (const mode of k % 2 === 0 ? (["tunnel", "tcp"] as const) : (["tcp", "tunnel"] as const)) r[mode] = await setupPass(o, mode, mode === "tunnel" ? gw.ports.proxy : originPort, originPort);
    r.ratio = ratio(r.tunnel.perSecond, r.tcp.perSecond);
    log(`setup round ${k + 1}: tunnel ${r.tunnel.perSecond}/s, new TCP ${r.tcp.perSecond}/s (${r.ratio}×); failed ${r.tunnel.failed}+${r.tcp.failed}`);
    rounds.push(r);
  }
  return {
    n: o.setups,
    concurrency: o.concurrency,
    tunnelPerSecond: median(rounds.map((r) => r.tunnel.perSecond)),
    tcpPerSecond: median(rounds.map((r) => r.tcp.perSecond)),
    ratio: median(rounds.map((r) => r.ratio)),
    failures: rounds.reduce((a, r) => a + r.tunnel.failed + r.tcp.failed, 0),
    errors: rounds.map((r) => ({ tunnel: r.tunnel.errors, tcp: r.tcp.errors })),
    perRound: rounds,
  };
}

function judge(doc: any) {
  const gates: Check[] = [];
  const d = doc.download;
  if (d) {
    gates.push({ name: "downloads complete", pass: d.failures === 0, value: d.failures, want: "every curl 200 with every byte" });
    gates.push({ name: `single-stream ${d.mb} MiB: through ≥ ${GATE_THROUGHPUT}× direct (median of ${d.perRound.length})`, pass: d.ratio >= GATE_THROUGHPUT, value: `${d.tunnelMBps} vs ${d.directMBps} MB/s = ${d.ratio}× (rounds ${d.perRound.map((r: any) => r.ratio).join(", ")})`, want: `≥ ${GATE_THROUGHPUT}×` });
    gates.push({ name: `gateway RSS during a ${d.mb} MiB download ≤ ${GATE_RSS_ABOVE_IDLE_MB} MB above idle`, pass: d.rssAboveIdleMaxMB <= GATE_RSS_ABOVE_IDLE_MB, value: `+${d.rssAboveIdleMaxMB} MB (worst round)`, want: `≤ ${GATE_RSS_ABOVE_IDLE_MB} MB` });
  }
  const s = doc.setup;
  if (s) {
    gates.push({ name: "set-ups complete", pass: s.failures === 0, value: s.errors, want: "0 failed" });
    gates.push({ name: `tunnel set-up rate ≥ ${GATE_SETUP}× new TCP to the origin`, pass: s.ratio >= GATE_SETUP, value: `${s.tunnelPerSecond}/s vs ${s.tcpPerSecond}/s = ${s.ratio}×`, want: `≥ ${GATE_SETUP}×` });
  }
  return { gates, targets: [] as Check[] };
}

function summary(doc: any): string {
  const out = [`agate single-tunnel benchmark${doc.options.neighbour ? " (CPU-bound neighbour)" : ""}: ${doc.machine.cpus} CPUs, ${doc.options.workers} workers, ${doc.elapsedS}s`, `load: ${doc.uptimeStart} → ${doc.uptimeEnd}`];
  const d = doc.download;
  if (d) out.push(`\n  download ${d.mb} MiB  through ${d.tunnelMBps} MB/s   direct ${d.directMBps} MB/s   ${d.ratio}×   gateway RSS +${d.rssAboveIdleMaxMB} MB above idle`);
  const s = doc.setup;
  if (s) out.push(`  set-up (${s.n} new, ${s.concurrency} at a time)  tunnel ${s.tunnelPerSecond}/s   new TCP ${s.tcpPerSecond}/s   ${s.ratio}×`);
  out.push(...checkLines(doc, false), ...verdictLines(doc));
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
      try {
        doc.download = await runDownload(o, pki, port, gw);
      } finally {
        await gw.stop();
        await origin.stop();
      }
    }
    if (o.setup) {
      const { origin, port } = await startOrigin(pki);
      const gw = await startTunnelGateway(port, o.workers, 3000);
      try {
        doc.setup = await runSetup(o, port, gw);
      } finally {
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
