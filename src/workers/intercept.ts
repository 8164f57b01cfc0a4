/**
 * @module TLS termination on the cache port: nothing else knows how it is done (STYLE module map).
 * Leaves are minted per CONNECT host
 * by the active CA, with one P-256 key pair per worker, cached in memory (LeafCache) and on disk, and concurrent
 * first handshakes for one host mint once. The state (active CA, leaves, contexts, mint count) is `rt.tls`; the CA
 * is activated by `applyCacheMode` (cache-request.ts), which this file must not import (it would be a circle).
 *
 * Two ways to terminate, the same HTTP session above both:
 * - **native** (`NativeTlsIo`): the accepted Bun socket is upgraded in place with `socket.upgradeTLS`, which acts as
 *   the TLS server on an accepted socket (DESIGN's "client-side only" was wrong: `bun bench/micro/tls-upgrade-probe.ts`, 2026-12-02:
 *   curl's request through a CONNECT and the upgraded socket was answered). Server CPU per request, same
 *   run (`bun bench/micro/hit-tls.bench.ts 1024 20000 native,upgrade,duplex` and `2097152 1000`): 1 KiB keep-alive
 *   12.6 µs upgraded vs 12.5 Bun.listen({tls}) vs 22.3 the Duplex; 2 MiB 0.93–1.0 ms vs 1.6–2.0 ms; a full
 *   handshake with one request (`CONC=1000 … 1024 1000`) 415–424 µs vs 543–563 µs. Taken when this worker holds
 *   the host's secure context and nothing came after the CONNECT head (`upgradeNatively`); the ciphertext bytes for
 *   the connection's log line come from the kernel (tcp-bytes.ts).
 * - **Duplex**: the socket wrapped in a small stream.Duplex under node:tls `TLSSocket({ isServer: true })` — for a
 *   host's first connection in a worker (its leaf is minted or read from disk while the agent waits) and a
 *   ClientHello sent before our 200 (bytes already read cannot be handed to the native TLS layer).
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
import { type Outbox, flushPending, writeOrPend } from "./pipe";
import { tcpBytesWritten } from "./tcp-bytes";
import { HttpSession, type SessionIo } from "./http-session";
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

/**
 * An intercepted connection whose TLS runs in Bun's native socket (`upgradeTLS`): the HTTP session's `SessionIo`
 * over the upgraded socket, with no node stream in between. Writes go through pipe.ts's `writeOrPend` into this
 * object's own Outbox (the raw socket's stays the conn's); the bytes towards the agent are taken from the kernel
 * just before the socket closes (`settle`), since only it sees the ciphertext.
 */
export class NativeTlsIo implements SessionIo, Outbox {
  pending: Uint8Array | null = null;
  /** plaintext bytes the TLS socket took (the fallback for the log line when the kernel cannot say) */
  bytesOut = 0;
  tls: Socket<NativeTlsIo> | null = null;
  #listeners = new Map<string, ((...a: any[]) => void)[]>();
  #ending = false;
  #closed = false;
  #settled = false;
  #fd = -1;
  /** the conn's bytesOut before the upgrade (the 200 to the CONNECT): the fallback adds the plaintext to it */
  readonly #rawBytesOut: number;

  constructor(
    readonly sock: Socket<ClientConn>,
    readonly now: () => number,
  ) {
    this.#rawBytesOut = sock.data.bytesOut;
    this.#fd = (sock as unknown as { fd?: number }).fd ?? -1;
  }

  on(ev: string, f: (...a: any[]) => void): this {
    const l = this.#listeners.get(ev);
    if (l) l.push(f);
    else this.#listeners.set(ev, [f]);
    return this;
  }
  once(ev: string, f: (...a: any[]) => void): this {
    const w = (...a: any[]) => {
      const l = this.#listeners.get(ev);
      if (l) l.splice(l.indexOf(w), 1);
      f(...a);
    };
    return this.on(ev, w);
  }
  emit(ev: string, ...a: unknown[]): void {
    const l = this.#listeners.get(ev);
    if (!l) return;
    for (const f of l.length === 1 ? l : [...l]) (f as (...x: unknown[]) => void)(...a);
  }

  get writableNeedDrain(): boolean {
    return this.pending !== null;
  }
  get writableLength(): number {
    return this.pending?.byteLength ?? 0;
  }

