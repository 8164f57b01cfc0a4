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
import { logTarget } from "../core/log-redact";
import { ProxyError, statusFor } from "../core/errors";
import { type Headers, getHeader } from "../core/http1/head";
import { type CacheDefaults, type NoStoreReason, type StoredResponse, ageHeaderValue, invalidationTargets, isUnsafeMethod } from "../core/cache/freshness";
import { planRange, planServe } from "../core/cache/serve";
import { type FillOutcome, planOriginResponse } from "../core/cache/plan";
import { primaryKey, varyKey } from "../core/cache/key";
import { type Entry, FillError, type FillTail, type FillWriter, type Store } from "../store/cache/store";
import type { FillHead } from "../store/cache/fill-tail";
import type { HttpRequest, Responder } from "./http-session";
import type { ExchangeHandle, Origins } from "./origin-client";
import type { WorkerRuntime } from "./runtime";
import { NO_SPACE_SLOT } from "./protocol";
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

/**
 * An entry as the freshness rules see it: one StoredResponse per (read-only) Entry, so what core/cache/freshness.ts
 * parses from its headers once (`factsOf`) serves every later hit the store's memo answers with the same Entry.
 */
export function toStored(e: Entry): StoredResponse {
  let r = STORED.get(e);
  if (r === undefined) {
    r = { status: e.status, headers: e.headers, requestTime: e.requestTime, responseTime: e.responseTime, url: e.url, method: "GET", requestHeaders: e.reqHeaders };
    STORED.set(e, r);
  }
  return r;
}
const STORED = new WeakMap<Entry, StoredResponse>();

const wireless = (h: Headers) => h.filter(([k]) => !WIRE.has(k.toLowerCase()));
/** An entry's stored headers without the wire fields, worked out once per entry: the store's lookup memo hands later
 * hits the same (read-only) Entry, so hot objects skip the filter (a copy is returned: callers push Age etc.). */
const WIRELESS = new WeakMap<Entry, Headers>();
function wirelessOf(e: Entry): Headers {
  let h = WIRELESS.get(e);
  if (h === undefined) WIRELESS.set(e, (h = wireless(e.headers)));
  return h.slice();
}

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

/** bytes needed, as the shared slot holds them: KiB, at least 1, at most 2^31-1 (2 TiB) */
const kibOf = (bytes: number) => Math.min(0x7fffffff, Math.max(1, Math.ceil(bytes / 1024)));

/** This worker found the disk full (an object that cannot fit, or a write that failed): say so once, and tell the other workers. */
export function markNoSpace(rt: WorkerRuntime, store: Store, needed: number, now: number, why: string): void {
  if (rt.cacheNoSpace === null) log("warn", "cache disk full: objects are passed through and not stored until space returns", { dir: store.dir, needed, why });
  rt.cacheNoSpace = { needed, checkedAt: now };
  // every worker, not only this one: the next object may land on another (protocol.ts NO_SPACE_SLOT)
  if (rt.admission) Atomics.store(rt.admission, NO_SPACE_SLOT, kibOf(needed));
}

