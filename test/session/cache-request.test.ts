/**
 * @module Session scripts for layer 2 (workers/cache-request.ts), like mitmproxy's Playbook: one request at a time
 * through `onCacheRequest` with no sockets — a real Store on a temp dir, a recording origin double in `rt.origins`,
 * a recording Responder, a fixed clock and counted ids — and assertions on what the origin was asked, what the agent
 * got, what the store holds and the one access-log line. Scripts: a miss that fills, a hit, a stale entry
 * revalidated with a 304, only-if-cached, a fill that fails, a patch slice, an unsafe method invalidating, and a
 * request whose Host does not match its CONNECT.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Config, DEFAULTS } from "../../src/core/config";
import { type ErrorCode, ProxyError } from "../../src/core/errors";
import type { Headers, RequestHead } from "../../src/core/http1/head";
import { compilePolicy } from "../../src/core/policy";
import type { Target, Verdict } from "../../src/core/types";
import { primaryKey } from "../../src/core/cache/key";
import { Store } from "../../src/store/cache/store";
import { setLogSink } from "../../src/log";
import { emptyCounters } from "../../src/workers/protocol";
import type { WorkerRuntime } from "../../src/workers/runtime";
import type { ExchangeHandle, OriginEnv, OriginRequest, Origins, ResponseSink } from "../../src/workers/origin-client";
import type { BodySink, IncomingRequest, RequestBody, Responder } from "../../src/workers/http-session";
import { makeCacheServices, onCacheRequest } from "../../src/workers/cache-request";

const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
const HOST = "download.microsoft.com";
const TARGET: Target = { host: HOST, port: 443, isIp: false };
const PLATFORM: Verdict = { action: "intercept", rule: "platform-domain", cacheable: true };
const PATCH: Verdict = { action: "intercept", rule: "patch-any", cacheable: true };
const enc = new TextEncoder();
const text = (parts: Uint8Array[]) => Buffer.concat(parts).toString("utf8");

// ───────────────────────────── recording doubles ─────────────────────────────

/** What the origin double answers: a response, or a failure before any head (connection refused, reset…). */
type Answer = { status: number; headers: Headers; body?: string | Uint8Array; interim?: [number, Headers][] } | { fail: string; code?: ErrorCode };

/** Records every exchange; answers from `script` on a microtask, like a socket would, later. */
class RecordingOrigins implements Origins {
  readonly asked: OriginRequest[] = [];
  readonly uploaded: Uint8Array[] = [];
  reuses = 0;
  /** when set, answers wait for it (a slow origin: what happens meanwhile) */
  gate: Promise<void> | null = null;
  constructor(public script: (req: OriginRequest) => Answer) {}
  start(req: OriginRequest, sink: ResponseSink, _env: OriginEnv): Promise<ExchangeHandle> {
    this.asked.push(req);
    const a = this.script(req);
    if ("fail" in a) return Promise.reject(new ProxyError(a.code ?? "PX_UPSTREAM_REFUSED", "upstream", a.fail));
    const later = this.gate ? (f: () => void) => void this.gate!.then(f) : queueMicrotask;
    later(() => {
      for (const [st, h] of a.interim ?? []) sink.onInterim?.({ version: "1.1", status: st, reason: "", headers: h, headBytes: 0 });
      sink.onHead({ version: "1.1", status: a.status, reason: "", headers: a.headers, headBytes: 0 });
      const body = typeof a.body === "string" ? enc.encode(a.body) : a.body;
      if (body && body.byteLength) sink.onData(body);
      sink.onEnd();
    });
    const uploaded = this.uploaded;
    return Promise.resolve({
      writeBody: (c) => (uploaded.push(c.slice()), true),
      endBody: () => {},
      resume: () => {},
      abort: () => {},
      set onWritable(_f: (() => void) | null) {},
    });
  }
  close() {}
}

