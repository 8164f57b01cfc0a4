/**
 * @module One path for every config change made through the management port (PUT /api/config, assigning a
 * certificate): validate (the same `parseConfig` as the file, plus the patch volume on disk and the API's own rules),
 * apply live with `deps.apply` (which also checks ports and files on this machine; new connections get the new
 * rules, established tunnels are untouched), then write the keys that changed to the overlay
 * `<data_dir>/agate.auto.toml` (store/config-files.ts), read on top of the admin's --config file, which is never
 * rewritten. A change that cannot be applied writes nothing; an overlay that cannot be written puts the previous
 * config back.
 */
import { existsSync } from "node:fs";
import { redactConfig, type Config } from "../core/config";
import { ConfigError, ProxyError, type ErrorCode } from "../core/errors";
import type { AdminDeps } from "./deps";
import type { AdminContext } from "./context";
import { overlayAfterChange, valueSources } from "../core/config-layers";
import { overlayPath, readTomlFile, writeOverlay } from "../store/config-files";
import { checkPatchVolume as checkVolume } from "../store/patch-volume";

/**
 * DESIGN "Cache": patch mode needs its volume, of at least `patch.min_volume_bytes`, and says why not. The rule is
 * the store's (`store/patch-volume.ts`, also applied by `deps.apply`); here it also serves the wizard's dry run.
 */
export function checkPatchVolume(c: Config) {
  if (!c.patch.enabled) return;
  const v = checkVolume(c);
  if (!v.ok) throw new ConfigError(v.key, v.reason.startsWith(`${v.key} `) ? v.reason.slice(v.key.length + 1) : v.reason);
}

/** Keys that change only at the next start (the management port and the worker count are bound once). */
export function restartRequired(prev: Config, next: Config): string[] {
  const out: string[] = [];
  for (const k of ["port", "listen", "tls", "token"] as const) if (prev.admin[k] !== next.admin[k]) out.push(`admin.${k}`);
  if (prev.gateway.data_dir !== next.gateway.data_dir) out.push("gateway.data_dir");
  if (prev.gateway.workers !== next.gateway.workers) out.push("gateway.workers");
  return out;
}

export { writeFileAtomic } from "../store/atomic-file";

/** The codes `loadActiveCa` throws for CA files that do not check out. */
const CA_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["PX_CA", "PX_CA_INVALID", "PX_CA_VALIDITY", "PX_CA_NOT_YET_VALID", "PX_CA_NAME", "PX_CA_EXPIRED"]);

/**
 * A CA that does not check out fails inside `deps.apply` with a ProxyError: through the admin API that is a config
 * value breaking a rule (the admin named the files), so it becomes a ConfigError naming the key, answered 400 like
 * every other refused config change, not the 500 an internal CA failure gets from statusFor.
 */
function asConfigError(e: unknown): unknown {
  if (e instanceof ProxyError && CA_CODES.has(e.code)) return new ConfigError("tls.ca_cert", e.message);
  return e;
}

export type Committed = { file: string; restart_required: string[] };

/** Ports the management API may not set to 0 ("any free port" is for test files: a new random port at every start). */
const PORT_KEYS = [["proxy", "proxy.port"], ["cache", "cache.port"], ["admin", "admin.port"]] as const;

/** Rules for a change made through the API that a file need not follow. */
export function checkApiChange(prev: Config, next: Config) {
  for (const [sec, key] of PORT_KEYS)
    if (next[sec].port === 0 && prev[sec].port !== 0)
      throw new ConfigError(key, "0 (any free port) is for tests: give a port 1–65535 (an empty field is not a port)");
  if (next.gateway.data_dir !== prev.gateway.data_dir)
    throw new ConfigError("gateway.data_dir", `the overlay of API changes lives in ${prev.gateway.data_dir}: change data_dir in the --config file`);
}

/**
 * Serialised: two admins saving at once get one change after the other, each validated on the latest config.
 * `gate` (optional) runs on the validated config before it is applied, e.g. the upstream proxy's test; it may throw.
 * The change goes to the overlay `<data_dir>/agate.auto.toml`; the admin's --config file is never written.
 */
export function commitConfig(deps: AdminDeps, ctx: AdminContext, make: (current: Config) => Config, gate?: (prev: Config, next: Config) => Promise<void>): Promise<Committed> {
  const run = ctx.configLock.then(async () => {
    const prev = deps.config;
    const next = make(prev);
    checkApiChange(prev, next);
    checkPatchVolume(next);
    if (gate) await gate(prev, next);
    try {
      await deps.apply(next); // refuses ports in use or not permitted and unreadable files, keeping the running config
    } catch (e) {
      throw asConfigError(e);
    }
    const path = overlayPath(deps.dataDir);
    try {
      const old = existsSync(path) ? readTomlFile(path) : {};
      writeOverlay(deps.dataDir, overlayAfterChange(old, prev, next));
    } catch (e) {
      await deps.apply(prev);
      throw new Error(`the change was not saved (cannot write ${path}: ${(e as Error).message}); the previous config is back`);
    }
    return { file: path, restart_required: restartRequired(prev, next) };
  });
  ctx.configLock = run.catch(() => undefined);
  return run;
}

/**
 * `GET /api/config?sources=1`: the running config (secrets hidden) and, per key, where its value comes from —
 * "default", "file" (the --config file) or "overlay" (`<data_dir>/agate.auto.toml`, changes made through the API).
 * Read from disk now: a file edited since the last reload shows what a reload would read.
 */
export function configSources(deps: AdminDeps) {
  const overlay = overlayPath(deps.dataDir);
  const read = (p: string | null) => {
    try {
      return p && existsSync(p) ? readTomlFile(p) : {};
    } catch {
      return {};
    }
  };
  return {
    config: redactConfig(deps.config),
    sources: valueSources(deps.config, read(deps.configPath), read(overlay)),
    file: deps.configPath,
    overlay: existsSync(overlay) ? overlay : null,
  };
}
