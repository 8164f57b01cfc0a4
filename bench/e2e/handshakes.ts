/**
 * The cache port's TLS handshakes (issue 13): full handshakes (no resumption, the host's leaf already minted) on the
 * cache port (CONNECT + TLS, the agent's path) vs the origin's own rate; and resumed handshakes on the cache port,
 * where the session was offered by another connection (so with 2 workers about half land on another worker: the
 * ticket keys must be shared for those to resume).
 *
 *   bun bench/e2e/handshakes.ts [--n 2000] [--concurrency 20] [--rounds 3] [--workers N] [--out DIR]
 *
 * Rounds alternate the order (cache first, then direct first); figures are medians of rounds.
 * bench/e2e/handshake-client.ts does the handshakes in its own process.
 * Gates (exit 1): full handshakes on the cache port ≥ 0.9× the origin's rate; every handshake ok; resumption
 * offered (offered sessions resume). Reported: the resumed share (Bun 1.4.5 keeps ticket keys per worker, so about
 * 1/workers) and the resumed rates.
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { ROOT, startGateway, type Gateway } from "../../test/peers/gateway";
import { makeTestPki } from "../../test/peers/test-ca";
import { median, ratio, spawnChild, stopChildren } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, resultFile, verdictLines } from "./harness";
import { BUN, HERE, HOST, startOrigin, uptime } from "./tunnel-kit";

const GATE_FULL = 0.9;
const GATE_RESUMED_SHARE = 0.9;

type Options = { n: number; concurrency: number; rounds: number; workers: number; out: string };
const usage = makeUsage("handshakes", "usage: bun bench/e2e/handshakes.ts [--n 2000] [--concurrency 20] [--rounds 3] [--workers N] [--out DIR]");

function parseOptions(argv: string[]): Options {
  const o: Options = { n: 2000, concurrency: 20, rounds: 3, workers: availableParallelism(), out: join(ROOT, "bench/results") };
  forEachFlag(argv, usage, o, ({ flag, arg, int }) => {
    switch (flag) {
      case "--n": o.n = int(10, 50_000); break;
      case "--concurrency": o.concurrency = int(1, 1000); break;
      case "--rounds": o.rounds = int(1, 20); break;
      default: usage(`unknown argument ${arg}`);
    }
  });
  return o;
}

const log = makeLog("handshakes");

type Env = { o: Options; gw: Gateway; gwCa: string; originCa: string; originPort: number };

async function pass(env: Env, via: "cache" | "direct", extra: string[], n = env.o.n) {
  const port = via === "cache" ? env.gw.ports.cache! : env.originPort;
  const c = spawnChild(`handshakes(${via} ${extra.join(" ")})`, [
    BUN, join(HERE, "handshake-client.ts"), "--via", via, "--port", String(port), "--host", HOST, "--origin-port", String(env.originPort),
    "--ca", via === "cache" ? env.gwCa : env.originCa, "--n", String(n), "--concurrency", String(env.o.concurrency), ...extra,
  ]);
  try {
    return await c.next("done", 180_000);
  } finally {
    await c.stop();
  }
}

async function run(env: Env) {
  await pass(env, "cache", [], 200); // warm-up; mints the host's leaf, so full handshakes below do not mint
  await pass(env, "direct", [], 200);
  const kinds = { full: [] as string[], resumed12: ["--tls12", "--resume"], full12: ["--tls12"] };
  const rounds: any[] = [];
  for (let k = 0; k < env.o.rounds; k++) {
    const r: any = { load: uptime() };
    for (const [kind, extra] of Object.entries(kinds)) {
      r[kind] = {};
      for (const via of k % 2 === 0 ? (["cache", "direct"] as const) : (["direct", "cache"] as const)) r[kind][via] = await pass(env, via, extra);
      r[kind].ratio = ratio(r[kind].cache.perSecond, r[kind].direct.perSecond);
      log(`round ${k + 1} ${kind}: cache port ${r[kind].cache.perSecond}/s (${r[kind].cache.resumed} resumed), origin ${r[kind].direct.perSecond}/s (${r[kind].direct.resumed} resumed): ${r[kind].ratio}×`);
    }
    rounds.push(r);
  }
  const fig = (kind: string) => ({
    cachePerSecond: median(rounds.map((r) => r[kind].cache.perSecond)),
    originPerSecond: median(rounds.map((r) => r[kind].direct.perSecond)),
    ratio: median(rounds.map((r) => r[kind].ratio)),
    cacheResumedShare: median(rounds.map((r) => r[kind].cache.resumed / Math.max(1, r[kind].cache.ok))),
    originResumedShare: median(rounds.map((r) => r[kind].direct.resumed / Math.max(1, r[kind].direct.ok))),
    failures: rounds.reduce((a, r) => a + r[kind].cache.failed + r[kind].direct.failed, 0),
  });
  return { full: fig("full"), full12: fig("full12"), resumed12: fig("resumed12"), perRound: rounds };
}

function judge(doc: any) {
  const gates: Check[] = [];
  const targets: Check[] = [];
  const h = doc.handshakes;
  if (h) {
    gates.push({ name: "every handshake ok", pass: h.full.failures + h.full12.failures + h.resumed12.failures === 0, value: { full: h.full.failures, full12: h.full12.failures, resumed: h.resumed12.failures }, want: "0 failed" });
    gates.push({ name: `full TLS handshakes on the cache port ≥ ${GATE_FULL}× the origin's rate`, pass: h.full.ratio >= GATE_FULL, value: `${h.full.cachePerSecond}/s vs ${h.full.originPerSecond}/s = ${h.full.ratio}×`, want: `≥ ${GATE_FULL}×` });
    gates.push({ name: "session resumption offered on the cache port (offered sessions resume)", pass: h.resumed12.cacheResumedShare > 0, value: `${Math.round(h.resumed12.cacheResumedShare * 100)}% resumed`, want: "> 0%" });
    // Bun 1.4.5 keeps the ticket key per secure context (per worker): about 1/workers of the sessions resume.
    targets.push({ name: `offered sessions resumed on the cache port ≥ ${GATE_RESUMED_SHARE * 100}% (${doc.options.workers} workers)`, pass: h.resumed12.cacheResumedShare >= GATE_RESUMED_SHARE, value: `${Math.round(h.resumed12.cacheResumedShare * 100)}%`, want: `≥ ${GATE_RESUMED_SHARE * 100}%` });
    targets.push({ name: "resumed handshakes on the cache port vs the origin's resumed rate (TLS 1.2)", pass: h.resumed12.ratio >= GATE_FULL, value: `${h.resumed12.cachePerSecond}/s vs ${h.resumed12.originPerSecond}/s = ${h.resumed12.ratio}× (origin resumed ${Math.round(h.resumed12.originResumedShare * 100)}%)`, want: `≥ ${GATE_FULL}×` });
    targets.push({ name: "full TLS 1.2 handshakes on the cache port vs the origin", pass: h.full12.ratio >= GATE_FULL, value: `${h.full12.cachePerSecond}/s vs ${h.full12.originPerSecond}/s = ${h.full12.ratio}×`, want: `≥ ${GATE_FULL}×` });
  }
  return { gates, targets };
}

function summary(doc: any): string {
  const out = [`agate handshakes benchmark: ${doc.machine.cpus} CPUs, ${doc.options.workers} workers, ${doc.options.n} handshakes × ${doc.options.concurrency} at a time, ${doc.options.rounds} rounds, ${doc.elapsedS}s`, `load: ${doc.uptimeStart} → ${doc.uptimeEnd}`];
  const h = doc.handshakes;
  if (h) {
    out.push("\n  kind                   | cache port /s | origin /s | ratio | resumed (cache / origin)");
    for (const [k, label] of [["full", "full (TLS 1.3)"], ["full12", "full (TLS 1.2)"], ["resumed12", "resumed (TLS 1.2)"]] as const) {
      const f = h[k];
      out.push(`  ${label.padEnd(22)} | ${String(f.cachePerSecond).padStart(13)} | ${String(f.originPerSecond).padStart(9)} | ${String(f.ratio).padStart(5)} | ${Math.round(f.cacheResumedShare * 100)}% / ${Math.round(f.originResumedShare * 100)}%`);
    }
  }
  out.push(...checkLines(doc, true), ...verdictLines(doc));
  return out.join("\n");
}

async function main() {
  const o = parseOptions(process.argv.slice(2));
  const { started, file } = resultFile(o.out, "handshakes");
  const doc: any = { ...docHead("handshakes", started, machineInfo(), o), uptimeStart: uptime(), handshakes: null };
  let error: string | null = null;
  let gw: Gateway | null = null;
  onInterrupt(log, "interrupted: stopping children", async () => {
    await stopChildren();
    await gw?.stop();
  });
  const pki = makeTestPki([HOST]);
  const { origin, port: originPort } = await startOrigin(pki);
  try {
    gw = await startGateway({
      gateway: { workers: o.workers, drain_grace_s: 2 },
      proxy: { max_connections: 3000 },
      cache: { enabled: true, port: 0, listen: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
      destinations: { ports: [originPort] },
      hosts: { [HOST]: "127.0.0.1" },
    });
    const caRes = await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`);
    if (!caRes.ok) throw new Error(`GET /ca.pem: ${caRes.status}`);
    const gwCa = join(gw.dir, "agent-ca.pem");
    writeFileSync(gwCa, await caRes.text());
    doc.handshakes = await run({ o, gw, gwCa, originCa: pki.caPath, originPort });
  } catch (e) {
    error = String((e as Error)?.stack ?? e);
  } finally {
    await stopChildren();
    await gw?.stop();
    await origin.stop();
  }
  doc.uptimeEnd = uptime();
  finishRun(doc, { started, file, error, ...judge(doc), needGates: true, summary });
}

await main();
