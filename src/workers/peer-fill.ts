/**
 * @module `[fleet] share_cache` on the cache port (issue 14): one origin download per object across the pool.
 *
 * The peer endpoint is the owner's own cache port, reached the way a child cache reaches its parent (Squid's
 * `cache_peer … parent`, Apache Traffic Server's parent selection): `CONNECT host:port` to the owner's cache port,
 * TLS inside the tunnel verified against the root the owner reported in its heartbeat (its leaves for `host`), then
 * the very request the asking gateway's fill would send to the origin — the exact cache key (the URL and the agent's
 * request fields, so the owner's Vary sees what the origin would) — plus `Agate-Fleet-Token`, the fleet token. Why the
 * cache port and not the management port: the fill path (store, claim, one download with every waiter streaming it)
 * lives in the workers; the admin server in the supervisor thread has none of it. So the owner answers with its
 * ordinary story (workers/cache-request.ts): a hit from its store (its stored head, with Age), or one fill from the
 * origin that every asker — its own agents and the peers — streams as bytes arrive. The token and the caller's
 * address are checked first (`takePeerAsk`: a caller that is not in `[fleet] peers`, or a wrong token, is refused
 * 403 PX_FLEET_DENY), the token is removed before anything is stored or sent on, and a peer's request is never
 * passed to another peer (no loops when two gateways see the pool differently).
 *
 * An owner that misses (for its agents or for a peer) first asks the runner-up — the gateway that owned the key
 * while it was away — for a copy it stores (`Cache-Control: only-if-cached`; a 504 says none), so an owner coming
 * back does not download again what the pool fetched without it (`detail=peer-copy`).
 *
 * The asking gateway fills its own store through its ordinary fill (workers/fill.ts `runFill`) with `PeerOrigins` as
 * the origin side, so it stores the object (later hits are its own, and an owner coming back costs nothing for what
 * it holds) while its agents stream the bytes as they come from the owner. An owner that cannot be reached, does not
 * answer CONNECT within PEER_CONNECT_S or start its head within PEER_HEAD_S, refuses us, or answers 5xx is given up
 * before any byte reaches the fill: the same request goes to the origin (`detail=peer-fallback`).
 */
import { timingSafeEqual } from "node:crypto";
import { ProxyError } from "../core/errors";
import { type Headers, type ResponseHead, getHeader } from "../core/http1/head";
import { type SharePeer, decideFillRoute, decideNextOwner, normalizeAddr } from "../core/fleet-share";
import type { HttpRequest } from "./http-session";
import type { ExchangeHandle, OriginEnv, OriginRequest, Origins, ResponseSink } from "./origin-client";
import type { WorkerRuntime } from "./runtime";
import { cacheCounters } from "./fill";
import { logTarget } from "../core/log-redact";
import { log } from "../log";

/** The request field that carries the fleet token inside the TLS tunnel to the owner (never on the CONNECT line). */
export const FLEET_TOKEN_FIELD = "agate-fleet-token";
/** Seconds the owner has to answer our CONNECT: a stopped gateway's kernel may still accept the TCP connection. */
export const PEER_CONNECT_S = 3;
/** Seconds the owner has, once asked, to start its response head (its own origin's first byte included). */
export const PEER_HEAD_S = 5;

/** What happened to one fill routed to a peer, for Cache-Status (RFC 9211 detail) and the counters: the owner
 * answered (`peer`), the owner was given up for the origin (`peer-fallback`), or — this gateway owning the key — the
 * runner-up had a copy (`peer-copy`); a runner-up without one leaves the fill an ordinary origin fill (no detail). */
export type PeerVia = "peer" | "peer-fallback" | "peer-copy";

const enc = new TextEncoder();
const sameSecret = (a: string, b: string) => {
  const x = enc.encode(a), y = enc.encode(b);
  return x.byteLength === y.byteLength && timingSafeEqual(x, y);
};

const count = (rt: WorkerRuntime, k: "peer_fills" | "peer_fallbacks" | "peer_answers" | "peer_copies" | "peer_copy_misses") => {
  const c = cacheCounters(rt) as unknown as Record<string, number>;
  c[k] = (c[k] ?? 0) + 1;
};

