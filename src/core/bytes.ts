/** @module Small byte helpers shared by the parsers and the socket code. */

/** A new array holding `a` then `b`. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

/**
 * Bytes of a head that has not arrived whole yet (issue 8 §7: the one head accumulator, in core so the sans-IO
 * session uses it too). `push` returns everything buffered so far (the new bytes alone, without a copy, when
 * nothing was buffered); `keep` stores it when the parser said NEED_MORE. The parser checks the byte limit on
 * what `push` returns, so a head over the limit fails as its bytes arrive, not after buffering.
 */
export class HeadAccumulator {
  #buf: Uint8Array | null = null;

  get size(): number {
    return this.#buf?.byteLength ?? 0;
  }

  push(data: Uint8Array): Uint8Array {
    return this.#buf ? concat(this.#buf, data) : data;
  }

  /** The parser needs more: keep `all` (a copy when it is still the socket's buffer, which Bun reuses). */
  keep(all: Uint8Array, data: Uint8Array): void {
    this.#buf = all === data ? data.slice() : all;
  }

  clear(): void {
    this.#buf = null;
  }
}
