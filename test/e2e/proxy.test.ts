/**
 * Proxy mode end to end: real clients (curl, openssl, raw sockets) through a started gateway to TLS origins
 * on 127.0.0.1, names mapped with [hosts]. Each test starts what it needs and stops it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { rawExchange, openTunnel } from "../peers/fake-client";
import { freePort, waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const OTHER = "camsrepo.qg1.apps.qualys.com";
const EVIL = "evil.example.com";
const pki = makeTestPki([HOST, OTHER, EVIL, "www.microsoft.com"]);
const hosts = { [HOST]: "127.0.0.1", [OTHER]: "127.0.0.1", [EVIL]: "127.0.0.1", "www.microsoft.com": "127.0.0.1" };

let origin: Origin;
let gw: Gateway;

beforeAll(async () => {
  origin = startTlsOrigin(pki);
  gw = await startGateway({ destinations: { ports: [origin.port] }, hosts, proxy: { head_timeout_s: 1 } });
});
afterAll(async () => {
  await gw?.stop();
  origin?.stop();
});

const proxyArgs = () => ["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath];

describe("tunnels", () => {
  test("curl reaches a platform host through the proxy port, TLS untouched", async () => {
    const before = origin.hits.get("/first") ?? 0;
    const r = await curl([...proxyArgs(), origin.url(HOST, "/first")]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("hello from origin /first\n");
    expect(origin.hits.get("/first")).toBe(before + 1);
  });

  test("a domain outside the allow-list gets 403 with a reason, and the origin sees nothing", async () => {
    const before = origin.requests.length;
    const r = await curl([...proxyArgs(), "-v", origin.url(EVIL, "/evil")]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("< HTTP/1.1 403");
    expect(origin.requests.length).toBe(before);
    const raw = await rawExchange(gw.ports.proxy, `CONNECT ${EVIL}:${origin.port} HTTP/1.1\r\nHost: ${EVIL}\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 403");
    expect(raw).toContain(`CONNECT to ${EVIL}:${origin.port} denied: not an allowed domain`);
    const line = await gw.waitForLine((l) => l.msg === "refused" && l.dest === `${EVIL}:${origin.port}`);
    expect(line.rule).toBe("deny-domain");
  });

  test("a destination port outside [destinations] ports gets 403", async () => {
    const raw = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:8443 HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 403");
    expect(raw).toContain("port 8443");
  });

  test("openssl s_client -proxy completes a handshake through the tunnel", async () => {
    const p = Bun.spawn(
      ["openssl", "s_client", "-proxy", `127.0.0.1:${gw.ports.proxy}`, "-connect", `${HOST}:${origin.port}`, "-servername", HOST, "-CAfile", pki.caPath, "-verify_return_error", "-brief"],
      { stdin: "pipe", stdout: "pipe", stderr: "pipe" },
    );
    p.stdin.write(`GET /ossl HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    p.stdin.flush();
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
    await p.exited;
    expect(err).toContain("Verification: OK");
    expect(out).toContain("hello from origin /ossl");
  });

  test("a ClientHello whose SNI names another host than the CONNECT authority is refused (domain fronting)", async () => {
    const before = origin.requests.length;
    const r = await curl([...proxyArgs(), "--connect-to", `${EVIL}:${origin.port}:${HOST}:${origin.port}`, "-k", `https://${EVIL}:${origin.port}/fronted`]);
    // curl CONNECTs to HOST (allowed) but its ClientHello says EVIL: the gateway must cut the tunnel.
    expect(r.code).not.toBe(0);
    expect(origin.requests.length).toBe(before);
    const line = await gw.waitForLine((l) => l.msg === "refused" && l.rule === "sni-mismatch");
    expect(line.reason).toContain(EVIL);
  });

  test("bytes that are not a TLS ClientHello close the tunnel", async () => {
    const t = await openTunnel(gw.ports.proxy, `${HOST}:${origin.port}`);
    expect(t.head).toStartWith("HTTP/1.1 200");
    t.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(await t.closed).toBe(true);
    expect(t.received()).toBe("");
  });

  test("GET /healthz sent to the proxy port answers the load balancer", async () => {
    const r = await curl([`http://127.0.0.1:${gw.ports.proxy}/healthz`]);
    expect(JSON.parse(r.stdout)).toMatchObject({ status: "ok", port: "proxy" });
  });
});

describe("back-pressure", () => {
  test("a slow agent does not make the gateway buffer a fast origin's download", async () => {
    const size = 64 * 1024 * 1024;
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${gw.proc.pid}/status`, "utf8"))![1]);
    const before = rss();
    let peak = before;
    const t = setInterval(() => (peak = Math.max(peak, rss())), 50);
    const r = await curl([...proxyArgs(), "--limit-rate", "12M", "-o", "/dev/null", "-w", "%{size_download}", origin.url(HOST, `/bytes/${size}`)], 60_000);
    clearInterval(t);
    expect(r.stdout).toBe(String(size));
    // The origin can send 64 MB in a blink; the agent takes ~5 s. Without pausing the origin the gateway would hold most of it.
    expect(peak - before).toBeLessThan(24 * 1024);
  }, 60_000);
});

describe("clear statuses for bad requests", () => {
  test.each([
    ["a malformed request line", 400, "CONNECT\r\n\r\n"],
    ["a bare LF head", 400, `CONNECT ${HOST}:443 HTTP/1.1\nHost: x\n\n`],
    ["CONNECT without a port", 400, `CONNECT ${HOST} HTTP/1.1\r\n\r\n`],
    ["CONNECT to port 0", 400, `CONNECT ${HOST}:0 HTTP/1.1\r\n\r\n`],
    ["CONNECT to port 99999", 400, `CONNECT ${HOST}:99999 HTTP/1.1\r\n\r\n`],
    ["userinfo in the authority", 400, `CONNECT user@${HOST}:443 HTTP/1.1\r\n\r\n`],
    ["another method", 405, `GET http://${HOST}/ HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`],
    ["an IP literal", 403, `CONNECT [::1]:443 HTTP/1.1\r\n\r\n`],
    ["a head over the limit", 431, `CONNECT ${HOST}:443 HTTP/1.1\r\n${"X-Pad: " + "a".repeat(1000) + "\r\n"}`.repeat(1) + "X-Big: " + "b".repeat(20_000) + "\r\n\r\n"],
  ])("%s → %i", async (_name, status, head) => {
    const raw = await rawExchange(gw.ports.proxy, head);
    expect(raw).toStartWith(`HTTP/1.1 ${status} `);
  });

  test("a head that does not arrive in time → 408", async () => {
    const raw = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:443 HTTP/1.1\r\n`, { waitMs: 4000 });
    expect(raw).toStartWith("HTTP/1.1 408 ");
  });

  test("an unreachable origin → 502 with the reason", async () => {
    const dead = freePort(); // a port on loopback nobody listens on
    await using g2 = await startGateway({ destinations: { ports: [dead] }, hosts });
    const raw = await rawExchange(g2.ports.proxy, `CONNECT ${HOST}:${dead} HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 502 ");
    expect(raw).toContain("connection refused");
  });
});

describe("admission", () => {
  test("past max_connections a new agent is refused at once with 503 and Retry-After, and counted", async () => {
    await using g = await startGateway({ destinations: { ports: [origin.port] }, hosts, proxy: { max_connections: 3 } });
    const held = await Promise.all([0, 1, 2].map(() => openTunnel(g.ports.proxy, `${HOST}:${origin.port}`)));
    for (const t of held) expect(t.head).toStartWith("HTTP/1.1 200");
    // answered, not left to time out: the 503 arrives although the agent never finishes waiting on its own
    const raw = await rawExchange(g.ports.proxy, `CONNECT ${HOST}:${origin.port} HTTP/1.1\r\n\r\n`);
    expect(raw).toStartWith("HTTP/1.1 503 ");
    expect(raw).toContain("Retry-After: 5");
    for (const t of held) t.destroy();
    // The budget comes back: a new agent is admitted again (once the gateway has seen the three close). An attempt
    // made before the gateway saw them close is refused too, and counted: keep count of those.
    let refusedWhileClosing = 0;
    const admitted = await waitFor(
      async () => {
        const t = await openTunnel(g.ports.proxy, `${HOST}:${origin.port}`);
        t.destroy();
        if (t.head.startsWith("HTTP/1.1 503")) refusedWhileClosing++;
        return t.head.startsWith("HTTP/1.1 200") && t.head;
      },
      { what: "a tunnel admitted after the held ones closed" },
    );
    expect(admitted).toStartWith("HTTP/1.1 200");
    // Workers report their counters to the supervisor about once a second: wait for the refusal to arrive.
    const want = 1 + refusedWhileClosing;
    const refused = await waitFor(
      async () => {
        const n = ((await (await g.admin("/api/stats")).json()) as any).totals.refusals.PX_OVERLOADED;
        return n >= want && n;
      },
      { what: "the refusals counted in /api/stats" },
    );
    expect(refused).toBe(want);
  });
});
