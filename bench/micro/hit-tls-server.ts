/**
 * @module Probe server for bench/micro/hit-tls.bench.ts: one TLS termination variant (native Bun TLS, a Bun socket in a
 * Duplex under node:tls as intercept.ts does, node:net + TLSSocket, node:tls server, or the Duplex with batched
 * writes), answering every request head with a fixed response of SIZE bytes. stdin "reset" / "cpu" / "quit".
 */
// experiment: server-side TLS termination variants; prints {port} then on stdin "cpu" prints cpu usage
import tls from "node:tls";
import net from "node:net";
import { Duplex } from "node:stream";
import { readFileSync } from "node:fs";
const [variant, certPath, keyPath, sizeS] = process.argv.slice(2);
const cert = readFileSync(certPath!, "utf8"), key = readFileSync(keyPath!, "utf8");
const SIZE = Number(sizeS ?? 1024);
const body = new Uint8Array(SIZE).fill(65);
const head = new TextEncoder().encode(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: max-age=3600\r\nETag: "x"\r\nAge: 0\r\nCache-Status: agate; hit\r\nContent-Length: ${SIZE}\r\n\r\n`);
const resp = new Uint8Array(head.byteLength + SIZE); resp.set(head); resp.set(body, head.byteLength);
const ctx = tls.createSecureContext({ cert, key });
function onReq(write: (b: Uint8Array) => void, d: Uint8Array) {
  // count request ends: "\r\n\r\n"
  let n = 0; for (let i = 3; i < d.byteLength; i++) if (d[i] === 10 && d[i - 1] === 13 && d[i - 2] === 10 && d[i - 3] === 13) n++;
  for (let i = 0; i < n; i++) { if (SIZE > 16384) { write(head); for (let o = 0; o < SIZE; o += 262144) write(body.subarray(o, Math.min(SIZE, o + 262144))); } else write(resp); }
}
class SD extends Duplex {
  constructor(readonly s: any) { super({ allowHalfOpen: true }); }
  _read() { this.s.resume(); }
  _write(c: Buffer, _e: string, cb: any) { const n = this.s.write(c); if (n < c.byteLength) { this.pend = c.subarray(n); this.cb = cb; } else cb(); }
  pend: Uint8Array | null = null; cb: any = null;
  drain() { if (!this.pend) return; const n = this.s.write(this.pend); if (n < this.pend.byteLength) { this.pend = this.pend.subarray(n); return; } this.pend = null; const cb = this.cb; this.cb = null; cb(); }
  _final(cb: any) { this.s.shutdown(); cb(); }
  _destroy(e: any, cb: any) { this.s.end(); cb(e); }
}
class SDB extends SD {
  batch: Uint8Array[] = []; bytes = 0; sched = false;
  override _write(c: Buffer, _e: string, cb: any) {
    if (this.pend) { this.pend = Buffer.concat([this.pend, c]); this.cb = cb; return; }
    this.batch.push(c); this.bytes += c.byteLength;
    if (this.bytes >= 262144) this.flush(); else if (!this.sched) { this.sched = true; queueMicrotask(() => this.flush()); }
    if (this.pend) this.cb = cb; else cb();
  }
  flush() {
    this.sched = false;
    if (!this.batch.length) return;
    const b = this.batch.length === 1 ? this.batch[0]! : Buffer.concat(this.batch);
    this.batch = []; this.bytes = 0;
    const n = this.s.write(b); if (n < b.byteLength) this.pend = b.subarray(n);
  }
  override drain() { if (!this.pend) return; const n = this.s.write(this.pend); if (n < this.pend.byteLength) { this.pend = this.pend.subarray(n); return; } this.pend = null; const cb = this.cb; this.cb = null; cb?.(); }
}
let port = 0;
if (variant === "native") {
  const srv = Bun.listen({ hostname: "127.0.0.1", port: 0, tls: { cert, key }, socket: { data(s, d) { onReq((b) => s.write(b), d); }, open() {}, close() {} } });
  port = srv.port;
} else if (variant === "upgrade") {
  // a plain Bun.listen socket upgraded in place: `socket.upgradeTLS` acts as the TLS server on an accepted socket
  const srv = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: {
    open(s) { s.upgradeTLS({ tls: { cert, key }, socket: { data(t: any, d: Uint8Array) { onReq((b) => t.write(b), d); }, open() {}, close() {}, error() {} } } as any); },
    data() {}, close() {} } });
  port = srv.port;
} else if (variant === "duplex") {
  const srv = Bun.listen<{ d: SD }>({ hostname: "127.0.0.1", port: 0, socket: {
    open(s) { const d = new SD(s); s.data = { d }; const t = new tls.TLSSocket(d, { isServer: true, secureContext: ctx } as any); t.on("data", (x: Buffer) => onReq((b) => t.write(b), x)); t.on("error", () => {}); },
    data(s, x) { if (!s.data.d.push(Buffer.from(x))) s.pause(); }, drain(s) { s.data.d.drain(); }, close(s) { s.data.d.push(null); }, end(s) { s.data.d.push(null); } } });
  port = srv.port;
} else if (variant === "duplexb") {
  const srv = Bun.listen<{ d: SD }>({ hostname: "127.0.0.1", port: 0, socket: {
    open(s) { const d = new SDB(s); s.data = { d }; const t = new tls.TLSSocket(d, { isServer: true, secureContext: ctx } as any); t.on("data", (x: Buffer) => onReq((b) => t.write(b), x)); t.on("error", () => {}); },
    data(s, x) { if (!s.data.d.push(Buffer.from(x))) s.pause(); }, drain(s) { s.data.d.drain(); }, close(s) { s.data.d.push(null); }, end(s) { s.data.d.push(null); } } });
  port = srv.port;
} else if (variant === "net") {
  const srv = net.createServer((sock) => { const t = new tls.TLSSocket(sock, { isServer: true, secureContext: ctx } as any); t.on("data", (x: Buffer) => onReq((b) => t.write(b), x)); t.on("error", () => {}); });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  port = (srv.address() as any).port;
} else if (variant === "tlsserver") {
  const srv = tls.createServer({ cert, key }, (t) => { t.on("data", (x: Buffer) => onReq((b) => t.write(b), x)); t.on("error", () => {}); });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  port = (srv.address() as any).port;
}
console.log(JSON.stringify({ port }));
let cpu0 = process.cpuUsage();
for await (const line of console) { if (line === "reset") cpu0 = process.cpuUsage(); if (line === "cpu") { const c = process.cpuUsage(cpu0); console.log(JSON.stringify({ cpuMs: (c.user + c.system) / 1000 })); } if (line === "quit") process.exit(0); }
