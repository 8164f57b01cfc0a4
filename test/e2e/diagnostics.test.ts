/**
 * Diagnostics end to end (issues 10 and 11): a started gateway whose `[platform] pod` is KSA1 (no `cask`), its hosts
 * mapped via [hosts] to a loopback TLS origin; `agate diag` (exit 0 when every check passes, 1 when one fails, an
 * extra `--target host:port`), the API's `target`, the archive opened by Debian's `age -d` with the one-time password
 * (through a pty), and the checks through Debian's squid: Basic, wrong Basic credentials, NTLM (ntlm_fake_auth);
 * the dashboard's target field in chromium.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { ROOT, startGateway, type Gateway } from "../peers/gateway";
import { freePort } from "../peers/helpers";
import { squidMissing, squidNtlmMissing, startSquid, type Squid } from "../peers/squid";
import { ageDecrypt, ageMissing } from "../peers/age-cli";

const POD = "qg1.apps.qualysksa.com"; // KSA1: qagpublic, camspublic, camspm, camsrepo — no cask
const POD_HOSTS = ["qagpublic", "camspublic", "camspm", "camsrepo"].map((p) => `${p}.${POD}`);
const EXTRA = "qagpublic.qg2.apps.qualys.eu"; // another pod's host, added by the admin as a target
const pki = makeTestPki([...POD_HOSTS, EXTRA]);
const hosts = Object.fromEntries([...POD_HOSTS, EXTRA].map((h) => [h, "127.0.0.1"]));
let origin: Origin;
beforeAll(() => {
  origin = startTlsOrigin(pki);
});
afterAll(() => origin?.stop());

const base = (extra: Record<string, unknown> = {}) => ({
  gateway: { workers: 1 },
  platform: { pod: POD },
  destinations: { ports: [origin.port] },
  tls: { upstream_ca: pki.caPath },
  hosts,
  ...extra,
});

async function agate(gw: Gateway, args: string[]) {
  const p = Bun.spawn([join(ROOT, "bin/agate"), "--url", `http://127.0.0.1:${gw.ports.admin}`, "--token", gw.token, ...args], {
    cwd: gw.dir,
    stdout: "pipe",
    stderr: "pipe",
  });
  const t = setTimeout(() => p.kill(), 60_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(t);
  return { out, err, code };
}

async function diagnose(gw: Gateway, body: unknown = {}, query = ""): Promise<any> {
  const r = await gw.admin(`/api/diagnostics${query}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const j = await r.json();
  if (r.status !== 200) throw new Error(`diagnostics answered ${r.status}: ${JSON.stringify(j)}`);
  return j;
}

describe("direct, pod KSA1", () => {
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway(base());
  });
  afterAll(async () => {
    await gw?.stop();
  });

  test("only the pod's hosts are probed (no cask for KSA1), each ok over TLS", async () => {
    const d = await diagnose(gw);
    expect(d.connectivity).toMatchObject({ pod: POD, via: "direct", ok: true, failed: 0, hosts: POD_HOSTS });
    expect(d.connectivity.results.map((r: any) => r.host).sort()).toEqual([...POD_HOSTS].sort());
    for (const r of d.connectivity.results) expect(r).toMatchObject({ ok: true, check: "platform", port: origin.port, via: "direct" });
  });

  test("an extra target from the body and from ?target=; a malformed one is a 400 naming the field", async () => {
    const closed = freePort();
    const d = await diagnose(gw, { target: `${EXTRA}:${origin.port}` }, `?target=127.0.0.1:${closed}`);
    const t = d.connectivity.results.filter((r: any) => r.check === "target");
    expect(t.find((r: any) => r.host === EXTRA)).toMatchObject({ ok: true, port: origin.port });
    expect(t.find((r: any) => r.host === "127.0.0.1")).toMatchObject({ ok: false, hop: "tcp", port: closed });
    expect(d.connectivity).toMatchObject({ ok: false, failed: 1 });
    for (const bad of ["no-port.example", "x.example:0", "x.example:70000", "https://x.example/:443"]) {
      const r = await gw.admin("/api/diagnostics", { method: "POST", body: JSON.stringify({ target: bad }) });
      expect(r.status).toBe(400);
      expect(await r.json()).toMatchObject({ field: "target" });
    }
  });

  test("agate diag: exit 0 when all pass, the archive opened by Debian's age with the one-time password", async () => {
    const out = join(gw.dir, "support.age");
    const r = await agate(gw, ["diag", "--out", out]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("all checks passed");
    for (const h of POD_HOSTS) expect(r.out).toContain(`${h}:${origin.port}`);
    expect(r.out).not.toContain("cask");
    const pw = /one-time password \(shown only now\): (\S+)/.exec(r.out)![1]!;
    const cmd = /open it with: (age -d -o (\S+) (\S+)) && gunzip (\S+)/.exec(r.out)!;
    expect(cmd[3]).toBe(out);
    expect(cmd[2]).toBe(join(gw.dir, "support.json.gz"));
    expect(readFileSync(out).subarray(0, 22).toString()).toBe("age-encryption.org/v1\n");
    const missing = ageMissing();
    if (missing) return console.warn(`[skip] opening with /usr/bin/age: ${missing}`);
    const wrong = await ageDecrypt(out, join(gw.dir, "wrong.json.gz"), "NOT-THE-PASSWORD");
    expect(wrong.code).not.toBe(0);
    expect(wrong.tty).toContain("incorrect passphrase");
    const ok = await ageDecrypt(out, cmd[2]!, pw);
    expect(ok).toMatchObject({ code: 0 });
    const content = JSON.parse(gunzipSync(readFileSync(cmd[2]!)).toString());
    expect(content.format).toBe("agate-diagnostics/1");
    expect(content.connectivity).toMatchObject({ pod: POD, ok: true });
    expect(content.config.admin.token).toBe("(set)");
  }, 60_000);

  test("agate diag --target to a closed port: exit 1, the failed hop and its reason", async () => {
    const closed = freePort();
    const r = await agate(gw, ["diag", "--target", `127.0.0.1:${closed}`, "--out", join(gw.dir, "failed.age")]);
    expect(r.code).toBe(1);
    expect(r.out).toContain("1 of 5 checks FAILED");
    expect(r.out).toMatch(new RegExp(`127\\.0\\.0\\.1:${closed}\\s+target\\s+FAIL \\(tcp\\)`));
    const bad = await agate(gw, ["diag", "--target", "nonsense"]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain("[target]");
  }, 60_000);
});

const noSquid = squidMissing();
if (noSquid) console.warn(`[skip] diagnostics through squid: ${noSquid}`);
describe.skipIf(!!noSquid)("through squid with Basic (its address from [hosts])", () => {
  let squid: Squid;
  beforeAll(async () => {
    squid = await startSquid(hosts, "alice", "Right-Pass-1");
  });
  afterAll(async () => {
    await squid?.stop();
  });
  const withProxy = (username: string, password: string) =>
    base({ hosts: { ...hosts, "squid.corp.test": "127.0.0.1" }, upstream_proxy: { host: "squid.corp.test", port: squid.port, username, password } });

  test("right credentials: every check passes through the proxy, and squid saw host names", async () => {
    await using gw = await startGateway(withProxy("alice", "Right-Pass-1"));
    const d = await diagnose(gw, { target: `${EXTRA}:${origin.port}` });
    expect(d.connectivity).toMatchObject({ via: "upstream", upstream_proxy: `squid.corp.test:${squid.port}`, ok: true });
    expect(d.connectivity.results).toHaveLength(5);
    const log = readFileSync(join(squid.dir, "access.log"), "utf8");
    for (const h of [...POD_HOSTS, EXTRA]) expect(log).toContain(`CONNECT ${h}:${origin.port}`);
  });

  test("wrong credentials: each check fails at the upstream proxy with 407 and says so; the password is nowhere", async () => {
    await using gw = await startGateway(withProxy("CORP\\alice", "Wrong-Pass-2"));
    const r = await gw.admin("/api/diagnostics", { method: "POST" });
    const text = await r.text();
    expect(text).not.toContain("Wrong-Pass-2");
    const d = JSON.parse(text);
    expect(d.connectivity).toMatchObject({ ok: false, failed: 4 });
    for (const x of d.connectivity.results)
      expect(x).toMatchObject({
        ok: false,
        hop: "upstream-proxy",
        status: 407,
        reason: `upstream proxy squid.corp.test:${squid.port} refused the Basic credentials for CORP\\alice (407); check upstream_proxy.username and upstream_proxy.password`,
      });
    const cli = await agate(gw, ["diag", "--out", join(gw.dir, "d.age")]);
    expect(cli.code).toBe(1);
    expect(cli.out).toContain("FAIL (upstream-proxy 407)");
    expect(cli.out).toContain("refused the Basic credentials for CORP\\alice");
    expect(cli.out + cli.err).not.toContain("Wrong-Pass-2");
    expect(JSON.stringify(gw.lines())).not.toContain("Wrong-Pass-2");
  }, 60_000);
});

const noNtlm = squidNtlmMissing();
if (noNtlm) console.warn(`[skip] diagnostics through NTLM squid: ${noNtlm}`);
describe.skipIf(!!noNtlm)("through squid with NTLM (ntlm_fake_auth)", () => {
  let squid: Squid;
  beforeAll(async () => {
    squid = await startSquid(hosts, "unused", "unused", { auth: "ntlm" });
  });
  afterAll(async () => {
    await squid?.stop();
  });
  test("the NTLM handshake on each CONNECT, then TLS: every check passes; squid logged our user", async () => {
    await using gw = await startGateway(base({ upstream_proxy: { host: "127.0.0.1", port: squid.port, auth: "ntlm", username: "CORP\\ntlmdiag", password: "Ntlm-Pass-3" } }));
    const d = await diagnose(gw);
    expect(d.connectivity).toMatchObject({ via: "upstream", ok: true, failed: 0 });
    expect(d.connectivity.results).toHaveLength(4);
    const log = readFileSync(join(squid.dir, "access.log"), "utf8");
    expect(log).toMatch(/TCP_TUNNEL\/200 .*CONNECT qagpublic\.qg1\.apps\.qualysksa\.com:\d+ \S*ntlmdiag /);
  });
});

const CHROMIUM = "/usr/bin/chromium";
const noUi = existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing`;
describe.skipIf(!!noUi)("dashboard", () => {
  test("the target field goes into the run; the page shows the failed hop and the age command beside the password", async () => {
    const pw = await import("playwright-core");
    await using gw = await startGateway(base());
    const browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu"], timeout: 30_000 });
    try {
      const page = await browser.newPage();
      page.setDefaultTimeout(20_000);
      await page.goto(`http://127.0.0.1:${gw.ports.admin}/`);
      await page.fill("#token", gw.token);
      await page.click("#login-btn");
      await page.waitForFunction(() => !!(globalThis as any).document.querySelector("#health")?.textContent);
      await page.click('nav button[data-tab="diag"]');
      const closed = freePort();
      await page.fill("#diag-target", `127.0.0.1:${closed}`);
      await page.click("#diag-run");
      await page.waitForSelector("#diag-cmd");
      const out = (await page.textContent("#diag-out"))!;
      expect(out).toContain("1 failed");
      expect(out).toContain(`127.0.0.1:${closed}`);
      expect(out).toContain("tcp: ");
      expect(out).not.toContain("cask");
      expect(await page.textContent("#diag-cmd")).toMatch(/^age -d -o agate-diag-[\w-]+\.json\.gz agate-diag-[\w-]+\.age && gunzip /);
      expect((await page.textContent("#diag-pass"))!).toMatch(/^[2-9A-Z-]{49}$/);
    } finally {
      await browser.close();
    }
  }, 90_000);
});
