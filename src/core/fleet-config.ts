/**
 * @module The `[fleet]` section (issue 14), validated at the door for core/config.ts (STYLE §7): the peers'
 * management `host:port`, the shared fleet token, the location, the heartbeat interval with its floor, the
 * missed-heartbeat threshold, the webhook, `share_cache` (one origin download per object across the pool), and
 * `peer_ca`: the CA certificate(s) the peers' management leaves are checked against when `[admin] tls` is on
 * (its file is read by supervisor/preflight.ts, with fleet/peer-ca.ts, at start, on reload and from the API: core
 * touches no disk).
 */
import { ConfigError } from "./errors";

export type FleetConfig = {
  /** the other gateways' management ports, "host:port" (host: IPv4, [IPv6] or a host name) */
  peers: string[];
  /** the shared secret peers present to each other (Authorization: Bearer); null: no fleet */
  token: string | null;
  location: string;
  /** how often each peer is polled; within [min_heartbeat_s, 3600] */
  heartbeat_s: number;
  /** the floor of heartbeat_s: 60 as the scanner appliances have it, lowered by tests */
  min_heartbeat_s: number;
  /** heartbeats missed in a row before a peer is offline (1–5) */
  missed_heartbeats: number;
  /** one origin download per object across the pool: a miss is filled from the key's owner (src/fleet/share.ts) */
  share_cache: boolean;
  /** JSON notices (a peer turning offline or degraded) are POSTed here; null: none */
  webhook_url: string | null;
  /** a PEM file with the CA certificate(s) that issued the peers' management leaves (each peer's appliance CA,
   * `<data_dir>/ca/appliance.pem`); null: peer TLS is encrypted but not verified (src/fleet/heartbeat.ts) */
  peer_ca: string | null;
};

export const FLEET_KEYS = ["peers", "token", "location", "heartbeat_s", "min_heartbeat_s", "missed_heartbeats", "share_cache", "webhook_url", "peer_ca"] as const;

export const FLEET_DEFAULTS: FleetConfig = {
  peers: [],
  token: null,
  location: "",
  heartbeat_s: 180,
  min_heartbeat_s: 60,
  missed_heartbeats: 3,
  share_cache: false,
  webhook_url: null,
  peer_ca: null,
};

export const MIN_FLEET_TOKEN = 32;
export const MAX_PEERS = 64;

type Raw = Record<string, unknown>;

const show = (v: unknown) => (typeof v === "string" ? `'${v}'` : JSON.stringify(v));
const pick = (sec: Raw, k: string, d: unknown): unknown => (sec[k] === undefined ? d : sec[k]);

