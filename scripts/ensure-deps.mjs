#!/usr/bin/env node
// Installs what agate needs on a fresh machine that has only Node.js and npm:
// the npm dependencies (the Bun runtime among them, from the `bun` package) and, with --peers,
// the Debian packages the end-to-end tests talk to (curl, openssl, squid, haproxy, msitools, age, chromium). Idempotent and quick when done.
import { existsSync, readFileSync } from "node:fs";
import { execSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const run = (cmd) => execSync(cmd, { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
const have = (cmd) => {
  try { execSync(`command -v ${cmd}`, { stdio: "ignore" }); return true; } catch { return false; }
};

const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const wanted = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.devDependencies ?? {})];
const missingDeps = wanted.filter((d) => !existsSync(join(root, "node_modules", d, "package.json")));
if (!existsSync(join(root, "node_modules/.bin/bun")) || missingDeps.length) {
  console.error("[agate] installing npm dependencies (Bun runtime included)…");
  // npm ci: installs exactly the lock and never writes it, so `npm start` / `npm test` leave a fresh clone clean
  // (`npm install` rewrote package-lock.json with msgpackr-extract's optional platform packages, issue 10). Measured
  // with npm 11.19.1: rm -rf /tmp/fr && git clone -q /work/main /tmp/fr && cd /tmp/fr && node scripts/ensure-deps.mjs
  // && git status --short → prints nothing (about 11 s). Should npm refuse the lock as out of sync, install
  // without touching package.json or the lock (its versions are exact in package.json).
  try {
    run("npm ci --no-audit --no-fund");
  } catch {
    console.error("[agate] npm ci refused package-lock.json; installing without writing it (--no-save --no-package-lock)");
    run("npm install --no-audit --no-fund --no-save --no-package-lock");
  }
}

if (process.argv.includes("--peers")) {
  const want = [["curl", "curl"], ["openssl", "openssl"], ["squid", "squid"], ["htpasswd", "apache2-utils"], ["haproxy", "haproxy"], ["wixl", "wixl"], ["msiinfo", "msitools"], ["age", "age"], ["chromium", "chromium"]];
  const missing = want.filter(([bin]) => !have(bin) && !existsSync(`/usr/sbin/${bin}`)).map(([, pkg]) => pkg);
  if (missing.length) {
    const sudo = process.getuid && process.getuid() === 0 ? "" : have("sudo") ? "sudo " : null;
    if (sudo === null) {
      console.error(`[agate] test peers missing (${missing.join(", ")}) and no root to install them; tests that need them will say so`);
    } else {
      console.error(`[agate] installing test peers from Debian: ${missing.join(" ")}`);
      try {
        run(`${sudo}apt-get update -qq`);
        run(`${sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing.join(" ")}`);
      } catch (e) {
        console.error(`[agate] could not install ${missing.join(", ")}: ${e.message}; tests that need them will say so`);
      }
    }
  }
}
