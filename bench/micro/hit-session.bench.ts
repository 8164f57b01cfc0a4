/**
 * @module One keep-alive cache hit end to end inside one thread, for profiling (issue 13, "small objects"): a client
 * TLS socket → an in-memory Duplex pair → node:tls TLSSocket({ isServer }) as intercept.ts uses it → HttpSession
 * framing → onCacheRequest (route, lookup in a real Store, serveEntry, Cache-Status, the access line) → back. The
 * entry is stored first through a scripted origin, so every timed request is a hit. Prints one JSON line
 * { bench, size, iterations, usPerHit, cpuUsPerHit }. Profile it with
 * `bun --cpu-prof-md --cpu-prof-dir=/tmp/prof bench/micro/hit-session.bench.ts [iterations] [size]`
 * (a gateway's workers are Bun Workers, which `--cpu-prof` does not sample; this runs the same code on the main thread).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { DEFAULTS } from "../../src/core/config";
import { compilePolicy } from "../../src/core/policy";
import { Store } from "../../src/store/cache/store";
import { setLogSink } from "../../src/log";
import { emptyCounters } from "../../src/workers/protocol";
import type { WorkerRuntime } from "../../src/workers/runtime";
import type { ClientConn } from "../../src/workers/runtime";
import type { Origins, OriginRequest, ResponseSink, ExchangeHandle } from "../../src/workers/origin-client";
import { HttpSession } from "../../src/workers/http-session";
import { makeCacheServices, onCacheRequest } from "../../src/workers/cache-request";
import { makeTestPki } from "../../test/peers/test-ca";

const N = Number(process.argv[2] ?? 20_000);
const SIZE = Number(process.argv[3] ?? 1024);
const HOST = "h.example";
const body = new Uint8Array(SIZE).fill(65);
const origins: Origins = {
  reuses: 0,
  start(_req: OriginRequest, sink: ResponseSink): Promise<ExchangeHandle> {
    queueMicrotask(() => {
      sink.onHead({ version: "1.1", status: 200, reason: "OK", headers: [["Date", new Date().toUTCString()], ["Cache-Control", "max-age=3600"], ["ETag", '"m1"'], ["Content-Type", "application/json"], ["Content-Length", String(SIZE)]], headBytes: 0 });
      sink.onData(body);
      sink.onEnd();
    });
    return Promise.resolve({ writeBody: () => true, endBody() {}, resume() {}, abort() {}, set onWritable(_f: (() => void) | null) {} });
  },
  close() {},
} as unknown as Origins;

const dir = mkdtempSync(join(tmpdir(), "agate-hitsession-"));
const cfg = DEFAULTS;
let ids = 0;
const rt = {
  ...makeCacheServices(),
  cacheStore: Store.open(join(dir, "cache"), { maxBytes: 1 << 30, owner: "bench", bootId: "b" }),
  origins,
  index: 0,
  bootId: "b",
  config: cfg,
  policy: compilePolicy(cfg),
  draining: false,
  admission: null,
  intercepting: true,
  now: () => Date.now(),
  makeId: () => `req-${++ids}`,
  counters: emptyCounters(),
  proxyIps: new Set(),
  cacheIps: new Set(),
  platformSeen: new Set(),
  health: null,
  random: () => 0.5,
} as unknown as WorkerRuntime;
// the worker's sink batches lines to the supervisor; here they are only counted
let lines = 0;
setLogSink(() => void lines++);

function pair(): [Duplex, Duplex] {
  const a: Duplex = new Duplex({ read() {}, write(ch, _e, cb) { b.push(ch); cb(); } });
  const b: Duplex = new Duplex({ read() {}, write(ch, _e, cb) { a.push(ch); cb(); } });
  return [a, b];
}
const pki = makeTestPki([HOST]);
const [sRaw, cRaw] = pair();
const server = new tls.TLSSocket(sRaw, { isServer: true, secureContext: tls.createSecureContext({ cert: readFileSync(pki.certPath), key: readFileSync(pki.keyPath) }) } as tls.TLSSocketOptions);
const conn = { id: "c1", ip: "127.0.0.1", remotePort: 5000, verdict: { action: "intercept", rule: "bench", cacheable: true }, target: { host: HOST, port: 443, isIp: false }, endReason: "", handshakeBy: 0, closed: false } as unknown as ClientConn;
new HttpSession(rt, server, conn, "https", { host: HOST, port: 443, isIp: false }, sRaw, onCacheRequest);
const client = tls.connect({ socket: cRaw as any, servername: HOST, ca: readFileSync(pki.caPath) });
await new Promise<void>((r) => client.once("secureConnect", () => r()));

const request = new TextEncoder().encode(`GET /m.json HTTP/1.1\r\nHost: ${HOST}\r\nUser-Agent: agent/1\r\nAccept: */*\r\n\r\n`);
let got = "";
let wake: (() => void) | null = null;
client.on("data", (d: Buffer) => {
  got += d.toString("latin1");
  if (responseDone()) wake?.();
});
/** one whole response (head with Content-Length, and that many body bytes) in `got` */
function responseDone(): boolean {
  const i = got.indexOf("\r\n\r\n");
  if (i < 0) return false;
  const m = /content-length: (\d+)/i.exec(got.slice(0, i));
  return m !== null && got.length >= i + 4 + Number(m[1]);
}
async function one(): Promise<string> {
  got = "";
  const done = new Promise<void>((r) => (wake = r));
  client.write(request);
  await done;
  return got;
}
const first = await one(); // the miss that stores it
const second = await one();
if (!/cache-status: [^\r]*hit/i.test(second)) throw new Error(`not a hit:\n${second.slice(0, 400)}\n(first: ${first.slice(0, 300)})`);
for (let i = 0; i < Math.min(N, 2000); i++) await one();
const t0 = performance.now();
const cpu0 = process.cpuUsage();
for (let i = 0; i < N; i++) await one();
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
// CPU µs per hit (user + sys, both ends) is the figure to compare on a shared machine: wall time moves with the load
console.log(JSON.stringify({ bench: "hit-session", size: SIZE, iterations: N, usPerHit: Number(((ms * 1000) / N).toFixed(2)), cpuUsPerHit: Number(((cpu.user + cpu.system) / N).toFixed(2)), accessLines: lines }));
client.destroy();
server.destroy();
rt.cacheStore?.close();
rmSync(dir, { recursive: true, force: true });
process.exit(0);