/**
 * Phase 1': a request from a fleet peer. null: an agent's request (no token field). Otherwise the request without
 * the token field, after both doors: the caller's address is one of `[fleet] peers` (resolved by the supervisor's
 * heartbeats) and the token is the fleet's. Anything else is a refusal (403 PX_FLEET_DENY), not a silent agent request.
 */
export function takePeerAsk(rt: WorkerRuntime, req: HttpRequest, clientIp: string): HttpRequest | null {
  const token = getHeader(req.headers, FLEET_TOKEN_FIELD);
  if (token === undefined) return null;
  const f = rt.config.fleet;
  const view = rt.share ?? null;
  if (!f.share_cache || !f.token || view === null)
    throw new ProxyError("PX_FLEET_DENY", "client", "this gateway does not share its cache with peers ([fleet] share_cache is off)");
  if (!view.addrs.includes(normalizeAddr(clientIp)))
    throw new ProxyError("PX_FLEET_DENY", "client", `${clientIp} is not one of this gateway's [fleet] peers`);
  if (!sameSecret(token, f.token)) throw new ProxyError("PX_FLEET_DENY", "client", "wrong fleet token (the peers' shared [fleet] token)");
  count(rt, "peer_answers");
  return { ...req, headers: req.headers.filter(([k]) => k.toLowerCase() !== FLEET_TOKEN_FIELD) };
}

/**
 * The origin side of a miss's fill: PeerOrigins when the key's owner is a live peer, else null (the worker's own
 * origin pool). `key`: the primary cache key (GET and HEAD share it, so both go to one owner).
 */
export function peerOriginsFor(rt: WorkerRuntime, req: HttpRequest, key: string, peerAsked: boolean): PeerOrigins | null {
  if (!rt.config.fleet.share_cache || !rt.config.fleet.token) return null;
  const route = decideFillRoute(key, rt.config.gateway.name, rt.share ?? null, peerAsked ? "peer" : "agent");
  if (route.from === "origin") return null;
  return route.from === "peer" ? new PeerOrigins(rt, route.owner, req.url, "owner", key) : new PeerOrigins(rt, route.peer, req.url, "copy", key);
}

/** An ExchangeHandle that follows whichever exchange is current (the owner's, then the origin's after a fallback). */
class SwitchHandle implements ExchangeHandle {
  private cur: ExchangeHandle | null = null;
  private aborted = false;
  private writable: (() => void) | null = null;
  use(h: ExchangeHandle) {
    this.cur = h;
    h.onWritable = this.writable;
    if (this.aborted) h.abort();
  }
  writeBody(c: Uint8Array) {
    return this.cur?.writeBody(c) ?? true;
  }
  endBody() {
    this.cur?.endBody();
  }
  resume() {
    this.cur?.resume();
  }
  abort() {
    this.aborted = true;
    this.cur?.abort();
  }
  set onWritable(f: (() => void) | null) {
    this.writable = f;
    if (this.cur) this.cur.onWritable = f;
  }
}

/** An answer the owner made itself rather than relayed (its own refusal or failure): Cache-Status names a PX_ code. */
const isOwnersOwnError = (h: ResponseHead) => h.status >= 500 || /detail="?PX_/.test(getHeader(h.headers, "cache-status") ?? "");

/** The origin side of one fill routed to a peer — the key's owner, or (`copy`) the runner-up for a stored copy —
 * and the origin when that peer cannot give the answer (see the module header). */
export class PeerOrigins implements Origins {
  private own: PeerVia | null = null;
  /** the next owner, asked after this one failed (one hop: the next one's failure goes to the origin) */
  private next: PeerOrigins | null = null;
  /** a request went to this peer (start ran); the runner-up asked for a copy had none */
  private started = false;
  private copyMiss = false;

  constructor(
    private rt: WorkerRuntime,
    readonly owner: SharePeer,
    private url: string,
    readonly mode: "owner" | "copy",
    private key: string,
    private hops = 1,
  ) {}

  /** set once the fill's head came from a peer or the origin after giving the owner up (see PeerVia) */
  get via(): PeerVia | null {
    if (this.next !== null) return this.next.via === "peer" ? "peer" : "peer-fallback";
    return this.own;
  }

