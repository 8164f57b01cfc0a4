/**
 * Where a steady-state cache hit's CPU goes (issue 9 / 13, small hits): long keep-alive connections, each doing
 * many GETs of one stored object through the cache port, against the same workload straight to the origin; the
 * gateway's CPU per request read from /proc per THREAD (workers, JIT compiler threads, GC helpers, the supervisor),
 * so a figure says which part of the process spends it.
 *
 *   bun bench/e2e/hit-cpu.ts [--size 1024] [--requests 40000] [--per-conn 400] [--concurrency 50] [--rounds 2]
 *                            [--warmup 4000] [--workers N] [--out DIR]
 *
 * One origin (origin-fixture.ts), one gateway in cache mode; --warmup hits first (the object stored, the JIT
 * warmed a little), then --rounds rounds of a cache pass and a direct pass (order alternating), each
 * --requests GETs over connections of --per-conn requests, --concurrency at a time (bench/e2e/savings-client.ts,
 * bodies checked by SHA-256). Threads are grouped by their name (/proc/<pid>/task/<tid>/comm): "Worker" (the
 * gateway's workers: request work, TLS, syscalls), "JITWorker"/"JSCWarmUp" (the JavaScriptCore compiler),
 * "HeapHelper"/"ollector Thread"/"mi-scavenger" (GC and the allocator), "bun.exe" (the supervisor's thread).
 *
 * Gates (exit 1): every request answered with the exact body. The rate ratio and the CPU per request are reported,
 * not gated: the issues' ≥ 1.0× hit target is judged by bench/e2e/savings.ts.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { ROOT, startGateway, type Gateway } from "../../test/peers/gateway";
import { makeTestPki } from "../../test/peers/test-ca";
import { artifactBytes, sha256Hex } from "./artifact";
import { CLK_TCK, median, ratio, round, spawnChild, stopChildren, type Child } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, resultFile, verdictLines } from "./harness";

const HERE = import.meta.dir;
const BUN = process.execPath;
const HOST = "qagpublic.qg1.apps.qualys.com";

type Options = { size: number; requests: number; perConn: number; concurrency: number; rounds: number; warmup: number; workers: number; out: string };
const usage = makeUsage(
  "hit-cpu",
  "usage: bun bench/e2e/hit-cpu.ts [--size 1024] [--requests 40000] [--per-conn 400] [--concurrency 50] [--rounds 2] [--warmup 4000] [--workers N] [--out DIR]",
);

function parseOptions(argv: string[]): Options {
  const o: Options = { size: 1024, requests: 40_000, perConn: 400, concurrency: 50, rounds: 2, warmup: 4000, workers: availableParallelism(), out: join(ROOT, "bench/results") };
  forEachFlag(argv, usage, o, ({ flag, arg, int }) => {
    switch (flag) {
      case "--size": o.size = int(1, 64 * 1024 * 1024); break;
      case "--requests": o.requests = int(100, 1_000_000); break;
      case "--per-conn": o.perConn = int(2, 100_000); break;
      case "--concurrency": o.concurrency = int(1, 2000); break;
      case "--rounds": o.rounds = int(1, 20); break;
      case "--warmup": o.warmup = int(0, 1_000_000); break;
      default: usage(`unknown argument ${arg}`);
    }
  });
  return o;
}

const log = makeLog("hit-cpu");

/** CPU seconds (user + sys) of each thread of `pid`, by "name#tid". */
function threadCpu(pid: number): Map<string, number> {
  const m = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return m;
  }
  for (const tid of tids) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = s.slice(s.indexOf("(") + 1, s.lastIndexOf(")"));
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      m.set(`${name}#${tid}`, (Number(f[11]) + Number(f[12])) / CLK_TCK);
    } catch {
      // the thread ended between readdir and read
    }
  }
  return m;
}

type Group = "workers" | "jit" | "gc" | "supervisor" | "other";
function groupOf(thread: string): Group {
  const name = thread.slice(0, thread.lastIndexOf("#"));
  if (name === "Worker") return "workers";
  if (name === "JITWorker" || name === "JSCWarmUp") return "jit";
  if (name === "HeapHelper" || name.endsWith("ollector Thread") || name === "mi-scavenger") return "gc";
  if (name === "bun.exe" || name === "bun") return "supervisor";
  return "other";
}

