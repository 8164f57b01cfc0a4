/**
 * The dashboard's health in Debian's chromium (playwright-core), issue 10: "QAG Status: Connected" from the platform
 * link, the maintenance button, and — the defect — after the gateway has stopped the page used to keep showing
 * "Normal"; now it says "gateway unreachable since …" and the badge stops claiming a health it cannot know.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeTestPki } from "../peers/test-ca";
import { startTlsOrigin, type Origin } from "../peers/tls-origin";
import { ROOT, startGateway, type Gateway } from "../peers/gateway";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(ROOT, "test/artifacts");
const POD = "qg1.apps.qualys.com";
const HOST = `qagpublic.${POD}`;
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let skip: string | null = existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing (apt-get install -y chromium)`;
let pw: typeof import("playwright-core") | null = null;
if (!skip) {
  try {
    pw = await import("playwright-core");
  } catch (e) {
    skip = `playwright-core is not installed: ${(e as Error).message}`;
  }
}
if (skip) console.error(`[dashboard-health.test] SKIPPED: ${skip}`);

const pki = makeTestPki([HOST]);
let origin: Origin;
let profile: string;

beforeAll(async () => {
  if (skip) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  origin = startTlsOrigin(pki);
  profile = mkdtempSync(join(tmpdir(), "agate-chromium-"));
});
afterAll(async () => {
  origin?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** A signed-in page on a fresh chromium context; `run` drives it. */
async function withPage(gw: Gateway, run: (page: import("playwright-core").Page) => Promise<void>) {
  const ctx = await pw!.chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 900 }, timeout: 30_000 });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.setDefaultTimeout(15_000);
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    page.on("dialog", (d) => void d.accept());
    await page.goto(`http://127.0.0.1:${gw.ports.admin}/`);
    await page.fill("#token", gw.token);
    await page.click("#login-btn");
    await page.waitForFunction(() => document.querySelector("#health")?.textContent === "Normal");
    await run(page);
    expect(pageErrors).toEqual([]);
  } finally {
    await ctx.close();
  }
}

describe.skipIf(!!skip)("dashboard health in chromium", () => {
  test("after the gateway stops the page says 'gateway unreachable since …', not 'Normal'", async () => {
    const gw = await startGateway({});
    try {
      await withPage(gw, async (page) => {
        const stoppedAt = Date.now();
        await gw.stop();
        await page.waitForFunction(() => document.querySelector("#health")?.textContent !== "Normal", undefined, { timeout: 15_000 });
        expect(await page.textContent("#health")).toBe("Unreachable");
        const text = (await page.textContent("#unreachable"))!;
        expect(text).toContain("gateway unreachable since");
        const iso = /\((\d{4}-\d\d-\d\dT[^)]+Z)\)/.exec(text)?.[1];
        expect(Date.parse(iso!)).toBeGreaterThanOrEqual(stoppedAt - 1000);
        await page.screenshot({ path: join(ARTIFACTS, "dashboard-unreachable.png"), fullPage: true });
      });
    } finally {
      await gw.stop();
    }
  }, 90_000);

  for (const t of ["certs", "logs"]) {
    test(`on the ${t} tab too: the banner and the badge say unreachable (it used to show only on the Appliance tab)`, async () => {
      const gw = await startGateway({});
      try {
        await withPage(gw, async (page) => {
          await page.click(`nav button[data-tab="${t}"]`);
          await page.waitForFunction((tt) => !document.querySelector(`section[data-tab="${tt}"]`)?.classList.contains("hidden"), t);
          expect(await page.isHidden('section[data-tab="appliance"]')).toBe(true);
          await gw.stop();
          await page.waitForSelector("#unreachable:not(.hidden)", { timeout: 15_000 });
          expect(await page.textContent("#unreachable")).toContain("gateway unreachable since");
          expect(await page.isVisible("#unreachable")).toBe(true);
          expect(await page.textContent("#health")).toBe("Unreachable");
        });
      } finally {
        await gw.stop();
      }
    }, 90_000);
  }

  test("QAG Status: Connected with the hosts; the maintenance button turns health Down and back", async () => {
    await using gw = await startGateway({
      platform: { pod: POD, probe_interval_s: 1 },
      destinations: { ports: [origin.port] },
      hosts: { [HOST]: "127.0.0.1" },
      tls: { upstream_ca: pki.caPath },
    });
    await withPage(gw, async (page) => {
      await page.waitForFunction(() => document.querySelector("#qag-status")?.textContent === "QAG Status: Connected");
      expect(await page.textContent("#qag-hosts")).toContain(HOST);
      expect(await page.textContent("#qag-on")).toContain("connected on");
      await page.click("#maint-btn");
      await page.waitForFunction(() => document.querySelector("#health")?.textContent === "Down");
      expect(await page.textContent("#reasons")).toContain("maintenance");
      expect(await page.textContent("#maint-btn")).toBe("Maintenance off");
      expect((await fetch(`http://127.0.0.1:${gw.ports.proxy}/healthz`)).status).toBe(503);
      await page.click("#maint-btn");
      await page.waitForFunction(() => document.querySelector("#health")?.textContent === "Normal");
      expect(await page.isHidden("#unreachable")).toBe(true);
    });
  }, 90_000);
});
