/**
 * @module Serve, stream and fill one object: the moves cache-request.ts (whole objects) and patch.ts (metadata and
 * slices) are made of. One upstream download per object: `claimOrWait` makes the caller the one filler of a key
 * (in any worker) or a waiter of the fill that runs; the first claimant starts a download that runs on its own —
 * detached from the agent that caused it, so an agent that leaves early never aborts what others wait for — and
 * every agent, the first included, streams the bytes from the fill as they arrive. A failed fill stores nothing
 * and every waiter gets a clean error; a response that is not storable is delivered to that fill's waiters and
 * dropped. How a fill ended is a `FillOutcome` value (core/cache/plan.ts), never words in an error message.
 */
import { statfsSync } from "node:fs";
import { ProxyError, statusFor } from "../core/errors";
import { type Headers, getHeader } from "../core/http1/head";
import { type CacheDefaults, type NoStoreReason, type StoredResponse, ageHeaderValue, answerConditional, invalidationTargets, isUnsafeMethod } from "../core/cache/freshness";
import { type FillOutcome, planOriginResponse } from "../core/cache/plan";
import { primaryKey, varyKey } from "../core/cache/key";
import { type Entry, FillError, type FillTail, type FillWriter, type Store } from "../store/cache/store";
import type { HttpRequest, Responder } from "./http-session";
import type { ExchangeHandle } from "./origin-client";
import type { WorkerRuntime } from "./runtime";
import { log } from "../log";

const SERVE_SLICE = 1024 * 1024;
/** Request fields that would make the origin answer something other than the full object we store. */
const FILL_DROP = new Set(["if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"]);
/** Fields describing the wire, not the object: recomputed when serving. */
const WIRE = new Set(["content-length", "transfer-encoding", "connection", "keep-alive", "age"]);

/** The cache port's counters (rt.counters.cache): the one counting of whole-object hits (core/cache-counts.ts). */
export type CacheCounters = {
  hits: number;
  misses: number;
  collapsed: number;
  revalidations: number;
  stale_served: number;
  bytes_fetched: number;
  bytes_served: number;
  stored: number;
  not_storable: number;
  fill_errors: number;
  invalidations: number;
};

const zeroCounters = (): CacheCounters => ({
  hits: 0,
  misses: 0,
  collapsed: 0,
  revalidations: 0,
  stale_served: 0,
  bytes_fetched: 0,
  bytes_served: 0,
  stored: 0,
  not_storable: 0,
  fill_errors: 0,
  invalidations: 0,
});

/** The worker's cache counters, created on first use. */
export function cacheCounters(rt: WorkerRuntime): CacheCounters {
  return (rt.counters.cache ??= zeroCounters()) as CacheCounters;
}

export function toStored(e: Entry): StoredResponse {
  return { status: e.status, headers: e.headers, requestTime: e.requestTime, responseTime: e.responseTime, url: e.url, method: "GET", requestHeaders: e.reqHeaders };
}

const wireless = (h: Headers) => h.filter(([k]) => !WIRE.has(k.toLowerCase()));

/** RFC 9111 §4.4: a successful unsafe request invalidates what it names. */
export function invalidateAfter(rt: WorkerRuntime, req: HttpRequest, status: number, resHeaders: Headers): void {
  const store = rt.cacheStore;
  if (!store || !isUnsafeMethod(req.method)) return;
  for (const url of invalidationTargets(req.url, status, resHeaders)) {
    if (store.delete(primaryKey("GET", url))) cacheCounters(rt).invalidations++;
  }
}

// ───────────────────────────── a full disk ─────────────────────────────

/** Room kept free beside an object (the index's WAL, temp files of other fills, logs). */
const SPACE_MARGIN = 8 << 20;
/** How often a full disk is looked at again (one statfs). */
const SPACE_RECHECK_MS = 1000;
// The state is the runtime's `cacheNoSpace` (one cache store per worker).
// TODO: report it to health (core/health.ts does not exist yet): "the cache disk is full" must show there.

