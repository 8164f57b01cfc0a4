/**
 * Export / import of a gateway (issue 14, "Replace an appliance") with real gateways on loopback: the export opens
 * with Debian's `age -d` and the passphrase (typed at its prompt through a pty, test/peers/age-cli.ts); imported
 * into a fresh gateway, that one's cache port serves leaves that curl verifies with the OLD gateway's CA only, and
 * its config is the old one's (but [admin] and data_dir); the same with an assigned uploaded chain, through the
 * CLI. A wrong passphrase, a damaged archive and a file that is not one are refused with a clear error and change
 * nothing. Neither the passphrase nor a key reaches a log line or the audit log. A published next CA (rollover) is
 * carried with its key: the replacement publishes it again (`/ca.pem?next=1`, `/ca-bundle.pem`) and can assign it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { makeCustomerChain } from "../peers/customer-chain";
import { ROOT, curl, startGateway, type Gateway } from "../peers/gateway";
import { ageDecrypt, ageMissing } from "../peers/age-cli";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const PASS = "correct horse battery staple 42";
const pki = makeTestPki([HOST]);
let origin: Origin;
beforeAll(() => (origin = startTlsOrigin(pki)));
afterAll(() => origin?.stop());

const base = (name: string) => ({
  gateway: { name, workers: 1 },
  cache: { enabled: true, port: 0, listen: "127.0.0.1" },
  tls: { upstream_ca: pki.caPath },
  destinations: { ports: [origin.port] },
  hosts: { [HOST]: "127.0.0.1" },
});

async function exportOf(g: Gateway, passphrase = PASS): Promise<Uint8Array> {
  const r = await g.admin("/api/export", { method: "POST", body: JSON.stringify({ passphrase }) });
  expect(r.status).toBe(200);
  expect(r.headers.get("content-disposition")).toMatch(/attachment; filename="agate-.*\.age"/);
  return new Uint8Array(await r.arrayBuffer());
}
function importInto(g: Gateway, bytes: Uint8Array, passphrase = PASS) {
  const f = new FormData();
  f.set("archive", new Blob([bytes]), "export.age");
  f.set("passphrase", passphrase);
  return g.admin("/api/import", { method: "POST", body: f });
}
const caPem = async (g: Gateway) => (await fetch(`http://127.0.0.1:${g.ports.admin}/ca.pem`)).text();
const leafVia = (g: Gateway, ca: string, path: string) => curl(["-x", `http://127.0.0.1:${g.ports.cache}`, "--cacert", ca, "-v", origin.url(HOST, path)]);
/** The config a replacement must share: everything but [admin] and gateway.data_dir. */
const shared = async (g: Gateway) => {
  const c: any = await (await g.admin("/api/config")).json();
  delete c.admin;
  delete c.gateway.data_dir;
  return c;
};
const everythingLogged = (g: Gateway) => JSON.stringify(g.lines()) + g.stderr() + readFileSync(join(g.dir, "data", "audit.log"), "utf8");