  /**
   * The access line's peer fields (docs/ADMIN.md), null when no request went to a peer (a joiner of a collapsed fill):
   * `peer`, the `[fleet] peers` entry asked first; `peerVia`, what came of it — the Cache-Status detail (`peer`,
   * `peer-fallback`, `peer-copy`) or `peer-copy-miss` (the runner-up had no copy: an origin fill); `peerNext`, the
   * owner asked after the first one was given up (then `peerVia` says whether it answered: `peer`, or the origin did).
   */
  get logFields(): { peer: string; peerVia: PeerVia | "peer-copy-miss" | null; peerNext?: string } | null {
    if (!this.started) return null;
    return { peer: this.owner.peer, peerVia: this.via ?? (this.copyMiss ? "peer-copy-miss" : null), peerNext: this.next?.owner.peer };
  }
  get reuses() {
    return this.rt.origins.reuses;
  }
  close() {}

  async start(req: OriginRequest, sink: ResponseSink, env: OriginEnv): Promise<ExchangeHandle> {
    this.started = true;
    const handle = new SwitchHandle();
    let fallen = false;
    let peerHandle: ExchangeHandle | null = null;
    const fallback = (why: string) => {
      if (fallen || this.own !== null) return;
      fallen = true;
      peerHandle?.abort();
      if (this.mode === "copy") {
        this.copyMiss = true;
        count(this.rt, "peer_copy_misses"); // the runner-up has no copy: an ordinary first download
      } else {
        this.own = "peer-fallback";
        count(this.rt, "peer_fallbacks");
        // Before the heartbeats call the owner offline, ask the owner every gateway picks without it (one download
        // for the pool still); when that is this gateway, or after one such hop, the origin.
        const next = this.hops > 0 ? decideNextOwner(this.key, this.rt.config.gateway.name, this.rt.share ?? null, this.owner.name) : null;
        if (next) this.next = new PeerOrigins(this.rt, next, this.url, "owner", this.key, this.hops - 1);
        log("warn", "fleet: the key's owner did not answer", { owner: this.owner.name, peer: this.owner.peer, url: logTarget(this.url), why, next: next?.name ?? "origin" });
      }
      (this.next ?? this.rt.origins).start(req, sink, env).then(
        (h) => handle.use(h),
        (e) => sink.onError(e instanceof ProxyError ? e : new ProxyError("PX_UPSTREAM_UNREACHABLE", "upstream", String((e as Error)?.message ?? e))),
      );
    };
    const fromOwner: ResponseSink = {
      // 1xx from the owner are its own business (its agents'); our filler's agent gets the final answer
      onHead: (h) => {
        if (fallen) return;
        if (isOwnersOwnError(h)) return fallback(`the owner answered ${h.status}`);
        this.own = this.mode === "owner" ? "peer" : "peer-copy";
        count(this.rt, this.mode === "owner" ? "peer_fills" : "peer_copies");
        // The owner's Cache-Status describes the owner's cache, not what we store: this gateway adds its own.
        sink.onHead({ ...h, headers: h.headers.filter(([k]) => k.toLowerCase() !== "cache-status") });
      },
      onData: (c) => (fallen ? true : sink.onData(c)),
      onEnd: () => {
        if (!fallen) sink.onEnd();
      },
      onError: (e) => {
        if (fallen) return;
        if (this.own !== null) return sink.onError(e); // mid-body: the fill already has the peer's bytes
        fallback(e.message);
      },
    };
    const c = env.config;
    const viaOwner: OriginEnv = {
      config: {
        ...c,
        upstream_proxy: { host: this.owner.host, port: this.owner.cachePort, username: null, password: null, auth: "basic" },
        proxy: { ...c.proxy, connect_timeout_s: Math.min(PEER_CONNECT_S, c.proxy.connect_timeout_s) },
        cache: { ...c.cache, origin_timeout_s: Math.min(PEER_HEAD_S, c.cache.origin_timeout_s) },
      },
      policy: env.policy,
      ca: [this.owner.caPem],
    };
    const headers: Headers = [...req.headers, [FLEET_TOKEN_FIELD, c.fleet.token ?? ""]];
    // RFC 9111 §5.2.1.7: a copy request is answered from the runner-up's store or 504, never filled there
    if (this.mode === "copy") headers.push(["Cache-Control", "only-if-cached"]);
    try {
      peerHandle = await this.rt.origins.start({ ...req, headers }, fromOwner, viaOwner);
      if (!fallen) handle.use(peerHandle);
      else peerHandle.abort();
    } catch (e) {
      fallback((e as Error)?.message ?? String(e));
    }
    return handle;
  }
}