/** A Responder that keeps what the agent would have received. */
function recordingResponder() {
  const r = {
    heads: [] as { status: number; headers: Headers; length: number | null }[],
    interims: [] as [number, Headers][],
    chunks: [] as Uint8Array[],
    ended: false,
    errors: [] as { status: number; reason: string; headers?: Headers }[],
  };
  let status = 0;
  let bytesOut = 0;
  const res: Responder = {
    interim(st, headers) {
      r.interims.push([st, headers]);
    },
    head(st, headers, length) {
      status = st;
      bytesOut += 100; // a head's size does not matter here; the access line sums what was written
      r.heads.push({ status: st, headers, length });
    },
    write(c) {
      bytesOut += c.byteLength;
      r.chunks.push(c.slice());
      return true;
    },
    end() {
      r.ended = true;
    },
    onDrain(f) {
      queueMicrotask(f);
    },
    error(st, reason, headers) {
      status = st;
      r.errors.push({ status: st, reason, headers });
    },
    get closed() {
      return r.ended || r.errors.length > 0;
    },
    get status() {
      return status;
    },
    get bytesOut() {
      return bytesOut;
    },
  };
  return { res, r };
}

/** A request body the agent sends: `pipeTo` hands it over at once. */
function bodyOf(bytes: string | null): RequestBody & { piped: boolean } {
  const b = bytes === null ? null : enc.encode(bytes);
  const port = {
    framing: b ? ({ kind: "length", length: b.byteLength } as const) : ({ kind: "none" } as const),
    bytes: 0,
    piped: false,
    pipeTo(sink: BodySink) {
      port.piped = true;
      if (!b) return;
      port.bytes = b.byteLength;
      sink.writeBody(b);
      sink.endBody();
    },
  };
  return port;
}

// ───────────────────────────── the harness ─────────────────────────────

let dir: string;
let now: number;
let rt: WorkerRuntime;
let origins: RecordingOrigins;
let logLines: any[];

function config(): Config {
  return { ...DEFAULTS, patch: { ...DEFAULTS.patch, slice_bytes: 1024 } };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "agate-session-"));
  now = T0;
  let ids = 0;
  origins = new RecordingOrigins(() => ({ status: 404, headers: [] }));
  const cfg = config();
  rt = {
    ...makeCacheServices(),
    cacheStore: Store.open(join(dir, "cache"), { maxBytes: 1 << 30, owner: "session", clock: () => now }),
    origins,
    index: 0,
    bootId: "boot",
    config: cfg,
    policy: compilePolicy(cfg),
    draining: false,
    admission: null,
    intercepting: true,
    now: () => now,
    makeId: () => `req-${++ids}`,
    counters: emptyCounters(),
    proxyIps: new Set(),
    cacheIps: new Set(),
    platformSeen: new Set(),
    health: null,
    random: () => 0.5,
  };
  logLines = [];
  setLogSink((line) => logLines.push(JSON.parse(line)));
});

afterEach(() => {
  rt.cacheStore?.close();
  rt.patchStore?.close();
  setLogSink((line) => process.stdout.write(line + "\n"));
  rmSync(dir, { recursive: true, force: true });
});

/** One request inside an intercepted CONNECT to HOST:443. */
async function request(method: string, path: string, headers: Headers = [], o: { body?: string; verdict?: Verdict; host?: string } = {}) {
  const head: RequestHead = { method, target: path, version: "1.1", headers: [["Host", o.host ?? HOST], ...headers], headBytes: 64 };
  const inc: IncomingRequest = { head, scheme: "https", connectTarget: TARGET, connectVerdict: o.verdict ?? PLATFORM, connId: "conn-1", clientIp: "10.0.0.7", clientPort: 50123 };
  const { res, r } = recordingResponder();
  const body = bodyOf(o.body ?? null);
  const before = logLines.length;
  await onCacheRequest(rt, inc, res, body);
  const access = logLines.slice(before).filter((l) => l.msg === "access");
  expect(access.length).toBe(1); // one access line per request, whatever happened
  return { r, body, access: access[0], bodyText: text(r.chunks) };
}

const cache = () => rt.counters.cache as Record<string, number>;

// ───────────────────────────── scripts ─────────────────────────────

