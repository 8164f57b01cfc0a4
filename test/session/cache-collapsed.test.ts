/**
 * @module Session scripts for collapsed requests (issue 9 defect): agents that joined a fill — in the filler's own
 * thread or in another worker's Store on the same directory — must say `stored` in their Cache-Status (RFC 9211
 * §2.6) when the fill stored the object, and must not when it was not storable. Real Stores on a temp dir, a gated
 * origin double (the fill is held open until every agent has joined), a fixed clock.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULTS } from "../../src/core/config";
import type { Headers, RequestHead } from "../../src/core/http1/head";
import { compilePolicy } from "../../src/core/policy";
import type { Target, Verdict } from "../../src/core/types";
import { Store } from "../../src/store/cache/store";
import { setLogSink } from "../../src/log";
import { emptyCounters } from "../../src/workers/protocol";
import type { WorkerRuntime } from "../../src/workers/runtime";
import type { ExchangeHandle, OriginRequest, Origins, ResponseSink } from "../../src/workers/origin-client";
import type { IncomingRequest, RequestBody, Responder } from "../../src/workers/http-session";
import { makeCacheServices, onCacheRequest } from "../../src/workers/cache-request";
import { waitFor } from "../peers/helpers";

const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
const HOST = "download.microsoft.com";
const TARGET: Target = { host: HOST, port: 443, isIp: false };
const PLATFORM: Verdict = { action: "intercept", rule: "platform-domain", cacheable: true };

/** An origin whose answers wait until `open()`: every agent joins the one fill before it has a head. */
class GatedOrigins implements Origins {
  asked = 0;
  reuses = 0;
  #open!: () => void;
  #gate = new Promise<void>((r) => (this.#open = r));
  constructor(readonly headers: Headers) {}
  open() {
    this.#open();
  }
  start(_req: OriginRequest, sink: ResponseSink): Promise<ExchangeHandle> {
    this.asked++;
    void this.#gate.then(() => {
      sink.onHead({ version: "1.1", status: 200, reason: "", headers: [...this.headers, ["Content-Length", "4"]], headBytes: 0 });
      sink.onData(new TextEncoder().encode("body"));
      sink.onEnd();
    });
    return Promise.resolve({ writeBody: () => true, endBody() {}, resume() {}, abort() {}, set onWritable(_f: (() => void) | null) {} });
  }
  close() {}
}

function responder() {
  const heads: Headers[] = [];
  let status = 0;
  let ended = false;
  const res: Responder = {
    head(st, h) {
      status = st;
      heads.push(h);
    },
    write: () => true,
    end: () => void (ended = true),
    onDrain: (f) => queueMicrotask(f),
    error(st) {
      status = st;
      ended = true;
    },
    get closed() {
      return ended;
    },
    get status() {
      return status;
    },
    get bytesOut() {
      return 0;
    },
  };
  return { res, heads };
}

const noBody: RequestBody = { framing: { kind: "none" }, bytes: 0, pipeTo() {} };

let dir: string;
let stores: Store[];

function runtime(origins: Origins, owner: string, index: number): WorkerRuntime {
  const store = Store.open(join(dir, "cache"), { maxBytes: 1 << 30, owner, clock: () => T0, pollMinMs: 1, pollMaxMs: 2 });
  stores.push(store);
  let ids = 0;
  return {
    ...makeCacheServices(),
    cacheStore: store,
    origins,
    index,
    bootId: "boot",
    config: DEFAULTS,
    policy: compilePolicy(DEFAULTS),
    draining: false,
    admission: null,
    intercepting: true,
    now: () => T0,
    makeId: () => `req-${owner}-${++ids}`,
    counters: emptyCounters(),
    proxyIps: new Set(),
    cacheIps: new Set(),
    platformSeen: new Set(),
    health: null,
    random: () => 0.5,
  } as WorkerRuntime;
}

function get(rt: WorkerRuntime, path: string) {
  const head: RequestHead = { method: "GET", target: path, version: "1.1", headers: [["Host", HOST]], headBytes: 64 };
  const inc: IncomingRequest = { head, scheme: "https", connectTarget: TARGET, connectVerdict: PLATFORM, connId: "c", clientIp: "10.0.0.7", clientPort: 50000 };
  const { res, heads } = responder();
  const done = onCacheRequest(rt, inc, res, noBody);
  return { done, cacheStatus: () => heads[0]?.find(([k]) => k === "Cache-Status")?.[1] };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "agate-collapsed-"));
  stores = [];
  setLogSink(() => {});
});

afterEach(() => {
  for (const s of stores) s.close();
  setLogSink((line) => process.stdout.write(line + "\n"));
  rmSync(dir, { recursive: true, force: true });
});

describe("collapsed requests say what the fill did (RFC 9211 §2.6)", () => {
  test("joiners in the filler's thread and in another worker say `stored` when the fill stored the object", async () => {
    const origins = new GatedOrigins([["Cache-Control", "max-age=60"]]);
    const w1 = runtime(origins, "w1", 0);
    const w2 = runtime(origins, "w2", 1); // another worker: its own Store on the same directory
    const filler = get(w1, "/m.json");
    await waitFor(() => origins.asked === 1, { what: "the fill to start" });
    const local = get(w1, "/m.json");
    const remote = get(w2, "/m.json");
    await waitFor(() => (w1.counters.cache as any)?.collapsed === 1 && (w2.counters.cache as any)?.collapsed === 1, { what: "both joiners" });
    origins.open();
    await Promise.all([filler.done, local.done, remote.done]);
    expect(origins.asked).toBe(1);
    expect(filler.cacheStatus()).toBe("agate; fwd=uri-miss; fwd-status=200; stored; ttl=60");
    expect(local.cacheStatus()).toBe("agate; fwd=uri-miss; fwd-status=200; stored; collapsed; ttl=60");
    expect(remote.cacheStatus()).toBe("agate; fwd=uri-miss; fwd-status=200; stored; collapsed; ttl=60");
  });

  test("joiners of a fill that was not storable do not say `stored`", async () => {
    const origins = new GatedOrigins([["Cache-Control", "no-store"]]);
    const w1 = runtime(origins, "w1", 0);
    const w2 = runtime(origins, "w2", 1);
    const filler = get(w1, "/n.json");
    await waitFor(() => origins.asked === 1, { what: "the fill to start" });
    const local = get(w1, "/n.json");
    const remote = get(w2, "/n.json");
    await waitFor(() => (w1.counters.cache as any)?.collapsed === 1 && (w2.counters.cache as any)?.collapsed === 1, { what: "both joiners" });
    origins.open();
    await Promise.all([filler.done, local.done, remote.done]);
    expect(filler.cacheStatus()).toBe("agate; fwd=uri-miss; fwd-status=200; detail=no-store");
    expect(local.cacheStatus()).toBe("agate; fwd=uri-miss; fwd-status=200; collapsed");
    expect(remote.cacheStatus()).toBe("agate; fwd=uri-miss; fwd-status=200; collapsed");
  });
});
