/**
 * `[fleet] share_cache`: the asking gateway's access line names the peer its miss went to (issue 14). Two real
 * gateways on loopback (one common CA), share_cache on, a TLS origin; curl asks gw-a directly (its cache port):
 *   - a key gw-b owns: gw-a's line says `peer` = gw-b's `[fleet] peers` entry, `peerVia` = `peer` (gw-b's bytes);
 *     the next request is gw-a's own hit, with no peer fields;
 *   - a key gw-b owns whose origin answers 503: gw-b relays it, gw-a gives gw-b up for the origin: `peer-fallback`;
 *   - a key gw-a owns: gw-a asks the runner-up (gw-b) for a stored copy, which it does not have: `peer-copy-miss`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { freePort, waitFor } from "../peers/helpers";
import { ownerOf } from "../../src/core/fleet";
import { primaryKey } from "../../src/core/cache/key";

const HOST = "camsrepo.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const FLEET_TOKEN = "fleet-access-token-0123456789abcdef-0123";
const names = ["gw-a", "gw-b"];
let adminPorts: number[] = []; // chosen once the origin listens (its port 0 may be a port freePort just gave)
const peerOf = (i: number) => `127.0.0.1:${adminPorts[i]}`;
const gws: Gateway[] = [];
const routes: Record<string, (req: Request) => Response> = {};
let origin: Origin;
let caDir = "";
let commonCa: { cert: string; key: string };

const urlOf = (path: string) => `https://${HOST}:${origin.port}${path}`;
/** The first `/prefix/N.bin` whose key `owner` owns among both gateways. */
const pathOwnedBy = (prefix: string, owner: string) => {
  for (let n = 0; n < 1000; n++) if (ownerOf(primaryKey("GET", urlOf(`${prefix}/${n}.bin`)), names) === owner) return `${prefix}/${n}.bin`;
  throw new Error(`no path owned by ${owner}`);
};
const viaA = (path: string) => curl(["-o", "/dev/null", "-w", "%{http_code}", "-x", `http://127.0.0.1:${gws[0]!.ports.cache}`, "--cacert", commonCa.cert, urlOf(path)]);
/** gw-a's access lines for curl's requests for `path`, in order (not gw-b's only-if-cached asks for a copy of it). */
const accessOfA = (path: string) => gws[0]!.lines().filter((l) => l.msg === "access" && l.path === path && l.reason !== "PX_ONLY_IF_CACHED");

beforeAll(async () => {
  caDir = mkdtempSync(join(tmpdir(), "agate-share-access-ca-"));
  const r = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=Fleet Access CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], { cwd: caDir, stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  commonCa = { cert: join(caDir, "ca.pem"), key: join(caDir, "ca.key") };
  origin = startTlsOrigin(pki, routes);
  adminPorts = [freePort(), freePort()];
  for (const i of [0, 1])
    gws.push(
      await startGateway({
        gateway: { name: names[i], workers: 1 },
        admin: { port: adminPorts[i] },
        cache: { enabled: true, port: 0, listen: "127.0.0.1" },
        tls: { upstream_ca: pki.caPath, ca: "common", ca_cert: commonCa.cert, ca_key: commonCa.key },
        destinations: { ports: [origin.port] },
        hosts: { [HOST]: "127.0.0.1" },
        fleet: { peers: [peerOf(1 - i)], token: FLEET_TOKEN, heartbeat_s: 1, min_heartbeat_s: 1, missed_heartbeats: 2, share_cache: true },
      }),
    );
  for (const i of [0, 1])
    await waitFor(async () => JSON.stringify(((await (await gws[i]!.admin("/api/fleet")).json()) as any).share_peers) === JSON.stringify([names[1 - i]]), { timeoutMs: 20_000, what: `${names[i]} sharing with ${names[1 - i]}`, everyMs: 100 });
}, 60_000);

afterAll(async () => {
  await Promise.all(gws.map((g) => g.stop()));
  for (const g of gws) rmSync(g.dir, { recursive: true, force: true });
  origin?.stop();
  if (caDir) rmSync(caDir, { recursive: true, force: true });
});

describe("share_cache: the asker's access line names the peer", () => {
  test("a key gw-b owns: gw-a's line says peer = gw-b's entry, peerVia = peer; gw-a's later hit has no peer fields", async () => {
    const path = pathOwnedBy("/owned-b", "gw-b");
    routes[path] = () => new Response("from the origin\n", { headers: { "cache-control": "max-age=3600" } });
    expect((await viaA(path)).stdout).toBe("200");
    const first = await waitFor(() => accessOfA(path)[0], { what: "gw-a's access line" });
    expect(first).toMatchObject({ status: 200, phase: "miss", peer: peerOf(1), peerVia: "peer" });
    expect(first.cacheStatus).toContain("detail=peer");
    expect(first.peerNext).toBeUndefined();
    expect(origin.hits.get(path)).toBe(1); // gw-b downloaded it, once
    expect((await viaA(path)).stdout).toBe("200");
    const second = await waitFor(() => accessOfA(path)[1], { what: "gw-a's second access line" });
    expect(second.phase).toBe("hit");
    expect(second.peer).toBeUndefined();
    expect(second.peerVia).toBeUndefined();
  }, 30_000);

  test("the owner answers 5xx: gw-a gives it up for the origin, and its line says peer = gw-b's entry, peerVia = peer-fallback", async () => {
    const path = pathOwnedBy("/fail-b", "gw-b");
    routes[path] = () => new Response("busy\n", { status: 503 });
    expect((await viaA(path)).stdout).toBe("503");
    const line = await waitFor(() => accessOfA(path)[0], { what: "gw-a's access line" });
    expect(line).toMatchObject({ status: 503, peer: peerOf(1), peerVia: "peer-fallback" });
    expect(origin.hits.get(path)).toBe(2); // gw-b's try, then gw-a's own
  }, 30_000);

  test("a key gw-a owns: it asks the runner-up gw-b for a stored copy, which it has not: peer = gw-b's entry, peerVia = peer-copy-miss", async () => {
    const path = pathOwnedBy("/owned-a", "gw-a");
    routes[path] = () => new Response("mine\n", { headers: { "cache-control": "max-age=3600" } });
    expect((await viaA(path)).stdout).toBe("200");
    const line = await waitFor(() => accessOfA(path)[0], { what: "gw-a's access line" });
    expect(line).toMatchObject({ status: 200, phase: "miss", peer: peerOf(1), peerVia: "peer-copy-miss" });
    expect(origin.hits.get(path)).toBe(1);
  }, 30_000);
});
