/**
 * @module The patch volume check (DESIGN "Cache": patch mode's store lives on a single secondary volume of at
 * least `patch.min_volume_bytes`, 250 GB by default). statfs gives the file system's size, used and free bytes.
 */
import { statfsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import type { Config } from "../core/config";

export type VolumeInfo = { path: string; size: number; used: number; free: number };

export function volumeInfo(path: string): VolumeInfo {
  const s = statfsSync(path);
  const size = s.blocks * s.bsize;
  const free = s.bavail * s.bsize;
  return { path, size, free, used: size - s.bfree * s.bsize };
}

const gb = (n: number) => `${(n / 1e9).toFixed(n < 1e9 ? 3 : 1)} GB`;

/** null when patch mode may run on this volume; otherwise the rule that failed and the sizes seen. */
export function checkPatchVolume(c: Config): { ok: true; info: VolumeInfo } | { ok: false; key: string; reason: string } {
  const v = c.patch.volume;
  if (!v) return { ok: false, key: "patch.volume", reason: "patch mode needs the secondary volume: set patch.volume" };
  let st;
  try {
    st = statSync(v);
  } catch {
    return { ok: false, key: "patch.volume", reason: `patch.volume ${v} does not exist (mount the secondary volume there)` };
  }
  if (!st.isDirectory()) return { ok: false, key: "patch.volume", reason: `patch.volume ${v} is not a directory` };
  if (resolve(v) === resolve(c.gateway.data_dir))
    return { ok: false, key: "patch.volume", reason: `patch.volume ${v} is the primary data directory; patches need their own volume` };
  const info = volumeInfo(v);
  if (info.size < c.patch.min_volume_bytes)
    return {
      ok: false,
      key: "patch.volume",
      reason: `patch.volume ${v} is ${gb(info.size)} (${info.size} bytes by statfs), below patch.min_volume_bytes ${gb(c.patch.min_volume_bytes)} (${c.patch.min_volume_bytes} bytes)`,
    };
  return { ok: true, info };
}