describe("cache-request sessions", () => {
  test("a miss fills the store (one origin fetch, no conditionals), then a hit serves it with its Age", async () => {
    origins.script = () => ({ status: 200, headers: [["Cache-Control", "max-age=600"], ["ETag", '"v1"'], ["Content-Length", "5"]], body: "hello" });
    const miss = await request("GET", "/pkg/a.cab");
    expect(miss.r.heads.map((h) => [h.status, h.length])).toEqual([[200, 5]]);
    expect(miss.bodyText).toBe("hello");
    expect(miss.r.ended).toBe(true);
    expect(origins.asked.map((q) => [q.method, q.path, q.headers.filter(([k]) => /^if-/i.test(k))])).toEqual([["GET", "/pkg/a.cab", []]]);
    expect(miss.access).toMatchObject({ reqId: "req-1", id: "conn-1", client: "10.0.0.7:50123", host: HOST, path: "/pkg/a.cab", status: 200, phase: "miss", reason: "absent", ms: 0 });
    expect(rt.cacheStore!.lookup(primaryKey("GET", `https://${HOST}/pkg/a.cab`), [])?.size).toBe(5);

    now += 30_000;
    const hit = await request("GET", "/pkg/a.cab");
    expect(origins.asked.length).toBe(1);
    expect(hit.bodyText).toBe("hello");
    expect(hit.r.heads[0]!.headers.find(([k]) => k === "Age")).toEqual(["Age", "30"]);
    expect(hit.access).toMatchObject({ reqId: "req-2", status: 200, phase: "hit", bytesOut: 105 });
    expect(hit.access.reason).toBeUndefined();
    expect([cache().misses, cache().hits, cache().stored]).toEqual([1, 1, 1]);
  });

  test("a stale entry is revalidated with its validators; a 304 freshens it and the agent gets the stored body", async () => {
    const version = "v1";
    origins.script = (q) =>
      q.headers.some(([k, v]) => k.toLowerCase() === "if-none-match" && v === `"${version}"`)
        ? { status: 304, headers: [["Cache-Control", "max-age=60"], ["ETag", `"${version}"`]] }
        : { status: 200, headers: [["Cache-Control", "max-age=60"], ["ETag", `"${version}"`]], body: "stored body" };
    await request("GET", "/pkg/r.cab");
    now += 120_000; // two minutes later: stale
    const reval = await request("GET", "/pkg/r.cab");
    expect(origins.asked.length).toBe(2);
    expect(origins.asked[1]!.headers.filter(([k]) => k.toLowerCase() === "if-none-match")).toEqual([["if-none-match", '"v1"']]);
    expect(reval.r.heads.map((h) => h.status)).toEqual([200]);
    expect(reval.bodyText).toBe("stored body");
    expect(reval.access).toMatchObject({ status: 200, phase: "revalidated", reason: "stale" });
    expect(cache().revalidations).toBe(1);
    // freshened: within the new max-age it is a plain hit
    now += 30_000;
    const hit = await request("GET", "/pkg/r.cab");
    expect(origins.asked.length).toBe(2);
    expect(hit.access.phase).toBe("hit");
  });

  test("only-if-cached with nothing stored: 504 and no upstream traffic", async () => {
    const r = await request("GET", "/pkg/none.cab", [["Cache-Control", "only-if-cached"]]);
    expect(origins.asked).toEqual([]);
    expect(r.r.errors.map((e) => e.status)).toEqual([504]);
    expect(r.access).toMatchObject({ status: 504, phase: "miss", reason: "PX_ONLY_IF_CACHED" });
  });

  test("a fill that fails: one origin attempt, a 502, nothing stored, the next request fetches again", async () => {
    origins.script = () => ({ fail: "connection refused" });
    const r = await request("GET", "/pkg/superseded-revalidated-fallback.cab"); // outcome words in the URL change nothing
    expect(origins.asked.length).toBe(1);
    expect(r.r.errors.map((e) => e.status)).toEqual([502]);
    expect(r.r.heads).toEqual([]);
    expect(r.access).toMatchObject({ status: 502, phase: "miss", reason: "failed" });
    expect(rt.cacheStore!.lookup(primaryKey("GET", `https://${HOST}/pkg/superseded-revalidated-fallback.cab`), [])).toBeNull();
    expect(cache().fill_errors).toBe(1);
    origins.script = () => ({ status: 200, headers: [["Cache-Control", "max-age=60"]], body: "ok" });
    const again = await request("GET", "/pkg/superseded-revalidated-fallback.cab");
    expect(origins.asked.length).toBe(2);
    expect(again.bodyText).toBe("ok");
  });

  test("a response that is not storable is delivered and dropped; the access line names the reason", async () => {
    origins.script = () => ({ status: 200, headers: [["Cache-Control", "no-store"]], body: "secret" });
    const r = await request("GET", "/pkg/secret");
    expect(r.bodyText).toBe("secret");
    expect(r.access).toMatchObject({ status: 200, phase: "miss", reason: "no-store" });
    expect(rt.cacheStore!.usage().entries).toBe(0);
  });

  test("a patch slice: metadata (bytes=0-0) and the one slice the range needs, then hits from the slices", async () => {
    rt.patchStore = Store.open(join(dir, "patch"), { maxBytes: 1 << 30, owner: "session-patch", clock: () => now });
    const total = 3000;
    const file = new Uint8Array(total).map((_, i) => i % 251);
    origins.script = (q) => {
      const range = q.headers.find(([k]) => k.toLowerCase() === "range")?.[1] ?? "";
      const m = /^bytes=(\d+)-(\d+)$/.exec(range)!;
      const [s, e] = [Number(m[1]), Number(m[2])];
      return { status: 206, headers: [["Content-Range", `bytes ${s}-${e}/${total}`], ["ETag", '"p1"'], ["Cache-Control", "max-age=600"]], body: file.subarray(s, e + 1) };
    };
    const r = await request("GET", "/updates/kb1.msu", [["Range", "bytes=1500-1599"]], { verdict: PATCH });
    expect(origins.asked.map((q) => q.headers.find(([k]) => k === "Range")?.[1])).toEqual(["bytes=0-0", "bytes=1024-2047"]);
    expect(origins.asked[1]!.headers.filter(([k]) => k === "If-Match")).toEqual([["If-Match", '"p1"']]); // tied to the version
    expect(r.r.heads.map((h) => [h.status, h.length, h.headers.find(([k]) => k === "Content-Range")?.[1]])).toEqual([[206, 100, "bytes 1500-1599/3000"]]);
    expect([...Buffer.concat(r.r.chunks)]).toEqual([...file.subarray(1500, 1600)]);
    expect(r.access).toMatchObject({ status: 206, phase: "miss", reason: "slices" });
    const again = await request("GET", "/updates/kb1.msu", [["Range", "bytes=1500-1599"]], { verdict: PATCH });
    expect(origins.asked.length).toBe(2);
    expect(again.access).toMatchObject({ status: 206, phase: "hit", reason: "slices" });
    const p = rt.counters.patch as Record<string, number>;
    expect([p.slice_misses, p.slice_hits]).toEqual([1, 1]);
  });

  test("an unsafe method goes to the origin with its body and invalidates the stored entry", async () => {
    origins.script = (q) => (q.method === "GET" ? { status: 200, headers: [["Cache-Control", "max-age=600"]], body: "v1" } : { status: 201, headers: [] });
    await request("GET", "/api/item");
    const pkey = primaryKey("GET", `https://${HOST}/api/item`);
    expect(rt.cacheStore!.lookup(pkey, [])).not.toBeNull();
    const post = await request("POST", "/api/item", [["Content-Length", "5"]], { body: "hello" });
    expect(post.body.piped).toBe(true);
    expect(text(origins.uploaded)).toBe("hello");
    expect(origins.asked.map((q) => q.method)).toEqual(["GET", "POST"]);
    expect(post.r.heads.map((h) => h.status)).toEqual([201]);
    expect(post.access).toMatchObject({ status: 201, phase: "bypass:method", bytesIn: 64 + 5 });
    expect(rt.cacheStore!.lookup(pkey, [])).toBeNull();
    expect(cache().invalidations).toBe(1);
  });

  test("a Host that is not the CONNECT host is refused with 421 before the cache looks", async () => {
    const r = await request("GET", "/pkg/a.cab", [], { host: "evil.example" });
    expect(origins.asked).toEqual([]);
    expect(r.r.errors.map((e) => e.status)).toEqual([421]);
    expect(r.access).toMatchObject({ status: 421, phase: "bypass:refused", reason: "PX_MISDIRECTED", host: HOST });
  });

  // ───────────────────────────── RFC 9111 / 9211 / 5861 (issue 9) ─────────────────────────────

  test("RFC 9111 §5.1/§4.2.3: the first, forwarded response carries the origin's Age plus the response delay; stale on arrival", async () => {
    origins.script = () => ({ status: 200, headers: [["Date", new Date(T0).toUTCString()], ["Age", "7200"], ["Cache-Control", "max-age=10800"], ["Content-Length", "2"]], body: "m1" });
    const miss = await request("GET", "/manifest.json");
    expect(header(miss.r.heads[0]!.headers, "age")).toBe("7200");
    expect(header(miss.r.heads[0]!.headers, "cache-status")).toBe("agate; fwd=uri-miss; fwd-status=200; stored; ttl=3600");
    now += 60_000;
    const hit = await request("GET", "/manifest.json");
    expect(header(hit.r.heads[0]!.headers, "age")).toBe("7260");
    expect(header(hit.r.heads[0]!.headers, "cache-status")).toBe("agate; hit; ttl=3540");
    expect(hit.access).toMatchObject({ phase: "hit", cacheStatus: "agate; hit; ttl=3540" });
    // Age beyond the lifetime: stored, but stale on arrival — the next request revalidates
    origins.script = () => ({ status: 200, headers: [["Age", "900"], ["Cache-Control", "max-age=600"]], body: "old" });
    await request("GET", "/stale-on-arrival");
    await request("GET", "/stale-on-arrival");
    expect(origins.asked.filter((q) => q.path === "/stale-on-arrival").length).toBe(2);
  });

  test("RFC 9111 §3: a 299 with max-age is stored and served; RFC 9110 §15.1: a 404 heuristically", async () => {
    origins.script = (q) => (q.path === "/odd" ? { status: 299, headers: [["Cache-Control", "max-age=60"]], body: "odd" } : { status: 404, headers: [["Last-Modified", new Date(T0 - 10 * 86_400_000).toUTCString()]], body: "no" });
    await request("GET", "/odd");
    const again = await request("GET", "/odd");
    expect([again.r.heads[0]!.status, again.bodyText, again.access.phase]).toEqual([299, "odd", "hit"]);
    await request("GET", "/missing");
    const miss2 = await request("GET", "/missing");
    expect([miss2.r.heads[0]!.status, miss2.access.phase]).toEqual([404, "hit"]);
    expect(origins.asked.length).toBe(2);
  });

  test("RFC 9211: Cache-Status on bypass, refusal, vary-miss, not storable and collapsed answers", async () => {
    origins.script = (q) => (q.method === "POST" ? { status: 201, headers: [] } : q.path === "/v" ? { status: 200, headers: [["Cache-Control", "max-age=60"], ["Vary", "Accept-Language"]], body: "v" } : { status: 200, headers: [["Cache-Control", "no-store"]], body: "x" });
    const post = await request("POST", "/api", [["Content-Length", "1"]], { body: "a" });
    expect(header(post.r.heads[0]!.headers, "cache-status")).toBe("agate; fwd=bypass; detail=method");
    const refused = await request("GET", "/x", [], { host: "evil.example" });
    expect(header(refused.r.errors[0]!.headers ?? [], "cache-status")).toBe("agate; detail=PX_MISDIRECTED");
    await request("GET", "/v", [["Accept-Language", "de"]]);
    const vm = await request("GET", "/v", [["Accept-Language", "fr"]]);
    expect(header(vm.r.heads[0]!.headers, "cache-status")).toBe("agate; fwd=vary-miss; fwd-status=200; stored; ttl=60");
    const ns = await request("GET", "/nostore");
    expect(header(ns.r.heads[0]!.headers, "cache-status")).toBe("agate; fwd=uri-miss; fwd-status=200; detail=no-store");
    const rq = await request("GET", "/v", [["Accept-Language", "fr"], ["Cache-Control", "no-cache"]]);
    expect(header(rq.r.heads[0]!.headers, "cache-status")).toStartWith("agate; fwd=request; fwd-status=200; stored");
  });

  test("RFC 9211: a revalidation says fwd=stale, fwd-status=304 and detail=revalidated", async () => {
    origins.script = (q) => (q.headers.some(([k]) => k === "if-none-match") ? { status: 304, headers: [["Cache-Control", "max-age=60"], ["ETag", '"e"']] } : { status: 200, headers: [["Cache-Control", "max-age=60"], ["ETag", '"e"']], body: "b" });
    await request("GET", "/r");
    now += 120_000;
    const r = await request("GET", "/r");
    expect(header(r.r.heads[0]!.headers, "cache-status")).toBe("agate; fwd=stale; fwd-status=304; ttl=60; detail=revalidated");
  });

  test("RFC 9110 §13.1.2/§15.4.5: If-None-Match (weak) answered 304 with only the listed fields, plus Age", async () => {
    origins.script = () => ({ status: 200, headers: [["Cache-Control", "max-age=600"], ["ETag", '"v9"'], ["Content-Type", "application/json"], ["X-Vendor", "1"]], body: "{}" });
    await request("GET", "/c");
    now += 5_000;
    const r = await request("GET", "/c", [["If-None-Match", 'W/"v9"']]);
    expect(r.r.heads[0]!.status).toBe(304);
    expect(r.r.heads[0]!.headers.map(([k]) => k.toLowerCase())).toEqual(["cache-control", "etag", "age", "cache-status"]);
    expect(header(r.r.heads[0]!.headers, "age")).toBe("5");
  });

  test("RFC 9110 §14: ranges from the stored object — single, suffix, open-ended, If-Range, 416, multi → 200", async () => {
    const body = "0123456789abcdefghij";
    origins.script = () => ({ status: 200, headers: [["Cache-Control", "max-age=600"], ["ETag", '"r1"'], ["Content-Length", "20"]], body });
    // a Range on a miss: one whole-object fill, the agent gets its 206 from the arriving bytes
    const first = await request("GET", "/blob", [["Range", "bytes=5-9"]]);
    expect(origins.asked[0]!.headers.some(([k]) => k.toLowerCase() === "range")).toBe(false);
    expect([first.r.heads[0]!.status, header(first.r.heads[0]!.headers, "content-range"), first.bodyText]).toEqual([206, "bytes 5-9/20", "56789"]);
    const cases: [string, Headers, number, string | undefined, string][] = [
      ["single", [["Range", "bytes=0-3"]], 206, "bytes 0-3/20", "0123"],
      ["suffix", [["Range", "bytes=-4"]], 206, "bytes 16-19/20", "ghij"],
      ["open-ended", [["Range", "bytes=15-"]], 206, "bytes 15-19/20", "fghij"],
      ["If-Range matches", [["Range", "bytes=0-0"], ["If-Range", '"r1"']], 206, "bytes 0-0/20", "0"],
      ["If-Range does not match: whole", [["Range", "bytes=0-0"], ["If-Range", '"old"']], 200, undefined, body],
      ["unsatisfiable", [["Range", "bytes=30-"]], 416, "bytes */20", ""],
      ["multiple ranges: whole 200 (documented choice)", [["Range", "bytes=0-1,5-6"]], 200, undefined, body],
    ];
    for (const [name, h, status, cr, text] of cases) {
      const r = await request("GET", "/blob", h);
      expect([name, r.r.heads[0]!.status, header(r.r.heads[0]!.headers, "content-range"), r.bodyText]).toEqual([name, status, cr, text]);
    }
    expect(origins.asked.length).toBe(1);
  });

  test("RFC 5861 §3 stale-while-revalidate: stale served at once, one background revalidation however many ask", async () => {
    let version = "v1";
    origins.script = (q) => (q.headers.some(([k]) => k === "if-none-match") && version === "v1" ? { status: 304, headers: [["Cache-Control", "max-age=60, stale-while-revalidate=600"], ["ETag", '"v1"']] } : { status: 200, headers: [["Cache-Control", "max-age=60, stale-while-revalidate=600"], ["ETag", `"${version}"`]], body: version });
    await request("GET", "/swr");
    now += 120_000;
    version = "v2";
    let open!: () => void;
    origins.gate = new Promise<void>((r) => (open = r)); // the origin is slow: both agents ask while it revalidates
    const a = await request("GET", "/swr");
    const b = await request("GET", "/swr");
    origins.gate = null;
    open();
    expect([a.bodyText, b.bodyText]).toEqual(["v1", "v1"]);
    expect(a.access).toMatchObject({ phase: "stale", reason: "stale-while-revalidate" });
    expect(header(a.r.heads[0]!.headers, "cache-status")).toBe("agate; hit; ttl=-60; detail=stale-while-revalidate");
    await waitUntil(() => rt.cacheStore!.lookup(primaryKey("GET", `https://${HOST}/swr`), [])?.headers.some(([, v]) => v === '"v2"') === true);
    expect(origins.asked.length).toBe(2); // the first fill and ONE revalidation
    const c = await request("GET", "/swr");
    expect([c.bodyText, c.access.phase]).toEqual(["v2", "hit"]);
  });

  test("RFC 5861 §4 stale-if-error: origin down or 5xx → the stale entry; never past must-revalidate; [cache] stale_if_error_s", async () => {
    origins.script = (q) => ({ status: 200, headers: [["Cache-Control", q.path === "/mr" ? "max-age=60, must-revalidate" : q.path === "/sie" ? "max-age=60, stale-if-error=300" : "max-age=60"]], body: "good" });
    for (const p of ["/sie", "/mr", "/plain"]) await request("GET", p);
    now += 120_000;
    origins.script = () => ({ fail: "connection refused" });
    const down = await request("GET", "/sie");
    expect([down.r.heads[0]?.status, down.bodyText, down.access.phase, down.access.reason]).toEqual([200, "good", "stale", "stale-if-error"]);
    expect(header(down.r.heads[0]!.headers, "cache-status")).toBe("agate; fwd=stale; ttl=-60; detail=stale-if-error");
    const mr = await request("GET", "/mr");
    expect(mr.r.errors.map((e) => e.status)).toEqual([502]);
    // a platform object whose origin says nothing: [cache] stale_if_error_s (a day by default)
    const plain = await request("GET", "/plain");
    expect(plain.bodyText).toBe("good");
    origins.script = () => ({ status: 503, headers: [["Cache-Control", "max-age=60"]], body: "down" });
    const five = await request("GET", "/sie");
    expect([five.bodyText, header(five.r.heads[0]!.headers, "cache-status")]).toEqual(["good", "agate; fwd=stale; ttl=-60; detail=stale-if-error"]);
    // the 503 did not replace the stored entry; beyond the window (300 s stale) it is the origin's answer again
    now += 400_000;
    const late = await request("GET", "/sie");
    expect([late.r.heads[0]!.status, late.bodyText]).toEqual([503, "down"]);
    // other sites (not platform objects): no fallback without the origin's say-so
    rt.config = { ...rt.config, cache: { ...rt.config.cache, stale_if_error_s: 0 } };
    origins.script = () => ({ fail: "connection refused" });
    const off = await request("GET", "/plain");
    expect(off.r.errors.map((e) => e.status)).toEqual([502]);
  });
});

