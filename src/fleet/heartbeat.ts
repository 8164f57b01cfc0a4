/**
 * @module The fleet's heartbeats (issue 14): every `[fleet] heartbeat_s` this gateway polls each peer's
 * `GET /api/fleet/self` (its management port, https when `[admin] tls` is on) with the fleet token as
 * `Authorization: Bearer`, folds each answer or failure into the peer's state with core/fleet.ts, and queues a
 * webhook notice when a peer it had seen turns offline or degraded. It also keeps the peers' addresses (their
 * hosts, resolved each round) for the self route's second door: a caller whose address is not a peer's is refused.
 * A peer's trouble never enters this gateway's own health: a load balancer would take a healthy gateway out.
 *
 * Peer TLS (`peerTls`, also used by steer.ts): with `[admin] tls` on and `[fleet] peer_ca` set, the peer's
 * management certificate must chain to one of peer_ca's CAs and name the host of its `host:port` (Bun's fetch checks
 * the SAN: an IP against its iPAddress entries, a name against its dNSName ones); a peer that fails is a failed
 * heartbeat whose error starts "certificate not trusted:" or "certificate name mismatch:". Without peer_ca the
 * traffic is encrypted but the peer is not authenticated, and every row says so (`tls_verified: false`, `tls_note`).
 */
import { lookup } from "node:dns/promises";
import { statSync } from "node:fs";
import type { Config } from "../core/config";
import { parsePeer } from "../core/fleet-config";
import { readPeerCa } from "./peer-ca";
import { ConfigError } from "../core/errors";
import { type Beat, type PeerHealth, type PeerState, decideNotice, initialPeerState, onBeat } from "../core/fleet";
import type { FleetMember, FleetPeersReport, FleetRow } from "../admin/deps";
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

/** How peer traffic is protected: what the fleet view says per peer, and the fetch options that do it. */
export type PeerTls = {
  scheme: "http" | "https";
  /** true only when the peer's certificate is checked against `[fleet] peer_ca` (chain and name) */
  verified: boolean;
  /** why it is not verified (shown per peer); null when it is */
  note: string | null;
  /** Bun's fetch `tls` option; absent for plain HTTP */
  tls?: { rejectUnauthorized: boolean; ca?: string };
  /** peer_ca could not be read now (removed or changed after it was validated): every peer call fails with this */
  error?: string;
};

export const TLS_NOTE_PLAIN = "plain HTTP: [admin] tls is off, so the fleet token and the peers' answers cross the network unencrypted";
export const TLS_NOTE_UNVERIFIED =
  "encrypted, but the peer's certificate is not verified: set [fleet] peer_ca to the peers' appliance CA certificates (docs/ADMIN.md, \"Peer TLS\")";

/** peer_ca read once per change of the file (path, size, mtime), not on every heartbeat. */
let caCache: { key: string; pem: string } | null = null;
function peerCaPem(path: string): string {
  const st = statSync(path);
  const key = `${path}\0${st.size}\0${st.mtimeMs}`;
  if (caCache?.key !== key) caCache = { key, pem: readPeerCa("fleet.peer_ca", path) };
  return caCache.pem;
}

