/**
 * Cache mode, the TLS and HTTP/1.1 side: the gateway terminates the agents' TLS with a leaf from the active CA
 * (appliance, or a customer-signed chain from the config), enforces min_tls, streams what it does not cache
 * (POST bodies intact, 100-continue, pipelining, plain-HTTP forward requests), and passes allowed domains through.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, reportedStats, startGateway, type Gateway } from "../peers/gateway";
import { rawExchange } from "../peers/fake-client";
import { makeCustomerChain } from "../peers/customer-chain";

const HOST = "qagpublic.qg1.apps.qualys.com";
const MS = "www.microsoft.com";
const FRESH = "camsrepo.qg1.apps.qualys.com";
const pki = makeTestPki([HOST, MS, "127.0.0.1", FRESH]);
const hosts = { [HOST]: "127.0.0.1", [MS]: "127.0.0.1", [FRESH]: "127.0.0.1" };
let origin: Origin;
let plainOrigin: Origin;
let gw: Gateway;
let caPath: string;

beforeAll(async () => {
  origin = startTlsOrigin(pki);
  plainOrigin = startTlsOrigin(null);
  gw = await startGateway({
    cache: { enabled: true, port: 0, listen: "127.0.0.1", allowed_domains: ["microsoft.com"] },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [origin.port, plainOrigin.port] },
    hosts,
  });
  const pem = await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text();
  caPath = join(gw.dir, "gateway-ca.pem");
  writeFileSync(caPath, pem);
});
afterAll(async () => {
  await gw?.stop();
  origin?.stop();
  plainOrigin?.stop();
});

/** A cache-mode gateway of a test's own (its counters start at zero), with its CA saved for curl. */
async function ownCacheGateway(): Promise<Gateway & { caPath: string }> {
  const g = await startGateway({
    cache: { enabled: true, port: 0, listen: "127.0.0.1" },
    tls: { upstream_ca: pki.caPath },
    destinations: { ports: [origin.port] },
    hosts,
  });
  const ca = join(g.dir, "gateway-ca.pem");
  writeFileSync(ca, await (await fetch(`http://127.0.0.1:${g.ports.admin}/ca.pem`)).text());
  return Object.assign(g, { caPath: ca });
}

const via = () => ["-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", caPath];

describe("TLS termination", () => {
  test("the agent sees a leaf for the CONNECT host issued by the appliance CA, and the response is relayed", async () => {
    const r = await curl([...via(), "-v", origin.url(HOST, "/t1")]);
    expect(r.stdout).toBe("hello from origin /t1\n");
    expect(r.stderr).toContain("issuer: CN=agate appliance CA");
    expect(r.stderr).toContain(`subjectAltName: host "${HOST}" matched`);
  });

  test("50 concurrent first handshakes for a new host, over both workers, mint one leaf", async () => {
    // A gateway of its own, so its counters start at zero and hold nothing but these 50 connections.
    await using g = await ownCacheGateway();
    const ca = g.caPath;
    const urls = Array.from({ length: 50 }, (_, i) => origin.url(FRESH, `/mint${i}`));
    const r = await curl(["-x", `http://127.0.0.1:${g.ports.cache}`, "--cacert", ca, "-Z", "--parallel-max", "50", "-w", "%{http_code}\n", ...urls.flatMap((u) => [u, "-o", "/dev/null"])], 60_000);
    expect(r.stdout.trim().split("\n").filter((l) => l === "200").length).toBe(50);
    const st = await reportedStats(g, { tunnels: 50 });
    // exactly one mint for FRESH, in whichever worker won the lock; the other worker read its file
    expect(st.totals.cache.leaf_mints).toBe(1);
    expect(st.workers.filter((w: any) => w.counters?.totalTunnels > 0).length).toBe(2);
  });

  test("/ca.pem and /ca.der serve the same certificate, with no token", async () => {
    const pem = await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.pem`)).text();
    const der = new Uint8Array(await (await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.der`)).arrayBuffer());
    const b64 = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
    expect(Buffer.from(der).toString("base64")).toBe(b64);
    const h = await (await fetch(`http://127.0.0.1:${gw.ports.admin}/healthz`)).json();
    expect(h.ca.kind).toBe("appliance");
    expect(h.ca.expires_in_days).toBeGreaterThan(3000);
  });

  test("openssl s_client -tls1_1 fails against the default min_tls (1.2); -tls1_2 succeeds", async () => {
    const run = async (flag: string) => {
      const p = Bun.spawn(["openssl", "s_client", flag, "-proxy", `127.0.0.1:${gw.ports.cache}`, "-connect", `${HOST}:${origin.port}`, "-servername", HOST, "-CAfile", caPath, "-brief"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
      p.stdin.end();
      const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
      return { code: await p.exited, text: out + err };
    };
    const old = await run("-tls1_1");
    expect(old.code).not.toBe(0);
    expect(old.text).not.toContain("Protocol version: TLSv1.1");
    const ok = await run("-tls1_2");
    expect(ok.text).toContain("Protocol version: TLSv1.2");
    expect(ok.text).toContain("Verification: OK");
  });

  test("an allowed domain passes through untouched: the agent sees the origin's own certificate", async () => {
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, "--cacert", pki.caPath, "-v", origin.url(MS, "/allowed")]);
    expect(r.stdout).toBe("hello from origin /allowed\n");
    expect(r.stderr).toContain("issuer: CN=agate test origin CA");
  });

  test("a domain outside the allow-list gets 403 on the cache port too", async () => {
    const raw = await rawExchange(gw.ports.cache, `CONNECT evil.example.com:${origin.port} HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 403 ");
  });

  test("GET /healthz sent to the cache port answers the load balancer", async () => {
    const r = await curl([`http://127.0.0.1:${gw.ports.cache}/healthz`]);
    expect(JSON.parse(r.stdout)).toMatchObject({ status: "ok", port: "cache" });
  });
});

