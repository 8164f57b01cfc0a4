/**
 * CA rollover without breaking agents (issue 11, admin/ca-next.ts): the admin publishes the NEXT CA before it is
 * assigned; agents fetch `/ca.pem?next=1`, `/ca.der?next=1` and `/ca-bundle.pem` (current + next) on the agent
 * ports and the management port without a token; the choice survives a restart; assigning the next CA makes it
 * current and clears "next", and agents holding the bundle keep verifying (openssl s_client -CAfile bundle through
 * the cache port) before and after the switch, while the leaf's issuer changes.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let origin: Origin;
const CFG = () => ({
  cache: { enabled: true, port: 0 },
  tls: { upstream_ca: pki.caPath },
  destinations: { ports: [origin.port] },
  hosts: { [HOST]: "127.0.0.1" },
});
beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

const get = async (port: number, path: string) => {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, text: await r.text() };
};
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g;
const subjectOf = (dir: string, pem: string, name: string) => {
  const p = join(dir, name);
  writeFileSync(p, pem);
  const r = Bun.spawnSync(["openssl", "x509", "-in", p, "-noout", "-subject"], { stdout: "pipe", stderr: "pipe" });
  expect(r.exitCode).toBe(0);
  return r.stdout.toString().trim();
};
/** openssl s_client through the cache port's CONNECT, verifying with `caFile`: its verdict and the leaf's issuer */
async function sClient(gw: Gateway, caFile: string) {
  const p = Bun.spawn(
    ["openssl", "s_client", "-proxy", `127.0.0.1:${gw.ports.cache}`, "-connect", `${HOST}:${origin.port}`, "-servername", HOST, "-CAfile", caFile, "-verify_return_error"],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: 20_000 },
  );
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, ok: out.includes("Verify return code: 0 (ok)"), issuer: /^\s*0 s:.*\n\s*i:(.*)$/m.exec(out)?.[1]?.trim() ?? "", err };
}

