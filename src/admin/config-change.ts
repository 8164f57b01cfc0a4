/**
 * @module One path for every config change made through the management port (PUT /api/config, assigning a
 * certificate, reset): validate (the same `parseConfig` as the file, plus the patch volume on disk), apply live with
 * `deps.apply` (new connections get the new rules; established tunnels are untouched), then write the file as TOML.
 * A change that cannot be applied writes nothing; a file that cannot be written puts the previous config back.
 * A gateway started without a config file gets `<data_dir>/agate.toml` and keeps using it.
 */
import { chmodSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../core/config";
import { ConfigError, ProxyError, type ErrorCode } from "../core/errors";
import type { AdminDeps } from "./deps";
import type { AdminContext } from "./context";
import { configToToml } from "./toml";
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

export function writeFileAtomic(path: string, text: string, mode = 0o600) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

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

/** Serialised: two admins saving at once get one change after the other, each validated on the latest config. */
export function commitConfig(deps: AdminDeps, ctx: AdminContext, make: (current: Config) => Config): Promise<Committed> {
  const run = ctx.configLock.then(async () => {
    const prev = deps.config;
    const next = make(prev);
    checkPatchVolume(next);
    try {
      await deps.apply(next);
    } catch (e) {
      throw asConfigError(e);
    }
    const file = deps.configPath ?? join(deps.dataDir, "agate.toml");
    try {
      writeFileAtomic(file, configToToml(next));
    } catch (e) {
      await deps.apply(prev);
      throw new Error(`the change was not saved (cannot write ${file}: ${(e as Error).message}); the previous config is back`);
    }
    if (!deps.configPath) deps.setConfigPath(file);
    return { file, restart_required: restartRequired(prev, next) };
  });
  ctx.configLock = run.catch(() => undefined);
  return run;
}
