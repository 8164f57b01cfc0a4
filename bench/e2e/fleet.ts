/**
 * The fleet's shared cache (issue 14, `[fleet] share_cache`) end to end:
 *
 *   bun bench/e2e/fleet.ts [--objects N] [--size BYTES] [--agents A] [--concurrency C] [--hits H] [--workers W] [--out DIR]
 *   (npm run bench:fleet; run it under `flock /tmp/agate-bench.lock …` on a shared machine)
 *
 * 1. upstream bytes per object, one gateway: A agents fetch N objects of --size through its cache port.
 * 2. upstream bytes per object, three gateways (share_cache, a common CA) behind Debian's haproxy (round-robin over
 *    the cache ports): A agents fetch N new objects through haproxy. GATE: one copy per object in both (the origin
 *    fixture counts the bytes it sent per path).
 * 3. hits served by an object's owner vs by a non-owner (which stored the copy it got from the owner): H keep-alive
 *    requests straight to each gateway's cache port, agent-side p50/p99 and throughput, two rounds alternating;
 *    the non-owner's p99 within 1.5× the owner's is a target (reported, not gated).
 * 4. the cost of a peer leaving: N objects are warmed by one agent each through haproxy, one gateway is stopped
 *    (SIGTERM), and A agents fetch them all again before the heartbeats call it offline: objects refetched from the
 *    origin. GATE: only objects the stopped gateway owned can be refetched, and every body byte-exact.
 *
 * Agents are bench/e2e/savings-client.ts processes (CONNECT + TLS verified against the common CA, every body checked
 * against its SHA-256). JSON into bench/results/fleet-<time>.json, a summary on stderr; exits 1 when a gate fails,
 * 3 on a harness error.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../../test/peers/test-ca";
import { BUN, startGateway, type Gateway } from "../../test/peers/gateway";
import { freePort, waitFor } from "../../test/peers/helpers";
import { HAPROXY, startHaproxy, type Haproxy } from "../../test/peers/haproxy";
import { ownerOf } from "../../src/core/fleet";
import { primaryKey } from "../../src/core/cache/key";
import { artifactBytes, sha256Hex } from "./artifact";
import { type Child, median, round, spawnChild, stopChildren } from "./children";
import { type Check, checkLines, docHead, finishRun, forEachFlag, machineInfo, makeLog, makeUsage, onInterrupt, p50p99, resultFile, verdictLines } from "./harness";

const NAME = "fleet";
const HERE = import.meta.dir;
const HOST = "camsrepo.qg1.apps.qualys.com";
const NAMES = ["gw-a", "gw-b", "gw-c"];
const FLEET_TOKEN = "bench-fleet-token-0123456789abcdef-0123";
const log = makeLog(NAME);
const usage = makeUsage(NAME, "usage: bun bench/e2e/fleet.ts [--objects N] [--size BYTES] [--agents A] [--concurrency C] [--hits H] [--workers W] [--out DIR]");

const common = { workers: 1, out: join(HERE, "../results") };
const opts = { objects: 6, size: 2 * 1024 * 1024, agents: 300, concurrency: 24, hits: 2000 };
forEachFlag(process.argv.slice(2), usage, common, (f) => {
  switch (f.flag) {
    case "--objects": opts.objects = f.int(3, 100); break;
    case "--size": opts.size = f.int(1024, 64 << 20); break;
    case "--agents": opts.agents = f.int(10, 10_000); break;
    case "--concurrency": opts.concurrency = f.int(1, 500); break;
    case "--hits": opts.hits = f.int(100, 100_000); break;
    default: usage(`unknown flag ${f.arg}`);
  }
});

type Obj = { name: string; path: string; sha256: string; owner: string };
type Env = { originPort: number; origin: Child; ca: string };

const { started, file } = resultFile(common.out, NAME);
const doc: any = docHead(NAME, started, machineInfo(), { ...opts, workers: common.workers });
const gates: Check[] = [];
const targets: Check[] = [];
const gws: Gateway[] = [];
let lb: Haproxy | null = null;
const scratch = mkdtempSync(join(tmpdir(), "agate-bench-fleet-"));

const objects = (env: Env, phase: string, n: number): Obj[] =>
  Array.from({ length: n }, (_, i) => {
    const name = `${phase}-${i}.bin`;
    const path = `/artifact/${name}?size=${opts.size}&max_age=3600`;
    return { name, path, sha256: sha256Hex(artifactBytes(name, opts.size)), owner: ownerOf(primaryKey("GET", `https://${HOST}:${env.originPort}${path}`), NAMES)! };
  });

async function originCounts(env: Env): Promise<Record<string, { requests: number; full: number; bytes: number }>> {
  env.origin.send("stats");
  return (await env.origin.next("stats", 10_000)).artifacts;
}

/** One savings-client process fetching `o` `agents` times through `port` (a cache port or haproxy). */
async function client(env: Env, port: number, o: Obj, agents: number, perConn: number, label: string) {
  const c = spawnChild(`client(${label})`, [
    BUN, join(HERE, "savings-client.ts"), "--mode", "fetch", "--via", "cache", "--host", HOST,
    "--origin-port", String(env.originPort), "--proxy-port", String(port), "--ca", env.ca,
    "--path", o.path, "--expect-size", String(opts.size), "--expect-sha256", o.sha256,
    "--agents", String(agents), "--per-conn", String(perConn), "--concurrency", String(Math.max(1, Math.min(opts.concurrency, agents))),
    "--timeout-ms", "30000", "--deadline-s", "240",
  ]);
  try {
    const { ev: _e, ...r } = await c.next("done", 250_000);
    return r;
  } finally {
    await c.stop();
  }
}

