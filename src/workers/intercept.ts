/**
 * @module TLS termination on the cache port: nothing else knows how it is done (STYLE module map).
 * `upgradeTLS` is client-side only in Bun (DESIGN "verified facts"), so the accepted Bun socket is wrapped in a
 * small stream.Duplex and handed to node:tls `TLSSocket({ isServer: true })`. Leaves are minted per CONNECT host
 * by the active CA, with one P-256 key pair per worker, cached in memory (LeafCache) and on disk, and concurrent
 * first handshakes for one host mint once. The state (active CA, leaves, contexts, mint count) is `rt.tls`; the CA
 * is activated by `applyCacheMode` (cache-request.ts), which this file must not import (it would be a circle).
 *
 * Why not Bun's native TLS server (half the CPU per hit, `bun bench/micro/hit-tls.bench.ts`: 15 vs 31 µs per 1 KiB
 * request): leaves are minted per SNI name on first sight, and Bun 1.4.5 has no way to add a certificate to a native
 * listener at run time — `Bun.listen({ tls: [..] })` throws "TLSOptions must be an object" (an SNI array is refused),
 * and `Bun.serve` takes an array but has no `addServerName` (its prototype: address, closeIdleConnections, fetch,
 * reload, …; a second SNI name gets the first name's certificate — `openssl s_client -servername b.test`, measured
 * 2026-12-02). Layer 1 also peeks the ClientHello (legacy versions, the SNI policy) before any handshake.
 *
 * `interceptConnection` is layer 1's hand-off: it installs the conn's `intercept` handle and starts the HTTP/1.1
 * session, whose requests go to `onCacheRequest` (cache-request.ts).
 */
import "reflect-metadata";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Socket } from "bun";
import { mintLeaf } from "../core/certs";
import type { Leaf } from "../core/cert-cache";
import type { MinTls } from "../core/config";
import type { ClientConn, TlsState, WorkerRuntime } from "./runtime";
import { flushPending, writeOrPend } from "./pipe";
import { HttpSession } from "./http-session";
import { onCacheRequest } from "./cache-request";
import { log } from "../log";

/**
 * A Bun socket as a node Duplex, honouring back-pressure both ways. Writes go through pipe.ts's `writeOrPend` with
 * the conn as the Outbox, so the connection's bytes towards the agent are counted where every other write is.
 */
export class SocketDuplex extends Duplex {
  private pendingCb: ((e?: Error | null) => void) | null = null;
  constructor(
    readonly sock: Socket<ClientConn>,
    readonly now: () => number,
  ) {
    super({ allowHalfOpen: true });
  }
  /** bytes from the Bun socket's data handler */
  onData(data: Uint8Array) {
    // Bun may reuse its read buffer after the handler returns: push a copy.
    if (!this.push(Buffer.from(data))) this.sock.pause();
  }
  override _read() {
    this.sock.resume();
  }
  override _write(chunk: Buffer, _enc: string, cb: (e?: Error | null) => void) {
    const c = this.sock.data;
    // A long download is activity too: the idle sweep must not cut an agent that only reads.
    c.lastActive = this.now();
    if (writeOrPend(this.sock, c, chunk)) return cb();
    if (c.pending === null) return cb(new Error("socket closed"));
    this.pendingCb = cb; // node:tls writes nothing more until cb: one pending write at most
  }
  onDrain() {
    if (!flushPending(this.sock, this.sock.data)) return;
    const cb = this.pendingCb;
    this.pendingCb = null;
    cb?.();
  }
  override _final(cb: (e?: Error | null) => void) {
    this.sock.shutdown();
    cb();
  }
  override _destroy(err: Error | null, cb: (e: Error | null) => void) {
    this.sock.end();
    cb(err);
  }
}

// `cache.min_tls` → node:tls minVersion (max stays TLS 1.3). TLS 1.0/1.1 need nothing more: BoringSSL keeps the
// ECDHE-ECDSA-AES{128,256}-SHA suites those versions use with our P-256 leaves, and has no "@SECLEVEL" (a
// `ciphers: "DEFAULT:@SECLEVEL=0"` throws ERR_SSL_INVALID_COMMAND). Shown by `bun bench/micro/legacy-tls-probe.ts`
// and `openssl s_client -tls1 -cipher 'DEFAULT:@SECLEVEL=0' -proxy 127.0.0.1:CACHE_PORT -connect host:443`
// (test/e2e/legacy-tls.test.ts); the client needs SECLEVEL=0, Debian's openssl refuses TLS < 1.2 by itself.
const TLS_NAMES: Record<MinTls, tls.SecureVersion> = { "1.0": "TLSv1", "1.1": "TLSv1.1", "1.2": "TLSv1.2", "1.3": "TLSv1.3" };

function leafPath(st: TlsState, host: string) {
  return join(st.leafDir!, `${host.replace(/[^a-z0-9.-]/g, "_")}.pem`);
}

