/**
 * The wizard in Debian's chromium (playwright-core), issue 10: an emptied port field is refused next to the field
 * (it used to become port 0, a random port at every start); an error from an earlier attempt is gone after a
 * successful save; the TLS versions offered are the ones the gateway accepts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startGateway, type Gateway } from "../peers/gateway";
import { freePort } from "../peers/helpers";
import { OFFERED_TLS_VERSIONS } from "../../src/core/config";

const CHROMIUM = "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const skip = existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing (apt-get install chromium)`;
if (skip) console.error(`[config-ui.test] SKIPPED: ${skip}`);

let gw: Gateway;
let profile: string;
beforeAll(async () => {
  if (skip) return;
  gw = await startGateway({ proxy: { port: freePort() }, admin: { port: freePort() } }); // fixed: parseConfig then refuses cache.port = admin.port
  profile = mkdtempSync(join(tmpdir(), "agate-chromium-"));
});
afterAll(async () => {
  await gw?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

describe.skipIf(!!skip)("the wizard", () => {
  test("an emptied port is refused at the field, not saved as port 0; a successful save clears the earlier error; TLS 1.0–1.3 offered", async () => {
    const pw = await import("playwright-core");
    const ctx = await pw.chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30_000 });
    try {
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      page.setDefaultTimeout(15_000);
      await page.goto(`http://127.0.0.1:${gw.ports.admin}/`);
      await page.fill("#token", gw.token);
      await page.click("#login-btn");
      await page.waitForFunction(() => !!document.querySelector("#health")?.textContent);
      await page.click('nav button[data-tab="config"]');
      await page.waitForSelector('.wstep[data-step="1"]:not(.hidden)');
      await page.waitForFunction(() => (document.querySelector("#w-proxy-port") as HTMLInputElement).value !== "");

      // an emptied field: refused next to it, still on step 1
      await page.fill("#w-proxy-port", "");
      await page.click("#w-next");
      await page.waitForFunction(() => document.querySelector('[data-field-err="proxy.port"]')!.textContent!.length > 0);
      expect(await page.textContent('[data-field-err="proxy.port"]')).toContain("proxy.port");
      expect(await page.isVisible('.wstep[data-step="1"]')).toBe(true);
      await page.fill("#w-proxy-port", String(gw.ports.proxy));
      await page.click("#w-next");
      await page.waitForSelector('.wstep[data-step="2"]:not(.hidden)');

      // an error with no field of its own (the cache port is the management port's) shows in the general line…
      await page.check("#w-cache-enabled");
      await page.fill("#w-cache-port", String(gw.ports.admin));
      await page.click("#w-next");
      await page.waitForFunction(() => document.querySelector("#w-general-err")!.textContent!.includes("admin.port"));
      // …and is gone once the next attempt works and the save succeeds
      await page.fill("#w-cache-port", String(freePort()));
      await page.click("#w-next");
      await page.waitForSelector('.wstep[data-step="3"]:not(.hidden)');
      const offered = await page.$$eval("#w-min-tls option", (os) => os.map((o) => (o as HTMLOptionElement).value));
      expect(offered).toEqual([...OFFERED_TLS_VERSIONS]);
      await page.click("#w-save");
      await page.waitForFunction(() => document.querySelector("#w-done")!.textContent!.includes("Saved"));
      expect(await page.textContent("#w-general-err")).toBe("");
      const cfg = await (await gw.admin("/api/config")).json();
      expect(cfg.proxy.port).toBe(gw.ports.proxy);
      expect(cfg.cache.enabled).toBe(true);
    } finally {
      await ctx.close();
    }
  }, 90_000);
});