/** Every object fetched by agents/objects agents, all objects at once; per object: copies the origin sent. */
async function fetchAll(env: Env, port: number, objs: Obj[], agents: number, label: string) {
  const per = Math.max(1, Math.round(agents / objs.length));
  const t0 = performance.now();
  const runs = await Promise.all(objs.map((o) => client(env, port, o, per, 1, `${label} ${o.name}`)));
  const wallMs = Math.round(performance.now() - t0);
  const counts = await originCounts(env);
  const perObject = objs.map((o, i) => ({ name: o.name, owner: o.owner, agents: per, ok: runs[i]!.requestsOk, failed: runs[i]!.requestsFailed, errors: runs[i]!.errors, upstreamBytes: counts[o.path]?.bytes ?? 0, copies: round((counts[o.path]?.bytes ?? 0) / opts.size, 3) }));
  return { agents: per * objs.length, wallMs, failed: perObject.reduce((n, x) => n + x.failed, 0), perObject };
}

const fleetCfg = (env: Env, i: number, adminPorts: number[]) => ({
  gateway: { name: NAMES[i], workers: common.workers, drain_grace_s: 2 },
  admin: { port: adminPorts[i] },
  proxy: { max_connections: 3000 },
  cache: { enabled: true, port: 0, listen: "127.0.0.1" },
  tls: { upstream_ca: pki.caPath, ca: "common", ca_cert: env.ca, ca_key: caKey },
  destinations: { ports: [env.originPort] },
  hosts: { [HOST]: "127.0.0.1" },
  fleet: { peers: [0, 1, 2].filter((j) => j !== i).map((j) => `127.0.0.1:${adminPorts[j]}`), token: FLEET_TOKEN, heartbeat_s: 1, min_heartbeat_s: 1, missed_heartbeats: 2, share_cache: true },
});

const pki = makeTestPki([HOST]);
let caKey = "";

function makeCommonCa(): string {
  const r = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=Bench Fleet CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], { cwd: scratch, stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  caKey = join(scratch, "ca.key");
  return join(scratch, "ca.pem");
}

const sharers = async (g: Gateway) => (((await (await g.admin("/api/fleet")).json()) as any).share_peers ?? []).length;