describe("issue 9 gaps: origin timeout, negative answers, the refusing rule", () => {
  const TIMEOUT = { fail: "origin sent no response within 30s of the request (cache.origin_timeout_s)", code: "PX_UPSTREAM_TIMEOUT" as const };
  test("an origin that times out: 504 with the reason when nothing is stored; the stale entry when one may stand in (RFC 5861 §4)", async () => {
    origins.script = () => TIMEOUT;
    const none = await request("GET", "/silent");
    expect(none.r.errors.map((e) => [e.status, e.reason])).toEqual([[504, TIMEOUT.fail]]);
    expect(none.access).toMatchObject({ status: 504, phase: "miss", reason: "idle" });
    origins.script = () => ({ status: 200, headers: [["Cache-Control", "max-age=60"]], body: "last manifest" });
    await request("GET", "/manifest");
    now += 120_000;
    origins.script = () => TIMEOUT;
    const stale = await request("GET", "/manifest"); // a platform object: [cache] stale_if_error_s
    expect([stale.r.heads[0]?.status, stale.bodyText, stale.access.phase, stale.access.reason]).toEqual([200, "last manifest", "stale", "stale-if-error"]);
  });

  test("RFC 9111 §4.2.2: a 404 without freshness or Last-Modified is fresh for cache.negative_ttl_s; never with no-cache", async () => {
    origins.script = (q) => ({ status: 404, headers: q.path === "/nc" ? [["Cache-Control", "no-cache"]] : [], body: "missing" });
    await request("GET", "/gone.cab");
    now += 59_000;
    const hit = await request("GET", "/gone.cab");
    expect([hit.r.heads[0]?.status, hit.access.phase, origins.asked.length]).toEqual([404, "hit", 1]);
    now += 2_000; // past 60 s: asked again
    await request("GET", "/gone.cab");
    expect(origins.asked.length).toBe(2);
    await request("GET", "/nc");
    await request("GET", "/nc");
    expect(origins.asked.length).toBe(4);
    rt.config = { ...rt.config, cache: { ...rt.config.cache, negative_ttl_s: 0 } }; // 0 = off
    await request("GET", "/off.cab");
    await request("GET", "/off.cab");
    expect(origins.asked.length).toBe(6);
  });

  test("a plain request refused by policy: the access line names the rule, as conn-session's refused line does", async () => {
    const head: RequestHead = { method: "GET", target: "http://evil.example/x", version: "1.1", headers: [["Host", "evil.example"]], headBytes: 40 };
    const inc: IncomingRequest = { head, scheme: "http", connectTarget: null, connectVerdict: null, connId: "conn-2", clientIp: "10.0.0.7", clientPort: 50124 };
    rt.config = { ...rt.config, cache: { ...rt.config.cache, enabled: true } };
    rt.policy = compilePolicy(rt.config); // evil.example is on no allow-list
    const { res, r } = recordingResponder();
    await onCacheRequest(rt, inc, res, bodyOf(null));
    expect(r.errors.map((e) => e.status)).toEqual([403]);
    expect(logLines.find((l) => l.msg === "access")).toMatchObject({ status: 403, phase: "bypass:refused", reason: "deny-domain", rule: "deny-domain", host: "evil.example" });
  });
});

describe("interim responses (RFC 9110 §15.2)", () => {
  test("100, 102 and 103 from the origin reach the filling agent in order, before the head; never stored or reused", async () => {
    const hints: [number, Headers][] = [[100, []], [102, []], [103, [["Link", "</a.css>; rel=preload"]]]];
    origins.script = () => ({ status: 200, headers: [["Cache-Control", "max-age=60"]], body: "x", interim: hints });
    const miss = await request("GET", "/hinted");
    expect(miss.r.interims).toEqual(hints);
    const hit = await request("GET", "/hinted");
    expect([hit.r.interims, hit.access.phase]).toEqual([[], "hit"]);
    expect(rt.cacheStore!.lookup(primaryKey("GET", `https://${HOST}/hinted`), [])!.status).toBe(200);
    const post = await request("POST", "/hinted", [["Content-Length", "1"]], { body: "p" });
    expect(post.r.interims).toEqual(hints); // pass-through relays them too
  });
});

const header = (h: Headers, name: string) => h.find(([k]) => k.toLowerCase() === name)?.[1];

/** Bounded wait for a background revalidation (microtasks and the store's own steps). */
async function waitUntil(f: () => boolean) {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(f()).toBe(true);
}
