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
import { observe } from "../core/histogram";
import "reflect-metadata"; // @peculiar/x509 (core/certs) needs it loaded first
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { logTarget } from "../core/log-redact";
import type { Config } from "../core/config";
import { ProxyError, printable, statusFor } from "../core/errors";
import { checkHostField, getHeader } from "../core/http1/head";
import { framingForRequest } from "../core/http1/body";
import { parseAuthority } from "../core/connect";
import { type PolicyRule, decide, decideClient } from "../core/policy";
import { loadCa, makeLeafKeys } from "../core/certs";
import { LeafCache } from "../core/cert-cache";
import { type CacheDefaults, type StoredResponse, CACHE_DEFAULTS, currentAge, lifetimeOf, storedCc } from "../core/cache/freshness";
import { type CachePhase, type CacheReason, planLookup, staleIfErrorAllows } from "../core/cache/plan";
import { type CacheStatus, emptyCacheStatus, formatCacheStatus } from "../core/cache/cache-status";
import { primaryKey } from "../core/cache/key";
import { Store } from "../store/cache/store";
import { cacheBudget, cacheDir } from "../store/cache/paths";
import type { CaPems } from "../store/ca-store";
import type { HttpRequest, IncomingRequest, RequestBody, Responder } from "./http-session";
import type { WorkerRuntime, WorkerServices, TlsState } from "./runtime";
import { NO_SPACE_SLOT, type WorkerCounters } from "./protocol";
import { type FillNote, cacheCounters, claimOrWait, invalidateAfter, revalidateInBackground, runFill, serveEntry, storeIsFull, streamTail, toStored } from "./fill";
import { applyPatchMode, closePatchStore, patchCounters, servePatch } from "./patch";
import { forward } from "./forward";
import { OriginPool } from "./origin-client";
import { log } from "../log";
import { countHostPhase } from "./cache-hosts";
import { type PeerOrigins, peerOriginsFor, takePeerAsk } from "./peer-fill";

/** Lookups of one request before it gives up on the cache and goes straight to the origin. */
const MAX_ATTEMPTS = 3;

/** What the access line and the Cache-Status field (RFC 9211) say about the cache, filled in as the story goes.
 * `rule`: the policy rule that refused the request (as conn-session's "refused" line names it), also its reason. */
type Access = { phase: CachePhase; reason: CacheReason | PolicyRule | null; cs: CacheStatus; rule?: PolicyRule; error?: string; peerAsked?: boolean; peer?: PeerOrigins };

/** A plain request the policy refused: the code chooses the status, `rule` goes to the access line (STYLE §9). */
class Refusal extends ProxyError {
  constructor(
    code: "PX_POLICY_DENY" | "PX_CLIENT_DENY",
    readonly rule: PolicyRule,
    msg: string,
  ) {
    super(code, "client", msg);
  }
}

/**
 * The agent's Responder with `Cache-Status` added to whatever head or error is written (RFC 9211: on every
 * response of the cache port), formatted from `cs` at that moment — so each phase only fills `cs` in.
 */
function withCacheStatus(res: Responder, cs: CacheStatus): Responder {
  const field = (): [string, string] => ["Cache-Status", formatCacheStatus(cs)];
  return {
    head: (status, headers, length, reason) => res.head(status, [...headers, field()], length, reason),
    interim: (status, headers) => res.interim?.(status, headers),
    write: (c) => res.write(c),
    end: () => res.end(),
    onDrain: (f) => res.onDrain(f),
    error: (status, reason, headers) => res.error(status, reason, [...(headers ?? []), field()]),
    get closed() {
      return res.closed;
    },
    get status() {
      return res.status;
    },
    get bytesOut() {
      return res.bytesOut;
    },
  };
}

/** RFC 9211 §2.4 ttl: the stored response's remaining freshness (negative once stale), RFC 9111 §4.2. */
const ttlOf = (s: StoredResponse, now: number, d: CacheDefaults) => lifetimeOf(s, storedCc(s), d).seconds - currentAge(s, now);

