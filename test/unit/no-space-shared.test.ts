/**
 * The cache disk found full by one worker is full for every worker (issue 12, defect 5). A worker that had never
 * met the full disk used to fill the next object without a length until ENOSPC, cutting its agent at the disk's
 * end (`test/e2e/hardening.test.ts` "a full cache disk" failed about one run in six: reusePort sent the chunked
 * object to the other worker). Here two runtimes share the admission buffer, as the pool's workers do.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { markNoSpace, storeIsFull } from "../../src/workers/fill";
import { NO_SPACE_SLOT, SHARED_SLOTS } from "../../src/workers/protocol";
import type { WorkerRuntime } from "../../src/workers/runtime";
import type { Store } from "../../src/store/cache/store";

const dir = mkdtempSync(join(tmpdir(), "agate-nospace-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const store = { dir } as Store;
const pair = () => {
  const shared = new Int32Array(new SharedArrayBuffer(SHARED_SLOTS * 4));
  const one = () => ({ cacheNoSpace: null, admission: shared }) as unknown as WorkerRuntime;
  return { a: one(), b: one(), shared };
};
const T0 = 1_700_000_000_000;

describe("a full cache disk is shared by the workers (src/workers/fill.ts)", () => {
  test("worker a finds an object that cannot fit: worker b, which never met the disk, passes objects through too", () => {
    const { a, b, shared } = pair();
    expect(storeIsFull(b, store, T0)).toBe(false);
    markNoSpace(a, store, Number.MAX_SAFE_INTEGER / 2, T0, "a 4 PiB object");
    expect(shared[NO_SPACE_SLOT]).toBeGreaterThan(0);
    expect(storeIsFull(a, store, T0)).toBe(true);
    expect(storeIsFull(b, store, T0)).toBe(true); // b looked at the disk itself (statfs) and found it short
    expect(b.cacheNoSpace).not.toBeNull();
  });

  test("space returns: the worker that sees it clears the mark for all; the other sees space at its next look", () => {
    const { a, b, shared } = pair();
    markNoSpace(a, store, 1024, T0, "a 1 KiB object"); // a tmp directory has a KiB free
    expect(storeIsFull(b, store, T0)).toBe(false); // b's own look: there is space
    expect(shared[NO_SPACE_SLOT]).toBe(0);
    expect(b.cacheNoSpace).toBeNull();
    expect(storeIsFull(a, store, T0)).toBe(true); // a looks again only after its recheck interval
    expect(storeIsFull(a, store, T0 + 60_000)).toBe(false);
    expect(storeIsFull(b, store, T0 + 60_000)).toBe(false);
  });

  test("without a shared buffer (a session test's runtime) a worker keeps its own mark", () => {
    const a = { cacheNoSpace: null, admission: null } as unknown as WorkerRuntime;
    markNoSpace(a, store, Number.MAX_SAFE_INTEGER / 2, T0, "huge");
    expect(storeIsFull(a, store, T0 + 60_000)).toBe(true);
  });
});
