/**
 * The disk store (src/store/cache/store.ts): the shared contract, then what only a real directory shows — a blob corrupted
 * on disk, crash leftovers and a real kill -9, and several worker threads claiming one key at once, including a
 * filler thread terminated mid-fill. Every wait is bounded; temp directories are removed.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { blobRelPath } from "../../src/store/cache/blobs";
import { Store, type StoreOptions } from "../../src/store/cache/store";
import { storeBody, storeContract, until, within } from "../contract/store.contract";
import type { FromWorker, ToWorker } from "../fixtures/store-worker-fixture";
import { makeBody, makeChunk, sha256Hex } from "../fixtures/store-data";

const root = mkdtempSync(join(tmpdir(), "agate-store-test-"));
let n = 0;
const makeDir = () => join(root, `s${n++}`);
const open = (dir: string, opts: Partial<StoreOptions> = {}) =>
  Store.open(dir, { maxBytes: 1 << 30, owner: `${process.pid}:test`, ...opts });

afterAll(() => rmSync(root, { recursive: true, force: true }));

storeContract("disk", { makeDir, open });

const K = "GET https://dl.example.test/agent-installer.bin";

function flipByte(path: string, at: number): void {
  const fd = openSync(path, "r+");
  try {
    const b = new Uint8Array(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at); // in place, same size: never truncate a blob someone may have mapped
  } finally {
    closeSync(fd);
  }
}

const files = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
const blobFiles = (dir: string) => files(join(dir, "blobs")).flatMap((f) => files(join(dir, "blobs", f)));

describe("disk: integrity", () => {
  test("a blob corrupted on disk is detected at its first open after a reopen: body → null, entry and file gone", () => {
    const dir = makeDir();
    let s = open(dir);
    const body = makeBody(8, 8192);
    const e = storeBody(s, K, body);
    const other = storeBody(s, `${K}?other`, makeChunk(7, 999));
    expect(Buffer.from(s.body(e)!).equals(Buffer.from(body))).toBe(true);
    s.close();

    flipByte(e.blobPath, 12_345);
    s = open(dir);
    try {
      const found = s.lookup(K, [])!;
      expect(found).not.toBeNull(); // the index cannot know yet
      expect(s.body(found)).toBeNull();
      expect(s.lookup(K, [])).toBeNull();
      expect(existsSync(e.blobPath)).toBe(false);
      expect(s.usage()).toEqual({ entries: 1, bytes: 999 });
      // the intact entry is untouched
      expect(sha256Hex(s.body(s.lookup(`${K}?other`, [])!)!)).toBe(other.sha256);
      // and the key can be filled again
      expect(s.claimFill(K).role).toBe("filler");
    } finally {
      s.close();
    }
  });

  test("verification happens once per boot id for an unchanged file: the filler's hash is trusted, a new boot id rehashes", () => {
    const dir = makeDir();
    const s1 = open(dir, { bootId: "boot-1" });
    const e = storeBody(s1, K, makeBody(2, 1000));
    s1.close();
    const mark = () => new Database(join(dir, "index.db"), { readonly: true }).query("SELECT verified FROM entries").get() as { verified: string };
    const filled = mark().verified;
    expect(filled).toStartWith("boot-1/");
    // same boot id (another worker of the same process), file untouched: the filler's check stands, no new mark
    const s2 = open(dir, { bootId: "boot-1" });
    expect(sha256Hex(s2.body(s2.lookup(K, [])!)!)).toBe(e.sha256);
    s2.close();
    expect(mark().verified).toBe(filled);
    // a new process life: checks again and notes it
    const s3 = open(dir, { bootId: "boot-2" });
    try {
      expect(sha256Hex(s3.body(s3.lookup(K, [])!)!)).toBe(e.sha256);
    } finally {
      s3.close();
    }
    expect(mark().verified).toStartWith("boot-2/");
  });

  test("a blob written into while it is stored is checked again, by the same boot id and from a kept mapping: body → null", () => {
    // issue 12: the filler's "already checked" note and the per-thread mapping used to hide a live corruption for the
    // rest of the process's life; the file's stamp (inode, ctime, size) moving sends it back to the SHA-256 check
    const dir = makeDir();
    const s1 = open(dir, { bootId: "boot-1" });
    const e = storeBody(s1, K, makeBody(3, 1000));
    s1.close();
    flipByte(e.blobPath, 10);
    const s2 = open(dir, { bootId: "boot-1" });
    try {
      expect(s2.body(s2.lookup(K, [])!)).toBeNull();
      expect(s2.lookup(K, [])).toBeNull();
      const again = storeBody(s2, K, makeBody(3, 1000));
      expect(sha256Hex(s2.body(again)!)).toBe(again.sha256); // mapped and kept by this Store now
      flipByte(again.blobPath, 20);
      expect(s2.body(s2.lookup(K, [])!)).toBeNull();
      expect(existsSync(again.blobPath)).toBe(false);
    } finally {
      s2.close();
    }
  });

  test("a blob file that vanished gives body → null and the entry is dropped; a truncated one likewise", () => {
    const dir = makeDir();
    const s = open(dir);
    try {
      const a = storeBody(s, K, makeChunk(1, 5000));
      const b = storeBody(s, `${K}?b`, makeChunk(2, 5000));
      rmSync(a.blobPath);
      expect(s.body(a)).toBeNull();
      expect(s.lookup(K, [])).toBeNull();
      writeFileSync(b.blobPath, makeChunk(2, 4000)); // shorter: a new file, not a truncated mapping
      expect(s.body(s.lookup(`${K}?b`, [])!)).toBeNull();
      expect(s.lookup(`${K}?b`, [])).toBeNull();
      expect(s.usage().entries).toBe(0);
    } finally {
      s.close();
    }
  });

  test("identical bodies share one blob file, which goes with its last entry", () => {
    const dir = makeDir();
    const s = open(dir);
    try {
      const a = storeBody(s, K, makeChunk(5, 4000));
      const b = storeBody(s, `${K}?mirror`, makeChunk(5, 4000));
      expect(a.blobPath).toBe(b.blobPath);
      expect(blobFiles(dir)).toHaveLength(1);
      s.delete(K);
      expect(existsSync(b.blobPath)).toBe(true);
      expect(sha256Hex(s.body(b)!)).toBe(b.sha256);
      s.delete(`${K}?mirror`);
      expect(blobFiles(dir)).toHaveLength(0);
    } finally {
      s.close();
    }
  });
});

describe("disk: crash recovery at open", () => {
  test("temp files, dead 'filling' rows, rows without a blob and blobs without a row are removed; good entries stay", async () => {
    const dir = makeDir();
    let s = open(dir, { staleMs: 200 });
    const good = storeBody(s, K, makeBody(3, 3000));
    const lost = storeBody(s, `${K}?lost`, makeChunk(3, 100));
    // a fill in progress when the "crash" happens
    const c = s.claimFill(`${K}?partial`);
    if (c.role !== "filler") throw new Error("expected filler");
    c.fill.write(makeChunk(1, 1000));
    const tmpFiles = files(join(dir, "tmp"));
    expect(tmpFiles).toHaveLength(1);
    // simulate the crash: the handle disappears without close (no fail, no cleanup)
    // - a leftover temp file from an even older crash
    writeFileSync(join(dir, "tmp", "0123abcd.deadbeef"), "junk");
    // - a blob renamed into place whose index row was never committed
    const orphan = join(dir, blobRelPath("ab".repeat(32)));
    Bun.spawnSync(["mkdir", "-p", join(orphan, "..")]);
    writeFileSync(orphan, "orphan");
    // - an index row whose blob is gone (power loss after the commit, before the rename reached the disk)
    rmSync(lost.blobPath);
    // the crashed filler's heartbeat stops; make its files look as old as it is
    const old = new Date(Date.now() - 60_000);
    for (const f of files(join(dir, "tmp"))) utimesSync(join(dir, "tmp", f), old, old);
    const db = new Database(join(dir, "index.db"));
    db.run("UPDATE fills SET heartbeat = heartbeat - 60000 WHERE status = 'filling'");
    db.close();

    // the old handle is abandoned, as a killed process would; a new one recovers
    const s2 = open(dir, { staleMs: 200 });
    try {
      expect(s2.recovery).toEqual({ tmpFiles: 2, fills: 1, rows: 1, blobs: 1 });
      expect(files(join(dir, "tmp"))).toEqual([]);
      expect(existsSync(orphan)).toBe(false);
      expect(s2.lookup(`${K}?lost`, [])).toBeNull();
      expect(sha256Hex(s2.body(s2.lookup(K, [])!)!)).toBe(good.sha256);
      expect(s2.usage()).toEqual({ entries: 1, bytes: good.size });
      const again = s2.claimFill(`${K}?partial`);
      expect(again.role).toBe("filler");
      if (again.role === "filler") again.fill.fail("failed", "test");
    } finally {
      s2.close();
      c.fill.fail("failed", "test"); // the abandoned handle
      s.close();
    }
  });

  test("a young temp file of a fill that is just starting (another worker) is not deleted by a concurrent open", () => {
    const dir = makeDir();
    const a = open(dir);
    const c = a.claimFill(K); // live row, fresh heartbeat
    writeFileSync(join(dir, "tmp", "young.0001"), "x"); // created a moment ago, row not yet inserted
    const b = open(dir);
    try {
      expect(b.recovery.tmpFiles).toBe(0);
      expect(files(join(dir, "tmp")).sort()).toHaveLength(2);
    } finally {
      if (c.role === "filler") c.fill.fail("failed", "test");
      a.close();
      b.close();
    }
  });

  test("kill -9 of a process in the middle of a fill: the next open cleans up, the committed entry is intact", async () => {
    const dir = makeDir();
    const proc = Bun.spawn([process.execPath, join(import.meta.dir, "../fixtures/store-crash-fixture.ts"), dir], {
      stdout: "pipe",
      stderr: "pipe",
    });
    try {
      const reader = proc.stdout.getReader();
      let out = "";
      await within(15_000, "crash fixture READY", (async () => {
        while (!out.includes("READY")) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`fixture exited early: ${out} ${await new Response(proc.stderr).text()}`);
          out += new TextDecoder().decode(value);
        }
      })());
      proc.kill(9);
      expect(await within(5000, "fixture exit", proc.exited)).not.toBe(0);
      expect(proc.signalCode).toBe("SIGKILL");
    } finally {
      proc.kill(9);
    }
    expect(files(join(dir, "tmp"))).toHaveLength(1);
    // make the dead fill old instead of waiting: its temp file by mtime (wall clock), its row by the store's clock
    const old = new Date(Date.now() - 60_000);
    for (const f of files(join(dir, "tmp"))) utimesSync(join(dir, "tmp", f), old, old);
    const s = open(dir, { staleMs: 200, clock: () => Date.now() + 60_000 });
    try {
      expect(s.recovery).toMatchObject({ tmpFiles: 1, fills: 1, rows: 0, blobs: 0 });
      expect(files(join(dir, "tmp"))).toEqual([]);
      const kept = s.lookup("GET https://crash.test/kept", [])!;
      expect(kept.headers).toEqual([["etag", '"k"']]);
      expect(sha256Hex(s.body(kept)!)).toBe(sha256Hex(makeBody(4, 4096)));
      expect(s.lookup("GET https://crash.test/partial", [])).toBeNull();
      expect(s.claimFill("GET https://crash.test/partial").role).toBe("filler");
    } finally {
      s.close();
    }
  }, 30_000);
});

// ───────────────────────────── threads ─────────────────────────────

type Spawned = { w: Worker; id: number; msgs: FromWorker[]; exited: boolean };

function spawnWorkers(count: number, dir: string, staleMs: number, heartbeatMs: number): Spawned[] {
  const out: Spawned[] = [];
  for (let id = 0; id < count; id++) {
    const w = new Worker(new URL("../fixtures/store-worker-fixture.ts", import.meta.url).href);
    const s: Spawned = { w, id, msgs: [], exited: false };
    w.onmessage = (ev: MessageEvent<FromWorker>) => s.msgs.push(ev.data);
    // a worker that throws outside its handlers (e.g. in Store.open) would otherwise only show as a timeout
    w.addEventListener("error", (ev) => s.msgs.push({ t: "error", id, code: "WORKER_THREW", outcome: "?", message: String((ev as ErrorEvent).message ?? ev), attempt: -1 }));
    w.addEventListener("close", () => (s.exited = true));
    w.postMessage({ t: "open", dir, id, staleMs, heartbeatMs } satisfies ToWorker);
    out.push(s);
  }
  return out;
}

/** `until`, and on a timeout what every worker said so far (CI shows only the failure's message) */
const untilIn = (ws: Spawned[], ms: number, what: string, cond: () => boolean) =>
  until(ms, what, cond).catch((e: Error) => {
    const said = ws.map((s) => `w${s.id}${s.exited ? " (exited)" : ""}: ${s.msgs.map((m) => (m.t === "error" ? `error ${m.code} ${m.message}` : m.t)).join(", ") || "nothing"}`);
    throw new Error(`${e.message}; the workers said: ${said.join("; ")}`);
  });
