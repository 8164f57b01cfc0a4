/**
 * @module The byte pipe between two sockets (STYLE §11): back-pressure through pipe.ts's `writeOrPend` /
 * `flushPending` (the one helper), plus the half-close logic, which is what is particular to a tunnel.
 * When the receiving side cannot take all bytes, the rest is its pending bytes and the sender is paused; `drain`
 * flushes and resumes. So a slow agent or a slow origin never makes the gateway buffer more than one read's worth
 * per direction. Half-close: a FIN from one side becomes a shutdown of the other side's write half once its
 * pending bytes are flushed.
 */
import type { Socket } from "bun";
import { type Outbox, flushPending, writeOrPend } from "./pipe";

/** The part of a connection's state the pipe needs; client and origin states both extend it. */
export type PipeEnd = Outbox & {
  peer: Socket<PipeEnd> | null;
  /** the peer sent FIN: shut our write side once pending is flushed */
  shutdownAfterFlush: boolean;
  /** this side sent FIN (we saw `end`) */
  readEnded: boolean;
  /** this side's write half is shut */
  writeShut: boolean;
  closed: boolean;
  /** last time bytes moved through this end (either way), for the idle sweep */
  lastActive: number;
};

export function makePipeEnd(now: number): PipeEnd {
  return {
    peer: null,
    pending: null,
    shutdownAfterFlush: false,
    readEnded: false,
    writeShut: false,
    closed: false,
    bytesOut: 0,
    lastActive: now,
  };
}

/** Write `data` (read from `from`) into `to`, pausing `from` if `to` can't take it all now. */
export function pipeWrite(from: Socket<PipeEnd>, to: Socket<PipeEnd>, data: Uint8Array, now: number): void {
  const t = to.data;
  // Both ends: the idle sweep looks at the client's end, and a download is activity on it too.
  from.data.lastActive = now;
  t.lastActive = now;
  if (t.closed) return;
  if (!writeOrPend(to, t, data)) from.pause();
}

/** `drain` handler body: flush what is pending, then let the peer read again. */
export function onPipeDrain(sock: Socket<PipeEnd>): void {
  const d = sock.data;
  if (d.closed || !flushPending(sock, d)) return;
  if (d.shutdownAfterFlush && !d.writeShut) {
    d.writeShut = true;
    sock.shutdown();
  }
  const peer = d.peer;
  if (peer && !peer.data.closed && !peer.data.readEnded) peer.resume();
}

/** `end` handler body (the remote sent FIN): forward the half-close to the peer. True when both directions are done. */
export function onPipeEnd(sock: Socket<PipeEnd>): boolean {
  const d = sock.data;
  d.readEnded = true;
  const peer = d.peer;
  if (!peer || peer.data.closed) return true;
  shutWhenFlushed(peer);
  return peer.data.readEnded;
}

/** Our side is done sending to `sock`: shut its write half now, or after its pending bytes. */
export function shutWhenFlushed(sock: Socket<PipeEnd>): void {
  const d = sock.data;
  if (d.pending) d.shutdownAfterFlush = true;
  else if (!d.writeShut) {
    d.writeShut = true;
    sock.shutdown();
  }
}