function freeBytes(dir: string): number {
  const st = statfsSync(dir);
  return st.bavail * st.bsize;
}

const isNoSpace = (e: unknown) => ["ENOSPC", "EDQUOT", "EFBIG"].includes((e as { code?: string })?.code ?? "");

function markNoSpace(rt: WorkerRuntime, store: Store, needed: number, now: number, why: string): void {
  if (rt.cacheNoSpace === null) log("warn", "cache disk full: objects are passed through and not stored until space returns", { dir: store.dir, needed, why });
  rt.cacheNoSpace = { needed, checkedAt: now };
}

/** True while `store`'s disk cannot take new objects: the caller forwards instead of filling. */
export function storeIsFull(rt: WorkerRuntime, store: Store, now: number): boolean {
  const ns = rt.cacheNoSpace;
  if (!ns) return false;
  if (now - ns.checkedAt < SPACE_RECHECK_MS) return true;
  ns.checkedAt = now;
  try {
    if (freeBytes(store.dir) < ns.needed + SPACE_MARGIN) return true;
  } catch {
    return true;
  }
  rt.cacheNoSpace = null;
  log("info", "cache disk has space again: storing objects", { dir: store.dir });
  return false;
}

/** Free bytes, or "plenty" when the file system cannot say (the write will tell). */
function safeFree(dir: string): number {
  try {
    return freeBytes(dir);
  } catch {
    return Number.MAX_SAFE_INTEGER;
  }
}

// ───────────────────────────── claim or wait: the one dance ─────────────────────────────

export type Claimed =
  /** stream `tail`; `filler` says whether this caller started the fill */
  | { ok: true; tail: FillTail; filler: boolean }
  /** the key was stored between the caller's lookup and its claim: look again instead of fetching it twice */
  | { ok: false; outcome: "superseded" };

/**
 * Claim the fill of `key`: as its filler, call `start(fill)` (which runs the download detached) and then wait on it
 * like everyone else; as a waiter, wait on the running fill. `giveWay`: when the claim replaced a fill that had just
 * stored the object, end ours as "superseded" instead of fetching it again (false when the caller revalidates a
 * stored entry it knows about). Used by whole objects, patch metadata and patch slices.
 */
export function claimOrWait(store: Store, key: string, start: (fill: FillWriter) => void, giveWay: boolean): Claimed {
  const claim = store.claimFill(key);
  if (claim.role === "waiter") return { ok: true, tail: claim.tail, filler: false };
  if (giveWay && claim.fill.replaced === "done") {
    claim.fill.fail("superseded");
    return { ok: false, outcome: "superseded" };
  }
  start(claim.fill);
  // The filler streams its own fill like any waiter: a second claim in this thread attaches to it in memory.
  const again = store.claimFill(key);
  if (again.role !== "waiter") {
    again.fill.fail("failed", "claimed twice");
    throw new ProxyError("PX_INTERNAL", "internal", `cache fill of ${key} claimed twice`);
  }
  return { ok: true, tail: again.tail, filler: true };
}

/** Outcomes that mean "nothing reached the agent, look again": a 304 freshened the entry, the object was stored
 * meanwhile, or the filler died (claim again to take over). */
export type LookAgain = Extract<FillOutcome, "revalidated" | "superseded" | "stale">;
export const isLookAgain = (o: FillOutcome): o is LookAgain => o === "revalidated" || o === "superseded" || o === "stale";

// ───────────────────────────── serving ─────────────────────────────

/** Answer an error: `statusFor` chooses the status (mid-body the Responder cuts the connection instead). */
export function failWith(res: Responder, e: ProxyError): void {
  res.error(statusFor(e), e.message);
}

