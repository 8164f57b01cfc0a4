/**
 * The fleet (issue 14) with three real gateways on loopback, each listing the other two as `[fleet] peers`
 * (heartbeat_s = 1, min_heartbeat_s = 1, missed_heartbeats = 2): `GET /api/fleet` on each shows the other two
 * online; one killed by its PID turns offline on the others within the threshold, each of whose webhook receivers
 * (a Bun.serve on loopback) gets one JSON notice, while their own health stays Normal; started again it is online.
 * The self route refuses a wrong token, the admin token and an address that is not a peer's (curl --interface
 * 127.0.0.2). The Fleet tab in Debian's chromium (playwright-core) shows every gateway with its status.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, curl, startGateway, type Gateway } from "../peers/gateway";
import { freePort, waitFor } from "../peers/helpers";

const FLEET_TOKEN = "fleet-token-0123456789abcdef-0123456789";
const CHROMIUM = "/usr/bin/chromium";

type Notice = { path: string; body: any };
const notices: Notice[] = [];
let hook: ReturnType<typeof Bun.serve>;
const ports = [freePort(), freePort(), freePort()];
const names = ["gw-a", "gw-b", "gw-c"];
const dirs = names.map((n) => mkdtempSync(join(tmpdir(), `agate-fleet-${n}-`)));
const gws: (Gateway | null)[] = [null, null, null];

const peerOf = (i: number) => `127.0.0.1:${ports[i]}`;
const cfgOf = (i: number) => ({
  gateway: { name: names[i], workers: 1 },
  admin: { port: ports[i] },
  fleet: {
    peers: [0, 1, 2].filter((j) => j !== i).map(peerOf),
    token: FLEET_TOKEN,
    location: `rack ${i + 1}`,
    heartbeat_s: 1,
    min_heartbeat_s: 1,
    missed_heartbeats: 2,
    webhook_url: `http://127.0.0.1:${hook.port}/hook/${names[i]}`,
  },
});
const start = async (i: number) => (gws[i] = await startGateway(cfgOf(i), { dir: dirs[i] }));
const fleetOf = async (i: number) => (await (await gws[i]!.admin("/api/fleet")).json()) as any;
const statusIn = (f: any, i: number) => f.gateways.find((g: any) => g.peer === peerOf(i))?.status;

beforeAll(async () => {
  hook = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      notices.push({ path: new URL(req.url).pathname, body: await req.json() });
      return new Response("ok");
    },
  });
  await Promise.all([0, 1, 2].map(start));
});
afterAll(async () => {
  await Promise.all(gws.map((g) => g?.stop()));
  hook?.stop(true);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("three gateways as one fleet", () => {
  test("each sees the other two online, and itself", async () => {
    for (const i of [0, 1, 2]) {
      const f = await waitFor(
        async () => {
          const f = await fleetOf(i);
          return [0, 1, 2].filter((j) => j !== i).every((j) => statusIn(f, j) === "online") && f;
        },
        { timeoutMs: 15_000, what: `${names[i]} seeing both peers online` },
      );
      expect(f.gateways.map((g: any) => g.status).sort()).toEqual(["online", "online", "online"]);
      expect(f.gateways[0]).toMatchObject({ peer: "self", self: true, member: { name: names[i], location: `rack ${i + 1}`, health: "Normal" } });
      const other = f.gateways.find((g: any) => g.peer === peerOf((i + 1) % 3));
      expect(other.member).toMatchObject({ name: names[(i + 1) % 3], location: `rack ${((i + 1) % 3) + 1}`, capacity: 3000 });
      expect(typeof other.member.version).toBe("string");
      expect(other.missed_heartbeats).toBe(0);
    }
  }, 60_000);

  test("agate fleet prints every gateway with its status", async () => {
    const p = Bun.spawn([join(ROOT, "bin/agate"), "--config", gws[1]!.configPath, "fleet"], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    expect({ code, err }).toEqual({ code: 0, err: "" });
    const lines = out.split("\n");
    expect(lines[0]).toMatch(/^STATUS\s+GATEWAY\s+NAME\s+LOCATION/);
    expect(lines.find((l) => l.includes(peerOf(0)))).toMatch(/^online\s.*gw-a\s+rack 1\s.*Normal/);
    expect(lines.find((l) => l.includes("(this gateway)"))).toMatch(/gw-b\s+rack 2/);
    expect(lines.filter((l) => l.startsWith("online")).length).toBe(3);
    expect(out).toContain("heartbeat every 1 s, offline after 2 missed");
  });

  test("the self route: wrong token 401, admin token 401, not a peer's address 403, a peer with the fleet token 200", async () => {
    const url = `http://127.0.0.1:${ports[0]}/api/fleet/self`;
    const wrong = await curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "authorization: Bearer wrong-token-0123456789abcdef-0123456789", url]);
    expect(wrong.stdout).toBe("401");
    const admin = await curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", `authorization: Bearer ${gws[0]!.token}`, url]);
    expect(admin.stdout).toBe("401");
    // The same fleet token from 127.0.0.2, an address none of the peers has: refused (Linux routes all of 127/8 to lo)
    const stranger = await curl(["--interface", "127.0.0.2", "-w", "\n%{http_code}", "-H", `authorization: Bearer ${FLEET_TOKEN}`, url]);
    expect(stranger.stdout.split("\n").pop()).toBe("403");
    expect(JSON.parse(stranger.stdout.split("\n").slice(0, -1).join("\n")).field).toBe("fleet.peers");
    const ok = await curl(["-w", "\n%{http_code}", "-H", `authorization: Bearer ${FLEET_TOKEN}`, url]);
    expect(ok.stdout.split("\n").pop()).toBe("200");
    expect(JSON.parse(ok.stdout.split("\n").slice(0, -1).join("\n"))).toMatchObject({ name: "gw-a", health: "Normal" });
    // ...and the fleet token opens nothing else
    const other = await curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", `authorization: Bearer ${FLEET_TOKEN}`, `http://127.0.0.1:${ports[0]}/api/fleet`]);
    expect(other.stdout).toBe("401");
  });

  test("one killed by its PID turns offline on the others, each sends one webhook notice, their own health stays Normal; back online after a restart", async () => {
    const c = gws[2]!;
    const t0 = performance.now();
    process.kill(c.proc.pid, "SIGKILL");
    await c.stop();
    for (const i of [0, 1])
      await waitFor(async () => statusIn(await fleetOf(i), 2) === "offline", { timeoutMs: 15_000, what: `${names[i]} seeing gw-c offline`, everyMs: 50 });
    console.error(`[fleet.test] figure: kill → offline on both others in ${Math.round(performance.now() - t0)} ms (heartbeat_s 1, missed_heartbeats 2)`);
    const offlineNotices = (gw: string) => notices.filter((n) => n.path === `/hook/${gw}` && n.body.event === "peer-offline" && n.body.peer === peerOf(2));
    for (const gw of ["gw-a", "gw-b"]) await waitFor(() => offlineNotices(gw).length >= 1, { timeoutMs: 15_000, what: `${gw}'s webhook notice` });
    const n = offlineNotices("gw-a")[0]!.body;
    expect(n).toMatchObject({ event: "peer-offline", peer: peerOf(2), from: "online", to: "offline", gateway: { name: "gw-a", location: "rack 1" }, peer_name: "gw-c" });
    const f = await fleetOf(0);
    const row = f.gateways.find((g: any) => g.peer === peerOf(2));
    expect(row.missed_heartbeats).toBeGreaterThanOrEqual(2);
    expect(row.member.name).toBe("gw-c"); // as last seen
    for (const i of [0, 1]) {
      const h = (await (await gws[i]!.admin("/healthz")).json()) as any;
      expect(h.health).toBe("Normal");
    }

    await start(2);
    for (const i of [0, 1])
      await waitFor(async () => statusIn(await fleetOf(i), 2) === "online", { timeoutMs: 15_000, what: `${names[i]} seeing gw-c online again` });
    // one notice per gateway for the one outage: none repeated while it stayed offline, none for the recovery
    expect(offlineNotices("gw-a").length).toBe(1);
    expect(offlineNotices("gw-b").length).toBe(1);
    expect(notices.every((x) => x.body.event === "peer-offline" || x.body.event === "peer-degraded")).toBe(true);
  }, 90_000);

  test("a peer in maintenance (health Down, still answering) is degraded on the others, with its reasons, and notifies once; off → online", async () => {
    const r = await gws[1]!.admin("/api/maintenance", { method: "POST", body: JSON.stringify({ on: true }) });
    expect(r.status).toBe(200);
    const row = await waitFor(
      async () => {
        const g = (await fleetOf(0)).gateways.find((x: any) => x.peer === peerOf(1));
        return g.status === "degraded" && g;
      },
      { timeoutMs: 15_000, what: "gw-a seeing gw-b degraded" },
    );
    expect(row.member.health).toBe("Down");
    expect(row.member.reasons.join(" ")).toMatch(/maintenance/i);
    const degraded = () => notices.filter((n) => n.path === "/hook/gw-a" && n.body.event === "peer-degraded" && n.body.peer === peerOf(1));
    await waitFor(() => degraded().length >= 1, { timeoutMs: 15_000, what: "gw-a's degraded notice" });
    expect(degraded()[0]!.body.reasons.join(" ")).toMatch(/maintenance/i);
    expect(((await (await gws[0]!.admin("/healthz")).json()) as any).health).toBe("Normal");
    await gws[1]!.admin("/api/maintenance", { method: "POST", body: JSON.stringify({ on: false }) });
    await waitFor(async () => statusIn(await fleetOf(0), 1) === "online", { timeoutMs: 15_000, what: "gw-b online again" });
    expect(degraded().length).toBe(1);
  }, 60_000);

  test("a fleet set through the API applies live: peers added are polled, removed ones are dropped", async () => {
    await using d = await startGateway({ gateway: { name: "gw-d", workers: 1 } });
    const put = (fleet: unknown) => d.admin("/api/config", { method: "PUT", body: JSON.stringify({ fleet }) });
    const r = await put({ peers: [peerOf(0)], token: FLEET_TOKEN, heartbeat_s: 1, min_heartbeat_s: 1, missed_heartbeats: 2 });
    expect(r.status).toBe(200);
    const f = await waitFor(
      async () => {
        const f: any = await (await d.admin("/api/fleet")).json();
        return f.gateways[1]?.status === "online" && f;
      },
      { timeoutMs: 15_000, what: "gw-d seeing gw-a online after the change" },
    );
    expect(f.gateways[1].member.name).toBe("gw-a");
    expect((await put({ peers: [] })).status).toBe(200);
    const after: any = await (await d.admin("/api/fleet")).json();
    expect(after.gateways.map((g: any) => g.peer)).toEqual(["self"]);
  }, 60_000);

  test("through the API: share_cache = \"yes\" is refused naming the key; the fleet token is shown as (set)", async () => {
    const r = await gws[0]!.admin("/api/config", { method: "PUT", body: JSON.stringify({ fleet: { share_cache: "yes" } }) });
    expect(r.status).toBe(400);
    const body: any = await r.json();
    expect(body.field).toBe("fleet.share_cache");
    expect(body.error).toContain("expected true or false");
    const c: any = await (await gws[0]!.admin("/api/config")).json();
    expect(c.fleet).toMatchObject({ token: "(set)", heartbeat_s: 1, missed_heartbeats: 2, share_cache: false });
    expect(JSON.stringify(c)).not.toContain(FLEET_TOKEN);
  });

  test("the Fleet tab in chromium lists every gateway with its status", async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install -y chromium)`);
    const pw = await import("playwright-core");
    const browser = await pw.chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${ports[0]}/`);
      await page.fill("#token", gws[0]!.token);
      await page.click("#login-btn");
      await page.click('nav button[data-tab="fleet"]');
      await page.waitForFunction(() => document.querySelectorAll('#f-rows tr[data-status="online"]').length === 3, null, { timeout: 15_000 });
      const rows = await page.$$eval("#f-rows tr", (trs) => trs.map((tr) => ({ peer: tr.getAttribute("data-peer"), text: (tr as HTMLElement).innerText })));
      expect(rows.map((r) => r.peer)).toEqual(["self", peerOf(1), peerOf(2)]);
      expect(rows[1]!.text).toContain("gw-b");
      expect(rows[1]!.text).toContain("rack 2");
      expect(rows[1]!.text).toContain("0 / 3,000");
      mkdirSync(join(ROOT, "test/artifacts"), { recursive: true });
      await page.screenshot({ path: join(ROOT, "test/artifacts/fleet-tab.png"), fullPage: true });
    } finally {
      await browser.close();
    }
  }, 60_000);
});

describe("[admin] tls = true: heartbeats go over HTTPS", () => {
  test("two gateways with TLS on their management ports see each other online; plain HTTP is not answered", async () => {
    const p = [freePort(), freePort()];
    const cfg = (i: number) => ({
      gateway: { name: `tls-${i}`, workers: 1 },
      admin: { port: p[i], tls: true },
      fleet: { peers: [`127.0.0.1:${p[1 - i]}`], token: FLEET_TOKEN, heartbeat_s: 1, min_heartbeat_s: 1, missed_heartbeats: 2 },
    });
    await using a = await startGateway(cfg(0));
    await using b = await startGateway(cfg(1));
    void b;
    const view = await waitFor(
      async () => {
        const r = await fetch(`https://127.0.0.1:${p[0]}/api/fleet`, { headers: { authorization: `Bearer ${a.token}` }, tls: { rejectUnauthorized: false } } as RequestInit);
        const f: any = await r.json();
        return f.gateways[1]?.status === "online" && f;
      },
      { timeoutMs: 15_000, what: "tls-0 seeing tls-1 online over HTTPS" },
    );
    expect(view.gateways[1].member.name).toBe("tls-1");
    const self = await curl(["-k", "-w", "\n%{http_code}", "-H", `authorization: Bearer ${FLEET_TOKEN}`, `https://127.0.0.1:${p[1]}/api/fleet/self`]);
    expect(self.stdout.split("\n").pop()).toBe("200");
    const plain = await curl(["-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${p[1]}/api/fleet/self`]);
    expect(plain.stdout).not.toBe("200");
  }, 60_000);
});

describe("nesting: a branch gateway whose upstream proxy is the site gateway's proxy port", () => {
  test("curl → branch → site → origin", async () => {
    const { makeTestPki } = await import("../peers/test-ca");
    const { startTlsOrigin } = await import("../peers/tls-origin");
    const HOST = "qagpublic.qg1.apps.qualys.com";
    const pki = makeTestPki([HOST]);
    const origin = startTlsOrigin(pki);
    try {
      await using site = await startGateway({ destinations: { ports: [origin.port] }, hosts: { [HOST]: "127.0.0.1" } });
      await using branch = await startGateway({ destinations: { ports: [origin.port] }, upstream_proxy: { host: "127.0.0.1", port: site.ports.proxy } });
      const r = await curl(["-x", `http://127.0.0.1:${branch.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, "/nested")]);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("hello from origin /nested\n");
      await site.waitForLine((l) => JSON.stringify(l).includes(HOST) && l.msg !== "listening", 5000);
    } finally {
      origin.stop();
    }
  });
});

describe("the webhook sender (src/fleet/webhook.ts) against a receiver on loopback", () => {
  test("a failing receiver is retried with back-off until it takes the notice; one that keeps failing is given up", async () => {
    const { WebhookSender } = await import("../../src/fleet/webhook");
    let calls = 0;
    const got: any[] = [];
    const rx = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        calls++;
        const body = await req.json();
        if (new URL(req.url).pathname === "/down" || calls <= 2) return new Response("busy", { status: 503 });
        got.push({ type: req.headers.get("content-type"), body });
        return new Response(null, { status: 204 });
      },
    });
    try {
      const s = new WebhookSender(`http://127.0.0.1:${rx.port}/up`, [20, 40, 80]);
      s.send({ event: "peer-offline", peer: "x:1" }, "n1");
      expect(calls).toBe(0); // queued only: the caller is never blocked by the receiver
      await waitFor(() => s.sent === 1, { timeoutMs: 5000, what: "the notice delivered on the third attempt" });
      expect(calls).toBe(3);
      expect(got).toEqual([{ type: "application/json", body: { event: "peer-offline", peer: "x:1" } }]);
      expect(s.lastError).toBe("HTTP 503");

      calls = 0;
      const d = new WebhookSender(`http://127.0.0.1:${rx.port}/down`, [10, 10]);
      d.send({ event: "peer-offline" }, "n2");
      await waitFor(() => d.failed === 1, { timeoutMs: 5000, what: "the notice given up" });
      expect(calls).toBe(3);
      expect(d.pending).toBe(0);
      s.stop();
      d.stop();
    } finally {
      rx.stop(true);
    }
  });
});
