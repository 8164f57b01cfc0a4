/**
 * `[fleet] share_cache` end to end (issue 14): three real gateways (one common CA, so agents trust one root) behind
 * Debian's haproxy (round-robin over their cache ports, health-checked), a counting TLS origin, and agents that are
 * real curl processes through haproxy (bounded concurrency).
 *
 *   1. 300 agents fetch a handful of objects (one of 3 MiB), each of them owned by some gateway: the origin sees
 *      exactly one download per object, every body is byte-exact, and Cache-Status names the peer fills.
 *   2. 300 more agents fetch new objects while one gateway is stopped (SIGTERM, by its PID) in the middle: every
 *      agent still gets byte-exact objects; the other two show it `offline` in GET /api/fleet, their webhook
 *      receiver (127.0.0.1) got the notice, and every object still cost one download (a gateway that finds the
 *      owner gone asks the owner the pool picks without it).
 *   3. The stopped gateway comes back: agents fetch everything again — no new download at the origin (what the pool
 *      fetched while it was away is found as a copy, or served by whoever stores it).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { patternBytes, startTlsOrigin, type Origin } from "../peers/tls-origin";
import { startGateway, type Gateway } from "../peers/gateway";
import { freePort, waitFor } from "../peers/helpers";
import { HAPROXY, startHaproxy, type Haproxy } from "../peers/haproxy";
import { ownerOf } from "../../src/core/fleet";
import { primaryKey } from "../../src/core/cache/key";

const HOST = "camsrepo.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const FLEET_TOKEN = "fleet-share-token-0123456789abcdef-0123";
const names = ["gw-a", "gw-b", "gw-c"];
const adminPorts = [freePort(), freePort(), freePort()];
const dirs = names.map((n) => mkdtempSync(join(tmpdir(), `agate-share-${n}-`)));
const gws: (Gateway | null)[] = [null, null, null];
const peerOf = (i: number) => `127.0.0.1:${adminPorts[i]}`;

type Notice = { path: string; body: any };
const notices: Notice[] = [];
let hook: ReturnType<typeof Bun.serve>;
let origin: Origin;
let lb: Haproxy;
let commonCa: { cert: string; key: string };

/** path → its bytes; sizes from 8 KiB to 3 MiB, bytes differ per path */
const bodies = new Map<string, Uint8Array>();
const sha = (b: Uint8Array) => new Bun.CryptoHasher("sha256").update(b).digest("hex");
const digests = new Map<string, string>();

function makeCommonCa() {
  const dir = mkdtempSync(join(tmpdir(), "agate-share-ca-"));
  const r = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=Fleet Gateways CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], { cwd: dir, stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return { cert: join(dir, "ca.pem"), key: join(dir, "ca.key") };
}

const cfgOf = (i: number, cachePort = 0) => ({
  gateway: { name: names[i], workers: 1, drain_grace_s: 2 },
  admin: { port: adminPorts[i] },
  cache: { enabled: true, port: cachePort, listen: "127.0.0.1" },
  tls: { upstream_ca: pki.caPath, ca: "common", ca_cert: commonCa.cert, ca_key: commonCa.key },
  destinations: { ports: [origin.port] },
  hosts: { [HOST]: "127.0.0.1" },
  fleet: {
    peers: [0, 1, 2].filter((j) => j !== i).map(peerOf),
    token: FLEET_TOKEN,
    heartbeat_s: 1,
    min_heartbeat_s: 1,
    missed_heartbeats: 2,
    share_cache: true,
    webhook_url: `http://127.0.0.1:${hook.port}/hook/${names[i]}`,
  },
});
const start = async (i: number, cachePort = 0) => (gws[i] = await startGateway(cfgOf(i, cachePort), { dir: dirs[i] }));
const fleetOf = async (i: number) => (await (await gws[i]!.admin("/api/fleet")).json()) as any;
const urlOf = (path: string) => `https://${HOST}:${origin.port}${path}`;
const ownerOfPath = (path: string, live = names) => ownerOf(primaryKey("GET", urlOf(path)), live);

/** Paths with the given sizes, chosen so that every gateway owns at least one of them (and `also` holds). */
function pickPaths(prefix: string, sizes: number[], also: (owners: (string | null)[]) => boolean = () => true): string[] {
  for (let salt = 0; salt < 1000; salt++) {
    const paths = sizes.map((_, i) => `${prefix}/${salt}-${i}.bin`);
    const owners = paths.map((p) => ownerOfPath(p));
    if (new Set(owners).size === 3 && also(owners)) return paths;
  }
  throw new Error("no path set covers the three gateways");
}

type AgentResult = { path: string; ok: boolean; status: string; cacheStatus: string; tries: number; error?: string };

