/**
 * @module The fleet's heartbeats (issue 14): every `[fleet] heartbeat_s` this gateway polls each peer's
 * `GET /api/fleet/self` (its management port, https when `[admin] tls` is on) with the fleet token as
 * `Authorization: Bearer`, folds each answer or failure into the peer's state with core/fleet.ts, and queues a
 * webhook notice when a peer it had seen turns offline or degraded. It also keeps the peers' addresses (their
 * hosts, resolved each round) for the self route's second door: a caller whose address is not a peer's is refused.
 * A peer's trouble never enters this gateway's own health: a load balancer would take a healthy gateway out.
 */
import { lookup } from "node:dns/promises";
import type { Config } from "../core/config";
import { parsePeer } from "../core/fleet-config";
import { type Beat, type PeerHealth, type PeerState, decideNotice, initialPeerState, onBeat } from "../core/fleet";
import type { FleetMember, FleetPeersReport } from "../admin/deps";
import { WebhookSender } from "./webhook";
import { log } from "../log";

export const SELF_PATH = "/api/fleet/self";
/** A poll never outlasts its interval, nor 10 s: a slow peer is a missed heartbeat, not a pile of requests. */
const MAX_POLL_MS = 10_000;

/** "::ffff:10.0.0.5" (an IPv4 caller on a dual-stack socket) is 10.0.0.5. */
export const normalizeAddr = (a: string) => a.toLowerCase().replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, "$1").replace(/^\[|\]$/g, "");

const HEALTHS: readonly PeerHealth[] = ["Normal", "Degraded", "Down"];

/** A peer's answer, checked before it is shown: a wrong shape is a failed heartbeat, with why. */
function memberOf(body: unknown): FleetMember | string {
  const b = body as Partial<FleetMember> | null;
  if (!b || typeof b !== "object") return "not a JSON object";
  if (typeof b.name !== "string" || !HEALTHS.includes(b.health as PeerHealth)) return "not an agate fleet report (name, health)";
  return b as FleetMember;
}

export async function pollPeer(peer: string, c: Config, now: () => number): Promise<Beat<FleetMember>> {
  const scheme = c.admin.tls ? "https" : "http";
  const timeout = Math.min(c.fleet.heartbeat_s * 1000, MAX_POLL_MS);
  try {
    const r = await fetch(`${scheme}://${peer}${SELF_PATH}`, {
      headers: { authorization: `Bearer ${c.fleet.token}`, "user-agent": "agate-fleet" },
      signal: AbortSignal.timeout(timeout),
      redirect: "manual",
      // TODO: verify the peer's certificate. Each gateway's management leaf is minted from its own appliance CA,
      // which the others do not hold; until `[fleet]` names the peers' CAs, TLS hides the token from the wire but
      // does not authenticate the peer.
      ...(c.admin.tls ? { tls: { rejectUnauthorized: false } } : {}),
    } as RequestInit);
    const text = await r.text();
    if (r.status !== 200) {
      let why = "";
      try {
        why = String(JSON.parse(text).error ?? "");
      } catch {
        // not JSON
      }
      return { ok: false, at: now(), error: `HTTP ${r.status}${why ? `: ${why.slice(0, 200)}` : ""}` };
    }
    const m = memberOf(JSON.parse(text));
    if (typeof m === "string") return { ok: false, at: now(), error: m };
    return { ok: true, at: now(), health: m.health, report: m };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const code = err.name === "TimeoutError" ? `no answer within ${timeout} ms` : err.code ?? err.name ?? "error";
    return { ok: false, at: now(), error: code };
  }
}

export class FleetMonitor {
  private states = new Map<string, PeerState<FleetMember>>();
  private addrs = new Set<string>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private interval = 0;
  private inRound = false;
  private seq = 0;
  readonly webhook: WebhookSender;

  constructor(
    private getConfig: () => Config,
    private now: () => number = Date.now,
  ) {
    this.webhook = new WebhookSender(getConfig().fleet.webhook_url);
  }

