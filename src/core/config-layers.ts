/**
 * @module The config's layers, as raw TOML-shaped objects: the embedded defaults, the admin's `--config` file, and
 * the overlay the management API writes into `data_dir` (`agate.auto.toml`, like PostgreSQL's
 * `postgresql.auto.conf`: read on top of the admin's file, so that file, its comments and its layout are never
 * rewritten). Pure: the files are read and written by `store/config-files.ts`; validation stays `parseConfig`'s.
 */
import type { Config } from "./config";

export type RawConfig = Record<string, Record<string, unknown>>;
export type ValueSource = "default" | "file" | "overlay";

/**
 * Sections that `parseConfig` replaces whole when present (`[hosts]` is the full map; `[upstream_proxy]` is one
 * proxy), so a layer that has them replaces the lower layer's section instead of merging key by key.
 */
export const WHOLE_SECTIONS: ReadonlySet<string> = new Set(["hosts", "upstream_proxy"]);

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** The overlay on top of the file: sections merged key by key (whole sections replaced). */
export function layerRaw(file: unknown, overlay: unknown): unknown {
  if (!isObj(file) || !isObj(overlay)) return isObj(file) ? file : overlay ?? {};
  const out: Record<string, unknown> = { ...file };
  for (const [name, sec] of Object.entries(overlay)) {
    const below = file[name];
    out[name] = WHOLE_SECTIONS.has(name) || !isObj(below) || !isObj(sec) ? sec : { ...below, ...sec };
  }
  return out;
}

/** Every key of the config, as `section.key` (whole sections as `section`). */
function keysOf(c: Config): string[] {
  const out: string[] = [];
  for (const [name, sec] of Object.entries(c)) {
    if (WHOLE_SECTIONS.has(name) || !isObj(sec)) out.push(name);
    else for (const k of Object.keys(sec)) out.push(`${name}.${k}`);
  }
  return out;
}

const has = (raw: unknown, key: string) => {
  if (!isObj(raw)) return false;
  const [sec, k] = key.split(".") as [string, string | undefined];
  if (!(sec in raw)) return false;
  if (k === undefined) return true;
  const s = raw[sec];
  return isObj(s) && k in s;
};

/** Where each key's running value comes from, for `GET /api/config?sources=1`. */
export function valueSources(c: Config, file: unknown, overlay: unknown): Record<string, ValueSource> {
  const out: Record<string, ValueSource> = {};
  for (const k of keysOf(c)) out[k] = has(overlay, k) ? "overlay" : has(file, k) ? "file" : "default";
  return out;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** TOML has no null: an unset optional string is written "" (which `parseConfig` reads as unset). */
function tomlValue(v: unknown): unknown {
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) return v.map(tomlValue);
  if (isObj(v)) return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null && x !== undefined).map(([k, x]) => [k, tomlValue(x)]));
  return v;
}

/**
 * The overlay after a change from `prev` to `next` (both validated): the keys that changed are written with their
 * new values, keys already in the overlay stay. A whole section that changed is written whole; an upstream proxy
 * removed is `host = ""` (parseConfig's "none").
 */
export function overlayAfterChange(overlay: unknown, prev: Config, next: Config): RawConfig {
  const out: RawConfig = {};
  if (isObj(overlay)) for (const [k, v] of Object.entries(overlay)) if (isObj(v)) out[k] = { ...v };
  for (const [name, sec] of Object.entries(next) as [string, unknown][]) {
    const before = (prev as unknown as Record<string, unknown>)[name];
    if (WHOLE_SECTIONS.has(name)) {
      if (!same(sec, before)) out[name] = sec === null ? { host: "" } : (tomlValue(sec) as Record<string, unknown>);
      continue;
    }
    if (!isObj(sec) || !isObj(before)) continue;
    for (const [k, v] of Object.entries(sec)) {
      if (same(v, before[k])) continue;
      (out[name] ??= {})[k] = tomlValue(v);
    }
  }
  return out;
}