/** True while `store`'s disk cannot take new objects (found by this worker or another): the caller forwards instead of filling. */
export function storeIsFull(rt: WorkerRuntime, store: Store, now: number): boolean {
  let ns = rt.cacheNoSpace;
  if (!ns) {
    const kib = rt.admission ? Atomics.load(rt.admission, NO_SPACE_SLOT) : 0;
    if (kib === 0) return false;
    // another worker found the disk full: look at it now (statfs), and again every SPACE_RECHECK_MS
    ns = rt.cacheNoSpace = { needed: kib * 1024, checkedAt: now - SPACE_RECHECK_MS };
  }
  if (now - ns.checkedAt < SPACE_RECHECK_MS) return true;
  ns.checkedAt = now;
  try {
    if (freeBytes(store.dir) < ns.needed + SPACE_MARGIN) return true;
  } catch {
    return true;
  }
  rt.cacheNoSpace = null;
  if (rt.admission) Atomics.compareExchange(rt.admission, NO_SPACE_SLOT, kibOf(ns.needed), 0);
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

/**
 * Serve a stored entry — 304 to a matching conditional, 206/416 to a byte range, else whole (core/cache/serve.ts);
 * false when its blob failed verification (it has been dropped: the caller refetches). Every answer carries the
 * entry's current Age (RFC 9111 §5.1, §4.2.3).
 */
export async function serveEntry(rt: WorkerRuntime, s: Store, entry: Entry, req: HttpRequest, res: Responder): Promise<boolean> {
  const head = req.method === "HEAD";
  const body = head ? null : s.body(entry);
  if (!head && body === null) return false;
  const counters = cacheCounters(rt);
  counters.hits++;
  const age: [string, string] = ["Age", ageHeaderValue(toStored(entry), rt.now())];
  const headers = wirelessOf(entry);
  headers.push(age);
  const plan = planServe(req.method, req.headers, entry.status, entry.headers, entry.size);
  if (plan.do === "notModified") {
    res.head(304, [...plan.headers, age], null);
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
  if (plan.do === "unsatisfiable") {
    // RFC 9110 §15.5.17: 416 with the current length
    res.head(416, [...headers.filter(([k]) => !/^content-(type|encoding)$/i.test(k)), ["Content-Range", plan.contentRange]], 0);
    res.end();
    s.touch(entry, 0);
    return true;
  }
  let from = 0, to = entry.size;
  if (plan.do === "partial") {
    from = plan.range.start;
    to = plan.range.end + 1;
    headers.push(["Content-Range", plan.contentRange]);
    res.head(206, headers, to - from);
  } else res.head(entry.status, headers, entry.size);
  let sent = 0;
  for (let off = from; off < to && !res.closed; off += SERVE_SLICE) {
    const slice = body!.subarray(off, Math.min(off + SERVE_SLICE, to));
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
  | { end: "again"; outcome: LookAgain }
  /** (only with `fallback`) the fill failed before any byte was sent: the caller serves its stale entry instead */
  | { end: "error"; outcome: FillOutcome; detail: string };

export type TailOptions = {
  /** sees the fill's head before the agent's head is written (cache-request fills in Cache-Status from it) */
  see?: (h: FillHead) => void;
  /** a stale entry may stand in when the fill fails (RFC 5861 stale-if-error): return instead of answering */
  fallback?: boolean;
};

/** The response as the fill received it, for the Age calculation of RFC 9111 §4.2.3. */
const asStored = (h: FillHead, url: string): StoredResponse => ({ status: h.status, headers: h.headers, requestTime: h.requestTime, responseTime: h.responseTime, url, method: "GET", requestHeaders: [] });

/**
 * Stream a fill to one agent: the first, forwarded response carries its Age too (RFC 9111 §5.1: the origin's Age
 * plus the response delay and the time since), and the agent's conditionals and Range are answered from the
 * arriving response (core/cache/serve.ts) — a Range on a miss gets its 206 as those bytes arrive, from the one
 * whole-object fill, instead of a range fetch per agent.
 */
export async function streamTail(rt: WorkerRuntime, tail: FillTail, req: HttpRequest, res: Responder, o: TailOptions = {}): Promise<TailEnd> {
  const counters = cacheCounters(rt);
  const h = await tail.head();
  if (!h.ok) {
    tail.close();
    if (isLookAgain(h.outcome)) return { end: "again", outcome: h.outcome };
    if (o.fallback) return { end: "error", outcome: h.outcome, detail: h.detail };
    const e = new FillError(tail.key, h.outcome, h.detail);
    res.error(statusFor(e), h.detail || `the download of ${req.url} failed`);
    return { end: "answered", outcome: h.outcome };
  }
  const head = h.head;
  o.see?.(head);
  const len = getHeader(head.headers, "content-length");
  const size = len !== undefined && /^\d+$/.test(len) ? Number(len) : null;
  const age: [string, string] = ["Age", ageHeaderValue(asStored(head, req.url), rt.now())];
  const headers = wireless(head.headers);
  headers.push(age);
  // Without a length the range cannot be placed yet: conditionals only, the whole body.
  const plan = planServe(req.method, size === null ? req.headers.filter(([k]) => k.toLowerCase() !== "range") : req.headers, head.status, head.headers, size ?? 0);
  if (plan.do === "notModified" || req.method === "HEAD" || plan.do === "unsatisfiable") {
    if (plan.do === "notModified") res.head(304, [...plan.headers, age], null);
    else if (plan.do === "unsatisfiable") res.head(416, [...headers, ["Content-Range", plan.contentRange]], 0);
    else res.head(head.status, len !== undefined ? [...headers, ["Content-Length", len]] : headers, null);
    res.end();
    tail.close();
    return { end: "answered", outcome: "delivered" };
  }
  const noBody = head.status === 204 || head.status === 304;
  // [from, to): the bytes of the fill this agent gets
  let from = 0, to = Number.MAX_SAFE_INTEGER;
  if (plan.do === "partial") {
    from = plan.range.start;
    to = plan.range.end + 1;
    res.head(206, [...headers, ["Content-Range", plan.contentRange]], to - from);
  } else res.head(head.status, headers, noBody ? null : size);
  let sent = 0, at = 0;
  try {
    for await (const chunk of tail) {
      if (res.closed) break; // the agent left; the fill goes on for the others
      const a = at;
      at += chunk.byteLength;
      if (at <= from) continue;
      const part = a >= from && at <= to ? chunk : chunk.subarray(Math.max(0, from - a), Math.min(chunk.byteLength, to - a));
      sent += part.byteLength;
      if (!res.write(part)) await new Promise<void>((r) => res.onDrain(r));
      if (at >= to) break; // the range is complete; the fill goes on for the others
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

/**
 * RFC 5861 §3: revalidate `entry` behind a stale answer — one revalidation per object however many agents ask:
 * when a fill of the key already runs (in any worker), this one is not started. False when it was not.
 */
export function revalidateInBackground(rt: WorkerRuntime, s: Store, key: string, req: HttpRequest, entry: Entry, validators: Headers, d: CacheDefaults): boolean {
  const claim = s.claimFill(key);
  if (claim.role === "waiter") {
    claim.tail.close();
    return false;
  }
  void runFill(rt, s, claim.fill, req, entry, validators, d, { noStore: null, freshened: false, staleOnError: true });
  return true;
}

// ───────────────────────────── the fill ─────────────────────────────

/** What the filler learnt, for the access line of the request that started it; `staleOnError` (in): a stale
 * entry may stand in, so a 5xx from the origin fails the fill instead of replacing the entry (RFC 5861 §4). */
export type FillNote = {
  noStore: NoStoreReason | null;
  freshened: boolean;
  staleOnError?: boolean;
  /** (in) where the origin's 1xx go: the filler's own agent, which has no head yet; waiters never see them */
  interim?: (status: number, headers: Headers) => void;
};

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
  /** where the request goes: the worker's origin pool, or a fleet peer that owns the key (workers/peer-fill.ts) */
  origins: Origins = rt.origins,
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
    log("warn", "cache fill failed", { url: logTarget(req.url), error: e.message });
    // An origin that did not answer in time (cache.origin_timeout_s, or the dial's connect_timeout_s) ends the fill
    // "idle": every waiter, in any worker, gets 504 (PX_FILL_IDLE) or its stale entry (RFC 5861 §4 "times out").
    fill.fail(e instanceof ProxyError && e.code === "PX_UPSTREAM_TIMEOUT" ? "idle" : "failed", e.message);
  };
  await new Promise<void>((resolve) => {
    const abandon = () => {
      abandoned = true;
      handle?.abort();
      resolve();
    };
    origins
      .start(
        { scheme: req.scheme, target: req.target, method: "GET", path: req.path, headers, body: { kind: "none" } },
        {
          onInterim(h) {
            note.interim?.(h.status, h.headers.filter(([k]) => !WIRE.has(k.toLowerCase())));
          },
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
            if (stale !== null && note.staleOnError && h.status >= 500) {
              // RFC 5861 §4: "an error is any situation that would result in a 500, 502, 503 or 504": keep the
              // stored entry and let the waiters serve it stale.
              fill.fail("failed", `the origin answered ${h.status} to the revalidation`);
              return abandon();
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
            // Age stays: the agents' Age is computed from it (RFC 9111 §4.2.3 corrected_age_value)
            const kept = plan.do === "store" ? plan.headers : h.headers.filter(([k]) => !WIRE.has(k.toLowerCase()) || /^(content-length|age)$/i.test(k));
            fill.setHead(h.status, kept, { requestTime, responseTime, store: storable }); // `store`: joiners say `stored` too
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
              log("error", "cache commit failed", { url: logTarget(req.url), error: (e as Error).message });
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
