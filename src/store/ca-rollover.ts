/**
 * @module CA rollover on disk (issue 11): which CA is published as the NEXT one before it is assigned, so agents can
 * be given `/ca-bundle.pem` (current + next) ahead of the switch, and which uploaded certificates this gateway
 * generated itself (a new appliance CA made as "next" is kept with the uploaded chains, as a root without
 * intermediates, so assigning it goes through the same path as any uploaded CA). `<data_dir>/ca/rollover.json`,
 * written temp → rename. The next CA is named by its id and its root file, so `loadActiveCa` can read it without the
 * certificate database.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type NextCaRef = { id: string; root: string };
export type Rollover = { next: NextCaRef | null; generated: string[] };

const EMPTY: Rollover = { next: null, generated: [] };

export const rolloverPath = (dataDir: string) => join(dataDir, "ca", "rollover.json");

export function readRollover(dataDir: string): Rollover {
  const p = rolloverPath(dataDir);
  if (!existsSync(p)) return { ...EMPTY, generated: [] };
  try {
    const v = JSON.parse(readFileSync(p, "utf8")) as Partial<Rollover>;
    const next = v.next && typeof v.next.id === "string" && typeof v.next.root === "string" ? { id: v.next.id, root: v.next.root } : null;
    const generated = Array.isArray(v.generated) ? v.generated.filter((x): x is string => typeof x === "string") : [];
    return { next, generated };
  } catch {
    // a torn or hand-edited file: no next CA rather than a gateway that does not start
    return { ...EMPTY, generated: [] };
  }
}

export function writeRollover(dataDir: string, r: Rollover) {
  const dir = join(dataDir, "ca");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const p = rolloverPath(dataDir);
  const tmp = `${p}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(r, null, 2) + "\n", { mode: 0o644 });
  renameSync(tmp, p);
}

/** After an assign: the CA that became current is no longer "next" (loadActiveCa already leaves it out). */
export function clearNextIfAssigned(dataDir: string, id: string) {
  const ro = readRollover(dataDir);
  if (ro.next?.id === id) writeRollover(dataDir, { next: null, generated: ro.generated });
}
