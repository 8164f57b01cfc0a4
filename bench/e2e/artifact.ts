/**
 * @module The savings benchmark's artifacts: deterministic bytes per name, so the origin fixture, the load
 * client and the orchestrator agree on every byte (and its SHA-256) without passing bodies between processes.
 * Pseudo-random (xorshift32 seeded by an FNV-1a hash of the name) rather than a short repeating pattern, so a
 * misplaced or repeated chunk changes the digest.
 */
import { createHash } from "node:crypto";

export const MANIFEST_BYTES = 2 * 1024 * 1024;

function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h || 1;
}

/** `size` bytes for `name`; the same arguments give the same bytes in every process. */
export function artifactBytes(name: string, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const words = new Uint32Array(out.buffer, 0, size >>> 2);
  let x = seedOf(name);
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
  }
  return out;
}

export function sha256Hex(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

/** The strong validator the origin sends: the first 32 hex digits of the body's SHA-256. */
export function artifactEtag(sha256: string): string {
  return `"${sha256.slice(0, 32)}"`;
}
