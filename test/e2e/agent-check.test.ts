/**
 * HAProxy's agent-check against `[admin] agent_check_port` (issue 10), with Debian's real haproxy: two gateways, one
 * reaching the platform through an upstream squid, the other direct. The squid stops (SIGSTOP: it goes silent, the
 * hardest case, every probe runs into its timeout) → the first gateway's platform link goes Down → its agent says
 * `down#…` → haproxy marks it DOWN within its check interval and agents keep getting through the other; the squid
 * resumes → the gateway says `up ready N%` again and haproxy puts it back. The time from the upstream's loss to
 * haproxy's DOWN is printed (a figure for the report, not an assertion).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { BUN, ROOT, curl, startGateway, toToml, type Gateway } from "../peers/gateway";
import { squidMissing, startSquid, type Squid } from "../peers/squid";
import { freePort, waitFor } from "../peers/helpers";

const POD = "qg1.apps.qualys.com";
const HOST = `qagpublic.${POD}`;
const pki = makeTestPki([HOST]);
const HAPROXY = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].find((p) => Bun.file(p).size > 0);
const missing = !HAPROXY ? "haproxy is not installed (apt-get install haproxy)" : squidMissing();
if (missing) console.warn(`[skip] agent-check test: ${missing}`);

/** One line from the agent port, the way haproxy reads it (connect, read until close). */
async function agentSays(port: number): Promise<string> {
  let out = "";
  await new Promise<void>((resolve, reject) => {
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: { data: (_s, d) => void (out += new TextDecoder().decode(d)), close: () => resolve(), error: (_s, e) => reject(e) },
    }).catch(reject);
  });
  return out;
}

