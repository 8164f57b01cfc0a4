/**
 * @module Micro-benchmark of each step a keep-alive cache hit takes in a worker (issue 13, "small objects"), to find
 * where the time per hit goes: the store's lookup (an SQLite read per hit), `body` (a stat per hit for the blob
 * stamp), `touch`, the response head's serialisation, the access-log line (JSON.stringify + ISO date), and the TLS
 * record writes through node:tls over an in-memory Duplex (as intercept.ts does): head and body as two writes vs one.
 * Bounded iterations after a warm-up; prints one JSON line per step { bench, step, iterations, usPerHit }.
 * Run: `bun bench/micro/hit-path.bench.ts [iterations]`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { Store } from "../../src/store/cache/store";
import { serializeResponseHead } from "../../src/core/http1/serialize";
import { makeTestPki } from "../../test/peers/test-ca";
import { readFileSync } from "node:fs";

const N = Number(process.argv[2] ?? 20_000);
const out = (step: string, iterations: number, ms: number) =>
  console.log(JSON.stringify({ bench: "hit-path", step, iterations, usPerHit: Number(((ms * 1000) / iterations).toFixed(2)) }));
function time(step: string, n: number, f: () => void) {
  for (let i = 0; i < Math.min(n, 2000); i++) f();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) f();
  out(step, n, performance.now() - t0);
}

// ---- store ----
const dir = mkdtempSync(join(tmpdir(), "agate-hitpath-"));
const store = Store.open(dir, { maxBytes: 1e9, owner: "bench", bootId: "b" });
const key = "GET https://h.example/m.json";
const c = store.claimFill(key);
if (c.role !== "filler") throw new Error("expected filler");
const headers: [string, string][] = [["Date", new Date().toUTCString()], ["Cache-Control", "max-age=3600"], ["ETag", '"m1"'], ["Content-Type", "application/json"], ["Last-Modified", new Date().toUTCString()]];
c.fill.setHead(200, headers);
c.fill.write(new Uint8Array(1024).fill(65));
c.fill.commit({ vkey: "", url: "https://h.example/m.json", reqHeaders: [], vary: null });
const reqHeaders: [string, string][] = [["Host", "h.example"], ["User-Agent", "agent/1"], ["Accept", "*/*"]];
const entry = store.lookup(key, reqHeaders)!;
time("store.lookup (SQLite read)", N, () => void store.lookup(key, reqHeaders));
time("store.body (stat for the blob stamp)", N, () => void store.body(entry));
time("store.touch", N, () => store.touch(entry, 1024));

// ---- head + log line ----
const wire: [string, string][] = [...headers, ["Age", "12"], ["Cache-Status", "agate; hit; ttl=3588"], ["Content-Length", "1024"]];
time("serializeResponseHead", N, () => void serializeResponseHead({ status: 200, headers: wire }));
time("access line (JSON.stringify + ISO date)", N, () =>
  void JSON.stringify({ t: new Date().toISOString(), level: "info", c: "worker", msg: "access", reqId: "abc-1", id: "c1", client: "127.0.0.1:5000", port: "cache", method: "GET", host: "h.example", path: "/m.json", status: 200, phase: "hit", cacheStatus: "agate; hit; ttl=3588", bytesIn: 120, bytesOut: 1300, ms: 0 }),
);
store.close();
rmSync(dir, { recursive: true, force: true });

// ---- TLS records through node:tls over an in-memory Duplex pair ----
function pair(): [Duplex, Duplex] {
  const a = new Duplex({ read() {}, write(ch, _e, cb) { b.push(ch); cb(); } });
  const b = new Duplex({ read() {}, write(ch, _e, cb) { a.push(ch); cb(); } });
  return [a, b];
}
const pki = makeTestPki(["h.example"]);
const [sRaw, cRaw] = pair();
const server = new tls.TLSSocket(sRaw, { isServer: true, secureContext: tls.createSecureContext({ cert: readFileSync(pki.certPath), key: readFileSync(pki.keyPath) }) } as tls.TLSSocketOptions);
const client = tls.connect({ socket: cRaw as any, servername: "h.example", ca: readFileSync(pki.caPath) });
await new Promise<void>((r) => client.once("secureConnect", () => r()));
const head = serializeResponseHead({ status: 200, headers: wire });
const body = new Uint8Array(1024).fill(65);
async function tlsRun(step: string, n: number, w: () => void) {
  const per = head.byteLength + body.byteLength;
  let got = 0;
  let want = 0;
  let wake: (() => void) | null = null;
  const onData = (d: Buffer) => {
    got += d.byteLength;
    if (got >= want) wake?.();
  };
  client.on("data", onData);
  const go = async (k: number) => {
    want = got + k * per;
    const done = new Promise<void>((r) => (wake = r));
    for (let i = 0; i < k; i++) w();
    await done;
  };
  await go(Math.min(n, 500));
  const t0 = performance.now();
  for (let i = 0; i < n; i += 100) await go(100);
  out(step, n, performance.now() - t0);
  client.off("data", onData);
}
await tlsRun("TLS: head + body as two writes (both ends)", N, () => {
  server.write(head);
  server.write(body);
});
const one = new Uint8Array(head.byteLength + body.byteLength);
await tlsRun("TLS: head + body as one write (both ends)", N, () => {
  one.set(head, 0);
  one.set(body, head.byteLength);
  server.write(one);
});
client.destroy();
server.destroy();
process.exit(0);
