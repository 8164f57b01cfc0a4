/**
 * store/ca-msi.ts: the WiX source for a CA's package (stable ids per CA, the certutil commands, nothing from the CA
 * name reaching MSI formatted text), and the reason given when wixl is missing. The package itself is checked
 * with msitools in test/e2e/ca-msi.test.ts.
 */
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { certutilCommands, loadOrBuildCaMsi, makeCaWxs, uuidFrom } from "../../src/store/ca-msi";

const DER = Uint8Array.of(0x30, 0x82, 0x01, 0x77, 1, 2, 3);

test("wixl missing: no package, and a reason that names the Debian package to install", async () => {
  const dir = mkdtempSync(join(tmpdir(), "agate-msi-"));
  const r = await loadOrBuildCaMsi(dir, { der: DER, commonName: "x" }, "/nonexistent/wixl");
  expect(r).toEqual({ unavailable: expect.stringContaining("apt-get install msitools") });
  expect(existsSync(join(dir, "ca", "msi", `${createHash("sha256").update(DER).digest("hex")}.msi`))).toBe(false);
});

test("the product, upgrade and component ids are stable per CA and differ between CAs (side by side during a rollover)", () => {
  const a = makeCaWxs({ der: DER, commonName: "A" });
  expect(makeCaWxs({ der: DER, commonName: "A" })).toBe(a);
  const b = makeCaWxs({ der: Uint8Array.of(9), commonName: "A" });
  const ids = (w: string) => [...w.matchAll(/(?:Id|UpgradeCode|Guid)="([0-9A-F-]{36})"/g)].map((m) => m[1]);
  expect(ids(a).length).toBe(3);
  for (const id of ids(a)) expect(ids(b)).not.toContain(id);
  expect(uuidFrom("s", "product")).toMatch(/^[0-9A-F]{8}-[0-9A-F]{4}-8[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
  expect(a).not.toContain("MajorUpgrade");
});

test("the certutil commands: add the installed DER to Root; remove by SHA-1 thumbprint", () => {
  const c = certutilCommands(DER);
  expect(c.add).toBe('-addstore -f Root "[INSTALLDIR]agate-ca.cer"');
  expect(c.remove).toBe(`-delstore Root ${createHash("sha1").update(DER).digest("hex")}`);
  const w = makeCaWxs({ der: DER, commonName: "A" });
  expect(w).toContain('ExeCommand="-addstore -f Root &#34;[INSTALLDIR]agate-ca.cer&#34;" Execute="deferred" Impersonate="no"');
});

test("a CA name with markup or MSI formatting characters stays inert", () => {
  const w = makeCaWxs({ der: DER, commonName: `<x a="1"> [SystemFolder] {y} & z` });
  expect(w).not.toContain("<x");
  expect(w).not.toContain("[SystemFolder] ");
  expect(w).toContain("_SystemFolder_ _y_ &#38; z");
});
