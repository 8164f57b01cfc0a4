/**
 * @module What the gateway never logs (docs/SECURITY.md): query values, userinfo, and credential headers
 * (Authorization, Proxy-Authorization, Cookie) of agents' requests on the cache port, plain and inside TLS, answered
 * or refused; searched in every line the gateway wrote and in the admin API's /api/logs.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway } from "../peers/gateway";
import { rawExchange } from "../peers/fake-client";
import { waitFor } from "../peers/helpers";
import { startRawOrigin, type RawOrigin } from "../peers/slow-client";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let tlsOrigin: Origin;
let plain: RawOrigin;
beforeAll(() => {
  tlsOrigin = startTlsOrigin(pki);
  plain = startRawOrigin((s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
});
afterAll(() => (tlsOrigin.stop(), plain.stop()));

test("query values, userinfo and credential headers appear in no log line and not in /api/logs", async () => {
  await using gw = await startGateway({
    gateway: { workers: 1 },
    cache: { enabled: true, port: 0, listen: "127.0.0.1" },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [tlsOrigin.port, plain.port] },
    hosts: { [HOST]: "127.0.0.1" },
  });
  const ca = join(gw.dir, "agate-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text());
  const S = (n: number) => `S3cr3t${n}x${crypto.randomUUID().slice(0, 8)}`;
  const secrets = [S(1), S(2), S(3), S(4), S(5), S(6), S(7)];
  const headers = ["-H", `Authorization: Bearer ${secrets[1]}`, "-H", `Cookie: session=${secrets[2]}`, "--proxy-header", `Proxy-Authorization: Basic ${secrets[3]}`];
  // refused first (the gateway closes these: their lines are written before the answered ones'): userinfo in an absolute-form target, and a query on a request refused for its two Host fields
  const r1 = await rawExchange(gw.ports.cache!, `GET http://user:${secrets[5]}@${HOST}:${plain.port}/y HTTP/1.1\r\nHost: ${HOST}:${plain.port}\r\n\r\n`, { waitMs: 3000 });
  const r2 = await rawExchange(gw.ports.cache!, `GET http://${HOST}:${plain.port}/z?k=${secrets[6]} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`, { waitMs: 3000 });
  expect([r1, r2].map((r) => r.split(" ")[1])).toEqual(["400", "400"]);
  // inside TLS, answered
  const a = await curl(["-o", "/dev/null", "-w", "%{http_code}", "--cacert", ca, "-x", `http://127.0.0.1:${gw.ports.cache}`, ...headers, tlsOrigin.url(HOST, `/m.json?token=${secrets[0]}&v=2`)]);
  expect(a.stdout).toBe("200");
  // plain forward, answered, with the credentials in the query
  const b = await rawExchange(gw.ports.cache!, `GET http://${HOST}:${plain.port}/x?sig=${secrets[4]} HTTP/1.1\r\nHost: ${HOST}:${plain.port}\r\nAuthorization: Basic ${secrets[1]}\r\n\r\n`, { waitMs: 3000 });
  expect(b).toStartWith("HTTP/1.1 200");
  const access = await waitFor(() => {
    const l = gw.lines().filter((x) => x.msg === "access");
    return l.length >= 2 && l;
  }, { what: "two access lines" });
  expect(access.map((l: any) => l.path)).toContain("/m.json?token=*&v=*");
  const all = gw.lines().map((l) => JSON.stringify(l)).join("\n") + gw.stderr();
  const api = await (await gw.admin("/api/logs?limit=1000")).text();
  expect(secrets.filter((s) => all.includes(s) || api.includes(s))).toEqual([]);
}, 60_000);