describe("export / import", () => {
  test("export opens with age -d; import into a fresh gateway: same CA (curl trusting the old CA only), same config", async () => {
    await using old = await startGateway(base("gw-old"));
    const chain = makeCustomerChain("Spare Corp CA");
    const up = new FormData();
    up.set("root", new Blob([readFileSync(chain.root)]));
    up.set("intermediate", new Blob([readFileSync(chain.intermediate)]));
    up.set("key", new Blob([readFileSync(chain.key)]));
    up.set("common_name", "Spare chain");
    const upId = ((await (await old.admin("/api/certificates", { method: "POST", body: up })).json()) as any).id;
    expect((await old.admin("/api/config", { method: "PUT", body: JSON.stringify({ cache: { allowed_domains: ["example.org"], min_tls: "1.3" }, gateway: { name: "site-1" } }) })).status).toBe(200);
    const oldCa = join(old.dir, "old-ca.pem");
    writeFileSync(oldCa, await caPem(old));

    const t0 = performance.now();
    const bytes = await exportOf(old);
    const tExport = performance.now() - t0;
    const file = join(old.dir, "export.age");
    writeFileSync(file, bytes);
    expect(new TextDecoder().decode(bytes.subarray(0, 22))).toBe("age-encryption.org/v1\n");
    expect(Buffer.from(bytes).includes(Buffer.from("PRIVATE KEY"))).toBe(false);

    const missing = ageMissing();
    if (missing) throw new Error(missing);
    const out = join(old.dir, "export.json.gz");
    const age = await ageDecrypt(file, out, PASS);
    expect(age.code).toBe(0);
    const doc = JSON.parse(gunzipSync(readFileSync(out)).toString("utf8"));
    expect(doc).toMatchObject({ format: "agate-gateway/1", gateway: "site-1", assigned: "appliance" });
    expect(doc.ca.appliance.key).toContain("PRIVATE KEY");
    expect(doc.uploaded.map((u: any) => u.row.id)).toEqual([upId]);
    expect(doc.config.overlay).toContain("example.org");
    expect((await ageDecrypt(file, join(old.dir, "x.gz"), "not the passphrase!!")).code).not.toBe(0);

    await using fresh = await startGateway(base("gw-new"));
    expect(await caPem(fresh)).not.toBe(await caPem(old));
    const t1 = performance.now();
    const r = await importInto(fresh, bytes);
    const tImport = performance.now() - t1;
    const body: any = await r.json();
    expect({ status: r.status, error: body.error }).toEqual({ status: 200, error: undefined });
    expect(body).toMatchObject({ ok: true, from: { gateway: "site-1" }, assigned: "appliance", uploaded: [upId], kept: ["admin.*", "gateway.data_dir"] });
    console.error(`[gateway-export.test] figure: export ${Math.round(tExport)} ms, ${bytes.byteLength} bytes; import ${Math.round(tImport)} ms (scrypt log2 N = 18; load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")})`);

    expect(await caPem(fresh)).toBe(await caPem(old));
    const leaf = await leafVia(fresh, oldCa, "/replaced");
    expect(leaf.stdout).toBe("hello from origin /replaced\n");
    expect(leaf.stderr).toContain("issuer: CN=agate appliance CA (gw-old)");
    expect(await shared(fresh)).toEqual(await shared(old));
    const certs: any = await (await fresh.admin("/api/certificates")).json();
    expect(certs.certificates.find((c: any) => c.id === upId)).toMatchObject({ common_name: "Spare chain", assigned: false });
    const imp = readFileSync(join(fresh.dir, "data", "audit.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((e) => e.action === "gateway.import");
    expect(imp).toHaveLength(1);
    expect(imp[0]).toMatchObject({ status: 200, detail: { from: "site-1" } });
    for (const g of [old, fresh]) {
      expect(everythingLogged(g)).not.toContain(PASS);
      expect(everythingLogged(g)).not.toContain("PRIVATE KEY");
    }
  }, 120_000);

  test("a wrong passphrase, a damaged archive, a file that is not one: a clear error, nothing changed", async () => {
    await using old = await startGateway(base("gw-src"));
    const bytes = await exportOf(old);
    await using g = await startGateway(base("gw-target"));
    const before = { ca: await caPem(g), config: await shared(g) };

    const wrong = await importInto(g, bytes, "this is the wrong passphrase");
    expect(wrong.status).toBe(400);
    expect(await wrong.json()).toMatchObject({ field: "passphrase", reason: "wrong-passphrase", error: "the passphrase does not open this archive (wrong passphrase); nothing was changed" });

    const damaged = bytes.slice();
    for (let i = damaged.length - 200; i < damaged.length - 100; i++) damaged[i] = damaged[i]! ^ 0xff;
    const d = await importInto(g, damaged);
    expect(d.status).toBe(400);
    const db: any = await d.json();
    expect(db).toMatchObject({ field: "archive", reason: "damaged" });
    expect(db.error).toContain("damaged or truncated");

    const notAge = await importInto(g, new TextEncoder().encode("hello, not an archive"));
    expect(await notAge.json()).toMatchObject({ field: "archive", reason: "not-age" });
    const short = await importInto(g, bytes, "short");
    expect(await short.json()).toMatchObject({ field: "passphrase" });
    expect((await g.admin("/api/export", { method: "POST", body: JSON.stringify({ passphrase: "short" }) })).status).toBe(400);

    expect({ ca: await caPem(g), config: await shared(g) }).toEqual(before);
    const certs: any = await (await g.admin("/api/certificates")).json();
    expect(certs.certificates.map((c: any) => c.id)).toEqual(["appliance"]);
    expect(everythingLogged(g)).not.toContain("this is the wrong passphrase");
  }, 120_000);

  test("with an assigned uploaded chain, through the CLI: agate export / agate import, leaves from that chain on the new gateway", async () => {
    await using old = await startGateway(base("gw-chain"));
    const chain = makeCustomerChain("Assigned Corp CA");
    const agate = async (g: Gateway, args: string[]) => {
      const p = Bun.spawn([join(ROOT, "bin/agate"), "--config", g.configPath, ...args], { stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { out, err, code };
    };
    const up = await agate(old, ["--json", "certs", "upload", "--root", chain.root, "--intermediate", chain.intermediate, "--key", chain.key, "--cn", "Assigned"]);
    expect(up.code).toBe(0);
    expect((await agate(old, ["certs", "assign", JSON.parse(up.out).id])).code).toBe(0);
    const passFile = join(old.dir, "pass.txt");
    writeFileSync(passFile, PASS + "\n");
    const archive = join(old.dir, "old.age");
    const ex = await agate(old, ["export", "--passphrase-file", passFile, "--output", archive]);
    expect({ code: ex.code, err: ex.err }).toEqual({ code: 0, err: "" });
    expect(ex.out).toContain(`wrote ${archive}`);

    await using fresh = await startGateway(base("gw-chain-new"));
    const im = await agate(fresh, ["import", archive, "--passphrase-file", passFile]);
    expect({ code: im.code, err: im.err }).toEqual({ code: 0, err: "" });
    expect(im.out).toContain("imported gw-chain's export");
    const leaf = await leafVia(fresh, chain.root, "/chain");
    expect(leaf.stdout).toBe("hello from origin /chain\n");
    expect(leaf.stderr).toContain("issuer: CN=Assigned Corp CA");
    expect(await caPem(fresh)).toBe(chain.rootPem);
    const c: any = await (await fresh.admin("/api/config")).json();
    expect(c.tls.ca).toBe("customer");
    expect(c.tls.ca_cert).toStartWith(join(fresh.dir, "data"));
    const bad = join(old.dir, "bad.txt");
    writeFileSync(bad, "wrong passphrase here\n");
    const wrong = await agate(fresh, ["import", archive, "--passphrase-file", bad]);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toContain("wrong passphrase");
  }, 120_000);

  test("a published next CA is carried with its key: the replacement publishes it again and can assign it", async () => {
    await using old = await startGateway(base("gw-roll"));
    const pub = await old.admin("/api/ca/next", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ generate: true }) });
    expect(pub.status).toBe(201);
    const nextId = (((await pub.json()) as any).next as { id: string }).id;
    const get = async (g: Gateway, path: string) => {
      const r = await fetch(`http://127.0.0.1:${g.ports.admin}${path}`);
      return { status: r.status, text: await r.text() };
    };
    const nextPem = await waitFor(async () => {
      const r = await get(old, "/ca.pem?next=1");
      return r.status === 200 && r.text;
    }, { what: "the old gateway to publish its next CA" });
    const bytes = await exportOf(old);

    await using fresh = await startGateway(base("gw-roll-new"));
    expect((await get(fresh, "/ca.pem?next=1")).status).toBe(404);
    const r = await importInto(fresh, bytes);
    const body: any = await r.json();
    expect({ status: r.status, error: body.error }).toEqual({ status: 200, error: undefined });
    expect(body.uploaded).toEqual([nextId]);
    expect(((await (await fresh.admin("/api/ca/next")).json()) as any).next).toMatchObject({ id: nextId, next: true, assigned: false, source: "generated" });
    await waitFor(async () => (await get(fresh, "/ca.pem?next=1")).text === nextPem, { what: "the replacement to publish the same next CA" });
    const bundle = (await get(fresh, "/ca-bundle.pem")).text;
    expect(bundle).toContain((await caPem(old)).trim());
    expect(bundle).toContain(nextPem.trim());
    for (const port of [fresh.ports.proxy, fresh.ports.cache!])
      await waitFor(async () => (await (await fetch(`http://127.0.0.1:${port}/ca.pem?next=1`)).text()) === nextPem, { what: `port ${port} to give the next CA` });
    // its key came along: assigning it makes it current and leaves are minted from it
    expect((await fresh.admin(`/api/certificates/${nextId}/assign`, { method: "POST" })).status).toBe(200);
    expect(await (await fresh.admin("/api/ca/next")).json()).toEqual({ next: null });
    const nextFile = join(fresh.dir, "next-ca.pem");
    writeFileSync(nextFile, nextPem);
    const leaf = await waitFor(async () => {
      const l = await leafVia(fresh, nextFile, "/rolled");
      return l.stdout === "hello from origin /rolled\n" && l;
    }, { timeoutMs: 15_000, what: "a leaf from the carried next CA" });
    expect(leaf.stderr).toContain("issuer: CN=agate appliance CA");
    for (const g of [old, fresh]) expect(everythingLogged(g)).not.toContain("PRIVATE KEY");
  }, 120_000);
});
