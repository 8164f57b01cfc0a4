/**
 * `GET /ca.msi` (issue 11, store/ca-msi.ts): a Windows Installer package built with Debian's wixl that puts the active
 * CA into the machine's Trusted Root store. curl fetches it from the cache port, the proxy port and the management
 * port (no token); msitools reads it back: the product, the CA file in the File table and in the embedded cabinet
 * (byte-identical to /ca.der), the deferred elevated certutil actions and their sequence. Built once per CA and kept
 * in data_dir. msiexec cannot run here (no Windows): the install itself is not tested.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { curl, startGateway, type Gateway } from "../peers/gateway";

let gw: Gateway;
beforeAll(async () => {
  gw = await startGateway({ cache: { enabled: true, port: 0 } });
});
afterAll(async () => {
  await gw?.stop();
});

const run = (cmd: string[], cwd?: string) => {
  const p = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
};
/** msiinfo export's rows (after the 3 header lines: names, types, table name) as objects */
function table(msi: string, name: string): Record<string, string>[] {
  const r = run(["msiinfo", "export", msi, name]);
  expect(r.code).toBe(0);
  const lines = r.out.split(/\r?\n/).filter((l) => l.length > 0);
  const cols = lines[0]!.split("\t");
  return lines.slice(3).map((l) => Object.fromEntries(l.split("\t").map((v, i) => [cols[i]!, v])));
}

test("curl gets /ca.msi from the cache port; msiinfo shows the product, the CA file and the certutil actions", async () => {
  const msi = join(gw.dir, "from-cache.msi");
  const der = join(gw.dir, "ca.der");
  const got = await curl(["-f", "-D", "-", "-o", msi, `http://127.0.0.1:${gw.ports.cache}/ca.msi`]);
  expect(got.stderr).toBe("");
  expect(got.stdout.toLowerCase()).toContain("content-type: application/x-msi");
  expect(got.stdout.toLowerCase()).toContain('content-disposition: attachment; filename="agate-ca.msi"');
  expect((await curl(["-f", "-o", der, `http://127.0.0.1:${gw.ports.cache}/ca.der`])).code).toBe(0);
  const derBytes = readFileSync(der);
  const sha256 = createHash("sha256").update(derBytes).digest("hex");
  const sha1 = createHash("sha1").update(derBytes).digest("hex");

  const tables = run(["msiinfo", "tables", msi]);
  expect(tables.code).toBe(0);
  for (const t of ["File", "Component", "CustomAction", "InstallExecuteSequence", "Property", "Media"]) expect(tables.out.split("\n")).toContain(t);

  const props = Object.fromEntries(table(msi, "Property").map((r) => [r.Property, r.Value]));
  expect(props.ALLUSERS).toBe("1"); // per-machine: the Trusted Root store of the machine, not of the user
  expect(props.ProductName).toStartWith("agate CA agate appliance CA");
  expect(props.AGATE_CA_SHA256).toBe(sha256);
  expect(props.ProductCode).toMatch(/^\{[0-9A-F-]{36}\}$/);

  const files = table(msi, "File");
  expect(files.map((f) => [f.File, f.FileName, f.FileSize])).toEqual([["AgateCaCer", "agate-ca.cer", String(derBytes.byteLength)]]);

  const ca = Object.fromEntries(table(msi, "CustomAction").map((r) => [r.Action, r]));
  expect(ca.SetCertutil).toMatchObject({ Type: "51", Source: "CERTUTIL", Target: "[SystemFolder]certutil.exe" });
  // 3122 = 50 (exe named by a property) + 0x400 deferred + 0x800 no impersonation: runs as LocalSystem, elevated
  expect(ca.AddCaToRoot).toMatchObject({ Type: "3122", Source: "CERTUTIL", Target: '-addstore -f Root "[INSTALLDIR]agate-ca.cer"' });
  // + 0x40: a certificate removed by hand does not block the uninstall
  expect(ca.RemoveCaFromRoot).toMatchObject({ Type: "3186", Source: "CERTUTIL", Target: `-delstore Root ${sha1}` });

  const seq = Object.fromEntries(table(msi, "InstallExecuteSequence").map((r) => [r.Action, r]));
  const at = (a: string) => Number(seq[a]!.Sequence);
  expect(seq.AddCaToRoot!.Condition).toBe('NOT REMOVE~="ALL"');
  expect(seq.RemoveCaFromRoot!.Condition).toBe('REMOVE~="ALL"');
  // deferred actions must sit between InstallInitialize and InstallFinalize; the file must be there first
  expect(at("AddCaToRoot")).toBeGreaterThan(at("InstallFiles"));
  expect(at("AddCaToRoot")).toBeLessThan(at("InstallFinalize"));
  expect(at("RemoveCaFromRoot")).toBeGreaterThan(at("InstallInitialize"));
  expect(at("RemoveCaFromRoot")).toBeLessThan(at("RemoveFiles"));
  expect(at("SetCertutil")).toBeLessThan(at("InstallInitialize"));

  // the embedded cabinet's file is /ca.der, byte for byte
  const out = join(gw.dir, "extracted");
  mkdirSync(out);
  const x = run(["msiextract", "-C", out, msi]);
  expect(x.code).toBe(0);
  expect(x.out.trim()).toEndWith("agate-ca.cer");
  const extracted = readFileSync(join(out, x.out.trim().split("\n").pop()!));
  expect(extracted.equals(derBytes)).toBe(true);
});

test("the proxy port and the management port (no token) give the same package", async () => {
  const a = new Uint8Array(await (await fetch(`http://127.0.0.1:${gw.ports.cache}/ca.msi`)).arrayBuffer());
  const rp = await fetch(`http://127.0.0.1:${gw.ports.proxy}/ca.msi`);
  const rm = await fetch(`http://127.0.0.1:${gw.ports.admin}/ca.msi`);
  expect([rp.status, rm.status]).toEqual([200, 200]);
  expect(rm.headers.get("content-type")).toBe("application/x-msi");
  expect(Buffer.from(await rp.arrayBuffer()).equals(Buffer.from(a))).toBe(true);
  expect(Buffer.from(await rm.arrayBuffer()).equals(Buffer.from(a))).toBe(true);
});

test("built once per CA, kept in data_dir by fingerprint, not rebuilt per request", async () => {
  const dir = join(gw.dir, "data", "ca", "msi");
  const der = new Uint8Array(await (await fetch(`http://127.0.0.1:${gw.ports.cache}/ca.der`)).arrayBuffer());
  const name = `${createHash("sha256").update(der).digest("hex")}.msi`;
  expect(readdirSync(dir)).toEqual([name]);
  const before = statSync(join(dir, name)).mtimeMs;
  for (let i = 0; i < 3; i++) expect((await fetch(`http://127.0.0.1:${gw.ports.proxy}/ca.msi`)).status).toBe(200);
  expect(readdirSync(dir)).toEqual([name]);
  expect(statSync(join(dir, name)).mtimeMs).toBe(before);
});

test("the /ca page links the package and gives the msiexec command", async () => {
  const page = await (await fetch(`http://127.0.0.1:${gw.ports.cache}/ca`)).text();
  expect(page).toContain('<a href="ca.msi">ca.msi</a>');
  expect(page).toContain("msiexec /i agate-ca.msi /qn");
  expect(existsSync("/usr/bin/wixl")).toBe(true);
});
