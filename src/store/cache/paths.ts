/**
 * @module Where the cache-mode store lives and how big it may grow. DESIGN: one shared disk cache on the secondary
 * volume. When `[patch] volume` is set and passes the volume check (`checkPatchVolume`: a directory of its own, at
 * least `patch.min_volume_bytes`), cache-mode objects live in the patch store's directory, `<volume>/agate-patch` —
 * the same index and blobs as patch slices, so one usage row and one budget (patch mode's `patchBudget`)
 * evict both. Otherwise `<data_dir>/cache`, bounded by `cache.max_bytes` (default 40% of RAM, DESIGN "Cache").
 *
 * A config change that moves the store (volume set, removed or changed) makes the workers close the old store and
 * open the new one (`applyCacheMode` compares directories): nothing is copied, so nothing is ever half-moved;
 * objects are refetched into the new place on their next request. The old directory is left as it was.
 * TODO: offer to remove the old directory (a purge of the store no longer in use) from the API.
 */
import { totalmem } from "node:os";
import { join } from "node:path";
import type { Config } from "../../core/config";
import { checkPatchVolume, patchBudget } from "../patch-volume";

/** True when cache-mode objects live on the patch volume (see the module note). */
export const storeOnVolume = (c: Config) => !!c.patch.volume && checkPatchVolume(c).ok;
export const patchDir = (c: Config) => join(c.patch.volume!, "agate-patch");
export const cacheDir = (c: Config) => (storeOnVolume(c) ? patchDir(c) : join(c.gateway.data_dir, "cache"));
export const cacheBudget = (c: Config) => (storeOnVolume(c) ? patchBudget(c) : c.cache.max_bytes || Math.floor(totalmem() * 0.4));