/** µs of CPU per request by group, between two thread readings. */
function perRequest(a: Map<string, number>, b: Map<string, number>, n: number) {
  const out: Record<Group | "total", number> = { workers: 0, jit: 0, gc: 0, supervisor: 0, other: 0, total: 0 };
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    out[groupOf(k)] += d;
    out.total += d;
  }
  for (const k of Object.keys(out) as (keyof typeof out)[]) out[k] = round((out[k] * 1e6) / n, 1);
  return out;
}

type Env = { o: Options; origin: Child; originPort: number; gw: Gateway; gatewayCa: string; originCa: string; path: string; sha: string };

async function pass(env: Env, via: "cache" | "direct", n: number) {
  const { o } = env;
  const g0 = threadCpu(env.gw.proc.pid);
  const s0 = threadCpu(env.origin.pid);
  const c = spawnChild(`savings-client(${via})`, [
    BUN, join(HERE, "savings-client.ts"),
    "--origin-port", String(env.originPort),
    "--proxy-port", String(env.gw.ports.cache),
    "--concurrency", String(o.concurrency),
    "--mode", "fetch",
    "--via", via,
    "--ca", via === "cache" ? env.gatewayCa : env.originCa,
    "--host", HOST,
    "--path", via === "cache" ? env.path : `${env.path}&via=direct`,
    "--expect-size", String(o.size),
    "--expect-sha256", env.sha,
    "--agents", String(n),
    "--per-conn", String(o.perConn),
    "--deadline-s", String(60 + Math.ceil(n / 500)),
  ]);
  let done: any;
  try {
    done = await c.next("done", (65 + Math.ceil(n / 500)) * 1000);
  } finally {
    await c.stop();
  }
  const gateway = perRequest(g0, threadCpu(env.gw.proc.pid), n);
  const origin = perRequest(s0, threadCpu(env.origin.pid), n);
  const client = round((((done.clientCpuS?.user ?? 0) + (done.clientCpuS?.sys ?? 0)) * 1e6) / n, 1);
  return { via, requestsOk: done.requestsOk, errorCount: done.errorCount, requestsPerSecond: done.requestsPerSecond, latencyMs: done.latencyMs, cpuUsPerRequest: { gateway, origin, client } };
}

function summary(doc: any): string {
  const out = [
    `agate hit CPU (${doc.machine.cpus} CPUs, ${doc.options.workers} workers, ${doc.options.size} B object, ${doc.options.requests} keep-alive requests per pass, ` +
      `${doc.options.perConn} per connection, ${doc.options.concurrency} at a time, ${doc.options.rounds} round(s); load ${doc.machine.loadAvgStart?.[0]} → ${doc.machine.loadAvgEnd?.[0]})`,
    "",
    "  pass      round   req/s     p50/p99 ms      µs CPU per request: gateway total = workers + jit + gc + supervisor + other | origin | client",
  ];
  for (const p of doc.passes ?? []) {
    const g = p.cpuUsPerRequest.gateway;
    out.push(
      `  ${p.via.padEnd(8)}  ${String(p.round).padEnd(6)}  ${String(p.requestsPerSecond).padEnd(8)}  ${`${p.latencyMs?.p50} / ${p.latencyMs?.p99}`.padEnd(14)}  ` +
        `${g.total} = ${g.workers} + ${g.jit} + ${g.gc} + ${g.supervisor} + ${g.other} | ${p.cpuUsPerRequest.origin.total} | ${p.cpuUsPerRequest.client}`,
    );
  }
  if (doc.result) {
    const r = doc.result;
    out.push("", `median cache/direct requests/s ${r.ratio}×; gateway ${r.gatewayUs} µs CPU per hit (workers ${r.workersUs}, JIT ${r.jitUs}) vs the origin's ${r.originUs} µs per response (${r.cpuRatio}×)`);
  }
  out.push(...checkLines(doc, false), ...verdictLines(doc));
  return out.join("\n");
}