function int(key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw new ConfigError(key, `expected an integer, got ${show(v)}`);
  if (v < min || v > max) throw new ConfigError(key, `expected ${min}–${max}, got ${v}`);
  return v;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** "10.0.0.5:8443", "[fd00::5]:8443" or "gw2.example.com:8443", lower-cased. */
export function parsePeer(key: string, v: unknown): { host: string; port: number; text: string } {
  if (typeof v !== "string") throw new ConfigError(key, `expected "host:port", got ${show(v)}`);
  const s = v.trim().toLowerCase();
  const m = /^\[([0-9a-f:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\[\]]+):(\d{1,5})$/.exec(s);
  if (!m) throw new ConfigError(key, `${show(v)}: expected a peer's management port as "host:port", e.g. "10.0.0.5:8443" or "[fd00::5]:8443"`);
  const host = m[1]!;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new ConfigError(key, `${show(v)}: port ${port} is out of range 1–65535`);
  const v6 = s.startsWith("[");
  if (!v6 && !IPV4.test(host) && !host.split(".").every((l) => LABEL.test(l)))
    throw new ConfigError(key, `${show(v)}: ${show(host)} is not an IPv4 address or a host name`);
  return { host, port, text: v6 ? `[${host}]:${port}` : `${host}:${port}` };
}

export function parseFleet(sec: Raw, base: FleetConfig, adminToken: string | null): FleetConfig {
  const peersRaw = pick(sec, "peers", base.peers);
  if (!Array.isArray(peersRaw)) throw new ConfigError("fleet.peers", `expected a list of "host:port", got ${show(peersRaw)}`);
  if (peersRaw.length > MAX_PEERS) throw new ConfigError("fleet.peers", `${peersRaw.length} peers, at most ${MAX_PEERS}`);
  const peers = peersRaw.map((p, i) => parsePeer(`fleet.peers[${i}]`, p).text);
  const dup = peers.find((p, i) => peers.indexOf(p) !== i);
  if (dup) throw new ConfigError("fleet.peers", `${show(dup)} is listed twice`);

  const tokenRaw = pick(sec, "token", base.token);
  let token: string | null = null;
  if (tokenRaw !== null && tokenRaw !== "") {
    if (typeof tokenRaw !== "string") throw new ConfigError("fleet.token", `expected a string, got ${typeof tokenRaw}`);
    if (tokenRaw.length < MIN_FLEET_TOKEN) throw new ConfigError("fleet.token", `at least ${MIN_FLEET_TOKEN} characters (every peer holds it), got ${tokenRaw.length}`);
    if (tokenRaw.length > 1024) throw new ConfigError("fleet.token", `at most 1024 characters, got ${tokenRaw.length}`);
    if (/\s/.test(tokenRaw)) throw new ConfigError("fleet.token", "must not contain spaces (it is sent as a bearer token)");
    if (adminToken !== null && tokenRaw === adminToken)
      throw new ConfigError("fleet.token", "must differ from admin.token: every peer holds the fleet token, and it must not open this gateway's management API");
    token = tokenRaw;
  }
  if (peers.length > 0 && token === null) throw new ConfigError("fleet.token", `fleet.peers is set: the peers need the shared fleet.token (at least ${MIN_FLEET_TOKEN} characters)`);

  const location = pick(sec, "location", base.location);
  if (typeof location !== "string") throw new ConfigError("fleet.location", `expected a string, got ${show(location)}`);
  if (location.length > 255) throw new ConfigError("fleet.location", `at most 255 characters, got ${location.length}`);

  const min_heartbeat_s = int("fleet.min_heartbeat_s", pick(sec, "min_heartbeat_s", base.min_heartbeat_s), 1, 3600);
  const heartbeat_s = int("fleet.heartbeat_s", pick(sec, "heartbeat_s", base.heartbeat_s), min_heartbeat_s, 3600);
  const missed_heartbeats = int("fleet.missed_heartbeats", pick(sec, "missed_heartbeats", base.missed_heartbeats), 1, 5);

  const share = pick(sec, "share_cache", base.share_cache);
  if (typeof share !== "boolean") throw new ConfigError("fleet.share_cache", `expected true or false, got ${show(share)}`);
  // share_cache without peers is allowed (a single gateway, peers added later); it only changes anything once a peer
  // answers heartbeats and shares too (src/fleet/share.ts).

  const hookRaw = pick(sec, "webhook_url", base.webhook_url);
  let webhook_url: string | null = null;
  if (hookRaw !== null && hookRaw !== "") {
    if (typeof hookRaw !== "string") throw new ConfigError("fleet.webhook_url", `expected a URL, got ${show(hookRaw)}`);
    if (hookRaw.length > 2048) throw new ConfigError("fleet.webhook_url", `at most 2048 characters, got ${hookRaw.length}`);
    let u: URL;
    try {
      u = new URL(hookRaw);
    } catch {
      throw new ConfigError("fleet.webhook_url", "not a URL; expected e.g. https://hooks.example.com/agate");
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new ConfigError("fleet.webhook_url", `expected an http or https URL, got ${u.protocol}`);
    webhook_url = hookRaw;
  }

  const caRaw = pick(sec, "peer_ca", base.peer_ca ?? null);
  let peer_ca: string | null = null;
  if (caRaw !== null && caRaw !== "") {
    if (typeof caRaw !== "string") throw new ConfigError("fleet.peer_ca", `expected the path of a PEM file, got ${show(caRaw)}`);
    peer_ca = caRaw; // its content: supervisor/preflight.ts (checkConfigFiles)
  }
  return { peers, token, location, heartbeat_s, min_heartbeat_s, missed_heartbeats, share_cache: share, webhook_url, peer_ca };
}
