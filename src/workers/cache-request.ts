/**
 * @module THE story of one request on the cache port (STYLE "A request, top to bottom", layer 2). Read
 * `onCacheRequest` top to bottom; each phase is one step, in this order:
 *
 *   route + policy → unsafe or uncacheable? forward (+ invalidate) → patch object? → lookup + plan
 *     → serve | serve stale | revalidate | claim → fill | forward → respond → one access-log line
 *
 * The decisions are core/cache/plan.ts's (pure); this file carries them out with the moves of fill.ts, patch.ts and
 * forward.ts. All I/O goes through the runtime (`rt.cacheStore`, `rt.origins`, `rt.now`, `rt.makeId`) and the
 * Responder/RequestBody the framing (http-session.ts) hands in, so session tests drive it with doubles and a fixed
 * clock. Also here: what cache mode opens and closes in a worker (`applyCacheMode`) and its counters (`cacheReport`).
 */
import "reflect-metadata"; // @peculiar/x509 (core/certs) needs it loaded first
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Config } from "../core/config";
import { ProxyError, printable, statusFor } from "../core/errors";
import { checkHostField, getHeader } from "../core/http1/head";
import { framingForRequest } from "../core/http1/body";
import { parseAuthority } from "../core/connect";
import { decide, decideClient } from "../core/policy";
import { loadCa, makeLeafKeys } from "../core/certs";
import { LeafCache } from "../core/cert-cache";
import { type CacheDefaults, CACHE_DEFAULTS } from "../core/cache/freshness";
import { type CachePhase, type CacheReason, planLookup } from "../core/cache/plan";
import { primaryKey } from "../core/cache/key";
import { Store } from "../store/cache/store";
import { cacheBudget, cacheDir } from "../store/cache/paths";
import type { CaPems } from "../store/ca-store";
import type { HttpRequest, IncomingRequest, RequestBody, Responder } from "./http-session";
import type { WorkerRuntime, WorkerServices, TlsState } from "./runtime";
import type { WorkerCounters } from "./protocol";
import { type FillNote, cacheCounters, claimOrWait, invalidateAfter, runFill, serveEntry, storeIsFull, streamTail, toStored } from "./fill";
import { applyPatchMode, closePatchStore, patchCounters, servePatch } from "./patch";
import { forward } from "./forward";
import { OriginPool } from "./origin-client";
import { log } from "../log";

/** Lookups of one request before it gives up on the cache and goes straight to the origin. */
const MAX_ATTEMPTS = 3;

/** What the access line says about the cache, filled in as the story goes. */
type Access = { phase: CachePhase; reason: CacheReason | null };

/**
 * One request on the cache port, start to finish. Never throws: every error is answered (`statusFor` picks the
 * status) and every request, answered or refused, ends with exactly one access-log line.
 */
export async function onCacheRequest(rt: WorkerRuntime, inc: IncomingRequest, res: Responder, body: RequestBody): Promise<void> {
  const started = rt.now();
  const reqId = rt.makeId();
  const a: Access = { phase: "bypass:refused", reason: null };
  let req: HttpRequest | null = null;
  try {
    req = route(rt, inc); // 1. route + policy (throws a refusal)
    a.phase = "miss"; // until a phase below says otherwise
    await answer(rt, req, res, body, a);
  } catch (e) {
    const pe = e instanceof ProxyError ? e : new ProxyError("PX_INTERNAL", "internal", String((e as Error)?.message ?? e), { cause: e });
    if (!(e instanceof ProxyError)) log("error", "request failed", { reqId, id: inc.connId, url: req?.url, error: String((e as Error)?.stack ?? e) });
    a.reason ??= pe.code;
    if (!res.closed) res.error(statusFor(pe), pe.message);
  } finally {
    // 7. one line per request (Squid's access.log): exact bytes both ways and the exact duration
    log("info", "access", {
      reqId,
      id: inc.connId,
      client: `${inc.clientIp}:${inc.clientPort}`,
      port: "cache",
      method: inc.head.method,
      host: req?.target.host ?? inc.connectTarget?.host ?? getHeader(inc.head.headers, "host") ?? "",
      path: req?.path ?? inc.head.target,
      status: res.status,
      phase: a.phase,
      reason: a.reason ?? undefined,
      bytesIn: inc.head.headBytes + body.bytes,
      bytesOut: res.bytesOut,
      ms: rt.now() - started,
    });
  }
}