  /** Start, or follow a new config (reload, the admin API): peers added or removed, a new interval or webhook. */
  apply(c: Config = this.getConfig()) {
    const keep = new Set(c.fleet.token ? c.fleet.peers : []);
    for (const p of [...this.states.keys()]) if (!keep.has(p)) this.states.delete(p);
    for (const p of keep) if (!this.states.has(p)) this.states.set(p, initialPeerState(p));
    this.webhook.setUrl(c.fleet.webhook_url);
    void this.resolve(c);
    const ms = c.fleet.heartbeat_s * 1000;
    if (keep.size === 0) return this.clearTimer();
    if (this.timer && this.interval === ms) return;
    this.clearTimer();
    this.interval = ms;
    this.timer = setInterval(() => void this.round(), ms);
    void this.round(); // the first heartbeat at once, so a fleet is seen right after start
  }

  stop() {
    this.clearTimer();
    this.webhook.stop();
  }

  private clearTimer() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.interval = 0;
  }

  /** The peers' hosts as addresses. A name that does not resolve now keeps what it resolved to before. */
  private async resolve(c: Config) {
    const next = new Set<string>();
    for (const p of c.fleet.peers) {
      const { host } = parsePeer("fleet.peers", p);
      if (/^[\d.]+$/.test(host) || host.includes(":")) {
        next.add(normalizeAddr(host));
        continue;
      }
      try {
        for (const a of await lookup(host, { all: true })) next.add(normalizeAddr(a.address));
      } catch (e) {
        log("warn", "fleet: a peer's host name does not resolve", { peer: p, error: (e as NodeJS.ErrnoException).code ?? String(e) });
        for (const a of this.addrs) next.add(a);
      }
    }
    this.addrs = next;
    this.changed();
  }

  isPeerAddr(addr: string): boolean {
    return this.addrs.has(normalizeAddr(addr));
  }

  /** The peers' resolved addresses (the workers refuse a peer cache request from any other, src/fleet/share.ts). */
  peerAddrs(): string[] {
    return [...this.addrs];
  }

  /** Called after every heartbeat folded in (and every address resolution): src/fleet/share.ts follows the live set. */
  onChange(cb: () => void) {
    this.listeners.push(cb);
  }
  private listeners: (() => void)[] = [];
  private changed() {
    for (const l of this.listeners) l();
  }

  private async round() {
    if (this.inRound) return; // the previous round is still waiting on a slow peer: that peer misses this beat
    this.inRound = true;
    const c = this.getConfig();
    try {
      await Promise.all([...this.states.keys()].map((p) => this.pollOne(p, c)));
      await this.resolve(c);
    } finally {
      this.inRound = false;
    }
  }

  private async pollOne(peer: string, c: Config) {
    const beat = await pollPeer(peer, c, this.now);
    const prev = this.states.get(peer);
    if (!prev) return; // removed by a config change meanwhile
    const next = onBeat(prev, beat, { missedHeartbeats: c.fleet.missed_heartbeats }, (m) => m.health);
    this.states.set(peer, next);
    this.changed();
    if (prev.status !== next.status)
      log(next.status === "online" ? "info" : "warn", `fleet: peer ${next.status}`, { peer, from: prev.status, missed: next.missed, error: next.lastError });
    const notice = decideNotice(prev, next);
    if (notice) {
      const id = `${this.now().toString(36)}-${++this.seq}`;
      this.webhook.send(
        {
          id,
          ...notice,
          at: new Date(beat.at).toISOString(),
          gateway: { name: c.gateway.name, location: c.fleet.location },
          peer_name: next.report?.name ?? null,
          peer_location: next.report?.location ?? null,
          reasons: next.status === "offline" ? [`${next.missed} heartbeats missed (last: ${next.lastError})`] : next.report?.reasons ?? [],
          last_heartbeat: next.lastHeartbeatAt ? new Date(next.lastHeartbeatAt).toISOString() : null,
        },
        id,
      );
    }
  }

  report(): FleetPeersReport {
    const c = this.getConfig();
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    return {
      peers: [...this.states.values()].map((s) => ({
        peer: s.peer,
        self: false,
        status: s.status,
        last_heartbeat: iso(s.lastHeartbeatAt),
        missed_heartbeats: s.missed,
        last_error: s.lastError,
        member: s.report,
      })),
      heartbeat_s: c.fleet.heartbeat_s,
      missed_heartbeats: c.fleet.missed_heartbeats,
      webhook: { configured: c.fleet.webhook_url !== null, sent: this.webhook.sent, failed: this.webhook.failed, pending: this.webhook.pending, last_error: this.webhook.lastError },
    };
  }
}