const send = (s: Spawned, m: ToWorker) => s.w.postMessage(m);
const has = (s: Spawned, pred: (m: FromWorker) => boolean) => s.msgs.some(pred);
const find = <T extends FromWorker["t"]>(s: Spawned, t: T, pred: (m: Extract<FromWorker, { t: T }>) => boolean = () => true) =>
  s.msgs.find((m) => m.t === t && pred(m as Extract<FromWorker, { t: T }>)) as Extract<FromWorker, { t: T }> | undefined;

describe("disk: worker threads", () => {
  test("4 threads claim one key at once: exactly one fills, the others get the head first and stream identical bytes before the fill completes", async () => {
    const dir = makeDir();
    const chunks = 24;
    const chunkSize = 32 * 1024;
    const expected = sha256Hex(makeBody(chunks, chunkSize));
    const ws = spawnWorkers(4, dir, 2000, 200);
    try {
      await untilIn(ws, 15_000, "workers ready", () => ws.every((s) => has(s, (m) => m.t === "ready")));
      const half = (chunks / 2) * chunkSize;
      for (const s of ws) {
        send(s, { t: "claim", key: K, chunks, chunkSize, delayMs: 2, gateAfter: chunks / 2, progressAt: half });
      }
      await untilIn(ws, 10_000, "every role", () => ws.every((s) => has(s, (m) => m.t === "role")));
      const fillers = ws.filter((s) => find(s, "role")!.role === "filler");
      const waiters = ws.filter((s) => find(s, "role")!.role === "waiter");
      expect(fillers).toHaveLength(1);
      expect(waiters).toHaveLength(3);
      const filler = fillers[0]!;
      // the filler is parked at the gate with half the body written: every waiter must already have the head
      // and the first half — i.e. they stream, they do not wait for the end
      await untilIn(ws, 10_000, "filler at the gate", () => has(filler, (m) => m.t === "gate"));
      await untilIn(ws, 10_000, "waiters got head and half the body", () =>
        waiters.every((s) => has(s, (m) => m.t === "head") && has(s, (m) => m.t === "progress")),
      );
      expect(waiters.every((s) => find(s, "head")!.status === 200)).toBe(true);
      expect(waiters.every((s) => !has(s, (m) => m.t === "done"))).toBe(true);
      send(filler, { t: "continue" });
      await untilIn(ws, 10_000, "fill committed and waiters done", () =>
        has(filler, (m) => m.t === "committed") && waiters.every((s) => has(s, (m) => m.t === "done" || m.t === "error")),
      );
      expect(find(filler, "committed")).toMatchObject({ size: chunks * chunkSize, sha256: expected });
      for (const s of waiters) {
        expect(find(s, "error")).toBeUndefined();
        expect(find(s, "done")).toMatchObject({ size: chunks * chunkSize, sha256: expected });
      }
      const s = open(dir);
      try {
        expect(sha256Hex(s.body(s.lookup(K, [])!)!)).toBe(expected);
      } finally {
        s.close();
      }
    } finally {
      for (const s of ws) s.w.terminate();
    }
  }, 60_000);

  test("a filler thread terminated mid-fill: waiters end with outcome 'stale' after the heartbeat timeout, then one takes over and the rest stream its bytes", async () => {
    const dir = makeDir();
    const chunks = 16;
    const chunkSize = 16 * 1024;
    const expected = sha256Hex(makeBody(chunks, chunkSize));
    const staleMs = 400;
    const ws = spawnWorkers(4, dir, staleMs, 100);
    try {
      await untilIn(ws, 15_000, "workers ready", () => ws.every((s) => has(s, (m) => m.t === "ready")));
      const half = (chunks / 2) * chunkSize;
      // every worker stalls at half if it fills (only the first filler matters: the test kills it there);
      // waiters retry once after an error
      for (const s of ws) {
        send(s, {
          t: "claim", key: K, chunks, chunkSize, delayMs: 1, progressAt: half, retries: 1,
          stallAfter: chunks / 2,
        });
      }
      await untilIn(ws, 10_000, "every role", () => ws.every((s) => has(s, (m) => m.t === "role")));
      const filler = ws.find((s) => find(s, "role")!.role === "filler")!;
      const others = ws.filter((s) => s !== filler);
      expect(others.every((s) => find(s, "role")!.role === "waiter")).toBe(true);
      await untilIn(ws, 10_000, "waiters streamed the first half", () => others.every((s) => has(s, (m) => m.t === "progress")));
      filler.w.terminate();
      await untilIn(ws, 10_000, "waiters see the dead filler", () => others.every((s) => has(s, (m) => m.t === "error")));
      for (const s of others) {
        // either this waiter's poll saw the heartbeat stop, or another waiter had already taken the fill over:
        // both are the outcome "stale" (claim again), read from the fills row, not from a message
        expect(find(s, "error")).toMatchObject({ code: "PX_FILL_STALE", outcome: "stale" });
      }
      // the retries (attempt 1): exactly one takes the stale fill over and completes it; the others stream its bytes
      await untilIn(ws, 10_000, "retry roles", () => others.every((s) => has(s, (m) => m.t === "role" && m.attempt === 1)));
      const second = others.filter((s) => find(s, "role", (m) => m.attempt === 1)!.role === "filler");
      expect(second).toHaveLength(1);
      await untilIn(ws, 10_000, "retry round finished", () =>
        has(second[0]!, (m) => m.t === "committed") &&
        others.every((s) => s === second[0] || has(s, (m) => m.t === "done" || (m.t === "error" && m.attempt === 1))),
      );
      expect(find(second[0]!, "committed")).toMatchObject({ size: chunks * chunkSize, sha256: expected });
      for (const s of others) {
        if (s === second[0]) continue;
        expect(find(s, "error", (m) => m.attempt === 1)).toBeUndefined();
        expect(find(s, "done")).toMatchObject({ size: chunks * chunkSize, sha256: expected });
      }
      const s = open(dir);
      try {
        expect(sha256Hex(s.body(s.lookup(K, [])!)!)).toBe(expected);
        expect(files(join(dir, "tmp"))).toEqual([]); // the dead filler's temp file went with the takeover
      } finally {
        s.close();
      }
    } finally {
      for (const s of ws) s.w.terminate();
    }
  }, 60_000);
});