/** Phases 2–6 for a routed request. */
async function answer(rt: WorkerRuntime, req: HttpRequest, res: Responder, body: RequestBody, a: Access): Promise<void> {
  // 2. not for the cache: unsafe methods (which invalidate what they name, RFC 9111 §4.4), bodies, rules that do not cache
  const bypass = req.verdict.cacheable !== true ? "rule" : req.method !== "GET" && req.method !== "HEAD" ? "method" : body.framing.kind !== "none" ? "body" : null;
  if (bypass !== null) {
    a.phase = `bypass:${bypass}`;
    return forward(rt, req, res, body, (status, headers) => invalidateAfter(rt, req, status, headers));
  }
  const store = rt.cacheStore;
  if (store === null) {
    a.phase = "bypass:cache-off";
    return forward(rt, req, res, body);
  }
  // 3. patch mode: vendors' files (any host) go to the sliced store on the patch volume, unless they cannot be sliced
  if (req.verdict.rule === "patch-any" && rt.patchStore !== null) {
    const p = await servePatch(rt, rt.patchStore, req, res);
    if (p.done) {
      a.phase = p.fetched ? "miss" : "hit";
      a.reason = "slices";
      return;
    }
  }
  // 4. lookup + plan, 5. serve | serve stale | revalidate | claim → fill
  const counters = cacheCounters(rt);
  const d = defaultsOf(rt);
  const pkey = primaryKey(req.method, req.url);
  let validated = false; // a 304 just confirmed the stored response: serve it even if it is stale on arrival
  let why: CacheReason | null = null; // why the first look did not serve (for the access line)
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const entry = store.lookup(pkey, req.headers);
    const plan = planLookup(entry ? toStored(entry) : null, req.headers, rt.now(), d, { validated });
    switch (plan.do) {
      case "serve":
      case "serveStale": {
        if (plan.do === "serveStale") counters.stale_served++;
        if (await serveEntry(rt, store, entry!, req, res)) {
          a.phase = validated ? "revalidated" : plan.do === "serve" ? "hit" : "stale";
          a.reason = plan.do === "serveStale" ? plan.reason : why;
          return;
        }
        continue; // the blob was corrupt or gone: it has been dropped; look again (and fetch)
      }
      case "reject":
        a.phase = "miss"; // RFC 9111 §5.2.1.7: only-if-cached and nothing fresh stored
        a.reason = plan.code;
        throw new ProxyError(plan.code, "client", `not in the cache (only-if-cached): ${req.url}`);
      case "revalidate":
      case "fetch": {
        const stale = plan.do === "revalidate" ? entry : null;
        const validators = plan.do === "revalidate" ? plan.headers : [];
        why ??= plan.reason;
        if (storeIsFull(rt, store, rt.now())) {
          // 5''. the cache disk is full: pass the object through, store nothing, until space returns (issue 12)
          a.phase = "bypass:no-space";
          a.reason = why;
          return forward(rt, req, res, body);
        }
        const note: FillNote = { noStore: null, freshened: false };
        // A revalidation must not give way to a fill that just stored: that stored entry is the one we revalidate.
        const c = claimOrWait(store, pkey, (fill) => void runFill(rt, store, fill, req, stale, validators, d, note), stale === null);
        if (!c.ok) continue; // stored between our lookup and our claim: look again
        if (c.filler) counters.misses++;
        else counters.collapsed++;
        const r = await streamTail(rt, c.tail, req, res);
        if (r.end === "again") {
          if (r.outcome === "revalidated") validated = true;
          continue; // a 304 freshened the entry, or the fill gave way / its filler died before any byte was sent
        }
        a.phase = "miss";
        a.reason = r.outcome !== "stored" && r.outcome !== "delivered" ? r.outcome : !c.filler ? "collapsed" : (note.noStore ?? why);
        return;
      }
    }
  }
  // 5'. the fill kept ending without an answer for us: go to the origin directly
  a.phase = "bypass:retries";
  return forward(rt, req, res, body);
}

/**
 * Phase 1: where the request goes. Inside a tunnel the Host (and an absolute-form target) must be the CONNECT host;
 * plain http must be absolute-form, and the policy decides per request (the connection carried no CONNECT).
 */
