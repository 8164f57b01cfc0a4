/**
 * @module TLS termination on the cache port: nothing else knows how it is done (STYLE module map).
 * `upgradeTLS` is client-side only in Bun (DESIGN "verified facts"), so the accepted Bun socket is wrapped in a
 * small stream.Duplex and handed to node:tls `TLSSocket({ isServer: true })`. Leaves are minted per CONNECT host
 * by the active CA, with one P-256 key pair per worker, cached in memory (LeafCache) and on disk, and concurrent
 * first handshakes for one host mint once.
 */
import "reflect-metadata";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes, createHash } from "node:crypto";
import type { Socket } from "bun";
import { type Ca, type LeafKeys, loadCa, makeLeafKeys, mintLeaf } from "../core/certs";
import { LeafCache, type Leaf } from "../core/cert-cache";
import type { MinTls } from "../core/config";
import type { CaPems } from "../store/ca-store";

/** A Bun socket as a node Duplex, honouring back-pressure both ways. */
export class SocketDuplex extends Duplex {
  private pendingBuf: Uint8Array | null = null;
  private pendingCb: ((e?: Error | null) => void) | null = null;
  constructor(readonly sock: Socket<any>) {
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
    // A long download is activity too: the idle sweep must not cut an agent that only reads.
    (this.sock.data as { lastActive: number }).lastActive = Date.now();
    const n = this.sock.write(chunk);
    if (n < 0) return cb(new Error("socket closed"));
    if (n < chunk.byteLength) {
      this.pendingBuf = chunk.subarray(n);
      this.pendingCb = cb;
    } else cb();
  }
  onDrain() {
    const p = this.pendingBuf;
    if (!p) return;
    const n = this.sock.write(p);
    if (n < 0) return;
    if (n < p.byteLength) {
      this.pendingBuf = p.subarray(n);
      return;
    }
    this.pendingBuf = null;
    const cb = this.pendingCb!;
    this.pendingCb = null;
    cb();
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

type TlsState = {
  ca: Ca | null;
  caId: string;
  leafKeys: LeafKeys | null;
  leaves: LeafCache;
  contexts: Map<string, tls.SecureContext>;
  minTls: MinTls;
  leafDir: string | null;
};

const st: TlsState = {
  ca: null,
  caId: "",
  leafKeys: null,
  leaves: new LeafCache(),
  contexts: new Map(),
  minTls: "1.2",
  leafDir: null,
};

const TLS_NAMES: Record<MinTls, tls.SecureVersion> = { "1.0": "TLSv1", "1.1": "TLSv1.1", "1.2": "TLSv1.2", "1.3": "TLSv1.3" };

/** A new active CA (or min TLS): new handshakes use it at once; cached leaves of the old CA are dropped. */
export async function setTlsConfig(pems: CaPems, minTls: MinTls, dataDir: string) {
  const caId = createHash("sha256").update(pems.certPem).digest("hex").slice(0, 16);
  if (caId !== st.caId) {
    st.ca = await loadCa(pems.kind, { cert: pems.rootPem, key: pems.keyPem, chain: pems.chainPem || undefined });
    st.leafKeys ??= await makeLeafKeys();
    st.caId = caId;
    st.leaves.clear();
    st.contexts.clear();
    st.leafDir = join(dataDir, "leaves", caId);
    mkdirSync(st.leafDir, { recursive: true, mode: 0o700 });
  }
  if (minTls !== st.minTls) {
    st.minTls = minTls;
    st.contexts.clear();
  }
}

export const tlsReady = () => st.ca !== null;

function leafPath(host: string) {
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
async function mint(host: string): Promise<Leaf> {
  const path = leafPath(host);
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
    mints++;
    return leaf;
  } finally {
    if (locked) rmSync(lock, { force: true });
  }
}

let mints = 0;
/** Leaves this worker minted (not read from disk). */
export const leafMints = () => mints;

/** The secure context for `host`: leaf + chain, cached per host. */
export async function contextFor(host: string): Promise<tls.SecureContext> {
  const hit = st.contexts.get(host);
  if (hit) return hit;
  const leaf = await st.leaves.getOrMint(host, Date.now(), () => mint(host));
  const again = st.contexts.get(host);
  if (again) return again;
  const ca = st.ca!;
  // Send the issuer (customer: the intermediates) after the leaf. Without it the TLS stack looks for the issuer
  // in /etc/ssl/certs on every handshake (4 failing openat() calls each, seen with strace).
  const ctx = tls.createSecureContext({
    cert: leaf.certPem + ca.chainPem,
    key: leaf.keyPem,
    minVersion: TLS_NAMES[st.minTls],
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

export function leafCount() {
  return st.leaves.size;
}
