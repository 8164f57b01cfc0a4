/**
 * Behind a load balancer (Debian's haproxy, TCP mode): two gateways answer haproxy's HTTP health checks on their
 * proxy ports (GET /healthz sent to the port itself); agents tunnel through haproxy; when one gateway drains
 * (SIGTERM), haproxy sees it go away and agents keep getting through the other.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway, type Gateway } from "../peers/gateway";
import { freePort, waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
const HAPROXY = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].find((p) => Bun.file(p).size > 0);
if (!HAPROXY) console.warn("[skip] load-balancer test: haproxy is not installed (apt-get install haproxy)");

describe.skipIf(!HAPROXY)("two gateways behind haproxy", () => {
  let origin: Origin;
  let a: Gateway, b: Gateway;
  let lb: Subprocess;
  let lbPort: number, statsPort: number;

  beforeAll(async () => {
    origin = startTlsOrigin(pki);
    const cfg = { destinations: { ports: [origin.port] }, hosts: { [HOST]: "127.0.0.1" }, gateway: { workers: 1, drain_grace_s: 1 } };
    a = await startGateway(cfg);
    b = await startGateway(cfg);
    // haproxy cannot be told port 0
    lbPort = freePort();
    statsPort = freePort();
    const dir = mkdtempSync(join(tmpdir(), "agate-haproxy-"));
    writeFileSync(
      join(dir, "haproxy.cfg"),
      [
        "global",
        "  maxconn 1000",
        "defaults",
        "  mode tcp",
        "  timeout connect 2s",
        "  timeout client 30s",
        "  timeout server 30s",
        `frontend agents`,
        `  bind 127.0.0.1:${lbPort}`,
        "  default_backend gateways",
        "backend gateways",
        "  balance roundrobin",
        "  option httpchk GET /healthz",
        "  http-check expect status 200",
        "  default-server inter 200ms fall 2 rise 2",
        `  server a 127.0.0.1:${a.ports.proxy} check`,
        `  server b 127.0.0.1:${b.ports.proxy} check`,
        "frontend stats",
        "  mode http",
        `  bind 127.0.0.1:${statsPort}`,
        "  stats enable",
        "  stats uri /stats",
        "",
      ].join("\n"),
    );
    lb = Bun.spawn([HAPROXY!, "-f", join(dir, "haproxy.cfg"), "-db"], { stdout: "pipe", stderr: "pipe" });
    await waitFor(
      async () => {
        const csv = await fetch(`http://127.0.0.1:${statsPort}/stats;csv`).then((r) => r.text(), () => "");
        return (csv.match(/^gateways,(a|b),.*?,UP,/gm) ?? []).length === 2;
      },
      { what: "haproxy reporting both gateways UP", everyMs: 100 },
    );
  });
  afterAll(async () => {
    lb?.kill("SIGKILL");
    await lb?.exited;
    await a?.stop();
    await b?.stop();
    origin?.stop();
  });

  const status = async () => {
    const csv = await (await fetch(`http://127.0.0.1:${statsPort}/stats;csv`)).text();
    return Object.fromEntries([...csv.matchAll(/^gateways,(a|b),(?:[^,]*,){15}([A-Z ]+?),/gm)].map((m) => [m[1], m[2]]));
  };

  test("haproxy's health checks see both gateways UP, and agents are spread over them", async () => {
    expect(await status()).toEqual({ a: "UP", b: "UP" });
    for (let i = 0; i < 6; i++) {
      const r = await curl(["-x", `http://127.0.0.1:${lbPort}`, "--cacert", pki.caPath, origin.url(HOST, `/lb${i}`)]);
      expect(r.stdout).toBe(`hello from origin /lb${i}\n`);
    }
    const tunnelsA = (await a.waitForLine((l) => l.msg === "tunnel")).dest;
    const tunnelsB = (await b.waitForLine((l) => l.msg === "tunnel")).dest;
    expect(tunnelsA).toBe(`${HOST}:${origin.port}`);
    expect(tunnelsB).toBe(`${HOST}:${origin.port}`);
  });

  test("a draining gateway drops out of the pool and agents keep getting through", async () => {
    a.proc.kill("SIGTERM");
    expect(await a.proc.exited).toBe(0);
    // haproxy checks every 200 ms and needs two failures (fall 2)
    const st = await waitFor(
      async () => {
        const now = await status();
        return now.a?.startsWith("DOWN") && now;
      },
      { timeoutMs: 5000, what: "haproxy marking the drained gateway DOWN", everyMs: 100 },
    );
    expect(st.a).toStartWith("DOWN");
    expect(st.b).toBe("UP");
    for (let i = 0; i < 4; i++) {
      const r = await curl(["-x", `http://127.0.0.1:${lbPort}`, "--cacert", pki.caPath, origin.url(HOST, `/after${i}`)]);
      expect(r.stdout).toBe(`hello from origin /after${i}\n`);
    }
  });
});