  write(b: Uint8Array): boolean {
    const t = this.tls;
    if (t === null || this.#closed) return false;
    // A long download is activity too: the idle sweep must not cut an agent that only reads.
    this.sock.data.lastActive = this.now();
    return writeOrPend(t, this, b);
  }
  /** the TLS socket's drain: flush, then let the session's writers go on (and finish an end that waited) */
  onDrain(): void {
    if (!this.tls || !flushPending(this.tls, this)) return;
    if (this.#ending) return this.#close(false);
    this.emit("drain");
  }
  end(): void {
    if (this.#ending) return;
    this.#ending = true;
    if (this.pending === null) this.#close(false);
  }
  destroy(): void {
    this.#ending = true;
    this.#close(false);
  }
  /** cut at once (a deadline, shutdown's end of grace): no close_notify */
  abort(): void {
    this.#ending = true;
    this.#close(true);
  }
  pause(): void {
    this.tls?.pause();
  }
  resume(): void {
    this.tls?.resume();
  }

  /** close_notify and FIN, then the kernel's count, then the socket goes (its close handlers run after close(2)) */
  #close(abort: boolean): void {
    const t = this.tls;
    if (t === null || this.#closed) return;
    this.#closed = true;
    if (!abort) t.shutdown();
    this.settle();
    if (abort) t.terminate();
    else t.end();
  }

  /** Put the bytes the agent received into the conn's count, once, while the fd is open (tcp-bytes.ts). */
  settle(): void {
    if (this.#settled) return;
    this.#settled = true;
    // the socket's own fd now: -1 once closed, so a number another socket has since been given is never asked
    const live = (this.tls as unknown as { fd?: number } | null)?.fd ?? -1;
    const n = live === this.#fd ? tcpBytesWritten(live) : null;
    this.sock.data.bytesOut = n ?? this.#rawBytesOut + this.bytesOut;
  }
}

/** One handler set for every natively upgraded socket (its data is the NativeTlsIo). */
const NATIVE_HANDLERS = {
  open() {},
  handshake(s: Socket<NativeTlsIo>) {
    s.data.emit("secure");
  },
  data(s: Socket<NativeTlsIo>, d: Uint8Array) {
    // Bun may reuse its read buffer after the handler returns, and a request body's bytes can be held downstream
    s.data.emit("data", d.slice());
  },
  drain(s: Socket<NativeTlsIo>) {
    s.data.onDrain();
  },
  end(s: Socket<NativeTlsIo>) {
    s.data.emit("end"); // the session closes (now, or after its answer): #close counts the bytes with our close_notify
  },
  close(s: Socket<NativeTlsIo>) {
    s.data.emit("close");
  },
  error(s: Socket<NativeTlsIo>) {
    s.data.emit("error", new Error("tls error"));
  },
};

/** ALPN in its wire form (RFC 7301 §3.1: length-prefixed names), as Bun's native options want it */
const ALPN_HTTP11 = new Uint8Array([8, ...new TextEncoder().encode("http/1.1")]);
/** Native options per secure context (the same object each time). */
const nativeOptions = new WeakMap<tls.SecureContext, { secureContext: unknown; ALPNProtocols: Uint8Array }>();

let nativeRefusedLogged = false;

/**
 * Terminate natively when it can (see the module note): this worker holds the host's secure context and nothing
 * came after the CONNECT head. The native socket takes the very SSL context node:tls uses (`SecureContext.context`:
 * Bun's upgradeTLS refuses the node wrapper itself, "must be of type SecureContext"), so both paths share its
 * certificate chain, `min_tls` (TLS 1.0 agents included: `openssl s_client -tls1 -cipher DEFAULT:@SECLEVEL=0`
 * negotiated ECDHE-ECDSA-AES256-SHA through it) and session tickets — a session from the host's first
 * connection, which took the Duplex path, resumes on the native ones (test/e2e/tls-resumption.test.ts).
 */
function upgradeNatively(rt: WorkerRuntime, sock: Socket<ClientConn>, early: Uint8Array | null, host: string): NativeTlsIo | null {
  if (early && early.byteLength) return null;
  const ctx = rt.tls.contexts.get(host);
  const inner = (ctx as { context?: unknown } | undefined)?.context;
  if (ctx === undefined || inner === undefined) return null;
  let opts = nativeOptions.get(ctx);
  if (opts === undefined) {
    opts = { secureContext: inner, ALPNProtocols: ALPN_HTTP11 };
    nativeOptions.set(ctx, opts);
  }
  const io = new NativeTlsIo(sock, rt.now);
  try {
    const [, t] = sock.upgradeTLS<NativeTlsIo>({ data: io, tls: opts, socket: NATIVE_HANDLERS } as unknown as Parameters<typeof sock.upgradeTLS<NativeTlsIo>>[0]);
    io.tls = t;
  } catch (e) {
    // refused before anything changed (the options are checked first): the Duplex path serves this connection
    if (!nativeRefusedLogged) log("warn", "native TLS upgrade refused; using node:tls", { host, error: (e as Error).message });
    nativeRefusedLogged = true;
    return null;
  }
  return io;
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
  if (c.verdict !== null && c.target !== null) {
    const io = upgradeNatively(rt, sock, early, c.target.host);
    if (io) {
      // the raw socket's handlers still run (ciphertext in, its close): only its close matters to us
      c.intercept = { onData: () => {}, onDrain: () => {}, onEnd: () => {}, destroy: () => io.destroy(), close: (how) => (how === "abort" ? io.abort() : io.destroy()) };
      new HttpSession(rt, io, c, "https", c.target, io, onCacheRequest);
      return;
    }
  }
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
