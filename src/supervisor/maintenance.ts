/**
 * @module Maintenance mode's persistence (issue 10): `maintenance.json` in `data_dir` while it is on, so a restart
 * keeps it on until an admin turns it off. Health (core/health.ts) turns 503 on every port and new connections are
 * refused with 503 + Retry-After; established tunnels and downloads are left alone.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type Maintenance = { on: boolean; since: number | null };

export const MAINTENANCE_FILE = "maintenance.json";

export function loadMaintenance(dataDir: string): Maintenance {
  const p = join(dataDir, MAINTENANCE_FILE);
  if (!existsSync(p)) return { on: false, since: null };
  try {
    const v = JSON.parse(readFileSync(p, "utf8")) as { on?: unknown; since?: unknown };
    return { on: v.on === true, since: typeof v.since === "number" ? v.since : null };
  } catch {
    // A damaged file: stay in maintenance, the safe side (the admin turns it off, which rewrites it).
    return { on: true, since: null };
  }
}

/** Write (temp → rename, so a crash leaves the old or the new file) or remove the file. */
export function saveMaintenance(dataDir: string, m: Maintenance): void {
  const p = join(dataDir, MAINTENANCE_FILE);
  if (!m.on) return rmSync(p, { force: true });
  writeFileSync(p + ".tmp", JSON.stringify({ on: true, since: m.since }) + "\n");
  renameSync(p + ".tmp", p);
}