function readSaved(path: string): Leaf | null {
  if (!existsSync(path)) return null;
  try {
    const saved = JSON.parse(readFileSync(path, "utf8")) as Leaf;
    return saved.notAfter - Date.now() > 86_400_000 ? saved : null;
  } catch {
    return null; // unreadable: mint again
  }
}

/**
 * One mint per host across workers too: the LeafCache collapses a worker's own concurrent handshakes, and an
 * O_EXCL lock file next to the leaf makes the other workers wait for the first one's file instead of minting.
 */
async function mint(st: TlsState, host: string): Promise<Leaf> {
  const path = leafPath(st, host);
  const saved = readSaved(path);
  if (saved) return saved;
  const lock = `${path}.lock`;
  let locked = false;
  try {
    closeSync(openSync(lock, "wx"));
    locked = true;
  } catch {
    // Another worker is minting it: wait for its file (bounded), then mint ourselves if it never came.
    for (let i = 0; i < 100; i++) {
      await Bun.sleep(10);
      const theirs = readSaved(path);
      if (theirs) return theirs;
      if (!existsSync(lock)) break;
    }
  }
  try {
    const m = await mintLeaf(st.ca!, st.leafKeys!, host, new Date(), randomBytes(16));
    const leaf: Leaf = { certPem: m.certPem, keyPem: m.keyPem, notAfter: m.notAfter.getTime() };
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}`;
    writeFileSync(tmp, JSON.stringify(leaf), { mode: 0o600 });
    renameSync(tmp, path);
    st.mints++;
    return leaf;
  } finally {
    if (locked) rmSync(lock, { force: true });
  }
}

/** The secure context for `host`: leaf + chain, cached per host. */
export async function contextFor(st: TlsState, host: string): Promise<tls.SecureContext> {
  const hit = st.contexts.get(host);
  if (hit) return hit;
  const leaf = await st.leaves.getOrMint(host, Date.now(), () => mint(st, host));
  const again = st.contexts.get(host);
  if (again) return again;
  const ca = st.ca!;
  // Send the issuer (customer: the intermediates) after the leaf. Without it the TLS stack looks for the issuer
  // in /etc/ssl/certs on every handshake (4 failing openat() calls each, seen with strace).
  const ctx = tls.createSecureContext({
    cert: leaf.certPem + ca.chainPem,
    key: leaf.keyPem,
    minVersion: TLS_NAMES[st.minTls],
    // Session resumption: node:tls issues tickets and session ids per context, so an agent resumes on the worker that
    // made its session (TLS 1.2 and 1.3, test/e2e/tls-resumption.test.ts). A key shared by the workers is not possible
    // in Bun 1.4.5: `ticketKeys` is ignored here and on TLSSocket (two contexts with the same ticketKeys: only the one
    // that issued resumes; probe in the README's benchmark section), so with N workers about 1/N of offered sessions
    // land where they resume. TODO: share the ticket key once Bun honours `ticketKeys` or `setTicketKeys`.
  });
  st.contexts.set(host, ctx);
  if (st.contexts.size > 10_000) st.contexts.delete(st.contexts.keys().next().value!);
  return ctx;
}

/** Wrap the accepted socket and act as the TLS server for `host`. */
export function terminateTls(duplex: SocketDuplex, ctx: tls.SecureContext): tls.TLSSocket {
  return new tls.TLSSocket(duplex, {
    isServer: true,
    secureContext: ctx,
    ALPNProtocols: ["http/1.1"],
  } as tls.TLSSocketOptions);
}

/**
 * Layer 1's intercept command: the CONNECT was answered (or, `conn.verdict === null`, the connection carries a plain
 * absolute-form http request). Install the conn's handle, terminate TLS with a leaf for the CONNECT host, and run
 * HTTP/1.1 inside; `early` holds bytes that came after the CONNECT head (or the plain request itself).
 */
export function interceptConnection(rt: WorkerRuntime, sock: Socket<ClientConn>, early: Uint8Array | null): void {
  const c = sock.data;
  const duplex = new SocketDuplex(sock, rt.now);
  c.intercept = {
    onData: (b) => duplex.onData(b),
    onDrain: () => duplex.onDrain(),
    onEnd: () => void duplex.push(null),
    destroy: () => void duplex.destroy(),
  };
  if (early && early.byteLength) duplex.onData(early);
  if (c.verdict === null || c.target === null) {
    new HttpSession(rt, duplex, c, "http", null, duplex, onCacheRequest);
    return;
  }
  const target = c.target;
  contextFor(rt.tls, target.host).then(
    (ctx) => {
      if (c.closed) return;
      const t = terminateTls(duplex, ctx);
      new HttpSession(rt, t, c, "https", target, duplex, onCacheRequest);
    },
    (e) => {
      log("error", "cannot mint a certificate", { id: c.id, host: target.host, error: (e as Error).message });
      c.endReason = "mint-failed";
      sock.terminate();
    },
  );
}