describe.skipIf(!!missing)("two gateways behind haproxy's agent-check", () => {
  let origin: Origin;
  let squid: Squid;
  let a: Gateway, b: Gateway;
  let lb: Subprocess;
  let lbPort: number, statsPort: number, agentA: number, agentB: number;

  beforeAll(async () => {
    origin = startTlsOrigin(pki);
    squid = await startSquid({ [HOST]: "127.0.0.1" });
    const base = {
      platform: { pod: POD, probe_interval_s: 1 },
      destinations: { ports: [origin.port] },
      hosts: { [HOST]: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
    };
    agentA = freePort();
    agentB = freePort();
    a = await startGateway({
      ...base,
      gateway: { workers: 1 },
      upstream_proxy: { host: "127.0.0.1", port: squid.port, username: squid.user, password: squid.password },
      admin: { agent_check_port: agentA },
    });
    b = await startGateway({ ...base, gateway: { workers: 1 }, admin: { agent_check_port: agentB } });
    lbPort = freePort();
    statsPort = freePort();
    const dir = mkdtempSync(join(tmpdir(), "agate-haproxy-agent-"));
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
        "  timeout check 1s",
        "frontend agents",
        `  bind 127.0.0.1:${lbPort}`,
        "  default_backend gateways",
        "backend gateways",
        "  balance roundrobin",
        // the plain TCP check keeps the server UP at the TCP level; the agent says whether it can serve agents
        "  default-server inter 1s fall 2 rise 2 agent-check agent-inter 1s",
        `  server a 127.0.0.1:${a.ports.proxy} check agent-port ${agentA}`,
        `  server b 127.0.0.1:${b.ports.proxy} check agent-port ${agentB}`,
        "frontend stats",
        "  mode http",
        `  bind 127.0.0.1:${statsPort}`,
        "  stats enable",
        "  stats uri /stats",
        "",
      ].join("\n"),
    );
    lb = Bun.spawn([HAPROXY!, "-f", join(dir, "haproxy.cfg"), "-db"], { stdout: "pipe", stderr: "pipe" });
  });
  afterAll(async () => {
    if (squid) squid.proc.kill("SIGCONT");
    if (lb) {
      lb.kill("SIGKILL");
      await lb.exited;
    }
    await a?.stop();
    await b?.stop();
    await squid?.stop();
    origin?.stop();
  });

  /** haproxy's view: server → [status, weight] from its CSV stats (status is column 17, weight 18). */
  const view = async () => {
    const csv = await (await fetch(`http://127.0.0.1:${statsPort}/stats;csv`)).text();
    const head = csv.split("\n")[0]!.replace(/^# /, "").split(",");
    const iS = head.indexOf("status"), iW = head.indexOf("weight"), iC = head.indexOf("check_desc") ;
    void iC;
    const rows = csv.split("\n").slice(1).map((l) => l.split(",")).filter((c) => c[0] === "gateways" && (c[1] === "a" || c[1] === "b"));
    return Object.fromEntries(rows.map((c) => [c[1]!, { status: c[iS]!, weight: Number(c[iW]) }])) as Record<"a" | "b", { status: string; weight: number }>;
  };
  const through = async (path: string) =>
    (await curl(["-x", `http://127.0.0.1:${lbPort}`, "--cacert", pki.caPath, origin.url(HOST, path)])).stdout;

  test("the agent says up ready with a weight; haproxy takes the gateway that lost its upstream out, and back in when it returns", async () => {
    // both up: the platform is reachable from both (a through squid, b direct)
    await waitFor(async () => (await a.admin("/api/status").then((r) => r.json()) as any).platform.status === "Connected", { timeoutMs: 15_000, what: "a connected through squid" });
    expect(await agentSays(agentA)).toMatch(/^up ready \d+%\n$/);
    await waitFor(async () => {
      const v = await view().catch(() => null);
      return v && v.a?.status === "UP" && v.b?.status === "UP";
    }, { timeoutMs: 15_000, what: "haproxy reporting both gateways UP", everyMs: 100 });

    // the upstream goes silent
    const lost = performance.now();
    squid.proc.kill("SIGSTOP");
    const st = await waitFor(async () => {
      const v = await view();
      return v.a.status.startsWith("DOWN") && v;
    }, { timeoutMs: 30_000, what: "haproxy marking gateway a DOWN", everyMs: 100 });
    const tookMs = Math.round(performance.now() - lost);
    expect(st.b.status).toBe("UP");
    const said = await agentSays(agentA);
    expect(said).toStartWith("down #platform-down");
    expect(said).toContain("upstream proxy");
    console.log(JSON.stringify({ figure: "upstream lost → haproxy DOWN", ms: tookMs, probe_interval_s: 1, agent_inter_s: 1, agent_said: said.trim() }));
    const link: any = (await (await a.admin("/api/status")).json()).platform;
    console.log(JSON.stringify({ figure: "probe cost, last round of gateway a (upstream silent)", ...link.last_round }));
    // agents keep getting through the other gateway
    for (let i = 0; i < 4; i++) expect(await through(`/during${i}`)).toBe(`hello from origin /during${i}\n`);

    // the upstream comes back → a is back in
    const back = performance.now();
    squid.proc.kill("SIGCONT");
    await waitFor(async () => (await view()).a.status === "UP", { timeoutMs: 30_000, what: "haproxy putting gateway a back UP", everyMs: 100 });
    console.log(JSON.stringify({ figure: "upstream back → haproxy UP", ms: Math.round(performance.now() - back) }));
    expect(await agentSays(agentA)).toMatch(/^up ready \d+%\n$/);
    const ok: any = (await (await a.admin("/api/status")).json()).platform;
    console.log(JSON.stringify({ figure: "probe cost, last round of gateway a (healthy, through squid)", ...ok.last_round }));
    for (let i = 0; i < 4; i++) expect(await through(`/after${i}`)).toBe(`hello from origin /after${i}\n`);
  }, 120_000);

  test("maintenance says maint; off says up again", async () => {
    const post = (on: boolean) => b.admin("/api/maintenance", { method: "POST", body: JSON.stringify({ on }) });
    expect((await post(true)).status).toBe(200);
    expect(await agentSays(agentB)).toBe("maint\n");
    await waitFor(async () => (await view()).b.status.includes("MAINT"), { timeoutMs: 15_000, what: "haproxy: b in MAINT", everyMs: 100 });
    expect((await post(false)).status).toBe(200);
    expect(await agentSays(agentB)).toMatch(/^up ready \d+%\n$/);
    await waitFor(async () => (await view()).b.status === "UP", { timeoutMs: 15_000, what: "haproxy: b UP again", everyMs: 100 });
  }, 60_000);
});

/** `[admin] agent_check_port` held by another process is refused like the other ports (it used to be only logged,
 * and HAProxy's checks went to whatever held the port): at start exit 78 naming the key, from the API 400. */
describe("agent_check_port in use", () => {
  test("at start: exit 78 naming admin.agent_check_port and why; from the API: 400, the running config stays", async () => {
    const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const dir = mkdtempSync(join(tmpdir(), "agate-agent-busy-"));
      const file = join(dir, "a.toml");
      writeFileSync(file, toToml({ gateway: { data_dir: join(dir, "data") }, proxy: { port: 0, listen: "127.0.0.1" }, admin: { port: 0, agent_check_port: holder.port }, platform: { probe_interval_s: 0 } }));
      const p = Bun.spawn([BUN, join(ROOT, "src/main.ts"), "--config", file], { stdout: "pipe", stderr: "pipe" });
      const t = setTimeout(() => p.kill("SIGKILL"), 20_000);
      const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
      clearTimeout(t);
      expect(code).toBe(78);
      expect(err).toContain("admin.agent_check_port");
      expect(err).toContain("in use");

      await using gw = await startGateway({});
      const r = await gw.admin("/api/config", { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ admin: { agent_check_port: holder.port } }) });
      expect(r.status).toBe(400);
      const b = await r.json();
      expect(b.field).toBe("admin.agent_check_port");
      expect(b.error).toContain("in use");
      expect((await (await gw.admin("/api/config")).json()).admin.agent_check_port).toBe(null);
    } finally {
      holder.stop(true);
    }
  }, 60_000);
});
