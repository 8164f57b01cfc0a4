/**
 * @module The two mechanisms every socket path shares, written once (issue 8 §7):
 * - `writeOrPend` / `flushPending`: write what the socket takes now, keep the rest as the writer's pending bytes,
 *   and flush them from `drain` — behind the tunnel, the TLS Duplex, the origin client and the HTTP session.
 * - `HeadAccumulator` (defined in core/bytes.ts): "buffer until the head is complete", checked as bytes arrive.
 *
 * Bun's `socket.write` returns how many bytes the kernel took (-1 when closed); what it did not take is ours to keep,
 * and Bun may reuse the read buffer it handed us once the data callback returns, so kept bytes are copies.
 */
import { concat } from "../core/bytes";

/** Anything with Bun's socket `write` contract. */
export type Writable = { write(data: Uint8Array): number };

/** The pending bytes of one writer (a socket's state object carries these fields). */
export type Outbox = {
  /** bytes accepted but not yet taken by the socket */
  pending: Uint8Array | null;
  /** bytes the socket has taken */
  bytesOut: number;
};

/** Write `data`, or queue it behind what is pending. True when everything went out now; false: wait for drain. */
export function writeOrPend(sock: Writable, box: Outbox, data: Uint8Array): boolean {
  if (box.pending) {
    box.pending = concat(box.pending, data);
    return false;
  }
  const n = sock.write(data);
  if (n < 0) return false; // closed underneath us: its close handler tears down
  box.bytesOut += n;
  if (n < data.byteLength) {
    box.pending = data.slice(n);
    return false;
  }
  return true;
}

/** `drain` handler body: write what is pending. True when nothing is left pending. */
export function flushPending(sock: Writable, box: Outbox): boolean {
  const p = box.pending;
  if (!p) return true;
  const n = sock.write(p);
  if (n < 0) return false;
  box.bytesOut += n;
  if (n < p.byteLength) {
    box.pending = p.subarray(n);
    return false;
  }
  box.pending = null;
  return true;
}

/** The one head accumulator lives in core (the sans-IO session uses it too); shells import it from here or there. */
export { HeadAccumulator } from "../core/bytes";
