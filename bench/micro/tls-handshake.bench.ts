/**
 * @module Micro-benchmark of TLS termination per version on the cache port's path (a Bun.listen socket →
 * intercept.ts SocketDuplex → node:tls TLSSocket({ isServer: true }), P-256 leaf from src/core/certs.ts), driven
 * by `openssl s_time -new` (a full handshake per connection, no resumption) from another process, one version at a
 * time, for a fixed number of seconds each. The server runs on one thread, as one worker does.
 * Prints one JSON object: { bench, seconds, cases: [{ version, cipher, handshakes, real_s, handshakes_per_s }] }.
 * Run: `bun bench/micro/tls-handshake.bench.ts [seconds]` (default 3).
 */
import "reflect-metadata";
import tls from "node:tls";
import { createCa, loadCa, makeLeafKeys, mintLeaf } from "../../src/core/certs";
import { SocketDuplex } from "../../src/workers/intercept";
import type { ClientConn } from "../../src/workers/runtime";

const SECONDS = Math.max(1, Math.min(Number(process.argv[2] ?? 3) || 3, 60));
const NOW = new Date();
const made = await createCa({ commonName: "bench CA", now: NOW, serial: Uint8Array.of(1) });
const ca = await loadCa("appliance", { cert: made.certPem, key: made.keyPem });
const leaf = await mintLeaf(ca, await makeLeafKeys(), "bench.example", NOW, Uint8Array.of(2));
// The cache port's context for min_tls 1.0: every version below is offered by the one context.
const ctx = tls.createSecureContext({ cert: leaf.certPem + ca.chainPem, key: leaf.keyPem, minVersion: "TLSv1" });

type Conn = ClientConn & { duplex: SocketDuplex };
const listener = Bun.listen<Conn>({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(sock) {
      sock.data = { pending: null, bytesOut: 0, lastActive: 0 } as unknown as Conn;
      const d = new SocketDuplex(sock, Date.now);
      sock.data.duplex = d;
      const t = new tls.TLSSocket(d, { isServer: true, secureContext: ctx, ALPNProtocols: ["http/1.1"] } as tls.TLSSocketOptions);
      t.on("error", () => {});
      t.on("data", () => t.end("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    },
    data: (sock, b) => sock.data.duplex.onData(b),
    drain: (sock) => sock.data.duplex.onDrain(),
    end: (sock) => void sock.data.duplex.push(null),
    close: (sock) => void sock.data.duplex.destroy(),
  },
});

const VERSIONS: [string, string[]][] = [
  ["TLSv1", ["-tls1", "-cipher", "ECDHE-ECDSA-AES256-SHA:@SECLEVEL=0"]],
  ["TLSv1.1", ["-tls1_1", "-cipher", "ECDHE-ECDSA-AES256-SHA:@SECLEVEL=0"]],
  ["TLSv1.2", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]],
  ["TLSv1.3", ["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"]],
];

async function sTime(flags: string[], seconds: number) {
  const p = Bun.spawn(["openssl", "s_time", "-connect", `127.0.0.1:${listener.port}`, "-new", "-time", String(seconds), ...flags], { stdout: "pipe", stderr: "pipe" });
  const out = (await new Response(p.stdout).text()) + (await new Response(p.stderr).text());
  await p.exited;
  return out;
}

await sTime(VERSIONS[2][1], 1); // warm-up: JIT, first context use
const cases = [];
for (const [version, flags] of VERSIONS) {
  const out = await sTime(flags, SECONDS);
  // "1234 connections in 3 real seconds, 411 bytes read per connection"
  const m = /(\d+) connections in (\d+) real seconds/.exec(out);
  if (!m) throw new Error(`openssl s_time ${version}: ${out.slice(-400)}`);
  const handshakes = Number(m[1]);
  const realS = Number(m[2]);
  cases.push({ version, cipher: flags[flags.length - 1].replace(":@SECLEVEL=0", ""), handshakes, real_s: realS, handshakes_per_s: Math.round(handshakes / realS) });
}
listener.stop(true);
console.log(JSON.stringify({ bench: "tls-handshake", seconds: SECONDS, cases }, null, 2));
process.exit(0);