/**
 * One request on the cache port, start to finish. Never throws: every error is answered (`statusFor` picks the
 * status) and every request, answered or refused, ends with exactly one access-log line.
 */
export async function onCacheRequest(rt: WorkerRuntime, inc: IncomingRequest, agent: Responder, body: RequestBody): Promise<void> {
  const started = rt.now();
  const reqId = rt.makeId();
  const a: Access = { phase: "bypass:refused", reason: null, cs: emptyCacheStatus() };
  const res = withCacheStatus(agent, a.cs);
  let req: HttpRequest | null = null;
  try {
    req = route(rt, inc); // 1. route + policy (throws a refusal)
    const asked = takePeerAsk(rt, req, inc.clientIp); // 1'. a fleet peer asking for a key this gateway owns (share_cache)
    if (asked) (req = asked), (a.peerAsked = true);
    a.phase = "miss"; // until a phase below says otherwise
    await answer(rt, req, res, body, a);
  } catch (e) {
    const pe = e instanceof ProxyError ? e : new ProxyError("PX_INTERNAL", "internal", String((e as Error)?.message ?? e), { cause: e });
    if (!(e instanceof ProxyError)) log("error", "request failed", { reqId, id: inc.connId, url: req ? logTarget(req.url) : undefined, error: String((e as Error)?.stack ?? e) });
    if (e instanceof Refusal) (a.rule = e.rule), (a.error = pe.message); // the words a person acts on, beside the rule
    a.reason ??= a.rule ?? pe.code;
    a.cs.detail ??= pe.code;
    if (!res.closed) res.error(statusFor(pe), pe.message);
  } finally {
    // An agent is a client that got an answer (issue 10): not a refusal, not our own failure.
    if (req !== null && res.status >= 200 && res.status < 500) rt.cacheIps.add(inc.clientIp);
    // A fill or revalidation the platform answered is real traffic for the platform link (issue 10): "connected on".
    if (req !== null && req.verdict.rule === "platform-domain" && (a.phase === "miss" || a.phase === "revalidated") && res.status < 500) rt.platformSeen?.add(req.target.host); // ?.: session doubles may lack it
    observe((rt.counters.durations ??= {}), "request:cache", (rt.now() - started) / 1000);
    // 7. one line per request (Squid's access.log): exact bytes both ways and the exact duration
    log("info", "access", {
      reqId,
      id: inc.connId,
      client: `${inc.clientIp}:${inc.clientPort}`,
      port: "cache",
      method: inc.head.method,
      host: req?.target.host ?? inc.connectTarget?.host ?? getHeader(inc.head.headers, "host") ?? "",
      path: logTarget(req?.path ?? inc.head.target), // query values and userinfo never reach a log (core/log-redact.ts)
      status: res.status,
      phase: a.phase,
      reason: a.reason ?? undefined,
      rule: a.rule,
      error: a.error,
      cacheStatus: formatCacheStatus(a.cs),
      bytesIn: inc.head.headBytes + body.bytes,
      bytesOut: res.bytesOut,
      ms: rt.now() - started,
      ...a.peer?.logFields, // share_cache: the key's owner this gateway's fill asked, and what came of it (peer-fill.ts)
    });
    if (req !== null) countHostPhase(rt, req.target.host, a.phase); // hit ratio by host (issue 9), as the line says
  }
}

