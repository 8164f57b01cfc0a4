/**
 * @module Pure fleet rules (issue 14): a peer's status from its heartbeats and the `[fleet]` rules, when a status
 * change is worth a notification, and the owner of a cache key among the live peers (rendezvous hashing, as Squid's
 * CARP and Apache Traffic Server's parent selection spread a cache over a cluster). No clock, no I/O: the shell
 * (src/fleet/heartbeat.ts) passes `now` and each poll's outcome in (STYLE §1, §2).
 */

/** What `GET /api/fleet` shows for every gateway: the contract named in issue 14. */
export type FleetStatus = "online" | "degraded" | "offline";
export const FLEET_STATUSES: readonly FleetStatus[] = ["online", "degraded", "offline"];

export type PeerHealth = "Normal" | "Degraded" | "Down";

/** One poll of a peer's self route: its report, or why it did not answer (a value, for the view and the log). */
export type Beat<R> =
  | { ok: true; at: number; health: PeerHealth; report: R }
  | { ok: false; at: number; error: string };

export type PeerState<R> = {
  peer: string;
  status: FleetStatus;
  /** ms since epoch of the last successful heartbeat, null: never since this gateway started */
  lastHeartbeatAt: number | null;
  /** heartbeats missed in a row since the last success */
  missed: number;
  lastError: string | null;
  /** the peer's own report from its last successful heartbeat (kept while offline: "as last seen") */
  report: R | null;
};

export type FleetRules = { missedHeartbeats: number };

export function initialPeerState<R>(peer: string): PeerState<R> {
  // Offline until it answers: a peer nobody has heard from is not claimed to be up.
  return { peer, status: "offline", lastHeartbeatAt: null, missed: 0, lastError: null, report: null };
}

/**
 * The status a peer has: `offline` once `missed_heartbeats` polls in a row failed (the scanner appliances' rule:
 * 1–5 missed heartbeats) or before it ever answered; otherwise `degraded` when its own health is not Normal (a Down
 * peer that still answers is shown degraded, with its reasons), else `online`.
 */
export function decidePeerStatus(missed: number, everSeen: boolean, health: PeerHealth | null, rules: FleetRules): FleetStatus {
  if (!everSeen || missed >= rules.missedHeartbeats) return "offline";
  if (health !== null && health !== "Normal") return "degraded";
  return "online";
}

/** Fold one heartbeat into a peer's state. A failure keeps the last report, so the view can say "as last seen". */
export function onBeat<R>(s: PeerState<R>, beat: Beat<R>, rules: FleetRules, healthOf: (r: R) => PeerHealth): PeerState<R> {
  if (beat.ok) {
    const status = decidePeerStatus(0, true, beat.health, rules);
    return { peer: s.peer, status, lastHeartbeatAt: beat.at, missed: 0, lastError: null, report: beat.report };
  }
  const missed = s.missed + 1;
  const health = s.report === null ? null : healthOf(s.report);
  const status = decidePeerStatus(missed, s.lastHeartbeatAt !== null, health, rules);
  return { ...s, status, missed, lastError: beat.error };
}

export type FleetNotice = {
  event: "peer-offline" | "peer-degraded";
  peer: string;
  from: FleetStatus;
  to: FleetStatus;
};

/**
 * Whether a change of status is worth a webhook notice: a peer that was seen turning offline or degraded. A peer
 * that was never seen (offline since this gateway started) does not notify at start; a recovery does not either
 * (issue 14 asks for "turning offline or Degraded").
 */
export function decideNotice<R>(prev: PeerState<R>, next: PeerState<R>): FleetNotice | null {
  if (prev.status === next.status || next.status === "online") return null;
  if (prev.lastHeartbeatAt === null && next.lastHeartbeatAt === null) return null;
  return { event: next.status === "offline" ? "peer-offline" : "peer-degraded", peer: next.peer, from: prev.status, to: next.status };
}

// ---- the owner of a cache key (rendezvous / highest-random-weight hashing) ----------------------------------

/** 32-bit FNV-1a over UTF-16 code units, then murmur3's fmix32 finaliser so that nearby inputs spread. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The live peer that owns `key`: the one with the highest hash(peer, key) (Thaler & Ravishankar's rendezvous
 * hashing). One peer leaving moves only the keys it owned; every gateway computes the same owner from the same
 * list, whatever its order. Ties (astronomically rare) go to the smaller name. null when no peer is live.
 */
export function ownerOf(key: string, livePeers: readonly string[], hash: (s: string) => number = hash32): string | null {
  let best: string | null = null;
  let bestScore = -1;
  for (const p of livePeers) {
    const score = hash(p + "\u0000" + key);
    if (score > bestScore || (score === bestScore && best !== null && p < best)) {
      best = p;
      bestScore = score;
    }
  }
  return best;
}
