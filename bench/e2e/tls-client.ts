/**
 * @module The byte-level HTTP/1.1 and CONNECT pieces shared by the benchmarks' client processes
 * (load-fixture.ts, savings-client.ts, patch-range-client.ts): heads read out of arriving chunks, the CONNECT
 * request, and the Bun socket handlers that send CONNECT, read the proxy's answer and `upgradeTLS()` on a 200.
 */
import type { Socket } from "bun";

export const latin1 = new TextDecoder("latin1");
const enc = new TextEncoder();

export function concat(a: Uint8Array | null, b: Uint8Array): Uint8Array {
  if (!a) return b.slice();
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

/** The offset just past the head's blank line, or -1 while the head is incomplete. */
export function headEnd(b: Uint8Array): number {
  for (let i = 3; i < b.byteLength; i++) if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i + 1;
  return -1;
}

/**
 * `data` appended to what `st.buf` holds: the complete head (latin1) and the bytes after it (st.buf emptied),
 * or null while the head is incomplete (everything so far kept in st.buf, for the caller to bound).
 */
export function readHead(st: { buf: Uint8Array | null }, data: Uint8Array): { head: string; rest: Uint8Array } | null {
  const b = concat(st.buf, data);
  const end = headEnd(b);
  if (end < 0) {
    st.buf = b;
    return null;
  }
  st.buf = null;
  return { head: latin1.decode(b.subarray(0, end)), rest: b.subarray(end) };
}

/** `CONNECT authority` with Host and User-Agent. */
export const connectHead = (authority: string, userAgent: string) =>
  enc.encode(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\nUser-Agent: ${userAgent}\r\n\r\n`);

/** A CONNECT answer head larger than this is no answer. */
export const MAX_ANSWER_BYTES = 16 * 1024;

/** What a close before the set-up ended means, by the phase the connection was in. */
export const closedDuring = (phase: string) => (phase === "connect" ? "tcp-connect" : phase === "answer" ? "proxy-closed" : "tls-closed");

/** Ends a connection's set-up, once: `c.settle` is called with `err` and cleared. */
export function settleOnce(c: { settle: ((err: string | null) => void) | null }, err: string | null) {
  const s = c.settle;
  if (!s) return;
  c.settle = null;
  s(err);
}

/** A response head larger than this is an error (response-head-too-long). */
export const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;

/**
 * Handlers for a client's TLS socket (straight to the origin, or upgraded inside a tunnel): a failed handshake or
 * verification is counted as `tls-verify: <why>` and settles the set-up with `tls-handshake`; a verified one goes
 * to `secure`. A close goes to `onClosed` (an error is followed by its close, which is what counts).
 */
export function tlsSocketHandlers<C>(h: {
  open: (s: Socket<C>) => void;
  secure: (s: Socket<C>, c: C) => void;
  data: (s: Socket<C>, d: Uint8Array) => void;
  settle: (c: C, err: string | null) => void;
  onClosed: (c: C) => void;
  bump: (code: string) => void;
}) {
  return {
    open: h.open,
    handshake(s: Socket<C>, ok: boolean, authErr: Error | null) {
      if (!ok || authErr) {
        h.bump(`tls-verify: ${authErr?.message ?? "failed"}`.slice(0, 80));
        h.settle(s.data, "tls-handshake");
        s.terminate();
        return;
      }
      h.secure(s, s.data);
    },
    data: h.data,
    close(s: Socket<C>) {
      h.onClosed(s.data);
    },
    end(s: Socket<C>) {
      s.end();
    },
    error(_s: Socket<C>) {},
    connectError(s: Socket<C>) {
      h.settle(s.data, "tcp-connect");
    },
  };
}

export type TunnelConn = { phase: string; buf: Uint8Array | null };

/**
 * Handlers for the plain socket of a tunnel: on open write `head(c)` (phase "answer"); on a complete `HTTP/1.x 200`
 * answer `upgradeTLS()` with `tls(c)` and `tlsHandlers` (phase "tls"); otherwise settle the set-up with
 * `proxy-status-NNN` or `proxy-bad-answer`, or `tcp-connect` when the connection fails. A close before the
 * upgrade goes to `onClosed`; after it the TLS socket's handlers have the connection.
 */
export function tunnelHandlers<C extends TunnelConn>(h: {
  head: (c: C) => Uint8Array;
  tls: (c: C) => { ca: string; serverName: string };
  tlsHandlers: unknown;
  settle: (c: C, err: string | null) => void;
  onClosed: (c: C) => void;
  /** TCP is up, before CONNECT is written */
  onOpen?: (s: Socket<C>, c: C) => void;
  /** the answer's head is complete, before its status is looked at */
  onAnswer?: (c: C) => void;
}) {
  return {
    open(s: Socket<C>) {
      const c = s.data;
      h.onOpen?.(s, c);
      c.phase = "answer";
      s.write(h.head(c));
    },
    data(s: Socket<C>, d: Uint8Array) {
      const c = s.data;
      if (c.phase !== "answer") return;
      const a = readHead(c, d);
      if (!a) {
        if (c.buf!.byteLength > MAX_ANSWER_BYTES) (h.settle(c, "proxy-bad-answer"), s.terminate());
        return;
      }
      h.onAnswer?.(c);
      if (!/^HTTP\/1\.[01] 200/.test(a.head)) {
        h.settle(c, `proxy-status-${a.head.slice(9, 12)}`);
        s.end();
        return;
      }
      c.phase = "tls";
      s.upgradeTLS<C>({ data: c, tls: h.tls(c), socket: h.tlsHandlers } as never);
    },
    close(s: Socket<C>) {
      const c = s.data;
      if (c.phase === "connect" || c.phase === "answer") h.onClosed(c);
    },
    end(s: Socket<C>) {
      s.end();
    },
    error(_s: Socket<C>) {},
    connectError(s: Socket<C>) {
      h.settle(s.data, "tcp-connect");
    },
  };
}
