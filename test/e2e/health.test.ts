/**
 * Health that means "can serve agents" (issue 10), end to end: a gateway whose upstream proxy is dead used to answer
 * `/healthz` 200 `ok` on its proxy port and report `Normal, no problems` while every agent CONNECT failed with 502.
 * Now the platform link's probes see it, health is Down with the reason, each port's /healthz answers 503, and a
 * CONNECT to a platform host is refused at once with 503 + a jittered Retry-After instead of a 502 after a dial.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway } from "../peers/gateway";
import { rawExchange } from "../peers/fake-client";
import { freePort, waitFor } from "../peers/helpers";

const POD = "qg1.apps.qualys.com";
const HOST = `qagpublic.${POD}`;

describe("dead upstream proxy", () => {
  test("/healthz on the proxy port answers 503 with the reason, health is Down naming the upstream proxy, platform CONNECTs fail fast", async () => {
    const dead = freePort(); // nobody listens here: the upstream proxy is dead
    await using gw = await startGateway({
      // a [platform] section: the link is probed (the test helper turns the probe off for gateways without one)
      platform: { pod: POD },
      upstream_proxy: { host: "127.0.0.1", port: dead },
    });
    const hz = `http://127.0.0.1:${gw.ports.proxy}/healthz`;
    // two failed probe rounds (the second comes within seconds of the first) → Down
    const body = await waitFor(
      async () => {
        const r = await fetch(hz);
        return r.status === 503 && ((await r.json()) as any);
      },
      { timeoutMs: 20_000, what: "/healthz 503 on the proxy port", everyMs: 200 },
    );
    expect(body.port).toBe("proxy");
    expect(body.reasons.join(" ")).toContain(`127.0.0.1:${dead}`);

    const st: any = await (await gw.admin("/api/status")).json();
    expect(st.health).toBe("Down");
    expect(st.reasons.some((r: string) => r.includes("no platform host reachable"))).toBe(true);
    expect(st.platform.status).toBe("Not connected");
    expect(st.platform.last_error.hop).not.toBe("tls");
    expect(st.platform.hosts.length).toBeGreaterThan(0);
    // the management port's /healthz agrees
    expect((await fetch(`http://127.0.0.1:${gw.ports.admin}/healthz`)).status).toBe(503);

    // fail fast: 503 + Retry-After now, not a 502 after connect_timeout_s; the reason in the body
    const ans = await rawExchange(gw.ports.proxy, `CONNECT ${HOST}:443 HTTP/1.1\r\nHost: ${HOST}:443\r\n\r\n`);
    expect(ans.split("\r\n")[0]).toBe("HTTP/1.1 503 Service Unavailable");
    const retry = Number(/\r\nRetry-After: (\d+)\r\n/i.exec(ans)?.[1]);
    expect(retry).toBeGreaterThanOrEqual(30);
    expect(retry).toBeLessThanOrEqual(60);
    expect(ans).toContain("platform cannot be reached");
    const line = await gw.waitForLine((l) => l.msg === "refused" && l.rule === "PX_PLATFORM_DOWN");
    expect(line.reason).toContain("no platform host reachable");

    // /metrics says it too
    const m = await (await gw.admin("/metrics")).text();
    expect(m).toContain(`agate_platform_connected{pod="${POD}"} 0`);
    expect(m).toContain(`agate_port_serving{port="proxy"} 0`);
  }, 60_000);
});

describe("a reachable platform", () => {
  const pki = makeTestPki([HOST]);
  let origin: Origin;
  beforeAll(() => {
    origin = startTlsOrigin(pki);
  });
  afterAll(() => origin?.stop());

  test("probed: Connected with connected-on and latency per host; /healthz 200", async () => {
    await using gw = await startGateway({
      platform: { pod: POD, probe_interval_s: 1 },
      hosts: { [HOST]: "127.0.0.1" },
      destinations: { ports: [origin.port] },
      tls: { upstream_ca: pki.caPath },
    });
    const st: any = await waitFor(
      async () => {
        const s: any = await (await gw.admin("/api/status")).json();
        return s.platform.status === "Connected" && s;
      },
      { timeoutMs: 15_000, what: "platform Connected", everyMs: 200 },
    );
    const h = st.platform.hosts.find((x: any) => x.host === HOST);
    expect(h).toMatchObject({ status: "Connected", port: origin.port, via: "direct" });
    expect(typeof h.latency_ms).toBe("number");
    expect(Date.parse(h.connected_on)).toBeGreaterThan(0);
    expect(st.platform.last_round.hosts).toBe(st.platform.hosts.length);
    console.log(JSON.stringify({ figure: "probe cost, one direct round (1 host answers, 4 have no address here)", ...st.platform.last_round, latency_ms: h.latency_ms }));
    // one of five hosts is enough: not Down (the others have no address in this sandbox)
    expect(st.health).not.toBe("Down");
    expect((await fetch(`http://127.0.0.1:${gw.ports.proxy}/healthz`)).status).toBe(200);

  }, 60_000);

  test("real traffic counts: with the probe off, a tunnel to a platform host makes the link Connected with connected-on", async () => {
    await using gw = await startGateway({
      platform: { pod: POD, probe_interval_s: 0 },
      hosts: { [HOST]: "127.0.0.1" },
      destinations: { ports: [origin.port] },
    });
    const before: any = await (await gw.admin("/api/status")).json();
    expect(before.platform).toMatchObject({ status: "Unknown", connected_on: null, rounds: 0 });
    const r = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, `https://${HOST}:${origin.port}/`]);
    expect(r.code).toBe(0);
    const st: any = await waitFor(
      async () => {
        const s: any = await (await gw.admin("/api/status")).json();
        return s.platform.status === "Connected" && s;
      },
      { timeoutMs: 10_000, what: "Connected from real traffic", everyMs: 100 },
    );
    expect(st.platform.rounds).toBe(0);
    expect(st.platform.hosts.find((x: any) => x.host === HOST)).toMatchObject({ status: "Connected" });
    expect(Date.parse(st.platform.connected_on)).toBeGreaterThan(0);
  }, 60_000);
});