/** Phases 2–6 for a routed request. */
async function answer(rt: WorkerRuntime, req: HttpRequest, res: Responder, body: RequestBody, a: Access): Promise<void> {
  // 2. not for the cache: unsafe methods (which invalidate what they name, RFC 9111 §4.4), bodies, rules that do not cache
  const bypass = req.verdict.cacheable !== true ? "rule" : req.method !== "GET" && req.method !== "HEAD" ? "method" : body.framing.kind !== "none" ? "body" : null;
  if (bypass !== null) {
    a.phase = `bypass:${bypass}`;
    setBypass(a, bypass);
    return forward(rt, req, res, body, (status, headers) => invalidateAfter(rt, req, status, headers));
  }
  const store = rt.cacheStore;
  if (store === null) {
    a.phase = "bypass:cache-off";
    setBypass(a, "cache-off");
    return forward(rt, req, res, body);
  }
  // 3. patch mode: vendors' files (any host) go to the sliced store on the patch volume, unless they cannot be sliced
  if (req.verdict.rule === "patch-any" && rt.patchStore !== null) {
    a.cs.detail = "slices"; // the slice store answers (or fetches) before it says which
    const p = await servePatch(rt, rt.patchStore, req, res);
    if (p.done) {
      a.phase = p.fetched ? "miss" : "hit";
      a.reason = "slices";
      return;
    }
    a.cs.detail = null;
  }
  // 4. lookup + plan, 5. serve | serve stale | revalidate | claim → fill
  const counters = cacheCounters(rt);
  const d = defaultsOf(rt);
  const pkey = primaryKey(req.method, req.url);
  const cs = a.cs;
  let validated = false; // a 304 just confirmed the stored response: serve it even if it is stale on arrival
  let why: CacheReason | null = null; // why the first look did not serve (for the access line)
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const entry = store.lookup(pkey, req.headers);
    const stored = entry ? toStored(entry) : null;
    const now = rt.now();
    const plan = planLookup(stored, req.headers, now, d, { validated });
    switch (plan.do) {
      case "serve":
      case "serveStale": {
        if (plan.do === "serveStale") counters.stale_served++;
        cs.ttl = ttlOf(stored!, now, d);
        if (validated) cs.fwdStatus = 304; // RFC 9211 §2.3: forwarded for validation, the origin said 304
        else {
          cs.hit = true;
          cs.fwd = null;
          cs.detail = plan.do === "serveStale" ? plan.reason : null;
        }
        if (await serveEntry(rt, store, entry!, req, res)) {
          a.phase = validated ? "revalidated" : plan.do === "serve" ? "hit" : "stale";
          a.reason = plan.do === "serveStale" ? plan.reason : why;
          // RFC 5861 §3: the stale answer is out; revalidate behind it, once per object
          if (plan.do === "serveStale" && plan.reason === "stale-while-revalidate" && !storeIsFull(rt, store, rt.now())) {
            if (revalidateInBackground(rt, store, pkey, req, entry!, plan.headers, d)) counters.revalidations++;
          }
          return;
        }
        cs.hit = false;
        continue; // the blob was corrupt or gone: it has been dropped; look again (and fetch)
      }
      case "reject":
        a.phase = "miss"; // RFC 9111 §5.2.1.7: only-if-cached and nothing fresh stored
        a.reason = plan.code;
        cs.detail = plan.code;
        throw new ProxyError(plan.code, "client", `not in the cache (only-if-cached): ${req.url}`);
      case "revalidate":
      case "fetch": {
        const stale = plan.do === "revalidate" ? entry : null;
        const validators = plan.do === "revalidate" ? plan.headers : [];
        why ??= plan.reason;
        // RFC 9211 §2.2: why it went forward
        cs.fwd ??= plan.do === "fetch" ? (store.holds(pkey) ? "vary-miss" : "uri-miss") : plan.reason === "request-no-cache" || plan.reason === "max-age" || plan.reason === "min-fresh" ? "request" : "stale";
        if (storeIsFull(rt, store, rt.now())) {
          // 5''. the cache disk is full: pass the object through, store nothing, until space returns (issue 12)
          a.phase = "bypass:no-space";
          a.reason = why;
          setBypass(a, "no-space");
          return forward(rt, req, res, body);
        }
        // RFC 5861 §4: may the stale entry stand in if the origin is down or answers 5xx?
        const fallback = stored !== null && plan.do === "revalidate" && staleIfErrorAllows(stored, req.headers, now, d, staleIfErrorFallback(rt, req));
        const note: FillNote = { noStore: null, freshened: false, staleOnError: fallback, interim: (st, h) => res.interim?.(st, h) };
        // A revalidation must not give way to a fill that just stored: that stored entry is the one we revalidate.
        const peer = peerOriginsFor(rt, req, pkey, a.peerAsked === true); // share_cache: the key's owner, when a live peer
        const c = claimOrWait(store, pkey, (fill) => void runFill(rt, store, fill, req, stale, validators, d, note, peer ?? undefined), stale === null);
        if (!c.ok) continue; // stored between our lookup and our claim: look again
        if (c.filler && peer) a.peer = peer;
        if (c.filler) counters.misses++;
        else counters.collapsed++;
        cs.collapsed = !c.filler;
        const see = (h: { status: number; headers: typeof req.headers; requestTime: number; responseTime: number; store?: boolean }) => {
          cs.fwdStatus = h.status;
          // RFC 9211 §2.6 stored: the fill's head says whether it is being stored, for the joiners of a collapsed fill too
          cs.stored = c.filler ? note.noStore === null : h.store === true;
          cs.ttl = cs.stored ? ttlOf({ ...h, url: req.url, method: "GET", requestHeaders: req.headers }, rt.now(), d) : null;
          if (c.filler && note.noStore !== null) cs.detail = note.noStore;
          else if (c.filler && peer?.via) cs.detail = peer.via; // filled from the key's owner, or the origin after giving it up
        };
        const r = await streamTail(rt, c.tail, req, res, { see, fallback });
        if (r.end === "error") {
          // RFC 5861 §4 stale-if-error: the origin failed; the stored response answers, stale
          counters.stale_served++;
          cs.ttl = ttlOf(stored!, rt.now(), d);
          cs.detail = "stale-if-error";
          if (await serveEntry(rt, store, entry!, req, res)) {
            a.phase = "stale";
            a.reason = "stale-if-error";
            return;
          }
          throw new ProxyError("PX_FILL_FAILED", "upstream", r.detail || `the download of ${req.url} failed`);
        }
        if (r.end === "again") {
          if (r.outcome === "revalidated") {
            validated = true;
            cs.detail = "revalidated";
          }
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
  setBypass(a, "retries");
  return forward(rt, req, res, body);
}

/** RFC 9211 §2.2 fwd=bypass, with agate's BypassReason as the detail. */
function setBypass(a: Access, why: string): void {
  a.cs.hit = false;
  a.cs.fwd = "bypass";
  a.cs.detail = why;
}

/** `[cache] stale_if_error_s` covers platform objects only: the vendor's cloud, whose manifests agents need through
 * an outage; other sites' objects are served stale only when their origin says so. */
const staleIfErrorFallback = (rt: WorkerRuntime, req: HttpRequest): number => (req.verdict.rule === "platform-domain" ? rt.config.cache.stale_if_error_s : 0);

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
  if (denied) throw new Refusal("PX_CLIENT_DENY", denied.rule, denied.reason ?? "client not allowed");
  const v = decide(rt.policy, target, client);
  if (v.action === "deny") throw new Refusal("PX_POLICY_DENY", v.rule, v.reason ?? `${target.host} denied`);
  const path = u.pathname + u.search;
  return { ...base, scheme: "http", target, path, url: `http://${u.host}${path}`, verdict: v, body: bodyOf(head.headers) };
}

// The framing was checked by the session already (a malformed one never reaches the story); this only names it.
const bodyOf = (h: HttpRequest["headers"]) => framingForRequest(h);

const defaultsOf = (rt: WorkerRuntime): CacheDefaults => ({ ...CACHE_DEFAULTS, rules: rt.config.cache.rules, negativeTtlS: rt.config.cache.negative_ttl_s });

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
      // a store moved to another directory (not a worker's first open: another worker may have found it full)
      if (rt.cacheStore !== null && rt.admission) Atomics.store(rt.admission, NO_SPACE_SLOT, 0);
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
