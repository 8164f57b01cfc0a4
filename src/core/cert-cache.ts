/**
 * @module Minted leaves by host, least recently used first out, with a cap and expiry (STYLE §13, after mitmproxy's
 * `CertStore` and its STORE_CAP). `getOrMint` makes concurrent first handshakes for one host cost one mint: the
 * first caller starts it, the others wait on the same promise. Pure: `now` is passed in, minting is the caller's.
 *
 * Hosts are used as given; callers pass them normalised (lower-case, no trailing dot, IPv6 without brackets, as
 * `Target.host` is), or "Example.com" and "example.com" get a leaf each.
 */

export type Leaf = { certPem: string; keyPem: string; /** ms since the epoch */ notAfter: number };

export const LEAF_CACHE_CAP = 10_000;
/** A leaf this close to its notAfter is dropped and minted again, so no agent is handed one about to expire. */
export const LEAF_EXPIRY_MARGIN_MS = 86_400_000;

export class LeafCache {
  readonly cap: number;
  // Map iteration order is insertion order: the first key is the least recently used (re-inserted on every hit).
  #leaves = new Map<string, Leaf>();
  #inflight = new Map<string, Promise<Leaf>>();
  // Bumped by clear(): a mint that started before (under the old CA) must not land in the cache after.
  #generation = 0;

  constructor(opts: { cap?: number } = {}) {
    const cap = opts.cap ?? LEAF_CACHE_CAP;
    if (!Number.isInteger(cap) || cap < 1) throw new RangeError(`LeafCache cap: expected an integer ≥ 1, got ${cap}`);
    this.cap = cap;
  }

  get size(): number {
    return this.#leaves.size;
  }

  /** The cached leaf, marked most recently used; undefined (and dropped) when within a day of its notAfter. */
  get(host: string, now: number): Leaf | undefined {
    const leaf = this.#leaves.get(host);
    if (leaf === undefined) return undefined;
    this.#leaves.delete(host);
    if (now >= leaf.notAfter - LEAF_EXPIRY_MARGIN_MS) return undefined;
    this.#leaves.set(host, leaf);
    return leaf;
  }

  set(host: string, leaf: Leaf): void {
    this.#leaves.delete(host);
    this.#leaves.set(host, leaf);
    while (this.#leaves.size > this.cap) this.#leaves.delete(this.#leaves.keys().next().value!);
  }

  delete(host: string): boolean {
    return this.#leaves.delete(host);
  }

  /** Forget every leaf, and let mints already running finish without being cached (e.g. the CA changed). */
  clear(): void {
    this.#leaves.clear();
    this.#inflight.clear();
    this.#generation++;
  }

  /**
   * The cached leaf for `host`, or the one being minted for it, or a new mint. Concurrent callers for one host
   * share one `mint()`; if it fails they all see the error and nothing is cached, so the next call tries again.
   */
  getOrMint(host: string, now: number, mint: () => Promise<Leaf>): Promise<Leaf> {
    const cached = this.get(host, now);
    if (cached) return Promise.resolve(cached);
    const running = this.#inflight.get(host);
    if (running) return running;
    const generation = this.#generation;
    // mint runs from a then(): a synchronous throw becomes a rejection for every waiter, and `p` exists by then.
    const p: Promise<Leaf> = Promise.resolve()
      .then(mint)
      .then((leaf) => {
        if (generation === this.#generation) this.set(host, leaf);
        return leaf;
      })
      .finally(() => {
        if (this.#inflight.get(host) === p) this.#inflight.delete(host);
      });
    this.#inflight.set(host, p);
    return p;
  }
}