describe("what is not cached streams through", () => {
  test("a POST reaches the origin intact (chunked and with a length)", async () => {
    const body = "x".repeat(200_000) + "END";
    const f = join(gw.dir, "body.txt");
    writeFileSync(f, body);
    const r1 = await curl([...via(), "--data-binary", `@${f}`, origin.url(HOST, "/echo")]);
    expect(r1.stdout).toBe(body);
    const r2 = await curl([...via(), "-H", "Transfer-Encoding: chunked", "--data-binary", `@${f}`, origin.url(HOST, "/echo")]);
    expect(r2.stdout).toBe(body);
    const seen = origin.requests.filter((r) => r.path === "/echo").slice(-2);
    expect(seen.map((r) => r.bodyBytes)).toEqual([body.length, body.length]);
  });

  test("origin connections are kept alive and reused across agents' requests", async () => {
    // A gateway of its own, so its counters start at zero and hold nothing but these 6 requests.
    await using g = await ownCacheGateway();
    const ca = g.caPath;
    const viaG = ["-x", `http://127.0.0.1:${g.ports.cache}`, "--cacert", ca];
    for (let i = 0; i < 6; i++) expect((await curl([...viaG, "--data-binary", `ka${i}`, origin.url(HOST, "/echo")])).stdout).toBe(`ka${i}`);
    const after = (await reportedStats(g, { tunnels: 6 })).totals.cache.origin_reuses;
    // 6 requests over 2 workers: at least one worker sent 3, two of them on a reused connection
    expect(after).toBeGreaterThanOrEqual(2);
  });

  test("Expect: 100-continue gets its interim answer and the body arrives", async () => {
    const r = await curl([...via(), "-v", "-H", "Expect: 100-continue", "--data-binary", "hello", origin.url(HOST, "/echo")]);
    expect(r.stderr).toContain("HTTP/1.1 100 Continue");
    expect(r.stdout).toBe("hello");
  });

  test("pipelined requests on one connection are answered in order", async () => {
    const tls = await import("node:tls");
    const net = await import("node:net");
    const ca = await Bun.file(caPath).text();
    const text = await new Promise<string>((resolve, reject) => {
      const raw = net.connect(gw.ports.cache!, "127.0.0.1", () => raw.write(`CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`));
      raw.once("data", () => {
        const t = tls.connect({ socket: raw, servername: HOST, ca }, () => {});
        let out = "";
        t.on("secureConnect", () => {
          t.write(`GET /p1 HTTP/1.1\r\nHost: ${HOST}\r\n\r\nGET /p2 HTTP/1.1\r\nHost: ${HOST}\r\n\r\nGET /p3 HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
        });
        t.on("data", (d) => (out += d.toString()));
        t.on("end", () => resolve(out));
        t.on("error", reject);
      });
    });
    const order = [...text.matchAll(/hello from origin (\/p\d)/g)].map((m) => m[1]);
    expect(order).toEqual(["/p1", "/p2", "/p3"]);
  });

  test("plain-HTTP forward requests in absolute form work under the same policy", async () => {
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, `http://${HOST}:${plainOrigin.port}/plain`]);
    expect(r.stdout).toBe("hello from origin /plain\n");
    const denied = await curl(["-x", `http://127.0.0.1:${gw.ports.cache}`, "-w", "%{http_code}", "-o", "/dev/null", `http://evil.example.com:${plainOrigin.port}/x`]);
    expect(denied.stdout).toBe("403");
  });

  test("a Host header that differs from the CONNECT host is refused (421)", async () => {
    const r = await curl([...via(), "-H", "Host: evil.example.com", "-w", "%{http_code}", "-o", "/dev/null", origin.url(HOST, "/misdirected")]);
    expect(r.stdout).toBe("421");
  });
});

describe("a customer-signed chain from the config", () => {
  test("is the issuer the agent sees, and the agent verifies with the customer's root", async () => {
    const chain = makeCustomerChain();
    await using g = await startGateway({
      cache: { enabled: true, port: 0, listen: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath, ca: "customer", ca_cert: chain.root, ca_chain: chain.intermediate, ca_key: chain.key },
      destinations: { ports: [origin.port] },
      hosts,
    });
    const r = await curl(["-x", `http://127.0.0.1:${g.ports.cache}`, "--cacert", chain.root, "-v", origin.url(HOST, "/customer")]);
    expect(r.stdout).toBe("hello from origin /customer\n");
    expect(r.stderr).toContain("issuer: CN=Example Corp Issuing CA");
    const pem = await (await fetch(`http://127.0.0.1:${g.ports.admin}/ca.pem`)).text();
    expect(pem).toBe(chain.rootPem);
  });

  test("a chain whose key does not match is refused at start, naming the key file", async () => {
    const a = makeCustomerChain();
    const b = makeCustomerChain("Other CA");
    await expect(
      startGateway({
        cache: { enabled: true, port: 0, listen: "127.0.0.1" },
        tls: { ca: "customer", ca_cert: a.root, ca_chain: a.intermediate, ca_key: b.key },
      }),
    ).rejects.toThrow("tls.ca_key");
  });
});
