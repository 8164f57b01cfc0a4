/**
 * @module The config written back as TOML after a change through the admin API. The config has a fixed shape
 * (sections of scalars, lists of scalars, lists of small tables, and `[hosts]` name = "ip"), so this is a small
 * serializer for that shape, not a general TOML writer. `null` values are left out (they are the defaults' "unset").
 * Round trip: `parseConfig(Bun.TOML.parse(configToToml(c)))` equals `c` (test/unit/admin-toml.test.ts).
 */
import type { Config } from "../core/config";

const BARE_KEY = /^[A-Za-z0-9_-]+$/;
const key = (k: string) => (BARE_KEY.test(k) ? k : JSON.stringify(k));

/** TOML basic strings take the same escapes as JSON for what JSON.stringify emits (\" \\ \n \t \uXXXX). */
function value(v: unknown, where: string): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "boolean") return String(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error(`${where}: cannot write ${v} as TOML`);
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map((x, i) => value(x, `${where}[${i}]`)).join(", ")}]`;
  if (v && typeof v === "object")
    return `{ ${Object.entries(v)
      .filter(([, x]) => x !== null && x !== undefined)
      .map(([k, x]) => `${key(k)} = ${value(x, `${where}.${k}`)}`)
      .join(", ")} }`;
  throw new Error(`${where}: cannot write ${typeof v} as TOML`);
}

const ORDER: (keyof Config)[] = ["gateway", "proxy", "cache", "patch", "upstream_proxy", "hosts", "destinations", "platform", "tls", "admin"];

export function configToToml(c: Config, header = "# agate configuration, written by the admin API; comments are not kept\n"): string {
  const out: string[] = [header];
  for (const name of ORDER) {
    const sec = c[name] as Record<string, unknown> | null;
    if (sec === null || sec === undefined) continue;
    const lines = Object.entries(sec)
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${key(k)} = ${value(v, `${name}.${k}`)}`);
    if (name !== "hosts" && lines.length === 0) continue;
    out.push(`[${name}]\n${lines.join("\n")}${lines.length ? "\n" : ""}`);
  }
  return out.join("\n");
}
