/**
 * @module `GET /ca.msi` (issue 11): a Windows Installer package that puts a CA certificate into the machine's
 * Trusted Root store, for mass deployment (`msiexec /i agate-ca.msi /qn`, GPO, SCCM), built with Debian's `wixl`
 * (package msitools). Built once per CA and kept as `<data_dir>/ca/msi/<sha256 of the DER>.msi`; a CA that changes
 * gets a new file, a request never builds. When wixl is missing the answer says which package to install.
 *
 * What wixl can build, measured with msitools 0.101 on Debian (`wixl -o ca.msi ca.wxs`, then `msiinfo export ca.msi
 * CustomAction` / `InstallExecuteSequence`, `msiextract ca.msi`):
 * - WiX's `<iis:Certificate>` (the IIS extension's CertificateStore action) does not exist in wixl; its
 *   `visit_custom_action` (tools/wixl/builder.vala) knows DllEntry, JScriptCall, ExeCommand with Property (type 50)
 *   or FileKey (type 18), and Property+Value (type 51) — not ExeCommand with Directory (type 34). So the package
 *   installs the DER file and runs `certutil` through a type-50 action: a type-51 action sets CERTUTIL to
 *   `[SystemFolder]certutil.exe` (type 51 in the table), then a deferred, no-impersonate action (type 3122 =
 *   50 + InScript 0x400 + NoImpersonate 0x800: it runs as LocalSystem, elevated) runs
 *   `-addstore -f Root "[INSTALLDIR]agate-ca.cer"` after InstallFiles; uninstall runs `-delstore Root <SHA-1>`
 *   after InstallInitialize (type 3186: the same + Return=ignore 0x40, so a certificate already removed by hand does
 *   not block the uninstall).
 * - `Execute="rollback"` is not honoured by wixl 0.101 (it wrote type 2162: no InScript bit, i.e. an immediate
 *   action), so there is no rollback action: an install that fails after AddCa leaves the certificate in Root.
 * - `InstallPrivileges` is not a wixl attribute (a GLib warning); `InstallScope="perMachine"` writes ALLUSERS=1 to
 *   the Property table (a second ALLUSERS Property makes wixl fail with "libmsi_query_execute").
 * - wixl's `After`/`Before` are loose: `Before="RemoveFiles"` put a deferred action at 1002 (before
 *   InstallInitialize, where deferred actions are not allowed) and `After="InstallInitialize"` next to another
 *   action gave 4002 (after RemoveFiles). Explicit `Sequence` numbers are kept as written: 1550 (after
 *   InstallInitialize 1500, before ProcessComponents 1600) and 4050 (after InstallFiles 4000).
 * - One build took 17 ms (`time wixl …`, 10.7 kB for a P-256 CA); the cabinet's file is byte-identical to the DER.
 * msiexec itself cannot run here (no Windows): the package's tables are checked, the install is not.
 *
 * Each CA is its own product (ProductCode and UpgradeCode derived from its fingerprint, no MajorUpgrade), so during a
 * rollover the next CA's package installs beside the current one instead of upgrading it away (which would run the
 * old package's uninstall and take the current CA out of Root before the switch).
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentCaMsi } from "../core/ca-page";

/** The package for one CA, or why there is none (the route answers 503 with this reason). */
export type CaMsi = AgentCaMsi;

export const WIXL = "/usr/bin/wixl";
/** wixl on a 10 kB package takes ~20 ms; a build that takes this long is stuck. */
const BUILD_TIMEOUT_MS = 20_000;

