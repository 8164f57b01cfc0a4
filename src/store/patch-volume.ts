/**
 * @module The patch volume check (DESIGN "Cache": patch mode's store lives on a single secondary volume of at
 * least `patch.min_volume_bytes`, 250 GB by default). statfs gives the file system's size, used and free bytes.
 * The volume is a second disk: another device than data_dir (st_dev differs; a directory on the same disk would let
 * patches fill the data disk), unless `patch.allow_same_device`. The minimum is checked against the space agate can
 * really use there — the free space plus what its own store already holds — not the file system's size, and the
 * store's budget (`patchBudget`) keeps the volume below PATCH_HIGH_WATER whatever else lives on it.
 */
import { readdirSync, statfsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { Config } from "../core/config";

export type VolumeInfo = { path: string; size: number; used: number; free: number };

/** The volume is never filled past this share of its size by the patch store (the rest is headroom for the file system and others). */
export const PATCH_HIGH_WATER = 0.9;
/** The store's directory on the volume (also `store/cache/paths.ts` patchDir). */
const STORE_DIR = "agate-patch";

export function volumeInfo(path: string): VolumeInfo {
  const s = statfsSync(path);
  const size = s.blocks * s.bsize;
  const free = s.bavail * s.bsize;
  return { path, size, free, used: size - s.bfree * s.bsize };
}

/** Bytes on disk under `dir` (st_blocks × 512, what the file system counts), 0 when it does not exist. Bounded depth. */
export function dirBytes(dir: string, depth = 6): number {
  let n = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const p = join(dir, name);
    try {
      const st = statSync(p);
      if (st.isDirectory()) n += depth > 0 ? dirBytes(p, depth - 1) : 0;
      else n += st.blocks * 512;
    } catch {
      // removed meanwhile
    }
  }
  return n;
}

/** The device of `path`, or of its nearest existing parent (data_dir may not exist before the first start). */
function deviceOf(path: string): number | null {
  let p = resolve(path);
  for (let i = 0; i < 64; i++) {
    try {
      return statSync(p).dev;
    } catch {
      const up = dirname(p);
      if (up === p) return null;
      p = up;
    }
  }
  return null;
}

const gb = (n: number) => `${(n / 1e9).toFixed(n < 1e9 ? 3 : 1)} GB`;

/** What the patch store may hold: its own bytes plus the room left below PATCH_HIGH_WATER of the volume. */
export function patchBudget(c: Config): number {
  const info = volumeInfo(c.patch.volume!);
  const own = dirBytes(join(c.patch.volume!, STORE_DIR));
  return Math.max(0, Math.floor(own + info.size * PATCH_HIGH_WATER - info.used));
}

/** ok when patch mode may run on this volume; otherwise the rule that failed and the sizes seen. */
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
  // what agate can use there: the free space plus its own store (a restart must not refuse a volume its store filled)
  const usable = info.free + dirBytes(join(v, STORE_DIR));
  if (usable < c.patch.min_volume_bytes)
    return {
      ok: false,
      key: "patch.volume",
      reason: `patch.volume ${v} is ${gb(info.size)}, of which agate can use ${gb(usable)} (${usable} bytes: free by statfs + its own store), below patch.min_volume_bytes ${gb(c.patch.min_volume_bytes)} (${c.patch.min_volume_bytes} bytes)`,
    };
  if (!c.patch.allow_same_device && st.dev === deviceOf(c.gateway.data_dir))
    return {
      ok: false,
      key: "patch.volume",
      reason: `patch.volume ${v} is on the same device as gateway.data_dir ${c.gateway.data_dir} (st_dev ${st.dev}): mount the secondary volume there (or set patch.allow_same_device = true for a lab)`,
    };
  return { ok: true, info };
}
