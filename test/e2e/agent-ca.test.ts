/**
 * The CA where agents are (issue 11): the proxy and cache ports answer `GET /ca.pem`, `/ca.der` and `/ca` sent to
 * them directly, with no token, with the same certificate the management port serves; curl trusts what it
 * downloaded there; the page's fingerprint is openssl's; nothing else of the management plane answers there.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { rawExchange } from "../peers/fake-client";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let origin: Origin;
let gw: Gateway;
let adminPem: string;

beforeAll(async () => {
  origin = startTlsOrigin(pki);
  gw = await startGateway({
    cache: { enabled: true, port: 0 },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [origin.port] },
    hosts: { [HOST]: "127.0.0.1" },
  });
  adminPem = await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text();
});
afterAll(async () => {
  await gw?.stop();
  origin?.stop();
});

const portOf = (kind: "proxy" | "cache") => (kind === "proxy" ? gw.ports.proxy : gw.ports.cache!);

describe.each(["proxy", "cache"] as const)("the %s port", (kind) => {
  test("GET /ca.pem: the management port's CA, as a download, no token", async () => {
    const r = await fetch(`http://127.0.0.1:${portOf(kind)}/ca.pem`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/x-pem-file");
    expect(await r.text()).toBe(adminPem);
  });

  test("GET /ca.der: the same certificate in DER, as openssl reads it", async () => {
    const der = new Uint8Array(await (await fetch(`http://127.0.0.1:${portOf(kind)}/ca.der`)).arrayBuffer());
    const adminDer = new Uint8Array(await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.der`)).arrayBuffer());
    expect(Buffer.from(der).equals(Buffer.from(adminDer))).toBe(true);
    const path = join(gw.dir, `${kind}-ca.der`);
    writeFileSync(path, der);
    const x = Bun.spawnSync(["openssl", "x509", "-inform", "der", "-in", path, "-noout", "-subject"]);
    expect(x.stdout.toString()).toContain("agate appliance CA");
  });

  test("GET /ca: the install page, with every system's steps and openssl's fingerprint of the certificate", async () => {
    const r = await fetch(`http://127.0.0.1:${portOf(kind)}/ca`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const page = await r.text();
    for (const s of ["certutil -addstore Root", "Import-Certificate", "security add-trusted-cert", "update-ca-certificates", "update-ca-trust"]) expect(page).toContain(s);
    expect(page).toContain(`curl -o agate-ca.der http://127.0.0.1:${portOf(kind)}/ca.der`);
    const pemPath = join(gw.dir, `${kind}-ca.pem`);
    writeFileSync(pemPath, adminPem);
    const fp = Bun.spawnSync(["openssl", "x509", "-in", pemPath, "-noout", "-fingerprint", "-sha256"]).stdout.toString();
    expect(page).toContain(fp.trim().split("=")[1]!);
  });

  test.each(["/api/config", "/api/health", "/api/certificates", "/", "/ca.key"])("GET %s is not the management plane: 405, even with the admin token", async (path) => {
    const raw = await rawExchange(portOf(kind), `GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${gw.token}\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 405 ");
    expect(raw).not.toContain("BEGIN CERTIFICATE");
  });
});

test("curl trusts the CA it downloaded from the cache port, for a request through that port", async () => {
  const path = join(gw.dir, "from-cache-port.pem");
  const got = await curl(["-o", path, `http://127.0.0.1:${gw.ports.cache}/ca.pem`]);
  expect(got.code).toBe(0);
  const r = await curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", path, origin.url(HOST, "/via-agent-ca")]);
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe("hello from origin /via-agent-ca\n");
});

test("with cache mode off, the proxy port still gives the CA (agents install it before the switch)", async () => {
  await using g = await startGateway({ gateway: { workers: 1 } });
  const r = await fetch(`http://127.0.0.1:${g.ports.proxy}/ca.pem`);
  expect(r.status).toBe(200);
  expect(await r.text()).toBe(await (await fetch(`http://127.0.0.1:${g.ports.admin}/ca.pem`)).text());
});