async function main() {
  if (!HAPROXY) throw new Error("haproxy is not installed (apt-get install haproxy)");
  const origin = spawnChild("origin", [BUN, join(HERE, "origin-fixture.ts"), "--cert", pki.certPath, "--key", pki.keyPath, "--artifacts"]);
  const env: Env = { origin, originPort: Number((await origin.next("listening", 15_000)).port), ca: makeCommonCa() };

  // 1. one gateway
  log(`one gateway: ${opts.agents} agents over ${opts.objects} objects of ${opts.size} bytes`);
  const solo = await startGateway({ ...fleetCfg(env, 0, [0, 0, 0]), fleet: {}, admin: {} });
  try {
    doc.oneGateway = await fetchAll(env, solo.ports.cache!, objects(env, "solo", opts.objects), opts.agents, "solo");
  } finally {
    await solo.stop();
  }

  // 2. three gateways behind haproxy
  const adminPorts = [freePort(), freePort(), freePort()];
  for (const i of [0, 1, 2]) gws.push(await startGateway(fleetCfg(env, i, adminPorts), { dir: mkdtempSync(join(scratch, `${NAMES[i]}-`)) }));
  lb = await startHaproxy(gws.map((g, i) => ({ name: NAMES[i]!, port: g.ports.cache! })));
  for (const g of gws) await waitFor(async () => (await sharers(g)) === 2, { timeoutMs: 20_000, what: "every gateway sharing with the other two", everyMs: 100 });
  log(`three gateways behind haproxy: ${opts.agents} agents over ${opts.objects} new objects`);
  const pool = objects(env, "pool", opts.objects);
  doc.threeGateways = await fetchAll(env, lb.port, pool, opts.agents, "pool");
  for (const [label, r] of [["1 gateway", doc.oneGateway], ["3 gateways", doc.threeGateways]] as const) {
    const copies = r.perObject.map((x: any) => x.copies);
    gates.push({ name: `${label}: one upstream copy per object`, pass: copies.every((c: number) => c === 1), value: copies, want: "every object 1.0" });
    gates.push({ name: `${label}: every agent got the object byte-exact`, pass: r.failed === 0, value: r.failed, want: "0 failed" });
  }

  // 3. hits at the owner vs at a non-owner (which stored the copy it got from the owner)
  const o = pool.find((x) => x.owner === "gw-a") ?? pool[0]!;
  const ownerIdx = NAMES.indexOf(o.owner);
  const otherIdx = (ownerIdx + 1) % 3;
  for (const i of [ownerIdx, otherIdx]) await client(env, gws[i]!.ports.cache!, o, 1, 1, "warm"); // stored on both
  const before = (await originCounts(env))[o.path]?.bytes ?? 0;
  const rounds: any[] = [];
  for (let r = 0; r < 2; r++)
    for (const [role, i] of (r % 2 ? [["nonOwner", otherIdx], ["owner", ownerIdx]] : [["owner", ownerIdx], ["nonOwner", otherIdx]]) as [string, number][]) {
      log(`hits at the ${role} (${NAMES[i]}), round ${r + 1}: ${opts.hits} keep-alive requests`);
      const x = await client(env, gws[i]!.ports.cache!, o, opts.hits, 20, `hits ${role}`);
      rounds.push({ role, gateway: NAMES[i], round: r + 1, requestsOk: x.requestsOk, requestsFailed: x.requestsFailed, requestsPerSecond: x.requestsPerSecond, MBps: x.MBps, requestMs: x.requestMs });
    }
  const fig = (role: string) => {
    const rs = rounds.filter((x) => x.role === role);
    return { p50: median(rs.map((x) => x.requestMs?.p50)), p99: median(rs.map((x) => x.requestMs?.p99)), requestsPerSecond: median(rs.map((x) => x.requestsPerSecond)), MBps: median(rs.map((x) => x.MBps)), failed: rs.reduce((n, x) => n + x.requestsFailed, 0) };
  };
  doc.hits = { object: o.name, size: opts.size, owner: NAMES[ownerIdx], nonOwner: NAMES[otherIdx], rounds, ownerFig: fig("owner"), nonOwnerFig: fig("nonOwner") };
  const after = (await originCounts(env))[o.path]?.bytes ?? 0;
  gates.push({ name: "hits: no upstream bytes, every body byte-exact", pass: after === before && doc.hits.ownerFig.failed + doc.hits.nonOwnerFig.failed === 0, value: { upstreamBytes: after - before, failed: doc.hits.ownerFig.failed + doc.hits.nonOwnerFig.failed }, want: "0 bytes, 0 failed" });
  const ratio = doc.hits.ownerFig.p99 ? round(doc.hits.nonOwnerFig.p99 / doc.hits.ownerFig.p99, 2) : null;
  targets.push({ name: "hits at a non-owner: p99 within 1.5x the owner's", pass: ratio !== null && ratio <= 1.5, value: `${ratio}x (${doc.hits.nonOwnerFig.p99} vs ${doc.hits.ownerFig.p99} ms)`, want: "<= 1.5x" });

  // 4. the cost of a peer leaving
  const leave = objects(env, "leave", opts.objects);
  log(`a peer leaving: ${leave.length} objects warmed by one agent each, gw-c stopped, ${opts.agents} agents fetch them again`);
  await fetchAll(env, lb.port, leave, leave.length, "warm");
  const warmCounts = await originCounts(env);
  await gws[2]!.stop(); // SIGTERM by its PID; fetch at once, before the heartbeats (1 s × 2) call it offline
  const t0 = performance.now();
  const again = await fetchAll(env, lb.port, leave, opts.agents, "after-leave");
  const perObject = again.perObject.map((x: any, i: number) => {
    const refetchedBytes = x.upstreamBytes - (warmCounts[leave[i]!.path]?.bytes ?? 0);
    return { ...x, refetched: round(refetchedBytes / opts.size, 3) };
  });
  doc.peerLeaving = { stopped: "gw-c", ownedByStopped: leave.filter((x) => x.owner === "gw-c").length, wallMs: Math.round(performance.now() - t0), failed: again.failed, perObject, objectsRefetched: perObject.filter((x: any) => x.refetched > 0).length, bytesRefetched: perObject.reduce((n: number, x: any) => n + Math.round(x.refetched * opts.size), 0) };
  const wrong = perObject.filter((x: any) => x.refetched > 0 && x.owner !== "gw-c").map((x: any) => x.name);
  gates.push({ name: "peer leaving: only objects it owned may be refetched", pass: wrong.length === 0, value: wrong, want: "none of the others" });
  gates.push({ name: "peer leaving: every agent got the object byte-exact", pass: again.failed === 0, value: again.failed, want: "0 failed" });
  gates.push({ name: "peer leaving: at most one refetch per object", pass: perObject.every((x: any) => x.refetched <= 1), value: perObject.map((x: any) => x.refetched), want: "<= 1 each" });
}

