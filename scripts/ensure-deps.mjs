#!/usr/bin/env node
// Installs what agate needs on a fresh machine that has only Node.js and npm:
// the npm dependencies (the Bun runtime among them, from the `bun` package) and, with --peers,
// the Debian packages the end-to-end tests talk to (curl, openssl, squid). Idempotent and quick when done.
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
  // npm install, not npm ci: npm 11.19 writes lock files that its own `npm ci` rejects as out of sync
  // (msgpackr-extract's optional platform packages); install still honours the lock's versions.
  run("npm install --no-audit --no-fund");
}

if (process.argv.includes("--peers")) {
  const want = [["curl", "curl"], ["openssl", "openssl"], ["squid", "squid"], ["htpasswd", "apache2-utils"], ["haproxy", "haproxy"], ["wixl", "wixl"], ["msiinfo", "msitools"], ["age", "age"]];
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
