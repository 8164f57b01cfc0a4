/**
 * @module The fleet's routes on the management port (issue 14), as plain answers api.ts sends:
 * `GET /api/fleet/self` — for peers only: authenticated ONLY by `[fleet] token` (the admin token does not open it,
 * and the fleet token opens nothing else), and only from an address that is one of `[fleet] peers` (their hosts,
 * resolved by src/fleet/heartbeat.ts); `GET /api/fleet` — for the admin (admin token): every gateway, this one
 * included, with its status `online` | `degraded` | `offline` and what it last reported.
 */
import type { AdminDeps, FleetMember, FleetRow } from "./deps";
import type { AdminContext } from "./context";
import type { FleetStatus } from "../core/fleet";
import { checkToken, decideDoor } from "./guard";
import { peerTls } from "../fleet/heartbeat";
import { VERSION } from "../version";
import { log } from "../log";

export const FLEET_SELF_PATH = "/api/fleet/self";

export type Answer = { status: number; body: unknown; headers?: Record<string, string> };

/** This gateway as its peers and its own fleet view see it. */
export function selfMember(deps: AdminDeps, ctx: AdminContext, now = Date.now()): FleetMember {
  const c = deps.config;
  const h = deps.health();
  const s = deps.stats();
  const sum = ctx.stats.summary(now);
  return {
    name: c.gateway.name,
    location: c.fleet.location,
    version: VERSION,
    health: h.health,
    reasons: h.reasons,
    platform: { status: h.platform.status, connected_on: h.platform.connected_on },
    active_agents_60m: s.active_agents_60m,
    active_agents_24h: sum.active_agents_24h,
    savings_30d: { served_bytes: sum.savings_30d.served_bytes, fetched_bytes: sum.savings_30d.fetched_bytes, saved_bytes: sum.savings_30d.saved_bytes },
    open_connections: h.open_connections,
    capacity: c.proxy.max_connections,
    uptime_s: h.uptime_s,
    // issue 14 share_cache: the peers ask this cache port for the keys this gateway owns (src/fleet/share.ts)
    share: c.fleet.share_cache && c.cache.enabled && deps.ca && deps.ports.cache ? { cache_port: deps.ports.cache, ca_pem: deps.ca.rootPem } : null,
  };
}

/**
 * The self route's doors, in this order: a fleet is configured (else 404, as for any unknown path); the caller's
 * address is a peer's (else 403 naming fleet.peers; cheap, and it feeds no throttle); the fleet token (else 401,
 * and a wrong one counts toward the same per-address throttle as the admin token's door).
 */
export function answerFleetSelf(req: Request, deps: AdminDeps, ctx: AdminContext, addr: string): Answer {
  const f = deps.config.fleet;
  if (req.method !== "GET" && req.method !== "HEAD")
    return { status: 405, body: { error: `${req.method} is not allowed on ${FLEET_SELF_PATH}; use GET`, field: "method" }, headers: { allow: "GET" } };
  if (!f.token) return { status: 404, body: { error: "no fleet here: [fleet] token and peers are not set", field: "fleet.token" } };
  if (!deps.isFleetPeer?.(addr)) {
    log("warn", "fleet: self route refused, caller is not a peer", { addr });
    return { status: 403, body: { error: `${addr} is not one of this gateway's [fleet] peers`, field: "fleet.peers" } };
  }
  const check = checkToken(req, f.token);
  const door = decideDoor(check, ctx.throttle, addr, Date.now());
  if (!door.pass) {
    if (door.status === 429)
      return { status: 429, body: { error: `too many wrong tokens from ${addr}; try again in ${door.retryAfter} s`, field: "authorization" }, headers: { "retry-after": String(door.retryAfter) } };
    log("warn", `fleet: self route, ${check} fleet token`, { addr });
    return { status: 401, body: { error: `${check} fleet token (the peers' shared [fleet] token)`, field: "authorization" }, headers: { "www-authenticate": 'Bearer realm="agate-fleet"' } };
  }
  return { status: 200, body: selfMember(deps, ctx) };
}

const statusOfSelf = (m: FleetMember): FleetStatus => (m.health === "Normal" ? "online" : "degraded");

/** GET /api/fleet: this gateway first, then every peer in the order of [fleet] peers. */
export function fleetView(deps: AdminDeps, ctx: AdminContext) {
  const me = selfMember(deps, ctx);
  const self: FleetRow = { peer: "self", self: true, status: statusOfSelf(me), last_heartbeat: new Date().toISOString(), missed_heartbeats: 0, last_error: null, member: me };
  const r = deps.fleet?.();
  const f = deps.config.fleet;
  return {
    gateways: [self, ...(r?.peers ?? [])],
    heartbeat_s: f.heartbeat_s,
    missed_heartbeats: f.missed_heartbeats,
    share_cache: f.share_cache,
    // how this gateway's heartbeats and pushes reach the peers: verified only with [admin] tls and [fleet] peer_ca
    peer_tls: (({ scheme, verified, note }) => ({ scheme, verified, note }))(peerTls(deps.config)),
    // the live sharers the cache port routes misses to (rendezvous over these names and this gateway's own)
    share_peers: r?.share_peers ?? null,
    webhook: r?.webhook ?? { configured: f.webhook_url !== null, sent: 0, failed: 0, pending: 0, last_error: null },
    // issue 14: a peer's trouble is shown here and in the dashboard, never in this gateway's own health
    note: "peers' status does not change this gateway's health (a load balancer would take a healthy gateway out)",
  };
}