/** Serve a stored entry; false when its blob failed verification (it has been dropped: the caller refetches). */
export async function serveEntry(rt: WorkerRuntime, s: Store, entry: Entry, req: HttpRequest, res: Responder): Promise<boolean> {
  const head = req.method === "HEAD";
  const body = head ? null : s.body(entry);
  if (!head && body === null) return false;
  const counters = cacheCounters(rt);
  counters.hits++;
  const headers = wireless(entry.headers);
  headers.push(["Age", ageHeaderValue(toStored(entry), rt.now())]);
  if (answerConditional(req.headers, entry.headers, entry.status) === 304) {
    res.head(304, headers, null);
    res.end();
    s.touch(entry, 0);
    return true;
  }
  if (head) {
    headers.push(["Content-Length", String(entry.size)]);
    res.head(entry.status, headers, null);
    res.end();
    s.touch(entry, 0);
    return true;
  }
  res.head(entry.status, headers, entry.size);
  let sent = 0;
  for (let off = 0; off < body!.byteLength && !res.closed; off += SERVE_SLICE) {
    const slice = body!.subarray(off, Math.min(off + SERVE_SLICE, body!.byteLength));
    sent += slice.byteLength;
    if (!res.write(slice)) await new Promise<void>((r) => res.onDrain(r));
  }
  counters.bytes_served += sent;
  s.touch(entry, sent);
  res.end();
  return true;
}

/** How streaming a fill to one agent went. */
export type TailEnd =
  /** the agent got the fill's answer (whole, or cut mid-body when the fill broke: `outcome` says how it ended) */
  | { end: "answered"; outcome: FillOutcome }
  /** nothing was sent: look again (`outcome` says why) */
  | { end: "again"; outcome: LookAgain };

/** Stream a fill to one agent. */
export async function streamTail(rt: WorkerRuntime, tail: FillTail, req: HttpRequest, res: Responder): Promise<TailEnd> {
  const counters = cacheCounters(rt);
  const h = await tail.head();
  if (!h.ok) {
    tail.close();
    if (isLookAgain(h.outcome)) return { end: "again", outcome: h.outcome };
    const e = new FillError(tail.key, h.outcome, h.detail);
    res.error(statusFor(e), h.detail || `the download of ${req.url} failed`);
    return { end: "answered", outcome: h.outcome };
  }
  const head = h.head;
  const len = getHeader(head.headers, "content-length");
  const headers = wireless(head.headers);
  if (req.method === "HEAD") {
    if (len !== undefined) headers.push(["Content-Length", len]);
    res.head(head.status, headers, null);
    res.end();
    tail.close();
    return { end: "answered", outcome: "delivered" };
  }
  const noBody = head.status === 204 || head.status === 304;
  res.head(head.status, headers, noBody ? null : len !== undefined && /^\d+$/.test(len) ? Number(len) : null);
  let sent = 0;
  try {
    for await (const chunk of tail) {
      if (res.closed) break; // the agent left; the fill goes on for the others
      sent += chunk.byteLength;
      if (!res.write(chunk)) await new Promise<void>((r) => res.onDrain(r));
    }
  } catch (e) {
    counters.bytes_served += sent;
    // Mid-body: the agent must not take a truncated object for a whole one.
    failWith(res, new ProxyError("PX_FILL_FAILED", "upstream", `the download of ${req.url} failed`));
    return { end: "answered", outcome: e instanceof FillError ? e.outcome : "failed" };
  } finally {
    tail.close();
  }
  counters.bytes_served += sent;
  res.end();
  return { end: "answered", outcome: "stored" };
}

// ───────────────────────────── the fill ─────────────────────────────

/** What the filler learnt, for the access line of the request that started it. */
export type FillNote = { noStore: NoStoreReason | null; freshened: boolean };