const summary = (d: any) => {
  const out = [`fleet shared cache (${d.options.objects} objects × ${d.options.size} bytes, ${d.options.agents} agents, workers ${d.options.workers}; load ${d.machine.loadAvgStart?.join(" ")} → ${d.machine.loadAvgEnd?.join(" ")})`];
  const copies = (r: any) => (r ? r.perObject.map((x: any) => x.copies).join(" ") : "-");
  out.push(`  upstream copies per object, 1 gateway:  ${copies(d.oneGateway)}`);
  out.push(`  upstream copies per object, 3 gateways: ${copies(d.threeGateways)}`);
  if (d.hits) {
    out.push(`  hits at the owner (${d.hits.owner}):     ${p50p99(d.hits.ownerFig)}, ${d.hits.ownerFig.requestsPerSecond} req/s, ${d.hits.ownerFig.MBps} MB/s`);
    out.push(`  hits at a non-owner (${d.hits.nonOwner}): ${p50p99(d.hits.nonOwnerFig)}, ${d.hits.nonOwnerFig.requestsPerSecond} req/s, ${d.hits.nonOwnerFig.MBps} MB/s`);
  }
  if (d.peerLeaving) out.push(`  a peer leaving: ${d.peerLeaving.objectsRefetched} of ${d.peerLeaving.perObject.length} objects refetched (${d.peerLeaving.bytesRefetched} bytes; ${d.peerLeaving.ownedByStopped} were owned by the stopped gateway)`);
  return out.join("\n");
};

const cleanup = async () => {
  await lb?.stop();
  lb = null;
  await Promise.all(gws.map((g) => g.stop()));
  await stopChildren();
  rmSync(scratch, { recursive: true, force: true });
};
onInterrupt(log, "interrupted: stopping haproxy, gateways and children", cleanup);
let error: string | null = null;
try {
  await main();
} catch (e) {
  error = String((e as Error)?.stack ?? e);
} finally {
  await cleanup();
}
finishRun(doc, { started, file, error, gates, targets, needGates: true, summary: (d) => [summary(d), ...checkLines(d, true), ...verdictLines(d)].join("\n") });