test("publish a generated next CA, fetch it and the bundle on every port, survive a restart, assign it: agents with the bundle keep verifying", async () => {
  let gw = await startGateway(CFG());
  try {
    const ports = () => [gw.ports.cache!, gw.ports.proxy, gw.ports.admin];
    const current = (await get(gw.ports.admin, "/ca.pem")).text;

    // before: no next CA; the bundle is the current CA alone
    for (const port of ports()) {
      const n = await get(port, "/ca.pem?next=1");
      expect(n.status).toBe(404);
      expect(n.text).toContain("no next CA is published");
      expect((await get(port, "/ca-bundle.pem")).text).toBe(current);
    }
    expect(await (await gw.admin("/api/ca/next")).json()).toEqual({ next: null });

    // publish: a new appliance CA generated as next
    const pub = await gw.admin("/api/ca/next", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ generate: true }) });
    expect(pub.status).toBe(201);
    const { next } = (await pub.json()) as { next: { id: string; common_name: string; next: boolean; assigned: boolean; source: string } };
    expect(next).toMatchObject({ next: true, assigned: false, source: "generated" });
    expect(next.common_name).toStartWith("agate appliance CA");

    const nextPem = await waitFor(async () => {
      const r = await get(gw.ports.cache!, "/ca.pem?next=1");
      return r.status === 200 && r.text;
    }, { what: "the cache port to give the next CA" });
    expect(nextPem).not.toBe(current);
    expect(subjectOf(gw.dir, nextPem, "next.pem")).toContain(next.common_name);
    for (const port of ports()) {
      expect((await get(port, "/ca.pem?next=1")).text).toBe(nextPem);
      expect((await get(port, "/ca.pem")).text).toBe(current);
      const der = new Uint8Array(await (await fetch(`http://127.0.0.1:${port}/ca.der?next=1`)).arrayBuffer());
      const b64 = nextPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
      expect(Buffer.from(der).equals(Buffer.from(b64, "base64"))).toBe(true);
      const bundle = (await get(port, "/ca-bundle.pem")).text;
      const blocks = bundle.match(PEM_BLOCK)!;
      expect(blocks.length).toBe(2);
      expect(blocks[0]).toBe(current);
      expect(blocks[1]).toBe(nextPem);
    }
    // the bundle's two certificates each parse with openssl
    const bundle = (await get(gw.ports.cache!, "/ca-bundle.pem")).text;
    const [b0, b1] = bundle.match(PEM_BLOCK)!;
    expect(subjectOf(gw.dir, b0!, "b0.pem")).toContain("agate appliance CA");
    expect(subjectOf(gw.dir, b1!, "b1.pem")).toContain(next.common_name);
    const bundlePath = join(gw.dir, "bundle.pem");
    const got = await curl(["-f", "-o", bundlePath, `http://127.0.0.1:${gw.ports.cache}/ca-bundle.pem`]);
    expect(got.code).toBe(0);

    // the page names it; the certificates list marks it; it cannot be deleted while published
    expect((await get(gw.ports.proxy, "/ca")).text).toContain('<a href="ca-bundle.pem">');
    const del = await gw.admin(`/api/certificates/${next.id}`, { method: "DELETE" });
    expect(del.status).toBe(409);
    expect(((await del.json()) as { error: string }).error).toContain("DELETE /api/ca/next");

    // before the switch: leaves chain to the current CA, and the bundle verifies them
    const before = await sClient(gw, bundlePath);
    expect(before.err).not.toContain("verify error");
    expect(before.ok).toBe(true);
    expect(before.issuer).not.toContain(next.common_name);
    expect(before.issuer).toContain("agate appliance CA");

    // survives a restart
    await gw.stop();
    gw = await startGateway(CFG(), { dir: gw.dir });
    expect((await get(gw.ports.cache!, "/ca.pem?next=1")).text).toBe(nextPem);
    expect((await get(gw.ports.proxy, "/ca-bundle.pem")).text).toBe(bundle);
    expect(((await (await gw.admin("/api/ca/next")).json()) as { next: { id: string } }).next.id).toBe(next.id);

    // the switch: assigning the next CA makes it current and clears "next"
    const as = await gw.admin(`/api/certificates/${next.id}/assign`, { method: "POST" });
    expect(as.status).toBe(200);
    expect(await (await gw.admin("/api/ca/next")).json()).toEqual({ next: null });
    await waitFor(async () => (await get(gw.ports.cache!, "/ca.pem")).text === nextPem, { what: "the cache port to give the new current CA" });
    expect((await get(gw.ports.admin, "/ca.pem")).text).toBe(nextPem);
    expect((await get(gw.ports.cache!, "/ca.pem?next=1")).status).toBe(404);
    expect((await get(gw.ports.proxy, "/ca-bundle.pem")).text).toBe(nextPem);

    // after: new leaves chain to the new CA, and the bundle agents got before the switch still verifies them
    const after = await waitFor(async () => {
      const r = await sClient(gw, bundlePath);
      return r.issuer.includes(next.common_name) && r;
    }, { what: "a leaf issued by the new CA" });
    expect(after.ok).toBe(true);
    // and an agent that kept only the old CA would now fail: the switch really happened
    const oldOnly = join(gw.dir, "old-only.pem");
    writeFileSync(oldOnly, current);
    expect((await sClient(gw, oldOnly)).ok).toBe(false);

    // the old appliance CA, no longer active, can itself be published as next (rolling back is a rollover too)
    const back = await gw.admin("/api/ca/next", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id: "appliance" }) });
    expect(back.status).toBe(200);
    await waitFor(async () => (await get(gw.ports.cache!, "/ca.pem?next=1")).text === current, { what: "the old appliance CA published as next" });
  } finally {
    await gw.stop();
  }
});

test("the next CA API: publish an existing CA by id, refuse the active one and unknown ids, unpublish", async () => {
  await using gw = await startGateway({ cache: { enabled: true, port: 0 }, gateway: { workers: 1 } });
  const post = (body: unknown) => gw.admin("/api/ca/next", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const active = await post({ id: "appliance" });
  expect(active.status).toBe(409);
  expect(((await active.json()) as { error: string }).error).toContain("already the active CA");
  expect((await post({ id: "nope" })).status).toBe(404);
  expect((await post({})).status).toBe(400);
  expect((await post({ generate: "yes" })).status).toBe(400);
  // no token: refused
  expect((await fetch(`http://127.0.0.1:${gw.ports.admin}/api/ca/next`, { method: "POST", body: "{}" })).status).toBe(401);

  const gen = (await (await post({ generate: true, common_name: "rollover test CA" })).json()) as { next: { id: string } };
  expect((await post({ generate: true, common_name: "rollover test CA" })).status).toBe(409); // unique names
  // re-publish the same one by id, then unpublish
  const again = await post({ id: gen.next.id });
  expect(again.status).toBe(200);
  const del = await gw.admin("/api/ca/next", { method: "DELETE" });
  expect(await del.json()).toEqual({ ok: true, cleared: gen.next.id });
  await waitFor(async () => (await get(gw.ports.proxy, "/ca.pem?next=1")).status === 404, { what: "the next CA gone from the proxy port" });
  const bundle = (await get(gw.ports.proxy, "/ca-bundle.pem")).text;
  expect(bundle.match(PEM_BLOCK)!.length).toBe(1);
  // unpublished, it can be deleted again
  expect((await gw.admin(`/api/certificates/${gen.next.id}`, { method: "DELETE" })).status).toBe(200);
});
