/**
 * @module The config's files: the admin's `--config` file (read only, never written) and the overlay
 * `<data_dir>/agate.auto.toml` that changes made through the management API go to (core/config-layers.ts).
 * TOML is read with smol-toml, whose errors carry the line and column (Bun.TOML.parse's do not), so a syntax error
 * at start, at reload and in `agate config check` says where it is.
 */
import { existsSync, readFileSync, unlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse as parseToml, stringify as stringifyToml, TomlError } from "smol-toml";
import { DEFAULTS, parseConfig, type Config } from "../core/config";
import { ConfigError } from "../core/errors";
import { layerRaw, type RawConfig } from "../core/config-layers";
import { writeFileAtomic } from "./atomic-file";

/** The overlay's name under `data_dir` (a name used outside the project: documented in docs/ADMIN.md). */
export const OVERLAY_FILE = "agate.auto.toml";

export const overlayPath = (dataDir: string) => join(resolve(dataDir), OVERLAY_FILE);

/** A TOML file as a raw object; a syntax error becomes a ConfigError "(file)" with `path:line:column`. */
export function readTomlFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError("(file)", `cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      const first = e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      throw new ConfigError("(file)", `${path}:${e.line}:${e.column}: not valid TOML: ${first}`);
    }
    throw new ConfigError("(file)", `${path} is not valid TOML: ${(e as Error).message}`);
  }
}

export type LayeredConfig = {
  config: Config;
  /** the admin's file as written (empty without --config) */
  file: Record<string, unknown>;
  /** the overlay as written (empty when there is none) */
  overlay: Record<string, unknown>;
  overlayPath: string;
};

/**
 * The running config: the embedded defaults, the admin's file on top (if any), the overlay in the file's
 * `data_dir` on top of that. The overlay may not move `data_dir` (it lives there). Errors name the file and key.
 */
export function loadLayered(configPath: string | null): LayeredConfig {
  const file = configPath ? readTomlFile(configPath) : {};
  const base = parseConfig(file, DEFAULTS); // the file alone must be valid, and gives the data directory
  const path = overlayPath(base.gateway.data_dir);
  const overlay = existsSync(path) ? readTomlFile(path) : {};
  let config: Config;
  try {
    config = parseConfig(layerRaw(file, overlay), DEFAULTS);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(e.key, `${e.message.slice(e.key.length + 2)} (in ${path}, written by the admin API)`);
    throw e;
  }
  return { config, file, overlay, overlayPath: path };
}

/** Write the overlay (mode 0600: it may hold the upstream proxy's password). */
export function writeOverlay(dataDir: string, raw: RawConfig): string {
  const path = overlayPath(dataDir);
  const header = "# Written by agate's management API (web page, agate config set); read on top of the --config file.\n# Remove it (or use reset) to go back to the file's values.\n";
  writeFileAtomic(path, header + stringifyToml(raw) + "\n");
  return path;
}

export function removeOverlay(dataDir: string): string | null {
  const path = overlayPath(dataDir);
  if (!existsSync(path)) return null;
  unlinkSync(path);
  return path;
}