export function peerTls(c: Config): PeerTls {
  if (!c.admin.tls) return { scheme: "http", verified: false, note: TLS_NOTE_PLAIN };
  const path = c.fleet.peer_ca;
  if (!path) return { scheme: "https", verified: false, note: TLS_NOTE_UNVERIFIED, tls: { rejectUnauthorized: false } };
  try {
    return { scheme: "https", verified: true, note: null, tls: { rejectUnauthorized: true, ca: peerCaPem(path) } };
  } catch (e) {
    const why = e instanceof ConfigError ? e.message : `${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
    return { scheme: "https", verified: true, note: null, tls: { rejectUnauthorized: true }, error: `fleet.peer_ca cannot be used now: ${why}` };
  }
}

/** OpenSSL's verify codes (as Bun's fetch reports them) that mean "no trusted CA issued this certificate". */
const UNTRUSTED = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "INVALID_CA",
]);

/** A failed peer call as the fleet view shows it: certificate failures say so first, with the code; others are the code. */
export function describePeerError(e: unknown, peer: string, t: PeerTls): string {
  const err = e as NodeJS.ErrnoException;
  const code = err?.code ?? err?.name ?? "error";
  const msg = String(err?.message ?? "")
    .replace(new RegExp(`^${code}:?\\s*`), "")
    .replace(/\s*For more information, pass `verbose: true`.*$/s, "")
    .slice(0, 200);
  if (UNTRUSTED.has(code))
    return `certificate not trusted: ${peer}'s management certificate is not issued by a CA in ${t.verified ? "[fleet] peer_ca" : "the system roots"} (${code}${msg ? `: ${msg}` : ""})`;
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID" || code === "HOSTNAME_MISMATCH")
    return `certificate name mismatch: ${peer}'s management certificate is not for ${parsePeer("fleet.peers", peer).host} (${code}); list the peer by an address or name its certificate carries (docs/ADMIN.md, "Peer TLS")`;
  if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID") return `certificate not valid now: ${peer}'s management certificate (${code})`;
  return code; // refused, reset, DNS…: the code says it (as before peer TLS was verified)
}

export async function pollPeer(peer: string, c: Config, now: () => number): Promise<Beat<FleetMember>> {
  const t = peerTls(c);
  if (t.error) return { ok: false, at: now(), error: t.error };
  const timeout = Math.min(c.fleet.heartbeat_s * 1000, MAX_POLL_MS);
  try {
    const r = await fetch(`${t.scheme}://${peer}${SELF_PATH}`, {
      headers: { authorization: `Bearer ${c.fleet.token}`, "user-agent": "agate-fleet" },
      signal: AbortSignal.timeout(timeout),
      redirect: "manual",
      ...(t.tls ? { tls: t.tls } : {}),
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
    if (err.name === "TimeoutError") return { ok: false, at: now(), error: `no answer within ${timeout} ms` };
    return { ok: false, at: now(), error: describePeerError(e, peer, t) };
  }
}

/** A peer's row with how its traffic is protected (GET /api/fleet, the Fleet tab). */
export type FleetPeerRow = FleetRow & { tls_verified: boolean; tls_note: string | null };

export class FleetMonitor {
  private states = new Map<string, PeerState<FleetMember>>();
  private addrs = new Set<string>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private interval = 0;
  private inRound = false;
  private seq = 0;
  /** the last peer-TLS state warned about, so a reload that changes nothing does not repeat the warning */
  private tlsWarned: string | null = null;
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
    this.warnTls(c, keep.size);
    void this.resolve(c);
    const ms = c.fleet.heartbeat_s * 1000;
    if (keep.size === 0) return this.clearTimer();
    if (this.timer && this.interval === ms) return;
    this.clearTimer();
    this.interval = ms;
    this.timer = setInterval(() => void this.round(), ms);
    void this.round(); // the first heartbeat at once, so a fleet is seen right after start
  }

  /** One warning line at start (and after a change) when peer TLS is on but does not authenticate the peers. */
  private warnTls(c: Config, peers: number) {
    const t = peerTls(c);
    const state = peers > 0 && c.admin.tls && !t.verified ? "unverified" : null;
    if (state && this.tlsWarned !== state)
      log("warn", "fleet: peer TLS is encrypted but not verified ([fleet] peer_ca is not set)", { peers, note: TLS_NOTE_UNVERIFIED });
    this.tlsWarned = state;
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

  report(): FleetPeersReport & { peers: FleetPeerRow[] } {
    const c = this.getConfig();
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    const tls = peerTls(c);
    return {
      peers: [...this.states.values()].map((s) => ({
        peer: s.peer,
        self: false,
        status: s.status,
        last_heartbeat: iso(s.lastHeartbeatAt),
        missed_heartbeats: s.missed,
        last_error: s.lastError,
        member: s.report,
        tls_verified: tls.verified,
        tls_note: tls.note,
      })),
      heartbeat_s: c.fleet.heartbeat_s,
      missed_heartbeats: c.fleet.missed_heartbeats,
      webhook: { configured: c.fleet.webhook_url !== null, sent: this.webhook.sent, failed: this.webhook.failed, pending: this.webhook.pending, last_error: this.webhook.lastError },
    };
  }
}
