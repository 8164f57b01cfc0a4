/**
 * @module Reset: back to unconfigured without breaking the start. It removes what the gateway made — the overlay of
 * API changes (`agate.auto.toml`), the appliance CA and uploaded chains, leaves, logs, stats, the cache and patch
 * stores, the generated admin token — and never the admin's `--config` file, so the same start command still
 * works and gives the file's values (or the embedded defaults without a file). `resetPlan` is what the
 * confirmation shows (API, page, CLI) before anything happens; stats and savings start from zero.
 */
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { DEFAULTS, parseConfig, type Config } from "../core/config";
import type { AdminDeps } from "./deps";
import type { AdminContext } from "./context";
import { OVERLAY_FILE, readTomlFile } from "../store/config-files";
import { patchDir } from "../store/cache/paths";

/** Kept in data_dir: the record of who reset, and where the running management port is. */
const KEEP = new Set(["audit.log", "admin.url"]);

export type ResetPlan = {
  /** what happens, in sentences a person reads before confirming */
  will: string[];
  /** paths that will be removed */
  removes: string[];
  /** never removed */
  keeps: string[];
  /** the config after the reset: the --config file's values, or the embedded defaults */
  ports_after: { proxy: number; cache: number | null; admin: number };
};

/** The config the gateway returns to: the admin's file alone (no overlay), or the defaults in the same data_dir. */
export function configAfterReset(deps: AdminDeps): Config {
  if (deps.configPath && existsSync(deps.configPath)) return parseConfig(readTomlFile(deps.configPath), DEFAULTS);
  return parseConfig({ gateway: { data_dir: deps.config.gateway.data_dir } }, DEFAULTS);
}

function removable(deps: AdminDeps): string[] {
  const keep = new Set([...KEEP].map((n) => join(deps.dataDir, n)));
  if (deps.configPath) keep.add(resolve(deps.configPath));
  const out: string[] = [];
  for (const name of existsSync(deps.dataDir) ? readdirSync(deps.dataDir) : []) {
    const p = join(deps.dataDir, name);
    if (keep.has(p)) continue;
    if (name === "admin.token" && deps.config.admin.token) continue; // not ours: the file sets the token
    out.push(p);
  }
  const c = deps.config;
  if (c.patch.volume && existsSync(patchDir(c))) out.push(patchDir(c)); // patch store: on its own volume
  return out;
}

export function resetPlan(deps: AdminDeps): ResetPlan {
  const next = configAfterReset(deps);
  const from = deps.configPath ? `the values in ${deps.configPath}` : "the embedded defaults (no --config file)";
  const will = [
    "a new appliance CA is made: every agent that trusted the old one must install the new one (the cache port's certificates change)",
    `the configuration goes back to ${from}: changes made in the web page, the API or 'agate config set' (${OVERLAY_FILE}) are removed`,
    `ports after the reset: proxy ${next.proxy.port || "(any free port)"}${next.cache.enabled ? `, cache ${next.cache.port}` : ", cache mode off"}; the management port changes only at the next start`,
    "uploaded certificate chains, leaves, logs, stats, savings and the cached objects are removed; stats start from zero",
    "maintenance mode is turned off: the gateway serves agents again",
    deps.config.admin.token ? "the admin token stays (the config file sets it)" : "a new admin token is made (the answer and data_dir/admin.token hold it)",
  ];
  if (deps.configPath) will.push(`${deps.configPath} itself is never changed or removed`);
  return {
    will,
    removes: removable(deps),
    keeps: [...(deps.configPath ? [resolve(deps.configPath)] : []), ...[...KEEP].map((n) => join(deps.dataDir, n))],
    ports_after: { proxy: next.proxy.port, cache: next.cache.enabled ? next.cache.port : null, admin: deps.config.admin.port },
  };
}

/** Do it: stores closed while their files go, the file's config applied, a fresh CA pushed to the workers. */
export function runReset(deps: AdminDeps, ctx: AdminContext): Promise<{ removed: string[]; token: string | null }> {
  const run = ctx.configLock.then(async () => {
    const next = configAfterReset(deps);
    // cache and patch mode off first: nothing uses the stores while they are removed
    await deps.apply(parseConfig({ cache: { enabled: false }, patch: { enabled: false } }, { ...deps.config, tls: next.tls }));
    const removed: string[] = [];
    ctx.closeStores();
    for (const p of removable(deps)) {
      if (p === join(deps.dataDir, "logs")) for (const f of readdirSync(p)) rmSync(join(p, f), { force: true, recursive: true });
      else if (p === join(deps.dataDir, "admin.token")) continue; // replaced below, while the gateway still answers
      else rmSync(p, { recursive: true, force: true });
      removed.push(p);
    }
    // maintenance.json went with data_dir, but the running gateway holds its own state: turn it off there too, so
    // health, /healthz and the agent-check answer for the reset gateway (not just after the next start)
    deps.setMaintenance(false);
    const token = deps.resetToken();
    if (token) removed.push(join(deps.dataDir, "admin.token"));
    deps.resetStats();
    ctx.reopenStores();
    ctx.logsSince = Date.now();
    ctx.archives.clear();
    await deps.apply(next); // the file's config (or the defaults), with a fresh appliance CA
    return { removed, token };
  });
  ctx.configLock = run.catch(() => undefined);
  return run;
}
