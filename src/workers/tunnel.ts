/**
 * @module The byte pipe between two sockets, honouring write()/drain both ways (STYLE §11).
 * When the receiving side cannot take all bytes, the rest is kept as `pending` on the receiver and the
 * sender is paused; `drain` flushes and resumes. So a slow agent or a slow origin never makes the gateway
 * buffer more than one read's worth per direction. Half-close: a FIN from one side becomes a shutdown
 * of the other side's write half once its pending bytes are flushed.
 */
import type { Socket } from "bun";
import { concat } from "../core/bytes";

/** The part of a connection's state the pipe needs; client and origin states both extend it. */
export type PipeEnd = {
  peer: Socket<PipeEnd> | null;
  /** bytes accepted from the peer but not yet written to this socket */
  pending: Uint8Array | null;
  /** the peer sent FIN: shut our write side once pending is flushed */
  shutdownAfterFlush: boolean;
  /** this side sent FIN (we saw `end`) */
  readEnded: boolean;
  /** this side's write half is shut */
  writeShut: boolean;
  closed: boolean;
  /** bytes written into this socket (towards its remote) */
  bytesOut: number;
  /** coarse clock of last activity, for the idle sweep */
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
  from.data.lastActive = now;
  if (t.closed) return;
  if (t.pending) {
    // Already backed up: keep order, stop reading.
    t.pending = concat(t.pending, data);
    from.pause();
    return;
  }
  const n = to.write(data);
  if (n < 0) return; // closed underneath us; its close handler tears down
  t.bytesOut += n;
  t.lastActive = now;
  if (n < data.byteLength) {
    // Bun may reuse the read buffer after this callback: keep a copy of the rest.
    t.pending = data.slice(n);
    from.pause();
  }
}

/** `drain` handler body: flush what is pending, then let the peer read again. */
export function onPipeDrain(sock: Socket<PipeEnd>): void {
  const d = sock.data;
  if (d.pending && !d.closed) {
    const p = d.pending;
    const n = sock.write(p);
    if (n < 0) return;
    d.bytesOut += n;
    if (n < p.byteLength) {
      d.pending = p.subarray(n);
      return;
    }
    d.pending = null;
  }
  if (d.pending) return;
  if (d.shutdownAfterFlush && !d.writeShut) {
    d.writeShut = true;
    sock.shutdown();
  }
  const peer = d.peer;
  if (peer && !peer.data.closed && !peer.data.readEnded) peer.resume();
}

/** `end` handler body (the remote sent FIN): forward the half-close to the peer. Returns true when both directions are done. */
export function onPipeEnd(sock: Socket<PipeEnd>): boolean {
  const d = sock.data;
  d.readEnded = true;
  const peer = d.peer;
  if (!peer || peer.data.closed) return true;
  if (peer.data.pending) peer.data.shutdownAfterFlush = true;
  else if (!peer.data.writeShut) {
    peer.data.writeShut = true;
    peer.shutdown();
  }
  return peer.data.readEnded;
}