export function route(rt: WorkerRuntime, inc: IncomingRequest): HttpRequest {
  const head = inc.head;
  checkHostField(head); // RFC 9112 §3.2: none on HTTP/1.1, or two, is a 400 (two Hosts can name two origins)
  const base = { method: head.method, headers: head.headers, version: head.version, body: { kind: "none" as const } };
  if (inc.connectTarget !== null && inc.connectVerdict !== null) {
    const t = inc.connectTarget;
    let path = head.target;
    if (!path.startsWith("/")) {
      // RFC 9112 §3.2: origin-form or absolute-form only ("*" is OPTIONS-only, authority-form CONNECT-only).
      let u: URL | null = null;
      if (/^https?:\/\//i.test(path)) {
        try {
          u = new URL(path);
        } catch {}
      }
      if (u === null) throw new ProxyError("PX_BAD_REQUEST", "client", `the request target "${printable(path)}" is neither a path nor an absolute http(s) URL`);
      const port = u.port === "" ? (u.protocol === "http:" ? 80 : 443) : Number(u.port);
      if (u.hostname.toLowerCase().replace(/\.$/, "") !== t.host || port !== t.port)
        throw new ProxyError("PX_MISDIRECTED", "client", `request for ${printable(u.host)} inside a tunnel to ${t.host}:${t.port}`);
      path = u.pathname + u.search;
    }
    const host = getHeader(head.headers, "host");
    if (host !== undefined) {
      const h = host.toLowerCase().replace(/:\d+$/, "").replace(/\.$/, "");
      if (h !== t.host) throw new ProxyError("PX_MISDIRECTED", "client", `Host ${h} does not match the CONNECT host ${t.host}`);
    }
    const port = t.port === 443 ? "" : `:${t.port}`;
    return { ...base, scheme: "https", target: t, path, url: `https://${t.host}${port}${path}`, verdict: inc.connectVerdict, body: bodyOf(head.headers) };
  }
  let u: URL;
  try {
    u = new URL(head.target);
  } catch {
    throw new ProxyError("PX_BAD_REQUEST", "client", "send requests in absolute form (GET http://host/path) or CONNECT host:port");
  }
  if (u.protocol !== "http:") throw new ProxyError("PX_BAD_REQUEST", "client", "use CONNECT for https");
  const target = parseAuthority(u.host, 80);
  const client = { ip: inc.clientIp, port: "cache" as const, userAgent: getHeader(head.headers, "user-agent") };
  const denied = decideClient(rt.policy, client);
  if (denied) throw new ProxyError("PX_CLIENT_DENY", "client", denied.reason ?? "client not allowed");
  const v = decide(rt.policy, target, client);
  if (v.action === "deny") throw new ProxyError("PX_POLICY_DENY", "client", v.reason ?? `${target.host} denied`);
  const path = u.pathname + u.search;
  return { ...base, scheme: "http", target, path, url: `http://${u.host}${path}`, verdict: v, body: bodyOf(head.headers) };
}

// The framing was checked by the session already (a malformed one never reaches the story); this only names it.
const bodyOf = (h: HttpRequest["headers"]) => framingForRequest(h);

const defaultsOf = (rt: WorkerRuntime): CacheDefaults => ({ ...CACHE_DEFAULTS, rules: rt.config.cache.rules });

// ───────────────────────────── cache mode in a worker ─────────────────────────────

/** The layer-2 services of a new worker: nothing open, no CA yet, an empty origin pool. */
export function makeCacheServices(): WorkerServices {
  const tls: TlsState = { ca: null, caId: "", leafKeys: null, leaves: new LeafCache(), contexts: new Map(), minTls: "1.2", leafDir: null, mints: 0 };
  return { cacheStore: null, patchStore: null, patchVerified: new Set(), tls, origins: new OriginPool(), cacheNoSpace: null };
}

/**
 * Cache mode on (with a CA): activate the CA for new handshakes, open the stores (kept when the directory is the
 * same); off (or no CA): close them so their directories can be removed or reused. Called at init and on every
 * config push.
 */
export async function applyCacheMode(rt: WorkerRuntime, config: Config, ca: CaPems | null): Promise<void> {
  if (config.cache.enabled && ca) {
    await activateCa(rt.tls, ca, config);
    const dir = resolve(cacheDir(config));
    if (rt.cacheStore?.dir !== dir) {
      rt.cacheStore?.close();
      rt.cacheNoSpace = null; // a new directory: its disk is looked at afresh
      rt.cacheStore = Store.open(dir, {
        maxBytes: cacheBudget(config),
        owner: `${process.pid}:${rt.index}`,
        bootId: rt.bootId,
        recover: false, // the supervisor recovered the directory once before starting workers
      });
    }
    applyPatchMode(rt, config);
    rt.intercepting = true;
  } else {
    rt.intercepting = false;
    rt.cacheStore?.close();
    rt.cacheStore = null;
    closePatchStore(rt);
  }
}

/** A new active CA (or min TLS): new handshakes use it at once; cached leaves of the old CA are dropped. */
async function activateCa(st: TlsState, pems: CaPems, config: Config): Promise<void> {
  const caId = createHash("sha256").update(pems.certPem).digest("hex").slice(0, 16);
  if (caId !== st.caId) {
    st.ca = await loadCa(pems.kind, { cert: pems.rootPem, key: pems.keyPem, chain: pems.chainPem || undefined });
    st.leafKeys ??= await makeLeafKeys();
    st.caId = caId;
    st.leaves.clear();
    st.contexts.clear();
    st.leafDir = join(config.gateway.data_dir, "leaves", caId);
    mkdirSync(st.leafDir, { recursive: true, mode: 0o700 });
  }
  if (config.cache.min_tls !== st.minTls) {
    st.minTls = config.cache.min_tls;
    st.contexts.clear();
  }
}

/** The cache and patch counters for the stats message (copies: the message is encoded later). */
export function cacheReport(rt: WorkerRuntime): Pick<WorkerCounters, "cache" | "patch"> {
  return {
    cache: { ...cacheCounters(rt), leaf_mints: rt.tls.mints, origin_reuses: rt.origins.reuses },
    patch: JSON.parse(JSON.stringify(patchCounters(rt))) as WorkerCounters["patch"],
  };
}