async function main() {
  const o = parseOptions(process.argv.slice(2));
  const { started, file } = resultFile(o.out, "hit-cpu");
  const doc: any = { ...docHead("hit-cpu", started, machineInfo(), o), passes: [], result: null };
  let error: string | null = null;
  let gw: Gateway | null = null;
  const cleanup = async () => {
    await stopChildren();
    if (gw) await gw.stop();
    gw = null;
  };
  onInterrupt(log, "interrupted: stopping children", cleanup);
  try {
    const pki = makeTestPki([HOST]);
    const origin = spawnChild("origin", [BUN, join(HERE, "origin-fixture.ts"), "--cert", pki.certPath, "--key", pki.keyPath, "--artifacts"]);
    const originPort = Number((await origin.next("listening", 15_000)).port);
    gw = await startGateway({
      gateway: { workers: o.workers, drain_grace_s: 2 },
      cache: { enabled: true, port: 0, listen: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
      destinations: { ports: [originPort] },
      hosts: { [HOST]: "127.0.0.1" },
    });
    const gatewayCa = join(gw.dir, "agent-ca.pem");
    const caRes = await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`);
    if (!caRes.ok) throw new Error(`GET /ca.pem: ${caRes.status}`);
    writeFileSync(gatewayCa, await caRes.text());
    const name = `hit-cpu-${o.size}.bin`;
    const env: Env = { o, origin, originPort, gw, gatewayCa, originCa: pki.caPath, path: `/artifact/${name}?size=${o.size}`, sha: sha256Hex(artifactBytes(name, o.size)) };
    if (o.warmup) {
      log(`warm-up: ${o.warmup} hits (the first one stores the object)`);
      const w = await pass(env, "cache", o.warmup);
      if (w.errorCount) throw new Error(`warm-up: ${w.errorCount} errors`);
    }
    for (let k = 0; k < o.rounds; k++) {
      for (const via of k % 2 === 0 ? (["cache", "direct"] as const) : (["direct", "cache"] as const)) {
        const p = await pass(env, via, o.requests);
        log(`round ${k + 1} ${via}: ${p.requestsPerSecond} req/s, gateway ${p.cpuUsPerRequest.gateway.total} µs/req, origin ${p.cpuUsPerRequest.origin.total} µs/req`);
        doc.passes.push({ round: k + 1, ...p });
      }
    }
    const cache = doc.passes.filter((p: any) => p.via === "cache");
    const direct = doc.passes.filter((p: any) => p.via === "direct");
    const gatewayUs = median(cache.map((p: any) => p.cpuUsPerRequest.gateway.total));
    const originUs = median(direct.map((p: any) => p.cpuUsPerRequest.origin.total));
    doc.result = {
      ratio: ratio(median(cache.map((p: any) => p.requestsPerSecond)), median(direct.map((p: any) => p.requestsPerSecond))),
      gatewayUs,
      workersUs: median(cache.map((p: any) => p.cpuUsPerRequest.gateway.workers)),
      jitUs: median(cache.map((p: any) => p.cpuUsPerRequest.gateway.jit)),
      originUs,
      cpuRatio: ratio(gatewayUs, originUs),
    };
  } catch (e) {
    error = String((e as Error)?.stack ?? e);
  } finally {
    await cleanup();
  }
  const all = doc.passes as any[];
  const gates: Check[] = [
    { name: "every request answered with the exact body", pass: all.length > 0 && all.every((p) => p.errorCount === 0 && p.requestsOk === o.requests), value: all.map((p) => `${p.via} ${p.requestsOk}/${o.requests}`).join(", "), want: `${o.requests} ok per pass` },
  ];
  const targets: Check[] = doc.result
    ? [{ name: "steady-state hits: requests/s ≥ 1.0× the origin's own (issue 9)", pass: (doc.result.ratio ?? 0) >= 1, value: `${doc.result.ratio}×`, want: "≥ 1.0×" }]
    : [];
  finishRun(doc, { started, file, error, gates, targets, needGates: true, summary });
}

await main();
