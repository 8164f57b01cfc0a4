/**
 * @module The cache on the cache port: lookup, serve, fill — one upstream download per object. The RFC 9111 rules
 * come from core/cache; the bytes move through store/. Every request for an object that is not fresh in the store
 * claims its fill: the first claimant (in any worker) starts a download that runs on its own — detached from the
 * agent that caused it, so an agent that leaves early never aborts what others wait for — and every agent, the
 * first included, streams the bytes from the fill as they arrive. A failed fill stores nothing and every waiter
 * gets a clean error; a response that turns out not storable is delivered to the waiters of that fill and dropped.
 */
import type { Config } from "../core/config";
import { ProxyError } from "../core/errors";
import type { Headers } from "../core/http1/head";
import { getHeader } from "../core/http1/head";
import {
  type CacheDefaults,
  type StoredResponse,
  ageHeaderValue,
  answerConditional,
  invalidationTargets,
  isStorable,
  isUnsafeMethod,
  lookupPhase,
  makeConditionalHeaders,
  makeStoredHeaders,
  onlyIfCached,
  updateStoredHeaders,
} from "../core/cache/freshness";
import { primaryKey, varyKey } from "../core/cache/key";
import { type Entry, type FillTail, type FillWriter, Store } from "../store/store";
import { cacheBudget, cacheDir } from "../store/cache-paths";
import type { HttpRequest, HttpSession, Responder } from "./http-session";
import { startExchange } from "./origin-client";
import { log } from "../log";
import { rt } from "./listener";
import { patchReady, servePatch } from "./patch";

const SERVE_SLICE = 1024 * 1024;
const MAX_ATTEMPTS = 3;
/** Request fields that would make the origin answer something other than the full object we store. */
const FILL_DROP = new Set(["if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range"]);
/** Fields describing the wire, not the object: recomputed when serving. */
const WIRE = new Set(["content-length", "transfer-encoding", "connection", "keep-alive", "age"]);

let store: Store | null = null;
let defaults: CacheDefaults = { heuristicFraction: 0.1, heuristicMaxS: 86_400, rules: [] };

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

const counters: CacheCounters = {
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
};

export const cacheCounters = () => counters;


export function openCacheStore(config: Config, workerIndex: number, bootId: string) {
  defaults = { heuristicFraction: 0.1, heuristicMaxS: 86_400, rules: config.cache.rules };
  if (store && storeDir === cacheDir(config)) return;
  closeCacheStore();
  storeDir = cacheDir(config);
  store = Store.open(storeDir, {
    maxBytes: cacheBudget(config),
    owner: `${process.pid}:${workerIndex}`,
    bootId,
    recover: false, // the supervisor recovered the directory once before starting workers
  });
}

let storeDir = "";
export function closeCacheStore() {
  store?.close();
  store = null;
  storeDir = "";
}

function toStored(e: Entry): StoredResponse {
  return {
    status: e.status,
    headers: e.headers,
    requestTime: e.requestTime,
    responseTime: e.responseTime,
    url: e.url,
    method: "GET",
    requestHeaders: e.reqHeaders,
  };
}

const wireless = (h: Headers) => h.filter(([k]) => !WIRE.has(k.toLowerCase()));

/** RFC 9111 §4.4: a successful unsafe request invalidates what it names. */
export function invalidateAfter(req: HttpRequest, status: number, resHeaders: Headers) {
  if (!store || !isUnsafeMethod(req.method)) return;
  for (const url of invalidationTargets(req.url, status, resHeaders)) {
    if (store.delete(primaryKey("GET", url))) counters.invalidations++;
  }
}

/** The cache layer entry point (installed with setCacheLayer). */
export async function serveCacheable(req: HttpRequest, res: Responder, session: HttpSession): Promise<void> {
  const s = store;
  if (!s) return session.passThrough(req, res, null);
  // Patch mode: vendors' files (any host) go to the sliced store on the patch volume.
  if (req.verdict.rule === "patch-any" && patchReady() && (await servePatch(req, res)) === "done") return;
  const pkey = primaryKey(req.method, req.url);
  let validated = false; // a 304 just confirmed the stored response: serve it even if it is stale on arrival (max-age=0)
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const now = Date.now();
    const entry = s.lookup(pkey, req.headers);
    let stale: Entry | null = null;
    if (entry) {
      const phase = validated ? { phase: "fresh" as const } : lookupPhase(toStored(entry), req.headers, now, defaults);
      if (phase.phase === "fresh" || phase.phase === "stale-ok") {
        if (phase.phase === "stale-ok") counters.stale_served++;
        if (await serveEntry(s, entry, req, res)) return;
        // the blob was corrupt or gone: it has been dropped; fetch it again
      } else stale = entry;
    }
    if (onlyIfCached(req.headers) && !(entry && !stale)) {
      // RFC 9111 §5.2.1.7
      return res.error(504, `not in the cache (only-if-cached): ${req.url}`);
    }
    const claim = s.claimFill(pkey);
    if (claim.role === "filler" && claim.fill.replaced === "done" && !stale) {
      // Stored between our lookup and our claim: look again instead of fetching it twice.
      claim.fill.fail("superseded");
      continue;
    }
    let tail: FillTail;
    if (claim.role === "filler") {
      counters.misses++;
      void runFill(s, claim.fill, req, stale);
      const again = s.claimFill(pkey);
      if (again.role !== "waiter") {
        again.fill.fail("internal: double claim");
        throw new ProxyError("PX_INTERNAL", "internal", "cache fill claimed twice");
      }
      tail = again.tail;
    } else {
      counters.collapsed++;
      tail = claim.tail;
    }
    const r = await streamTail(tail, req, res);
    if (r === "done") return;
    if (r === "revalidated") validated = true;
    // retry: a revalidation updated the entry, or the fill failed before any byte reached the agent
  }
  return session.passThrough(req, res, null);
}

