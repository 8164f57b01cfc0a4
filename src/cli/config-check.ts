/**
 * @module `agate config check FILE`: validate a config file offline, like `squid -k parse` or `haproxy -c`: the
 * TOML syntax (with line and column, from smol-toml), every rule of `parseConfig` (the key and the rule), the overlay
 * of API changes in the file's data_dir if there is one, and the files it names (they exist and can be read).
 * Nothing is sent to a running gateway. Exit 0 when the file can be used, 78 (EX_CONFIG) when it cannot.
 */
import { existsSync } from "node:fs";
import { DEFAULTS, parseConfig, type Config } from "../core/config";
import { ConfigError } from "../core/errors";
import { layerRaw } from "../core/config-layers";
import { overlayPath, readTomlFile } from "../store/config-files";
import { checkConfigFiles } from "../supervisor/preflight";

export const EX_CONFIG = 78;

export type CheckResult = { ok: true; lines: string[] } | { ok: false; lines: string[] };

export function checkConfigFile(path: string): CheckResult {
  const where = (e: ConfigError) => (e.key === "(file)" ? e.message.slice("(file): ".length) : `${path}: ${e.message}`);
  try {
    const raw = readTomlFile(path);
    const file = parseConfig(raw, DEFAULTS);
    checkConfigFiles(file);
    const lines = [`${path}: OK`];
    const ov = overlayPath(file.gateway.data_dir);
    if (existsSync(ov)) {
      try {
        checkConfigFiles(parseConfig(layerRaw(raw, readTomlFile(ov)), DEFAULTS));
        lines.push(`${ov}: OK (changes made through the API, read on top of ${path})`);
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        return { ok: false, lines: [...lines, `${ov}: ${e.key === "(file)" ? e.message.slice(8) : e.message} (the overlay of API changes, read on top of ${path})`] };
      }
    }
    return { ok: true, lines };
  } catch (e) {
    if (e instanceof ConfigError) return { ok: false, lines: [where(e)] };
    throw e;
  }
}
