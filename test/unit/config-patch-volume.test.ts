/**
 * The patch volume is a second disk (issue 10): another device than data_dir (st_dev), a minimum checked against
 * what agate can use there (free space + its own store), and a store budget that keeps the volume below the
 * high-water mark whatever else lives on it. /dev/shm (tmpfs) is the "other device" here; /tmp is data_dir's.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/core/config";
import { PATCH_HIGH_WATER, checkPatchVolume, patchBudget, volumeInfo } from "../../src/store/patch-volume";

const made: string[] = [];
const tmp = (root = tmpdir()) => {
  const d = mkdtempSync(join(root, "agate-vol-"));
  made.push(d);
  return d;
};
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});
const otherDevice = statSync("/dev/shm", { throwIfNoEntry: false })?.dev !== statSync(tmpdir()).dev;
const cfg = (data: string, vol: string, extra: Record<string, unknown> = {}) =>
  parseConfig({ gateway: { data_dir: data }, patch: { volume: vol, min_volume_bytes: 1, ...extra } });

describe("patch volume", () => {
  test("a directory on data_dir's device is refused, naming st_dev; patch.allow_same_device lets a lab use it", () => {
    const data = join(tmp(), "data"); // not made yet: its parent's device counts
    const vol = tmp();
    const r = checkPatchVolume(cfg(data, vol));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.key).toBe("patch.volume");
      expect(r.reason).toContain("same device as gateway.data_dir");
    }
    expect(checkPatchVolume(cfg(data, vol, { allow_same_device: true })).ok).toBe(true);
  });

  test.skipIf(!otherDevice)("a volume on another device passes", () => {
    expect(checkPatchVolume(cfg(join(tmp(), "data"), tmp("/dev/shm"))).ok).toBe(true);
  });

  test("the minimum is checked against free space plus agate's own store, not the file system's size", () => {
    const data = tmp();
    const vol = tmp();
    const info = volumeInfo(vol);
    // the file system is big enough, but what agate can use there is not
    const bySize = checkPatchVolume(cfg(data, vol, { allow_same_device: true, min_volume_bytes: info.size }));
    expect(bySize.ok).toBe(false);
    if (!bySize.ok) expect(bySize.reason).toContain("of which agate can use");
    // its own store counts as usable: a volume the store filled is not refused at the next start
    mkdirSync(join(vol, "agate-patch"));
    writeFileSync(join(vol, "agate-patch", "blob"), Buffer.alloc(4 * 1024 * 1024, 1));
    const free = volumeInfo(vol).free;
    expect(checkPatchVolume(cfg(data, vol, { allow_same_device: true, min_volume_bytes: free + 2 * 1024 * 1024 })).ok).toBe(true);
  });

  test("the store's budget keeps the volume below the high-water mark: its own bytes plus the room left under it", () => {
    const vol = tmp();
    mkdirSync(join(vol, "agate-patch"));
    writeFileSync(join(vol, "agate-patch", "blob"), Buffer.alloc(1024 * 1024, 1));
    const c = cfg(tmp(), vol, { allow_same_device: true });
    const info = volumeInfo(vol);
    const budget = patchBudget(c);
    const own = statSync(join(vol, "agate-patch", "blob")).blocks * 512;
    expect(Math.abs(budget - (own + info.size * PATCH_HIGH_WATER - info.used))).toBeLessThan(16 * 1024 * 1024); // others write meanwhile
    expect(budget).toBeLessThan(info.size * PATCH_HIGH_WATER);
  });
});
