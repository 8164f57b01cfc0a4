/** @module Where the cache-mode store lives and how big it may grow (DESIGN "Cache": 40% of RAM by default). */
import { totalmem } from "node:os";
import { join } from "node:path";
import type { Config } from "../../core/config";

export const cacheBudget = (c: Config) => c.cache.max_bytes || Math.floor(totalmem() * 0.4);
export const cacheDir = (c: Config) => join(c.gateway.data_dir, "cache");
export const patchDir = (c: Config) => join(c.patch.volume!, "agate-patch");