/** One agent: curl through haproxy, trusting the common CA; the body on stdout is compared byte for byte (sha256). */
async function agent(path: string): Promise<AgentResult> {
  let last: AgentResult = { path, ok: false, status: "", cacheStatus: "", tries: 0 };
  // An agent retries a broken transfer (a gateway stopped under it), as real agents do; a wrong body is never retried.
  for (let tries = 1; tries <= 3; tries++) {
    const p = Bun.spawn(["curl", "-sS", "--max-time", "30", "-x", `http://127.0.0.1:${lb.port}`, "--cacert", commonCa.cert, "-w", "%{stderr}\n@@%{http_code} %header{cache-status}", urlOf(path)], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(p.stdout).arrayBuffer(), new Response(p.stderr).text(), p.exited]);
    const meta = err.slice(err.lastIndexOf("@@") + 2).trim();
    const [status = "", ...cs] = meta.split(" ");
    const body = new Uint8Array(out);
    last = { path, ok: code === 0 && status === "200" && sha(body) === digests.get(path), status, cacheStatus: cs.join(" "), tries, error: code === 0 ? undefined : err.slice(0, 300) };
    if (code === 0) return last;
  }
  return last;
}

/** `n` agents, agent i fetching `pathOf(i)` (after `gate(i)` resolves), `concurrency` at a time; `onProgress` sees the count done. */
async function runAgents(
  pathOf: string[] | ((i: number) => string),
  n: number,
  concurrency: number,
  onProgress?: (done: number) => void,
  gate?: (i: number) => Promise<unknown> | null,
): Promise<AgentResult[]> {
  const results: AgentResult[] = [];
  const path = typeof pathOf === "function" ? pathOf : (i: number) => pathOf[i % pathOf.length]!;
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < n; i = next++) {
      await gate?.(i);
      results.push(await agent(path(i)));
      onProgress?.(results.length);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return results;
}

const SIZES = [8 << 10, 64 << 10, 300 << 10, 1 << 20, 3 << 20];
let run1: string[] = [];
let run2: string[] = [];
let cachePortC = 0;
let tokenSeenByOrigin = 0;

beforeAll(async () => {
  if (!HAPROXY) return;
  commonCa = makeCommonCa();
  hook = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      notices.push({ path: new URL(req.url).pathname, body: await req.json() });
      return new Response("ok");
    },
  });
  origin = startTlsOrigin(pki, {});
  // the origin's routes need its port (in the URLs that choose the owners): add them once it listens
  run1 = pickPaths("/one", SIZES);
  // run 2: gw-c owns one of the objects first asked for after it stopped (the "owner comes back" case of run 3)
  run2 = pickPaths("/two", SIZES, (o) => o.slice(2).includes("gw-c"));
  [...run1, ...run2].forEach((p, i) => {
    const b = patternBytes(SIZES[i % SIZES.length]!, i * 977);
    bodies.set(p, b);
    digests.set(p, sha(b));
  });
  origin.stop();
  const port = origin.port;
  origin = startTlsOriginOn(port);
  await Promise.all([0, 1, 2].map(start));
  cachePortC = gws[2]!.ports.cache!;
  lb = await startHaproxy(gws.map((g, i) => ({ name: names[i]!, port: g!.ports.cache! })));
}, 90_000);

/** The counting origin on a known port (the owners were chosen for it), serving `bodies`. */
function startTlsOriginOn(port: number): Origin {
  const hits = new Map<string, number>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port,
    tls: { cert: pki.certPem, key: pki.keyPem },
    fetch(req) {
      const p = new URL(req.url).pathname;
      hits.set(p, (hits.get(p) ?? 0) + 1);
      if (req.headers.has("agate-fleet-token")) tokenSeenByOrigin++;
      const b = bodies.get(p);
      if (!b) return new Response("not here\n", { status: 404 });
      return new Response(b, { headers: { "content-type": "application/octet-stream", "cache-control": "max-age=3600", etag: `"${digests.get(p)!.slice(0, 16)}"` } });
    },
  });
  return { port, url: (h, p) => `https://${h}:${port}${p}`, hits, requests: [], stop: () => server.stop(true), [Symbol.dispose]: () => server.stop(true) };
}

