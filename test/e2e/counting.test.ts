/**
 * Counting what matters (issue 10): active and total agents count clients that got a tunnel or a cache answer,
 * never /healthz probes (a load balancer's) or refused clients; /api/stats has `active_agents_60m`,
 * `active_agents_24h`, `total_agents_7d`; /metrics uses the same names and Prometheus conventions (`_total`,
 * `_seconds`, a duration histogram per port, no state="total" label).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { curl, startGateway } from "../peers/gateway";
import { waitFor } from "../peers/helpers";

const HOST = "qagpublic.qg1.apps.qualys.com";
const pki = makeTestPki([HOST]);
let origin: Origin;
beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

describe("agents", () => {
  test("/healthz probes and refused clients are not agents; a tunnel is; the 60 min, 24 h and 7 d counts and /metrics agree", async () => {
    // one worker: its report that carries the refusal carries every client IP seen before it
    await using gw = await startGateway({ gateway: { workers: 1 }, destinations: { ports: [origin.port] }, hosts: { [HOST]: "127.0.0.1" } });
    for (let i = 0; i < 3; i++) expect((await curl([`http://127.0.0.1:${gw.ports.proxy}/healthz`])).code).toBe(0);
    const refused = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "-o", "/dev/null", "-w", "%{http_connect}", "https://evil.example/"]);
    expect(refused.stdout).toBe("403");
    const before: any = await waitFor(
      async () => {
        const s: any = await (await gw.admin("/api/stats")).json();
        return Object.values(s.totals.refusals as Record<string, number>).some((n) => n > 0) && s;
      },
      { what: "the refusal reported", everyMs: 100 },
    );
    expect({ u: before.unique_ips_60m, a60: before.active_agents_60m, a24: before.active_agents_24h, t7: before.total_agents_7d }).toEqual({ u: 0, a60: 0, a24: 0, t7: 0 });

    const ok = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/agent")]);
    expect(ok.stdout).toBe("hello from origin /agent\n");
    const after: any = await waitFor(
      async () => {
        const s: any = await (await gw.admin("/api/stats")).json();
        return s.totals.totalTunnels >= 1 && s.active_agents_60m >= 1 && s;
      },
      { what: "the tunnel's client counted", everyMs: 100 },
    );
    expect({ u: after.unique_ips_60m, a60: after.active_agents_60m, a24: after.active_agents_24h, t7: after.total_agents_7d }).toEqual({ u: 1, a60: 1, a24: 1, t7: 1 });

    // the tunnel's duration is observed when it closes: wait until it is closed
    const text = await waitFor(
      async () => {
        const t = await (await gw.admin("/metrics")).text();
        return /^agate_connection_duration_seconds_count\{port="proxy"\} [1-9]/m.test(t) && t;
      },
      { what: "the tunnel's duration in /metrics", everyMs: 100 },
    );
    expect(text).toMatch(/^agate_active_agents_60m 1$/m);
    expect(text).toMatch(/^agate_active_agents_24h 1$/m);
    expect(text).toMatch(/^agate_total_agents_7d 1$/m);
    expect(text).toMatch(/^agate_unique_ips_60m 1$/m);
    expect(text).toContain("# TYPE agate_connection_duration_seconds histogram");
    expect(text).toMatch(/^agate_connection_duration_seconds_bucket\{port="proxy",le="\+Inf"\} 1$/m);
    expect(text).toMatch(/^agate_request_duration_seconds_count\{port="cache"\} \d+$/m);
    expect(text).not.toContain('state="total"');
    // every counter ends in _total (the text format's convention for counters)
    const counters = [...text.matchAll(/^# TYPE (\S+) counter$/gm)].map((m) => m[1]!);
    expect(counters.length).toBeGreaterThan(3);
    expect(counters.filter((n) => !n.endsWith("_total"))).toEqual([]);
  }, 60_000);
});
