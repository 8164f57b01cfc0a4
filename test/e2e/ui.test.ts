/**
 * The web UI in Debian's chromium, headless, driven by playwright-core: sign in with the token, see the counters
 * move after traffic through the proxy port, upload a certificate chain (made with openssl), change the cache port
 * through the wizard and see the API's message for port 22 next to the field. Screenshots go to test/artifacts/;
 * the dashboard's is copied to docs/dashboard.png for the README when UPDATE_SCREENSHOTS=1.
 * Chromium is installed with apt-get when missing; the test is skipped, saying why, only when that is impossible.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { ROOT, curl, startGateway, type Gateway } from "../peers/gateway";
import { makeCustomerChain } from "../peers/customer-chain";
import { freePort } from "../peers/helpers";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(ROOT, "test/artifacts");
const HOST = "qagpublic.qg1.apps.qualys.com";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

function ensureChromium(): string | null {
  if (existsSync(CHROMIUM)) return null;
  const root = process.getuid?.() === 0;
  const sudo = root ? [] : Bun.which("sudo") ? ["sudo", "-n"] : null;
  if (!sudo) return `${CHROMIUM} is missing and there is no root to install it (apt-get install -y chromium)`;
  console.error("[ui.test] installing chromium from Debian (apt-get install -y chromium)…");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  Bun.spawnSync([...sudo, "apt-get", "update", "-qq"], { env, stdout: "ignore", stderr: "inherit" });
  const r = Bun.spawnSync([...sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], { env, stdout: "ignore", stderr: "pipe" });
  if (existsSync(CHROMIUM)) return null;
  return `could not install chromium: ${r.stderr.toString().trim().split("\n").slice(-2).join(" ")}`;
}

let skip: string | null = ensureChromium();
let pw: typeof import("playwright-core") | null = null;
if (!skip) {
  try {
    pw = await import("playwright-core");
  } catch (e) {
    skip = `playwright-core is not installed (npm install): ${(e as Error).message}`;
  }
}
if (skip) console.error(`[ui.test] SKIPPED: ${skip}`);

const pki = makeTestPki([HOST]);
let origin: Origin;
let gw: Gateway;
let profile: string;

beforeAll(async () => {
  if (skip) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  origin = startTlsOrigin(pki);
  gw = await startGateway({ destinations: { ports: [origin.port] }, hosts: { [HOST]: "127.0.0.1" } });
  profile = mkdtempSync(join(tmpdir(), "agate-chromium-"));
});
afterAll(async () => {
  await gw?.stop();
  origin?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

describe.skipIf(!!skip)("web UI in chromium", () => {
  test("sign in, counters move with traffic, upload a chain, the wizard shows port 22's message and saves a cache port", async () => {
    const ctx = await pw!.chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    });
    try {
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      page.setDefaultTimeout(15_000);
      const consoleErrors: string[] = [];
      // The refusals this test provokes show as "Failed to load resource"; anything else is a bug in the page.
      page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && consoleErrors.push(m.text()));
      page.on("pageerror", (e) => consoleErrors.push(String(e)));
      await page.goto(`http://127.0.0.1:${gw.ports.admin}/`);

      // Sign in: a wrong token is refused on the page, the right one opens the dashboard.
      await page.fill("#token", "wrong-token-0123456789");
      await page.click("#login-btn");
      await page.waitForFunction(() => document.querySelector("#login-err")!.textContent!.includes("token"));
      await page.fill("#token", gw.token);
      await page.click("#login-btn");
      await page.waitForFunction(() => document.querySelector("#health")?.textContent === "Normal");
      expect(await page.textContent("#p-proxy")).toContain(String(gw.ports.proxy));
      const before = Number((await page.textContent("#c-total-tunnels"))!.replace(/,/g, ""));

      // Traffic through the proxy port: the counters move without reloading the page.
      for (let i = 0; i < 3; i++) {
        const r = await curl(["-x", `http://127.0.0.1:${gw.ports.proxy}`, "--cacert", pki.caPath, origin.url(HOST, `/ui-${i}`)]);
        expect(r.stdout).toBe(`hello from origin /ui-${i}\n`);
      }
      await page.waitForFunction((b) => Number(document.querySelector("#c-total-tunnels")!.textContent!.replace(/,/g, "")) >= b + 3, before, { timeout: 15_000 });
      await page.waitForFunction(() => document.querySelector("#c-unique-ips")!.textContent !== "0");
      await page.waitForSelector("#conn-graph path");
      // The token lives in this tab's session: a reload stays signed in.
      await page.reload();
      await page.waitForFunction(() => document.querySelector("#health")?.textContent === "Normal");
      await page.waitForFunction(() => Number(document.querySelector("#c-total-tunnels")!.textContent!.replace(/,/g, "")) >= 3);
      // the screenshot shows the drawn graph, not a blank one
      await page.waitForSelector("#conn-graph path");
      await page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });
      mkdirSync(join(ROOT, "docs"), { recursive: true });
      // The README's picture is refreshed on request only: a test run must not rewrite tracked files.
      if (process.env.UPDATE_SCREENSHOTS === "1") copyFileSync(join(ARTIFACTS, "dashboard.png"), join(ROOT, "docs/dashboard.png"));

      // Certificates: a passphrase key is refused next to the key field; a good chain shows up in the list.
      const chain = makeCustomerChain("UI Corp Issuing CA");
      const enc = join(chain.dir, "enc.pem");
      Bun.spawnSync(["openssl", "pkcs8", "-topk8", "-in", join(chain.dir, "inter.key"), "-passout", "pass:x", "-out", enc]);
      await page.click('nav button[data-tab="certs"]');
      await page.waitForSelector('#cert-rows tr[data-id="appliance"]');
      await page.setInputFiles("#u-root", chain.root);
      await page.setInputFiles("#u-inter", chain.intermediate);
      await page.setInputFiles("#u-key", enc);
      await page.click("#upload-btn");
      await page.waitForFunction(() => document.querySelector('[data-err="key"]')!.textContent!.includes("passphrase"));
      expect(await page.getAttribute("#u-key", "class")).toContain("bad");
      await page.fill("#u-cn", "UI uploaded chain");
      await page.fill("#u-desc", "uploaded from chromium");
      await page.setInputFiles("#u-key", chain.key);
      await page.click("#upload-btn");
      await page.waitForFunction(() => document.querySelector("#upload-ok")!.textContent!.includes("UI uploaded chain"));
      await page.waitForFunction(() => document.querySelector("#cert-rows")!.textContent!.includes("uploaded from chromium"));
      expect(await page.textContent("#cert-rows")).toContain("customer");
      await page.screenshot({ path: join(ARTIFACTS, "certificates.png"), fullPage: true });

      // The wizard: port 22 is refused with the API's message next to the cache port; a free port is saved.
      await page.click('nav button[data-tab="config"]');
      await page.waitForSelector('.wstep[data-step="1"]:not(.hidden)');
      await page.click("#w-next");
      await page.waitForSelector('.wstep[data-step="2"]:not(.hidden)');
      await page.check("#w-cache-enabled");
      await page.fill("#w-cache-port", "22");
      await page.click("#w-next");
      await page.waitForFunction(() => document.querySelector('[data-field-err="cache.port"]')!.textContent!.length > 0);
      expect(await page.textContent('[data-field-err="cache.port"]')).toBe("cache.port: port 22 is reserved");
      expect(await page.isVisible('.wstep[data-step="2"]')).toBe(true); // still on step 2
      expect(await page.getAttribute("#w-cache-port", "class")).toContain("bad");
      await page.screenshot({ path: join(ARTIFACTS, "wizard-port-22.png"), fullPage: true });

      const port = freePort();
      await page.fill("#w-cache-port", String(port));
      await page.click("#w-next");
      await page.waitForSelector('.wstep[data-step="3"]:not(.hidden)');
      expect(await page.textContent('[data-field-err="cache.port"]')).toBe("");
      await page.selectOption("#w-min-tls", "1.3");
      await page.click("#w-save");
      await page.waitForFunction(() => document.querySelector("#w-done")!.textContent!.includes("Saved"));
      const cfg = await (await gw.admin("/api/config")).json();
      expect(cfg.cache).toMatchObject({ enabled: true, port, min_tls: "1.3" });
      const st = await (await gw.admin("/api/status")).json();
      expect(st.ports.cache).toBe(port);
      await page.screenshot({ path: join(ARTIFACTS, "wizard-saved.png"), fullPage: true });

      // Back on the appliance page, cache mode shows as on with its port.
      await page.click('nav button[data-tab="appliance"]');
      await page.waitForFunction((p) => document.querySelector("#p-cache")!.textContent!.startsWith(String(p)), port);
      expect(await page.textContent("#m-cache")).toBe("on");
      expect(consoleErrors).toEqual([]);
    } finally {
      await ctx.close();
    }
  }, 120_000);

  test("the Cache tab: prefill from the page shows the job's progress, the object is then a hit; purge from the page", async () => {
    // a cache-mode gateway of its own, trusting the test origin, with an object the origin lets the cache keep
    const cacheOrigin = startTlsOrigin(pki, { "/ui-artifact": () => new Response("artifact for the UI\n", { headers: { "cache-control": "max-age=600" } }) });
    await using cgw = await startGateway({
      cache: { enabled: true, port: 0, listen: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
      destinations: { ports: [cacheOrigin.port] },
      hosts: { [HOST]: "127.0.0.1" },
    });
    const cprofile = mkdtempSync(join(tmpdir(), "agate-chromium-"));
    const ctx = await pw!.chromium.launchPersistentContext(cprofile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 1000 }, timeout: 30_000 });
    try {
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      page.setDefaultTimeout(15_000);
      const consoleErrors: string[] = [];
      page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && consoleErrors.push(m.text()));
      page.on("pageerror", (e) => consoleErrors.push(String(e)));
      await page.goto(`http://127.0.0.1:${cgw.ports.admin}/`);
      await page.fill("#token", cgw.token);
      await page.click("#login-btn");
      await page.waitForFunction(() => document.querySelector("#health")?.textContent !== "…");
      await page.click('nav button[data-tab="cache"]');
      await page.waitForFunction(() => document.querySelector("#k-where")!.textContent!.includes("cache"));

      // prefill: the job's row shows 1 done, and the store holds the object
      const url = cacheOrigin.url(HOST, "/ui-artifact");
      await page.fill("#k-prefill-urls", url);
      await page.click("#k-prefill");
      await page.waitForSelector('#k-jobs tr[data-finished="true"]');
      expect(await page.textContent('#k-jobs tr[data-finished="true"] .k-done')).toBe("1");
      await page.waitForFunction(() => document.querySelector("#k-entries")!.textContent === "1");
      expect(await page.textContent("#k-largest")).toContain("/ui-artifact");
      const ca = join(cgw.dir, "agate-ca.pem");
      await Bun.write(ca, await (await fetch(`http://127.0.0.1:${cgw.ports.admin}/ca.pem`)).text());
      const hit = await curl(["-x", `http://127.0.0.1:${cgw.ports.cache}`, "--cacert", ca, url]);
      expect(hit.stdout).toBe("artifact for the UI\n");
      expect(cacheOrigin.hits.get("/ui-artifact")).toBe(1); // the agent's request was a hit
      await page.screenshot({ path: join(ARTIFACTS, "cache-tab.png"), fullPage: true });

      // purge: a bad URL is refused on the page; the object's URL is purged, and the store is empty
      await page.fill("#k-purge-value", "not a url");
      await page.click("#k-purge");
      await page.waitForFunction(() => document.querySelector("#k-purge-err")!.textContent!.includes("URL"));
      await page.fill("#k-purge-value", url);
      await page.click("#k-purge");
      await page.waitForFunction(() => document.querySelector("#k-purge-ok")!.textContent!.startsWith("Purged 1 object"));
      await page.waitForFunction(() => document.querySelector("#k-entries")!.textContent === "0");
      // "everything" asks first
      page.once("dialog", (d) => void d.accept());
      await page.selectOption("#k-purge-kind", "all");
      await page.click("#k-purge");
      await page.waitForFunction(() => document.querySelector("#k-purge-ok")!.textContent!.startsWith("Purged 0 objects"));
      await curl(["-x", `http://127.0.0.1:${cgw.ports.cache}`, "--cacert", ca, url]);
      expect(cacheOrigin.hits.get("/ui-artifact")).toBe(2); // after the purge the origin is asked again
      expect(consoleErrors).toEqual([]);
    } finally {
      await ctx.close();
      cacheOrigin.stop();
      rmSync(cprofile, { recursive: true, force: true });
    }
  }, 120_000);
});
