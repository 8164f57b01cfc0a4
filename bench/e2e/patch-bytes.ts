/**
 * @module The patch benchmark's file contents: every 4-byte word carries its own position, so any byte can be
 * checked from its offset alone and a misplaced or repeated slice changes the bytes. (test/peers/tls-origin.ts
 * `patternBytes` repeats every 256 bytes, and a 4 MB slice is a multiple of 256: a slice served in the wrong
 * place would still match it, and its SHA-256 too.) Word j (offset 4j, little-endian) = (j XOR mix(seed)) ×
 * 0x9E3779B1 mod 2^32: a bijection of j, so distinct for every word of a file up to 16 GiB, and different per seed.
 * The orchestrator writes the files with it; bench/e2e/patch-range-client.ts checks 206 bodies with it.
 */
import { closeSync, openSync, writeSync } from "node:fs";

const GOLDEN = 0x9e3779b1;

const seedMix = (seed: number) => Math.imul(seed ^ 0x5bd1e995, 0x85ebca6b) >>> 0;

/** `n` bytes of file `seed` starting at byte `offset`. */
export function patchBytes(offset: number, n: number, seed: number): Uint8Array {
  const lead = offset % 4;
  const first = (offset - lead) / 4; // word index, exact below 2^53
  const words = Math.ceil((lead + n) / 4);
  const buf = new Uint8Array(words * 4);
  const w = new Uint32Array(buf.buffer);
  const m = seedMix(seed);
  for (let k = 0; k < words; k++) w[k] = Math.imul(((first + k) ^ m) >>> 0, GOLDEN);
  return buf.subarray(lead, lead + n);
}

/** True when `got` is exactly the bytes of file `seed` at `offset`. */
export function isPatchBytes(got: Uint8Array, offset: number, seed: number): boolean {
  return Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(patchBytes(offset, got.byteLength, seed));
}

/** Write `size` bytes of file `seed` to `file`, 8 MiB at a time; returns the file's SHA-256 (hex). */
export function writePatchFile(file: string, size: number, seed: number): string {
  const fd = openSync(file, "w");
  const h = new Bun.CryptoHasher("sha256");
  const CH = 8 * 1024 * 1024;
  try {
    for (let off = 0; off < size; off += CH) {
      const b = patchBytes(off, Math.min(CH, size - off), seed);
      h.update(b);
      for (let done = 0; done < b.byteLength; ) done += writeSync(fd, b, done, b.byteLength - done);
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}
