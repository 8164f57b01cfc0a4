/**
 * @module The log files on disk: `<data_dir>/logs/agate.log` (JSON lines, appended by the supervisor) rotated by
 * size into `agate.log.1` … `agate.log.N` (1 = newest), and removed oldest-first before the primary disk or the
 * cap on all log files fills (DESIGN "Visibility": logs are cleaned automatically before the disk fills).
 * Also reads them back for the admin API's search, newest line first.
 */
import { existsSync, readdirSync, readFileSync, renameSync, statSync, statfsSync, unlinkSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** One file grows to this before it is rotated. */
export const LOG_FILE_MAX_BYTES = 16 * 1024 * 1024;
/** Rotated files kept (agate.log.1 … agate.log.N). */
export const LOG_FILES_KEPT = 10;
/** All log files together stay under this by default (`[gateway] log_cap_bytes`). */
export const LOG_CAP_BYTES = 256 * 1024 * 1024;
/** Rotated files are removed while the disk holding them has less free space than this fraction… */
export const MIN_FREE_FRACTION = 0.05;
/** …or less than this many bytes, whichever is larger (capped at a quarter of the disk for small test volumes). */
export const MIN_FREE_BYTES = 1024 * 1024 * 1024;

export type LogLimits = { fileMaxBytes: number; keep: number; capBytes: number; minFreeFraction: number; minFreeBytes: number };
export const DEFAULT_LOG_LIMITS: LogLimits = {
  fileMaxBytes: LOG_FILE_MAX_BYTES,
  keep: LOG_FILES_KEPT,
  capBytes: LOG_CAP_BYTES,
  minFreeFraction: MIN_FREE_FRACTION,
  minFreeBytes: MIN_FREE_BYTES,
};

export type DiskFree = { freeBytes: number; totalBytes: number };
export function diskFree(path: string): DiskFree {
  const s = statfsSync(path);
  return { freeBytes: Number(s.bavail) * Number(s.bsize), totalBytes: Number(s.blocks) * Number(s.bsize) };
}

/** The rotated files of `logPath`, newest first: [{ path, n, size }]. */
export function rotatedFiles(logPath: string): { path: string; n: number; size: number }[] {
  const dir = dirname(logPath);
  const base = basename(logPath);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: { path: string; n: number; size: number }[] = [];
  for (const name of names) {
    if (!name.startsWith(base + ".")) continue;
    const n = Number(name.slice(base.length + 1));
    if (!Number.isInteger(n) || n < 1) continue;
    const path = join(dir, name);
    try {
      out.push({ path, n, size: statSync(path).size });
    } catch {
      // removed meanwhile
    }
  }
  return out.sort((a, b) => a.n - b.n);
}

/**
 * Called after each append: when the live file is over the size limit, shift .1 → .2 … (dropping those past
 * `keep`) and move the live file to .1, then clean up. Never throws: logs must not take the gateway down.
 */
export function rotateLogFile(logPath: string, limits: LogLimits = DEFAULT_LOG_LIMITS): boolean {
  try {
    if (!existsSync(logPath) || statSync(logPath).size <= limits.fileMaxBytes) return false;
    const files = rotatedFiles(logPath);
    // Oldest first, so that each rename lands on a free name.
    for (const f of [...files].reverse()) {
      if (f.n >= limits.keep) unlinkSync(f.path);
      else renameSync(f.path, `${logPath}.${f.n + 1}`);
    }
    renameSync(logPath, `${logPath}.1`);
    cleanLogs(logPath, limits);
    return true;
  } catch {
    return false;
  }
}

/**
 * Remove rotated files oldest-first while all log files together exceed `capBytes`, or while the disk has less
 * free space than the reserve. The live file is never removed. Returns the paths removed.
 * `free` is injectable so tests can play a nearly full disk.
 */
export function cleanLogs(logPath: string, limits: LogLimits = DEFAULT_LOG_LIMITS, free: (p: string) => DiskFree = diskFree): string[] {
  const removed: string[] = [];
  try {
    const files = rotatedFiles(logPath);
    const live = existsSync(logPath) ? statSync(logPath).size : 0;
    let total = live + files.reduce((s, f) => s + f.size, 0);
    let disk = free(dirname(logPath));
    const reserve = Math.min(Math.max(limits.minFreeBytes, disk.totalBytes * limits.minFreeFraction), disk.totalBytes / 4);
    while (files.length && (total > limits.capBytes || disk.freeBytes < reserve)) {
      const oldest = files.pop()!;
      unlinkSync(oldest.path);
      removed.push(oldest.path);
      total -= oldest.size;
      disk = { ...disk, freeBytes: disk.freeBytes + oldest.size };
    }
  } catch {
    // best effort
  }
  return removed;
}

/** All log lines on disk, newest first: the live file, then .1, .2, … (each read bottom-up). */
export function* readLogLinesNewestFirst(logPath: string): Generator<string> {
  const paths = [logPath, ...rotatedFiles(logPath).map((f) => f.path)];
  for (const p of paths) {
    let text: string;
    try {
      text = readFileSync(p, "utf8");
    } catch {
      continue;
    }
    const lines = text.split("\n");
    for (let i = lines.length - 1; i >= 0; i--) if (lines[i]) yield lines[i]!;
  }
}

/** Total bytes of the log files (live + rotated). */
export function logBytes(logPath: string): number {
  const live = existsSync(logPath) ? statSync(logPath).size : 0;
  return live + rotatedFiles(logPath).reduce((s, f) => s + f.size, 0);
}
