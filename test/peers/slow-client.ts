/**
 * @module Misbehaving clients and origins for the hardening suites (issue 12): a client that sends its bytes one at a
 * time (slowloris), one that sends a prefix and then falls silent (a CONNECT with no ClientHello, a ClientHello and
 * no more), a captured ClientHello to replay, a raw HTTP/1.1 origin whose answer a test scripts byte by byte (to
 * reset it mid-body), and the VmRSS of a process. Every client is bounded: it stops writing once it was answered or
 * closed, and `closed` resolves false after `boundMs` rather than hanging a test.
 */
import { readFileSync } from "node:fs";
import tls from "node:tls";
import type { Socket, TCPSocketListener } from "bun";

export type Held = {
  /** everything the server sent, latin1 */
  received: () => string;
  isClosed: () => boolean;
  /** true once the server closed; false if it did not within `boundMs` */
  closed: Promise<boolean>;
  write: (b: string | Uint8Array) => void;
  destroy: () => void;
};

/** Connect, send `prefix` at once, and hold the connection, reading whatever comes back. */
export async function holdOpen(port: number, prefix: string | Uint8Array, boundMs = 30_000): Promise<Held> {
  let got = "";
  let closed = false;
  let onClose!: (b: boolean) => void;
  const closedP = new Promise<boolean>((r) => (onClose = r));
  const dec = new TextDecoder("latin1");
  const sock: Socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      open(s) {
        if (typeof prefix === "string" ? prefix.length : prefix.byteLength) s.write(prefix);
      },
      data(_s, d) {
        got += dec.decode(d);
      },
      close() {
        closed = true;
        onClose(true);
      },
      error() {},
    },
  });
  const bound = setTimeout(() => onClose(false), boundMs);
  closedP.then(() => clearTimeout(bound));
  return {
    received: () => got,
    isClosed: () => closed,
    closed: closedP,
    write: (b) => void (closed || sock.write(b)),
    destroy: () => sock.terminate(),
  };
}

/**
 * Slowloris: send `text` one byte every `paceMs`, stopping as soon as the server answers or closes. Resolves with
 * what the server sent and how many bytes of `text` went out. Bounded by `text.length` writes.
 */
export async function slowloris(port: number, text: string, paceMs: number, boundMs = 30_000): Promise<{ answer: string; sent: number; closed: boolean }> {
  const h = await holdOpen(port, "", boundMs);
  let sent = 0;
  for (const ch of text) {
    if (h.received() || h.isClosed()) break;
    h.write(ch);
    sent++;
    await Bun.sleep(paceMs); // the slow client's pace, not a wait for an outcome
  }
  const closed = await h.closed;
  h.destroy();
  return { answer: h.received(), sent, closed };
}

/** The bytes of one real ClientHello for `servername` (node:tls against a recorder on 127.0.0.1), to replay raw. */
export async function captureClientHello(servername: string): Promise<Uint8Array> {
  let resolve!: (b: Uint8Array) => void;
  const got = new Promise<Uint8Array>((r) => (resolve = r));
  const l = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(s, d) {
        resolve(new Uint8Array(d));
        s.terminate();
      },
    },
  });
  const t = tls.connect({ host: "127.0.0.1", port: l.port, servername, rejectUnauthorized: false });
  t.on("error", () => {});
  const hello = await Promise.race([got, Bun.sleep(10_000).then(() => null)]);
  t.destroy();
  l.stop(true);
  if (hello === null) throw new Error("no ClientHello captured within 10 s");
  return hello;
}

/** A process's resident set in bytes, from /proc/<pid>/status (VmRSS is in kB). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

export type RawOrigin = { port: number; received: () => string; requests: () => number; stop: () => void };

/**
 * A raw HTTP/1.1 origin (plain or TLS with `cert`): calls `answer` once per request head it sees, with the socket,
 * so a test writes exact bytes and may cut the connection (`s.terminate()` is a reset, `s.end()` a FIN).
 */
export function startRawOrigin(answer: (s: Socket<{ buf: string }>, head: string) => void, cert?: { certPem: string; keyPem: string }): RawOrigin {
  let all = "";
  let requests = 0;
  const l: TCPSocketListener<{ buf: string }> = Bun.listen<{ buf: string }>({
    hostname: "127.0.0.1",
    port: 0,
    ...(cert ? { tls: { cert: cert.certPem, key: cert.keyPem } } : {}),
    socket: {
      open(s) {
        s.data = { buf: "" };
      },
      data(s, d) {
        const t = Buffer.from(d).toString("latin1");
        all += t;
        s.data.buf += t;
        let i;
        while ((i = s.data.buf.indexOf("\r\n\r\n")) >= 0) {
          const head = s.data.buf.slice(0, i);
          s.data.buf = s.data.buf.slice(i + 4);
          if (!/^[A-Z]+ \S+ HTTP\/1\.[01]/.test(head)) continue; // bodies of the scripts here are empty
          requests++;
          answer(s, head);
        }
      },
      error() {},
    },
  });
  return { port: l.port, received: () => all, requests: () => requests, stop: () => l.stop(true) };
}
