/**
 * Steering the fleet (issue 14) with three real gateways on loopback, each listing the other two as `[fleet] peers`
 * (gw-a also lists a port nothing listens on): a customer chain assigned from gw-a to all three → curl through
 * each one's cache port sees a leaf issued by that chain, verified with the chain's root only; a config push to two
 * of three → those two tunnel a newly allowed domain on their proxy ports, the third still refuses it; a receiver
 * that refuses (a name already taken there) shows its own reason in the per-gateway result, and the dead peer is
 * unreachable; each receiver writes its own audit entry; the peer routes refuse a caller that is not a peer
 * (curl --interface 127.0.0.2), the admin token and a wrong fleet token. With `[admin] tls` the push goes over HTTPS.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { makeCustomerChain } from "../peers/customer-chain";
import { ROOT, curl, startGateway, type Gateway } from "../peers/gateway";
import { freePort } from "../peers/helpers";
import { join } from "node:path";

const FLEET_TOKEN = "fleet-token-0123456789abcdef-0123456789";
const HOST = "qagpublic.qg1.apps.qualys.com";
const EXTRA = "updates.example.com";
const pki = makeTestPki([HOST, EXTRA]);
let origin: Origin;
const ports = [freePort(), freePort(), freePort()];
const dead = freePort(); // a peer of gw-a that never answers
const names = ["gw-a", "gw-b", "gw-c"];
const gws: Gateway[] = [];
const peerOf = (i: number) => `127.0.0.1:${ports[i]}`;

const cfgOf = (i: number) => ({
  gateway: { name: names[i], workers: 1 },
  admin: { port: ports[i] },
  cache: { enabled: true, port: 0, listen: "127.0.0.1" },
  tls: { upstream_ca: pki.caPath },
  destinations: { ports: [origin.port] },
  hosts: { [HOST]: "127.0.0.1", [EXTRA]: "127.0.0.1" },
  fleet: {
    peers: [...[0, 1, 2].filter((j) => j !== i).map(peerOf), ...(i === 0 ? [`127.0.0.1:${dead}`] : [])],
    token: FLEET_TOKEN,
    heartbeat_s: 1,
    min_heartbeat_s: 1,
    missed_heartbeats: 2,
  },
});

function chainForm(ch: { root: string; intermediate: string; key: string }, gateways: string[], cn?: string) {
  const f = new FormData();
  f.set("root", new Blob([readFileSync(ch.root)]), "root.pem");
  f.set("intermediate", new Blob([readFileSync(ch.intermediate)]), "inter.pem");
  f.set("key", new Blob([readFileSync(ch.key)]), "key.pem");
  if (cn) f.set("common_name", cn);
  for (const g of gateways) f.append("gateways", g);
  return f;
}
const audit = (g: Gateway) => readFileSync(join(g.dir, "data", "audit.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
const viaProxy = (g: Gateway, path: string) => curl(["-x", `http://127.0.0.1:${g.ports.proxy}`, "--cacert", pki.caPath, "-w", "\n%{http_connect} %{http_code}", origin.url(EXTRA, path)]);

beforeAll(async () => {
  origin = startTlsOrigin(pki);
  for (const i of [0, 1, 2]) gws.push(await startGateway(cfgOf(i)));
});
afterAll(async () => {
  await Promise.all(gws.map((g) => g.stop()));
  for (const g of gws) rmSync(g.dir, { recursive: true, force: true });
  origin?.stop();
});

describe("a customer chain assigned to several gateways at once", () => {
  test("a name already taken on gw-c: gw-c refuses with its own reason, the others apply, the dead peer is unreachable", async () => {
    const other = makeCustomerChain("Other Corp CA");
    const pre = new FormData();
    pre.set("root", new Blob([readFileSync(other.root)]));
    pre.set("key", new Blob([readFileSync(other.key)]));
    pre.set("intermediate", new Blob([readFileSync(other.intermediate)]));
    pre.set("common_name", "Branch CA");
    expect((await gws[2]!.admin("/api/certificates", { method: "POST", body: pre })).status).toBe(201);

    const b = makeCustomerChain("Branch Issuing CA");
    const r = await gws[0]!.admin("/api/fleet/chain", { method: "POST", body: chainForm(b, ["self", peerOf(1), peerOf(2), `127.0.0.1:${dead}`], "Branch CA") });
    expect(r.status).toBe(200);
    const body: any = await r.json();
    expect(body.ok).toBe(false);
    expect(body.summary).toBe("2 applied, 1 refused, 1 unreachable");
    const by = Object.fromEntries(body.results.map((x: any) => [x.gateway, x]));
    expect(by.self.result).toBe("applied");
    expect(by[peerOf(1)].result).toBe("applied");
    expect(by[peerOf(2)]).toMatchObject({ result: "refused", http_status: 409, field: "common_name" });
    expect(by[peerOf(2)].reason).toContain('"Branch CA" is already the name of certificate');
    expect(by[`127.0.0.1:${dead}`].result).toBe("unreachable");
    expect(by[`127.0.0.1:${dead}`].reason).toMatch(/ECONNREFUSED|ConnectionRefused/);
    // gw-c's own audit says it refused, and who pushed
    const rx = audit(gws[2]!).filter((e) => e.action === "fleet.chain.receive");
    expect(rx.at(-1)).toMatchObject({ status: 409, who: { addr: "127.0.0.1" }, detail: { from: "gw-a" } });
    expect(JSON.stringify(audit(gws[2]!))).not.toContain("PRIVATE KEY");
  }, 60_000);

  test("a chain that does not check out on the sender goes nowhere", async () => {
    const a = makeCustomerChain("A CA");
    const b = makeCustomerChain("B CA");
    const r = await gws[0]!.admin("/api/fleet/chain", { method: "POST", body: chainForm({ root: a.root, intermediate: a.intermediate, key: b.key }, ["self", peerOf(1)]) });
    expect(r.status).toBe(400);
    const body: any = await r.json();
    expect(body.field).toBe("key");
    expect(body.results).toEqual([]);
    expect(audit(gws[1]!).filter((e) => e.action === "fleet.chain.receive").length).toBe(1); // only the earlier push
  });

  test("assigned to all three → each one's cache port serves leaves issued by that chain", async () => {
    const chain = makeCustomerChain("Fleet Corp Issuing CA");
    const r = await gws[1]!.admin("/api/fleet/chain", { method: "POST", body: chainForm(chain, ["self", peerOf(0), peerOf(2)], "Fleet CA") });
    const body: any = await r.json();
    expect({ status: r.status, summary: body.summary }).toEqual({ status: 200, summary: "3 applied" });
    // "applied" means every receiver's worker threads confirmed the new CA (supervisor/pool.ts confirm): the very
    // first handshake after the answer, on each gateway at once, is already issued by the new chain — no wait.
    // (A worker switches before its next connection anyway, with 1 worker or 2: this passes without the wait too.
    // What proves the wait for every worker is test/unit/pool-confirm.test.ts.)
    const outs = await Promise.all(gws.map((g) => curl(["-x", `http://127.0.0.1:${g.ports.cache}`, "--cacert", chain.root, "-v", origin.url(HOST, "/leaf")])));
    for (const [i, g] of gws.entries()) {
      const out = outs[i]!;
      expect({ gateway: names[i], code: out.code }).toEqual({ gateway: names[i], code: 0 });
      expect(out.stdout).toBe("hello from origin /leaf\n");
      expect(out.stderr).toContain("issuer: CN=Fleet Corp Issuing CA");
      expect(await (await fetch(`http://127.0.0.1:${g.ports.admin}/ca.pem`)).text()).toBe(chain.rootPem);
    }
    // the receivers' audit entries
    for (const i of [0, 2]) expect(audit(gws[i]!).filter((e) => e.action === "fleet.chain.receive" && e.status === 200).at(-1).detail.from).toBe("gw-b");
    // pushed again: the same chain is reused, not a duplicate name
    const again: any = await (await gws[1]!.admin("/api/fleet/chain", { method: "POST", body: chainForm(chain, [peerOf(0)], "Fleet CA") })).json();
    expect(again.results[0]).toMatchObject({ result: "applied", detail: { reused: true } });
  }, 90_000);
});

describe("a config part pushed to chosen gateways", () => {
  test("allowed domains to two of three: those two tunnel the new domain, the third still refuses it", async () => {
    for (const g of gws) expect((await viaProxy(g, "/before")).stdout.split("\n").pop()).toBe("403 000");
    const r = await gws[0]!.admin("/api/fleet/config", { method: "POST", body: JSON.stringify({ gateways: ["self", peerOf(1)], change: { cache: { allowed_domains: ["example.com"] } } }) });
    const body: any = await r.json();
    expect({ status: r.status, summary: body.summary }).toEqual({ status: 200, summary: "2 applied" });
    // applied = the workers confirmed: the first request right after the answer already tunnels the new domain
    const outs = await Promise.all([0, 1].map((i) => viaProxy(gws[i]!, "/after")));
    for (const i of [0, 1]) {
      expect({ gateway: names[i], out: outs[i]!.stdout }).toEqual({ gateway: names[i], out: "hello from origin /after\n\n200 200" });
      const c: any = await (await gws[i]!.admin("/api/config")).json();
      expect(c.cache.allowed_domains).toEqual(["example.com"]);
    }
    expect((await viaProxy(gws[2]!, "/after")).stdout.split("\n").pop()).toBe("403 000");
    expect(((await (await gws[2]!.admin("/api/config")).json()) as any).cache.allowed_domains).toEqual([]);
    // gw-b applied it through its own path: the overlay file and its audit entry
    expect(readFileSync(join(gws[1]!.dir, "data", "agate.auto.toml"), "utf8")).toContain("example.com");
    expect(audit(gws[1]!).filter((e) => e.action === "fleet.config.receive").at(-1)).toMatchObject({ status: 200, detail: { from: "gw-a", change: { cache: { allowed_domains: ["example.com"] } } } });
  }, 60_000);

  test("a value each receiver refuses comes back with the receiver's reason; a per-gateway key is refused before any push", async () => {
    const r = await gws[0]!.admin("/api/fleet/config", { method: "POST", body: JSON.stringify({ gateways: [peerOf(1), peerOf(2)], change: { cache: { min_tls: "1.7" } } }) });
    const body: any = await r.json();
    expect(body.summary).toBe("2 refused");
    for (const x of body.results) expect(x).toMatchObject({ result: "refused", http_status: 400, field: "cache.min_tls" });
    expect(body.results[0].reason).toContain("expected one of");
    expect(audit(gws[2]!).filter((e) => e.action === "fleet.config.receive").at(-1)).toMatchObject({ status: 400 });

    const port = await gws[0]!.admin("/api/fleet/config", { method: "POST", body: JSON.stringify({ gateways: [peerOf(1)], change: { proxy: { port: 3129 } } }) });
    expect(port.status).toBe(400);
    expect(await port.json()).toMatchObject({ field: "proxy", results: [] });
    const stranger = await gws[0]!.admin("/api/fleet/config", { method: "POST", body: JSON.stringify({ gateways: ["10.9.9.9:8443"], change: { cache: { min_tls: "1.3" } } }) });
    expect(stranger.status).toBe(400);
    expect(((await stranger.json()) as any).field).toBe("gateways");
  }, 60_000);

  test("the peer routes: not a peer's address 403, the admin token 401, a wrong fleet token 401; nothing applied", async () => {
    const url = `http://127.0.0.1:${ports[1]}/api/fleet/peer/config`;
    const data = JSON.stringify({ change: { cache: { min_tls: "1.3" } } });
    const post = (extra: string[]) => curl(["-w", "\n%{http_code}", "-X", "POST", "-H", "content-type: application/json", "--data", data, ...extra, url]);
    const stranger = await post(["--interface", "127.0.0.2", "-H", `authorization: Bearer ${FLEET_TOKEN}`]);
    expect(stranger.stdout.split("\n").pop()).toBe("403");
    expect(JSON.parse(stranger.stdout.split("\n").slice(0, -1).join("\n")).field).toBe("fleet.peers");
    expect((await post(["-H", `authorization: Bearer ${gws[1]!.token}`])).stdout.split("\n").pop()).toBe("401");
    expect((await post(["-H", "authorization: Bearer wrong-token-0123456789abcdef-0123456789"])).stdout.split("\n").pop()).toBe("401");
    expect(((await (await gws[1]!.admin("/api/config")).json()) as any).cache.min_tls).toBe("1.2");
    // the fleet token does not open the admin's push either
    const viaFleet = await curl(["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", `authorization: Bearer ${FLEET_TOKEN}`, "--data", data, `http://127.0.0.1:${ports[1]}/api/fleet/config`]);
    expect(viaFleet.stdout).toBe("401");
  });

  test("agate fleet push-config and the sender's audit entry", async () => {
    const p = Bun.spawn([join(ROOT, "bin/agate"), "--config", gws[0]!.configPath, "fleet", "push-config", "--to", `self,${peerOf(2)}`, "cache.min_tls=1.3"], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    expect({ code, err }).toEqual({ code: 0, err: "" });
    expect(out).toMatch(/self\s+applied/);
    expect(out).toMatch(new RegExp(`${peerOf(2)}\\s+applied`));
    expect(((await (await gws[2]!.admin("/api/config")).json()) as any).cache.min_tls).toBe("1.3");
    expect(audit(gws[0]!).filter((e) => e.action === "fleet.config").at(-1)).toMatchObject({ status: 200, detail: { results: [{ gateway: "self", result: "applied" }, { gateway: peerOf(2), result: "applied" }] } });
    // assign-chain: one line per gateway; exit 1 when one did not apply it (the dead peer)
    const chain = makeCustomerChain("CLI Corp CA");
    const c = Bun.spawn([join(ROOT, "bin/agate"), "--config", gws[0]!.configPath, "fleet", "assign-chain", "--to", `${peerOf(1)},127.0.0.1:${dead}`, "--root", chain.root, "--intermediate", chain.intermediate, "--key", chain.key, "--cn", "CLI chain"], { stdout: "pipe", stderr: "pipe" });
    const [cout, cerr, ccode] = await Promise.all([new Response(c.stdout).text(), new Response(c.stderr).text(), c.exited]);
    expect(ccode).toBe(1);
    expect(cout).toMatch(new RegExp(`${peerOf(1)}\\s+applied`));
    expect(cout).toMatch(/unreachable\s+ECONNREFUSED/);
    expect(cerr).toContain("refused: not applied everywhere: 1 applied, 1 unreachable");
    expect(await (await fetch(`http://127.0.0.1:${ports[1]}/ca.pem`)).text()).toBe(chain.rootPem);
  }, 30_000);
});

describe("the Fleet tab's controls in Debian's chromium", () => {
  test("assign a chain and push allowed domains to the gateways ticked; the per-gateway results are shown", async () => {
    const CHROMIUM = "/usr/bin/chromium";
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install -y chromium)`);
    const pw = await import("playwright-core");
    const browser = await pw.chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${ports[0]}/`);
      await page.fill("#token", gws[0]!.token);
      await page.click("#login-btn");
      await page.click('nav button[data-tab="fleet"]');
      await page.waitForFunction(() => document.querySelectorAll(".fs-target").length === 4, null, { timeout: 15_000 });
      // only this gateway and gw-b
      await page.uncheck(`.fs-target[value="${peerOf(2)}"]`);
      await page.uncheck(`.fs-target[value="127.0.0.1:${dead}"]`);
      await page.fill("#fs-domains", "example.net\nexample.com");
      await page.click("#fs-config-btn");
      await page.waitForFunction(() => document.querySelectorAll('#fs-results tr[data-result="applied"]').length === 2, null, { timeout: 15_000 });
      expect(await page.textContent("#fs-summary")).toBe("2 applied");
      for (const i of [0, 1]) expect(((await (await gws[i]!.admin("/api/config")).json()) as any).cache.allowed_domains).toEqual(["example.net", "example.com"]);
      expect(((await (await gws[2]!.admin("/api/config")).json()) as any).cache.allowed_domains).toEqual([]);

      const chain = makeCustomerChain("UI Corp CA");
      await page.setInputFiles("#fs-root", chain.root);
      await page.setInputFiles("#fs-inter", chain.intermediate);
      await page.setInputFiles("#fs-key", chain.key);
      await page.fill("#fs-cn", "UI chain");
      await page.check(`.fs-target[value="127.0.0.1:${dead}"]`);
      await page.click("#fs-chain-btn");
      await page.waitForFunction(() => document.querySelectorAll("#fs-results tr").length === 3 && document.getElementById("fs-summary")!.textContent!.includes("unreachable"), null, { timeout: 30_000 });
      const rows = await page.$$eval("#fs-results tr", (trs) => trs.map((tr) => [tr.getAttribute("data-gateway"), tr.getAttribute("data-result")]));
      expect(rows).toEqual([["self", "applied"], [peerOf(1), "applied"], [`127.0.0.1:${dead}`, "unreachable"]]);
      expect(await (await fetch(`http://127.0.0.1:${ports[1]}/ca.pem`)).text()).toBe(chain.rootPem);

      // export: a download of the age archive; imported back here through the same card (it asks first)
      await page.fill("#fx-pass", "ui passphrase 12345");
      const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click("#fx-export")]);
      expect(dl.suggestedFilename()).toMatch(/^agate-gw-a-\d{4}-\d{2}-\d{2}\.age$/);
      const saved = join(gws[0]!.dir, "ui-export.age");
      await dl.saveAs(saved);
      expect(readFileSync(saved).subarray(0, 21).toString()).toBe("age-encryption.org/v1");
      page.once("dialog", (d) => void d.accept());
      await page.setInputFiles("#fx-file", saved);
      await page.fill("#fx-ipass", "ui passphrase 12345");
      await page.click("#fx-import");
      await page.waitForFunction(() => /imported|passphrase|refused/.test(document.getElementById("fx-result")!.textContent!), null, { timeout: 30_000 });
      expect(await page.textContent("#fx-result")).toStartWith("imported gw-a (");
      mkdirSync(join(ROOT, "test/artifacts"), { recursive: true });
      await page.screenshot({ path: join(ROOT, "test/artifacts/fleet-steer.png"), fullPage: true });
    } finally {
      await browser.close();
    }
  }, 90_000);
});

describe("[admin] tls = true: the push goes over HTTPS", () => {
  test("a config push between two TLS management ports is applied", async () => {
    const p = [freePort(), freePort()];
    const cfg = (i: number) => ({
      gateway: { name: `tls-${i}`, workers: 1 },
      admin: { port: p[i], tls: true },
      fleet: { peers: [`127.0.0.1:${p[1 - i]}`], token: FLEET_TOKEN, heartbeat_s: 1, min_heartbeat_s: 1, missed_heartbeats: 2 },
    });
    await using a = await startGateway(cfg(0));
    await using b = await startGateway(cfg(1));
    const r = await fetch(`https://127.0.0.1:${p[0]}/api/fleet/config`, {
      method: "POST",
      headers: { authorization: `Bearer ${a.token}` },
      body: JSON.stringify({ gateways: [`127.0.0.1:${p[1]}`], change: { cache: { min_tls: "1.3" } } }),
      tls: { rejectUnauthorized: false },
    } as RequestInit);
    const body: any = await r.json();
    expect(body.summary).toBe("1 applied");
    const c: any = await (await fetch(`https://127.0.0.1:${p[1]}/api/config`, { headers: { authorization: `Bearer ${b.token}` }, tls: { rejectUnauthorized: false } } as RequestInit)).json();
    expect(c.cache.min_tls).toBe("1.3");
  }, 60_000);
});
