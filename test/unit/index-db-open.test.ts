/**
 * Several threads open one new `index.db` at the same moment, as the supervisor and the workers do when a gateway
 * starts on an empty cache directory. Each must get the index, not `SQLITE_BUSY`: CI once failed
 * test/unit/store-disk.test.ts with "database is locked" from `PRAGMA journal_mode = WAL` (SQLite answers BUSY at
 * once, without the busy handler, where waiting could deadlock: a connection holding a read lock that wants to write
 * while another already waits to write). The open therefore reads the journal mode before changing it and retries the
 * switch to WAL for as long as its busy timeout.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = mkdtempSync(join(tmpdir(), "agate-index-open-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Reply = { ok: true } | { ok: false; code: string; message: string };

async function openTogether(path: string, parties: number): Promise<Reply[]> {
  const barrier = new SharedArrayBuffer(4);
  const workers = Array.from({ length: parties }, () => new Worker(new URL("../fixtures/index-open-fixture.ts", import.meta.url).href));
  try {
    const replies = workers.map(
      (w) =>
        new Promise<Reply>((res) => {
          w.onmessage = (ev: MessageEvent<Reply>) => res(ev.data);
          w.onerror = (ev) => res({ ok: false, code: "worker-error", message: String(ev.message) });
        }),
    );
    for (const w of workers) w.postMessage({ path, barrier, parties });
    return await Promise.all(replies);
  } finally {
    for (const w of workers) w.terminate();
  }
}

test("6 threads opening one new index.db at once, 100 times over: every open succeeds", async () => {
  const failures: string[] = [];
  for (let round = 0; round < 100; round++) {
    const replies = await openTogether(join(root, `r${round}.db`), 6);
    for (const r of replies) if (!r.ok) failures.push(`round ${round}: ${r.code}: ${r.message}`);
  }
  expect(failures).toEqual([]);
}, 120_000);