/** The one upstream download for a whole object, detached from any agent. `stale`: the entry we revalidate. */
export async function runFill(
  rt: WorkerRuntime,
  s: Store,
  fill: FillWriter,
  req: HttpRequest,
  stale: Entry | null,
  validators: Headers,
  defaults: CacheDefaults,
  note: FillNote,
): Promise<void> {
  const counters = cacheCounters(rt);
  const requestTime = rt.now();
  const headers: Headers = req.headers.filter(([k]) => !FILL_DROP.has(k.toLowerCase()));
  headers.push(...validators);
  const staleStored = stale ? toStored(stale) : null;
  let storable = false;
  let vary: string | null = null;
  let freshened = false;
  // A fill given up for lack of space: the origin exchange is aborted and nothing more goes to the fill.
  let abandoned = false;
  let handle: ExchangeHandle | null = null;
  let received = 0;
  const failed = (e: Error) => {
    counters.fill_errors++;
    log("warn", "cache fill failed", { url: req.url, error: e.message });
    fill.fail("failed", e.message);
  };
  await new Promise<void>((resolve) => {
    const abandon = () => {
      abandoned = true;
      handle?.abort();
      resolve();
    };
    rt.origins
      .start(
        { scheme: req.scheme, target: req.target, method: "GET", path: req.path, headers, body: { kind: "none" } },
        {
          onHead(h) {
            const responseTime = rt.now();
            const plan = planOriginResponse({ method: "GET", headers: req.headers, url: req.url }, h, staleStored, defaults);
            if (plan.do === "freshen") {
              // RFC 9111 §4.3.4: freshen the stored response; the waiters look again and find it fresh.
              s.updateHeaders(stale!, plan.headers, requestTime, responseTime);
              counters.revalidations++;
              freshened = note.freshened = true;
              fill.fail("revalidated");
              return;
            }
            // Every answer but a 304 goes through the fill's temp file: one that cannot fit is given up before any
            // agent sees a byte, and its waiters look again, find the disk full and are passed through.
            const len = Number(getHeader(h.headers, "content-length") ?? NaN);
            if (Number.isFinite(len) && len > 0 && len + SPACE_MARGIN > safeFree(s.dir)) {
              markNoSpace(rt, s, len, rt.now(), `a ${len}-byte object`);
              fill.fail("superseded", "the cache disk is full");
              return abandon();
            }
            storable = plan.do === "store";
            if (plan.do === "deliver") {
              counters.not_storable++;
              note.noStore = plan.reason;
            } else vary = plan.vary;
            const kept = plan.do === "store" ? plan.headers : h.headers.filter(([k]) => !WIRE.has(k.toLowerCase()) || k.toLowerCase() === "content-length");
            fill.setHead(h.status, kept, { requestTime, responseTime });
          },
          onData(chunk) {
            if (freshened || abandoned) return true;
            counters.bytes_fetched += chunk.byteLength;
            received += chunk.byteLength;
            try {
              fill.write(chunk);
            } catch (e) {
              if (!isNoSpace(e)) throw e;
              // TODO: the agents already streaming this fill are cut here (no relay without the file); those after
              // them are passed through while the disk stays full.
              markNoSpace(rt, s, received * 2, rt.now(), (e as Error).message);
              failed(new Error(`the cache disk is full after ${received} bytes (${(e as Error).message})`));
              abandon();
            }
            return true; // the file takes it: no agent's pace slows the download
          },
          onEnd() {
            if (freshened || abandoned) return resolve();
            try {
              if (storable) {
                const e = fill.commit({ vkey: varyKey(vary ?? undefined, req.headers) ?? "", url: req.url, reqHeaders: req.headers, vary });
                if (e) counters.stored++;
                s.evictIfNeeded();
              } else fill.commit(null);
            } catch (e) {
              counters.fill_errors++;
              log("error", "cache commit failed", { url: req.url, error: (e as Error).message });
            }
            resolve();
          },
          onError(e) {
            if (abandoned) return;
            failed(e);
            resolve();
          },
        },
        { config: rt.config, policy: rt.policy },
      )
      .then((h) => {
        handle = h;
        if (abandoned) h.abort();
      })
      .catch((e: Error) => {
        failed(e);
        resolve();
      });
  });
}