/** Serve a stored entry; false when its blob failed verification (the caller refetches). */
async function serveEntry(s: Store, entry: Entry, req: HttpRequest, res: Responder): Promise<boolean> {
  const head = req.method === "HEAD";
  const body = head ? null : s.body(entry);
  if (!head && body === null) return false;
  counters.hits++;
  const now = Date.now();
  const headers = wireless(entry.headers);
  headers.push(["Age", ageHeaderValue(toStored(entry), now)]);
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

/** Stream a fill to one agent. "retry" when nothing was sent yet and the caller should look again. */
async function streamTail(tail: FillTail, req: HttpRequest, res: Responder): Promise<"done" | "retry" | "revalidated"> {
  let head;
  try {
    head = await tail.head();
  } catch (e) {
    tail.close();
    const msg = (e as Error).message;
    // A revalidation that freshened the entry, or a filler that died: look again. Anything else is the answer.
    if (/revalidated/.test(msg)) return "revalidated";
    if (/superseded/.test(msg) || (e as ProxyError).code === "PX_FILL_STALE") return "retry";
    res.error(502, msg.replace(/^.*?: /, ""));
    return "done";
  }
  const len = getHeader(head.headers, "content-length");
  const headers = wireless(head.headers);
  if (req.method === "HEAD") {
    if (len !== undefined) headers.push(["Content-Length", len]);
    res.head(head.status, headers, null);
    res.end();
    tail.close();
    return "done";
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
    res.error(502, `the download of ${req.url} failed: ${(e as Error).message}`);
    return "done";
  } finally {
    tail.close();
  }
  counters.bytes_served += sent;
  res.end();
  return "done";
}

/** The one upstream download for `pkey`, detached from any agent. */
async function runFill(s: Store, fill: FillWriter, req: HttpRequest, stale: Entry | null) {
  const requestTime = Date.now();
  const headers: Headers = req.headers.filter(([k]) => !FILL_DROP.has(k.toLowerCase()));
  if (stale) headers.push(...makeConditionalHeaders(toStored(stale)));
  let storable = false;
  let vary: string | null = null;
  let status = 0;
  const done = new Promise<void>((resolve) => {
    startExchange(
      { scheme: req.scheme, target: req.target, method: "GET", path: req.path, headers, body: { kind: "none" } },
      {
        onHead(h) {
          const responseTime = Date.now();
          status = h.status;
          if (stale && h.status === 304) {
            // RFC 9111 §4.3.4: freshen the stored response; the waiters look again and find it fresh.
            s.updateHeaders(stale, updateStoredHeaders(stale.headers, h.headers), requestTime, responseTime);
            counters.revalidations++;
            fill.fail("revalidated");
            return;
          }
          const verdict = isStorable("GET", req.headers, h.status, h.headers, { url: req.url, rules: defaults.rules });
          storable = verdict.ok;
          if (!verdict.ok) counters.not_storable++;
          vary = h.headers.filter(([k]) => k.toLowerCase() === "vary").map(([, v]) => v).join(", ") || null;
          fill.setHead(h.status, storable ? makeStoredHeaders(h.headers) : h.headers.filter(([k]) => !WIRE.has(k.toLowerCase()) || k.toLowerCase() === "content-length"), {
            requestTime,
            responseTime,
          });
        },
        onData(chunk) {
          counters.bytes_fetched += chunk.byteLength;
          fill.write(chunk);
          return true; // the file takes it: no agent's pace slows the download
        },
        onEnd() {
          if (status === 304 && stale) return resolve();
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
          counters.fill_errors++;
          log("warn", "cache fill failed", { url: req.url, error: e.message });
          fill.fail(e.message);
          resolve();
        },
      },
      { config: rt.config, policy: rt.policy },
    ).catch((e: Error) => {
      counters.fill_errors++;
      log("warn", "cache fill failed", { url: req.url, error: e.message });
      fill.fail(e.message);
      resolve();
    });
  });
  await done;
}
