/**
 * Peer TLS verified (issue 14, `[fleet] peer_ca`) with three real gateways on loopback, all with `[admin] tls = true`
 * (heartbeat_s = 1, min_heartbeat_s = 1, missed_heartbeats = 2). Each gateway's appliance CA — the CA that mints its
 * management leaf (src/admin/server.ts) — is made by the test and written into its data_dir before it starts, so the
 * others' peer_ca files can name it:
 * - gw-a lists gw-b with peer_ca = gw-b's appliance CA → gw-b online, `tls_verified: true`; a push to gw-b applies;
 * - gw-b lists gw-a with peer_ca = an unrelated CA → gw-a never online, its error "certificate not trusted: …"; a
 *   push to gw-a is unreachable with the same reason, and gw-a received nothing (its config and audit log);
 * - gw-c lists gw-a without peer_ca → gw-a online, but `tls_verified: false` with a note, and a warning at start.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCa } from "../../src/core/certs";
import { startGateway, type Gateway } from "../peers/gateway";
import { freePort, waitFor } from "../peers/helpers";

const FLEET_TOKEN = "fleet-token-0123456789abcdef-0123456789";
const names = ["gw-a", "gw-b", "gw-c"] as const;
const ports = names.map(() => freePort());
const dirs = names.map((n) => mkdtempSync(join(tmpdir(), `agate-peer-tls-${n}-`)));
const cas: { certPem: string; keyPem: string }[] = [];
const gws: Gateway[] = [];
const peerOf = (i: number) => `127.0.0.1:${ports[i]}`;

/** The management port over HTTPS, verified against the gateway's own appliance CA (the test made it). */
const adminOf = (i: number, path: string, init: RequestInit = {}) =>
  fetch(`https://127.0.0.1:${gws[i]!.ports.admin}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${gws[i]!.token}`, "content-type": "application/json", ...(init.headers ?? {}) },
    tls: { ca: cas[i]!.certPem },
  } as RequestInit);
const rowIn = async (i: number, j: number) => ((await (await adminOf(i, "/api/fleet")).json()) as any).gateways.find((g: any) => g.peer === peerOf(j));

