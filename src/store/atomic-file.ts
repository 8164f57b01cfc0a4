/**
 * @module One file write that is whole or absent: write a temp file beside it, set its mode, rename over the old
 * one (rename(2) is atomic within a file system), so a crash never leaves a half-written config or token.
 */
import { chmodSync, renameSync, writeFileSync } from "node:fs";

export function writeFileAtomic(path: string, text: string, mode = 0o600) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}
