/**
 * `Pool.confirm()` (src/supervisor/pool.ts, issue 14): a config change is "applied" only once EVERY live worker
 * answered "config-applied" for it. The e2e tests (fleet-steer) run one worker per gateway, and a worker handles
 * the "config" message before the next connection in practice, so they pass without the wait too. Here the pool
 * runs two fake workers (the global `Worker` replaced by an in-process double, no threads) whose answers the test
 * gives by hand: worker 0 confirms at once, worker 1 late, never, with an error, or dies.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Pool } from "../../src/supervisor/pool";
import { decode, encode, type SupervisorToWorker, type WorkerToSupervisor } from "../../src/workers/protocol";
import type { Config } from "../../src/core/config";
import { waitFor } from "../peers/helpers";

/** A worker thread double: answers "init" with "ready"; "config" is recorded and answered by `ack` (worker 0 at once). */
class FakeWorker extends EventTarget {
  static all: FakeWorker[] = [];
  index = -1;
  gens: number[] = [];
  constructor() {
    super();
    FakeWorker.all.push(this);
  }
  postMessage(data: { msg: Uint8Array }) {
    const m = decode<SupervisorToWorker>(data.msg);
    if (m.t === "init") {
      this.index = m.index;
      queueMicrotask(() => this.post({ t: "ready", index: m.index, ports: { proxy: 0, cache: 0 } } as WorkerToSupervisor));
    }
    if (m.t === "config") {
      this.gens.push(m.gen);
      if (this.index === 0) queueMicrotask(() => this.ack(m.gen));
    }
  }
  ack(gen: number, error?: string) {
    this.post({ t: "config-applied", index: this.index, gen, ...(error ? { error } : {}) });
  }
  post(m: WorkerToSupervisor) {
    this.dispatchEvent(new MessageEvent("message", { data: encode(m) }));
  }
  die() {
    this.dispatchEvent(Object.assign(new Event("close"), { code: 1 }));
  }
  terminate() {}
}

const realWorker = globalThis.Worker;
beforeAll(() => {
  (globalThis as any).Worker = FakeWorker;
});
afterAll(() => {
  (globalThis as any).Worker = realWorker;
});

const CONFIG = { gateway: { name: "gw" } } as unknown as Config;
/** A started pool of two fake workers, both ready; `acks` lists the "config-applied" messages in arrival order. */
async function twoWorkers() {
  FakeWorker.all = [];
  const acks: { index: number; gen: number }[] = [];
  const pool = new Pool(CONFIG, { proxy: 0, cache: 0 }, null, 2, {
    onMessage: (m) => void (m.t === "config-applied" && acks.push({ index: m.index, gen: m.gen })),
    onExit: () => {},
  });
  pool.start();
  await waitFor(() => pool.alive() === 2, { what: "both fake workers ready" });
  const [w0, w1] = FakeWorker.all as [FakeWorker, FakeWorker];
  return { pool, acks, w0, w1 };
}

describe("Pool.confirm waits for every worker (src/supervisor/pool.ts)", () => {
  test("worker 1 confirms after worker 0: confirm resolves only after worker 1's answer, confirmed", async () => {
    const { pool, acks, w0, w1 } = await twoWorkers();
    pool.setConfig(CONFIG, { proxy: 0, cache: 0 }, null);
    expect(w1.gens).toEqual([1]);
    let acksWhenResolved: typeof acks | null = null;
    const p = pool.confirm(30_000).then((r) => ((acksWhenResolved = [...acks]), r));
    await waitFor(() => acks.some((x) => x.index === 0), { what: "worker 0's config-applied" });
    w1.ack(1); // only now: a confirm that did not wait for worker 1 resolved before this
    expect(await p).toEqual({ confirmed: true });
    expect(acksWhenResolved!).toEqual([
      { index: 0, gen: 1 },
      { index: 1, gen: 1 },
    ]);
    expect(w0.gens).toEqual([1]);
    await pool.terminate(0);
  });

  test("worker 1 never confirms: unconfirmed, naming worker 1", async () => {
    const { pool, acks } = await twoWorkers();
    pool.setConfig(CONFIG, { proxy: 0, cache: 0 }, null);
    expect(await pool.confirm(200)).toEqual({ confirmed: false, reason: "worker 1 did not confirm within 0.2 s" });
    expect(acks).toEqual([{ index: 0, gen: 1 }]);
    await pool.terminate(0);
  });

  test("worker 1 could not apply it: unconfirmed with its reason", async () => {
    const { pool, w1 } = await twoWorkers();
    pool.setConfig(CONFIG, { proxy: 0, cache: 0 }, null);
    const p = pool.confirm(30_000);
    w1.ack(1, "port 8443 on 127.0.0.1 is in use");
    expect(await p).toEqual({ confirmed: false, reason: "worker 1 could not apply it: port 8443 on 127.0.0.1 is in use" });
    await pool.terminate(0);
  });

  test("an answer for an older generation does not count; worker 1 dying is not waited for", async () => {
    const { pool, w1 } = await twoWorkers();
    pool.setConfig(CONFIG, { proxy: 0, cache: 0 }, null);
    pool.setConfig(CONFIG, { proxy: 0, cache: 0 }, null);
    w1.ack(1); // the first change only
    expect(await pool.confirm(200)).toEqual({ confirmed: false, reason: "worker 1 did not confirm within 0.2 s" });
    const p = pool.confirm(30_000);
    w1.die(); // its replacement starts with the current config
    expect(await p).toEqual({ confirmed: true });
    await pool.terminate(0);
  });
});