afterAll(async () => {
  await lb?.stop();
  await Promise.all(gws.map((g) => g?.stop()));
  origin?.stop();
  hook?.stop(true);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const sharersOf = async (i: number) => ((await fleetOf(i)).share_peers ?? []).slice().sort();
const waitSharing = (i: number, expected: string[]) =>
  waitFor(async () => JSON.stringify(await sharersOf(i)) === JSON.stringify(expected), { timeoutMs: 20_000, what: `${names[i]} routing misses to ${expected.join(", ")}`, everyMs: 100 });

describe.skipIf(!HAPROXY)("share_cache: three gateways behind haproxy, one origin download per object", () => {
  test("300 agents, a handful of objects: exactly one download per object at the origin, every body byte-exact", async () => {
    for (const i of [0, 1, 2]) await waitSharing(i, names.filter((_, j) => j !== i));
    const results = await runAgents(run1, 300, 12);
    const bad = results.filter((r) => !r.ok);
    expect(bad).toEqual([]);
    expect(results.length).toBe(300);
    for (const p of run1) expect({ path: p, downloads: origin.hits.get(p) ?? 0 }).toEqual({ path: p, downloads: 1 });
    // what Cache-Status said: hits, and misses filled from the key's owner (detail=peer) on the non-owners
    const peerFills = results.filter((r) => /fwd=uri-miss/.test(r.cacheStatus) && /detail=peer\b/.test(r.cacheStatus));
    expect(peerFills.length).toBeGreaterThanOrEqual(1);
    expect(results.filter((r) => /; hit/.test(r.cacheStatus)).length).toBeGreaterThan(200);
    console.error(`[fleet-share] run 1: ${results.length} agents, ${peerFills.length} peer fills, origin downloads ${JSON.stringify(run1.map((p) => origin.hits.get(p)))}`);
  }, 180_000);

  test("one gateway stopped mid-run: every agent still gets byte-exact objects; offline in the fleet view, webhook notified; still one download per object", async () => {
    const c = gws[2]!;
    let stopped: Promise<number> | null = null;
    // The first 150 agents fetch two of the objects, and gw-c is stopped once 60 are done (agents in flight through
    // it while it drains); the other 150 start once it has exited — before the others see it offline — and fetch all
    // five, so three are first asked for while their owner (gw-c for one of them) is gone.
    const results = await runAgents(
      (i) => (i < 150 ? run2[i % 2]! : run2[i % run2.length]!),
      300,
      12,
      (done) => {
        if (done === 60 && stopped === null) stopped = c.stop(); // SIGTERM by its PID, then wait for the exit
      },
      (i) => (i >= 150 ? waitFor(() => stopped !== null, { timeoutMs: 60_000, what: "the stop to begin" }).then(() => stopped) : null),
    );
    expect(await stopped!).toBe(0);
    const bad = results.filter((r) => !r.ok);
    expect(bad).toEqual([]);
    for (const i of [0, 1]) {
      await waitFor(async () => (await fleetOf(i)).gateways.find((g: any) => g.peer === peerOf(2))?.status === "offline", { timeoutMs: 15_000, what: `${names[i]} showing gw-c offline` });
      await waitSharing(i, names.filter((_, j) => j !== i && j !== 2));
    }
    for (const gw of ["gw-a", "gw-b"])
      await waitFor(() => notices.some((n) => n.path === `/hook/${gw}` && n.body.event === "peer-offline" && n.body.peer === peerOf(2)), { timeoutMs: 15_000, what: `${gw}'s webhook notice for gw-c` });
    const downloads = run2.map((p) => origin.hits.get(p) ?? 0);
    const retried = results.filter((r) => r.tries > 1);
    console.error(`[fleet-share] run 2 (gw-c stopped after 60 agents): retried ${retried.length} (${JSON.stringify(retried.map((r) => r.error))}), origin downloads ${JSON.stringify(downloads)} (owners ${JSON.stringify(run2.map((p) => ownerOfPath(p)))})`);
    // A gateway that finds the owner gone asks the owner every gateway picks without it: still one download each.
    expect(downloads).toEqual([1, 1, 1, 1, 1]);
  }, 180_000);

  test("a peer request from an address not in [fleet] peers, or with a wrong token, is refused 403; the origin never sees the token", async () => {
    const direct = (iface: string, token: string) =>
      Bun.spawn(["curl", "-sS", "--interface", iface, "-o", "/dev/null", "-w", "%{http_code} %header{cache-status}", "-x", `http://127.0.0.1:${gws[0]!.ports.cache}`, "--cacert", commonCa.cert, "-H", `agate-fleet-token: ${token}`, urlOf(run1[0]!)], { stdout: "pipe", stderr: "pipe" });
    const read = async (p: ReturnType<typeof direct>) => (await new Response(p.stdout).text()).trim();
    // 127.0.0.2: Linux routes all of 127/8 to lo, and no peer has that address
    expect(await read(direct("127.0.0.2", FLEET_TOKEN))).toBe("403 agate; detail=PX_FLEET_DENY");
    expect(await read(direct("127.0.0.1", "wrong-token-0123456789abcdef-0123456789"))).toBe("403 agate; detail=PX_FLEET_DENY");
    expect(await read(direct("127.0.0.1", FLEET_TOKEN))).toMatch(/^200 agate; hit/);
    expect(tokenSeenByOrigin).toBe(0);
  });

  test("the stopped gateway comes back: fetching everything again costs no download at the origin", async () => {
    const before = [...run1, ...run2].map((p) => origin.hits.get(p) ?? 0);
    await start(2, cachePortC); // the port haproxy knows
    for (const i of [0, 1, 2]) await waitSharing(i, names.filter((_, j) => j !== i));
    await waitFor(async () => (await lb.up()).length === 3, { timeoutMs: 15_000, what: "haproxy seeing gw-c UP again" });
    const results = await runAgents([...run1, ...run2], 150, 12);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect([...run1, ...run2].map((p) => origin.hits.get(p) ?? 0)).toEqual(before);
    const copies = results.filter((r) => /detail=peer-copy/.test(r.cacheStatus)).length;
    // gw-c owns an object the pool fetched while it was away: it took the runner-up's copy instead of downloading it
    expect(copies).toBeGreaterThanOrEqual(1);
    console.error(`[fleet-share] run 3 (gw-c back): ${results.length} agents, ${copies} filled from a peer's copy, no new origin download`);
  }, 180_000);
});