/** A name-based UUID (RFC 9562 §5.8, v8 layout) from the CA's fingerprint and a label: stable across rebuilds. */
export function uuidFrom(seed: string, label: string): string {
  const h = createHash("sha256").update(`agate-ca-msi\0${label}\0${seed}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex").toUpperCase();
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

const xml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
/** MSI formatted text treats [ ] { } specially; a CN goes into plain properties only, but keep it inert anyway. */
const plain = (s: string) => s.replace(/[\x00-\x1f\x7f[\]{}]/g, "_").slice(0, 60);

export type CaMsiInput = { der: Uint8Array; commonName: string };

/** The certutil command lines the package runs (also what the test reads back from the CustomAction table). */
export function certutilCommands(der: Uint8Array): { add: string; remove: string; thumbprint: string } {
  const thumbprint = createHash("sha1").update(der).digest("hex");
  return { add: '-addstore -f Root "[INSTALLDIR]agate-ca.cer"', remove: `-delstore Root ${thumbprint}`, thumbprint };
}

/** The WiX source for one CA; `cerName` is the DER file next to it when wixl runs. */
export function makeCaWxs(ca: CaMsiInput, cerName = "agate-ca.cer"): string {
  const sha = createHash("sha256").update(ca.der).digest("hex");
  const cmd = certutilCommands(ca.der);
  const name = `agate CA ${plain(ca.commonName)} (${sha.slice(0, 8)})`;
  return `<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="${uuidFrom(sha, "product")}" UpgradeCode="${uuidFrom(sha, "upgrade")}" Name="${xml(name)}" Manufacturer="agate" Version="1.0.0" Language="1033">
    <Package InstallerVersion="200" Compressed="yes" InstallScope="perMachine" Description="${xml(`Installs the CA certificate ${plain(ca.commonName)} into the machine's Trusted Root store`)}"/>
    <Media Id="1" Cabinet="ca.cab" EmbedCab="yes"/>
    <Property Id="ARPNOMODIFY" Value="1"/>
    <Property Id="AGATE_CA_SHA256" Value="${sha}"/>
    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFilesFolder">
        <Directory Id="INSTALLDIR" Name="agate CA ${sha.slice(0, 8)}">
          <Component Id="CaFile" Guid="${uuidFrom(sha, "component")}">
            <File Id="AgateCaCer" Name="agate-ca.cer" Source="${xml(cerName)}" KeyPath="yes"/>
          </Component>
        </Directory>
      </Directory>
    </Directory>
    <Feature Id="Main" Level="1"><ComponentRef Id="CaFile"/></Feature>
    <CustomAction Id="SetCertutil" Property="CERTUTIL" Value="[SystemFolder]certutil.exe" Impersonate="yes"/>
    <CustomAction Id="AddCaToRoot" Property="CERTUTIL" ExeCommand="${xml(cmd.add)}" Execute="deferred" Impersonate="no" Return="check"/>
    <CustomAction Id="RemoveCaFromRoot" Property="CERTUTIL" ExeCommand="${xml(cmd.remove)}" Execute="deferred" Impersonate="no" Return="ignore"/>
    <InstallExecuteSequence>
      <Custom Action="SetCertutil" After="CostFinalize"/>
      <Custom Action="RemoveCaFromRoot" Sequence="1550">REMOVE~="ALL"</Custom>
      <Custom Action="AddCaToRoot" Sequence="4050">NOT REMOVE~="ALL"</Custom>
    </InstallExecuteSequence>
  </Product>
</Wix>
`;
}

/**
 * The package for `ca`, from `<data_dir>/ca/msi/` when it was built before, else built now with wixl (temp dir →
 * rename, so a crash or two builders at once never leave half a file under the final name). Never throws.
 */
export async function loadOrBuildCaMsi(dataDir: string, ca: CaMsiInput, wixl = WIXL): Promise<CaMsi> {
  const sha = createHash("sha256").update(ca.der).digest("hex");
  const dir = join(dataDir, "ca", "msi");
  const final = join(dir, `${sha}.msi`);
  try {
    if (existsSync(final)) return { bytes: new Uint8Array(readFileSync(final)) };
  } catch {
    // unreadable: build it again below
  }
  if (!existsSync(wixl))
    return { unavailable: `the Windows installer package cannot be built here: ${wixl} is missing (install Debian's msitools package: apt-get install msitools); use /ca.der with certutil or PowerShell Import-Certificate` };
  const work = join(dir, `build-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    mkdirSync(work, { recursive: true, mode: 0o700 });
    writeFileSync(join(work, "agate-ca.cer"), ca.der);
    writeFileSync(join(work, "ca.wxs"), makeCaWxs(ca));
    const p = Bun.spawn([wixl, "-o", "ca.msi", "ca.wxs"], { cwd: work, stdout: "pipe", stderr: "pipe", timeout: BUILD_TIMEOUT_MS });
    const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
    if (code !== 0) return { unavailable: `wixl could not build the package (exit ${code}): ${err.trim().slice(0, 300)}` };
    renameSync(join(work, "ca.msi"), final);
    return { bytes: new Uint8Array(readFileSync(final)) };
  } catch (e) {
    return { unavailable: `the Windows installer package could not be built: ${(e as Error).message}` };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