beforeAll(async () => {
  for (const [i, n] of names.entries()) {
    const ca = await createCa({ commonName: `agate appliance CA (${n})`, now: new Date(), serial: randomBytes(16) });
    cas.push(ca);
    const caDir = join(dirs[i]!, "data", "ca");
    mkdirSync(caDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(caDir, "appliance.key"), ca.keyPem, { mode: 0o600 });
    writeFileSync(join(caDir, "appliance.pem"), ca.certPem, { mode: 0o644 });
  }
  const stranger = await createCa({ commonName: "agate appliance CA (not a peer)", now: new Date(), serial: randomBytes(16) });
  const right = join(dirs[0]!, "peers-ca.pem");
  writeFileSync(right, cas[1]!.certPem);
  const wrong = join(dirs[1]!, "peers-ca.pem");
  writeFileSync(wrong, stranger.certPem);
  const fleet = (peers: number[], peer_ca: string | null) => ({
    peers: peers.map(peerOf),
    token: FLEET_TOKEN,
    heartbeat_s: 1,
    min_heartbeat_s: 1,
    missed_heartbeats: 2,
    ...(peer_ca ? { peer_ca } : {}),
  });
  const cfgs = [fleet([1], right), fleet([0], wrong), fleet([0], null)];
  gws.push(
    ...(await Promise.all(
      names.map((n, i) => startGateway({ gateway: { name: n, workers: 1 }, admin: { port: ports[i], tls: true }, fleet: cfgs[i]! }, { dir: dirs[i] })),
    )),
  );
});
afterAll(async () => {
  await Promise.all(gws.map((g) => g.stop()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("peer TLS with [admin] tls = true", () => {
  test("the management leaf is issued by the appliance CA the test put in data_dir (what peer_ca must hold)", async () => {
    const r = await adminOf(0, "/api/fleet");
    expect(r.status).toBe(200);
  });

  test("peer_ca holding the peer's appliance CA: online, verified", async () => {
    const row = await waitFor(
      async () => {
        const g = await rowIn(0, 1);
        return g.status === "online" && g;
      },
      { timeoutMs: 15_000, what: "gw-a seeing gw-b online" },
    );
    expect(row).toMatchObject({ status: "online", tls_verified: true, tls_note: null, last_error: null, member: { name: "gw-b" } });
    const f: any = await (await adminOf(0, "/api/fleet")).json();
    expect(f.peer_tls).toEqual({ scheme: "https", verified: true, note: null });
  }, 30_000);

  test("peer_ca holding another CA: never online, the error names the certificate", async () => {
    const row = await waitFor(
      async () => {
        const g = await rowIn(1, 0);
        return g.missed_heartbeats >= 3 && g;
      },
      { timeoutMs: 15_000, what: "gw-b failing three heartbeats to gw-a" },
    );
    expect(row.status).toBe("offline");
    expect(row.member).toBeNull();
    expect(row.last_heartbeat).toBeNull();
    expect(row.last_error).toStartWith(`certificate not trusted: ${peerOf(0)}'s management certificate is not issued by a CA in [fleet] peer_ca (`);
    expect(row.tls_verified).toBe(true);
    // while gw-c, which does not verify, reaches the same gw-a: it is up, only not trusted by gw-b
    await waitFor(async () => (await rowIn(2, 0)).status === "online", { timeoutMs: 15_000, what: "gw-c seeing gw-a online" });
  }, 30_000);

  test("steering: a verified peer applies the push; an untrusted one is unreachable with the certificate error and receives nothing", async () => {
    const push = (i: number, j: number) =>
      adminOf(i, "/api/fleet/config", { method: "POST", body: JSON.stringify({ gateways: [peerOf(j)], change: { cache: { min_tls: "1.3" } } }) });
    const good: any = await (await push(0, 1)).json();
    expect(good.results).toMatchObject([{ gateway: peerOf(1), result: "applied" }]);
    expect(((await (await adminOf(1, "/api/config")).json()) as any).cache.min_tls).toBe("1.3");

    const bad: any = await (await push(1, 0)).json();
    expect(bad.results).toMatchObject([{ gateway: peerOf(0), result: "unreachable" }]);
    expect(bad.results[0].reason).toStartWith(`certificate not trusted: ${peerOf(0)}'s management certificate`);
    expect(((await (await adminOf(0, "/api/config")).json()) as any).cache.min_tls).toBe("1.2");
    const received = (i: number) => {
      const audit = join(dirs[i]!, "data", "audit.log");
      return existsSync(audit) ? readFileSync(audit, "utf8").split("\n").filter((l) => l.includes("fleet.config.receive")) : [];
    };
    expect(received(1).length).toBe(1); // gw-b's own audit entry for the push it took (the check below is not vacuous)
    expect(received(0)).toEqual([]);
  }, 60_000);

  test("no peer_ca: encrypted and working, but every row and the view say it is not verified, and a warning at start", async () => {
    const row = await waitFor(
      async () => {
        const g = await rowIn(2, 0);
        return g.status === "online" && g;
      },
      { timeoutMs: 15_000, what: "gw-c seeing gw-a online" },
    );
    expect(row.tls_verified).toBe(false);
    expect(row.tls_note).toContain("not verified");
    expect(row.tls_note).toContain("[fleet] peer_ca");
    const f: any = await (await adminOf(2, "/api/fleet")).json();
    expect(f.peer_tls).toMatchObject({ scheme: "https", verified: false });
    const warn = await gws[2]!.waitForLine((l) => l.level === "warn" && String(l.msg).includes("peer TLS is encrypted but not verified"));
    expect(warn.peers).toBe(1);
    // the verified ones did not warn
    expect(gws[0]!.lines().some((l) => String(l.msg).includes("peer TLS is encrypted but not verified"))).toBe(false);
  }, 30_000);
});
