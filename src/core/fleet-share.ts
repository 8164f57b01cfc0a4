/**
 * @module One origin download per object across the pool (issue 14, `[fleet] share_cache`): the pure rules. Which
 * gateway owns a cache key among the live sharers (this one included) — rendezvous hashing over the gateways'
 * names (core/fleet.ts `ownerOf`), so one gateway leaving moves only the keys it owned (Squid's CARP, Apache Traffic
 * Server's parent selection) — and which peers count as live sharers from the heartbeats. The supervisor computes the
 * live set (src/fleet/share.ts) and pushes it to the workers; a worker asks `decideFillRoute` on every miss.
 * No clock, no I/O (STYLE §1).
 */
import { ownerOf } from "./fleet";
import type { FleetStatus } from "./fleet";

/** A live peer that shares its cache: where its cache port is and the CA its cache port's leaves chain to. */
export type SharePeer = {
  /** its `[gateway] name` as it reports it: the name every gateway hashes (each gateway knows its own) */
  name: string;
  /** its management `host:port` as in `[fleet] peers` (for logs) */
  peer: string;
  /** the host of that entry and the cache port it reported */
  host: string;
  cachePort: number;
  /** the root its cache port's leaves chain to (its `GET /ca.pem`), to verify the TLS of a peer request */
  caPem: string;
};

/** What the supervisor pushes to the workers: the live sharers and the addresses a peer request may come from. */
export type ShareView = {
  peers: SharePeer[];
  /** every `[fleet] peers` host, resolved: a peer request from any other address is refused */
  addrs: string[];
};

/** What a peer says about sharing in its heartbeat (admin/deps.ts FleetMember.share). */
export type ShareReport = { cache_port: number; ca_pem: string } | null;

/** A peer row as the heartbeats give it: status, and its last report's name, health and share part. */
export type PeerRowLike = { peer: string; status: FleetStatus; member: { name: string; health: string; share?: ShareReport } | null };

/**
 * The live sharers among the heartbeat rows: answering (online or degraded, not Down), sharing (cache mode on and
 * `share_cache` on, so it reported a cache port), and with a name no other gateway has — two gateways with one name
 * would both think they own the same keys, so a duplicated name (this gateway's included) leaves that peer out.
 */
export function decideSharePeers(selfName: string, rows: readonly PeerRowLike[], hostOf: (peer: string) => string): { peers: SharePeer[]; duplicates: string[] } {
  const live = rows.filter((r) => r.status !== "offline" && r.member !== null && r.member.health !== "Down" && r.member.share);
  const count = new Map<string, number>([[selfName, 1]]);
  for (const r of live) count.set(r.member!.name, (count.get(r.member!.name) ?? 0) + 1);
  const duplicates = [...count].filter(([, n]) => n > 1).map(([k]) => k);
  const peers = live
    .filter((r) => count.get(r.member!.name) === 1)
    .map((r) => ({ name: r.member!.name, peer: r.peer, host: hostOf(r.peer), cachePort: r.member!.share!.cache_port, caPem: r.member!.share!.ca_pem }));
  return { peers, duplicates };
}

/**
 * Where a miss is filled from. `peer`: the key's owner is a live peer — ask it; it serves its copy or fills it once
 * from the origin for everyone. `copy`: this gateway owns the key — first ask the runner-up (the owner the key had
 * while this gateway was away: rendezvous over the others) for a copy it already stores (only-if-cached, RFC 9111
 * §5.2.1.7), so an owner coming back does not download again what the pool fetched without it; then the origin.
 * `origin`: no live sharer.
 */
export type FillRoute = { from: "peer"; owner: SharePeer } | { from: "copy"; peer: SharePeer } | { from: "origin"; why: "no-peers" };

/**
 * The route of one miss. `asked`: who asks — an agent, or a peer that sees this gateway as the key's owner. A peer's
 * request is never passed on as a fill (two gateways that see the pool differently would otherwise wait on each
 * other's fill of one key); it may only look for a copy, and a copy request (only-if-cached) never fills anywhere.
 */
export function decideFillRoute(key: string, selfName: string, view: ShareView | null, asked: "agent" | "peer"): FillRoute {
  if (view === null || view.peers.length === 0) return { from: "origin", why: "no-peers" };
  const others = view.peers.map((p) => p.name);
  const byName = (n: string | null) => view.peers.find((p) => p.name === n)!;
  if (asked === "agent") {
    const owner = ownerOf(key, [selfName, ...others]);
    if (owner !== selfName) return { from: "peer", owner: byName(owner) };
  }
  return { from: "copy", peer: byName(ownerOf(key, others)) };
}

/**
 * The owner of `key` once `failed` (the owner we asked) is taken out: where a miss goes when its owner does not
 * answer before the heartbeats say it is offline — the same gateway every other gateway will pick, so the pool still
 * downloads the object once (Apache Traffic Server's parent fail-over). null: this gateway (fetch from the origin).
 */
export function decideNextOwner(key: string, selfName: string, view: ShareView | null, failed: string): SharePeer | null {
  const rest = (view?.peers ?? []).filter((p) => p.name !== failed);
  const owner = ownerOf(key, [selfName, ...rest.map((p) => p.name)]);
  return rest.find((p) => p.name === owner) ?? null;
}

/** True when the two views route every key alike (same names at the same places): the supervisor pushes only changes. */
export function sameShareView(a: ShareView | null, b: ShareView | null): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** "::ffff:10.0.0.5" (an IPv4 caller on a dual-stack socket) is 10.0.0.5; "[fd00::5]" is fd00::5. */
export const normalizeAddr = (a: string) => a.toLowerCase().replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, "$1").replace(/^\[|\]$/g, "");
