/**
 * @module The configuration: schema, embedded defaults, and validation at the door (STYLE §7).
 * `parseConfig(raw)` takes the object Bun's TOML parser produced (or a partial JSON object merged onto
 * the current config) and returns a frozen `Config`, or throws a `ConfigError` naming the key and the rule.
 * Nothing else reads settings; a reload goes through the same function.
 */
import { ConfigError } from "./errors";
import { FLEET_DEFAULTS, FLEET_KEYS, type FleetConfig, parseFleet } from "./fleet-config";

/** DESIGN.md "Ports": reserved by the appliance's own services. */
export const RESERVED_PORTS: ReadonlySet<number> = new Set([
  22, 23, 2379, 2380, 4001, 5514, 7001, 48081, 48082, 48083, 48084, 48085, 48086,
]);

/** DESIGN.md "Connection security": the platform's domains, each matching itself and its subdomains. */
export const PLATFORM_DOMAINS: readonly string[] = [
  "qualys.com",
  "qualys.eu",
  "qualys.in",
  "qualys.ca",
  "qualys.ae",
  "qualys.co.uk",
  "qualys.com.au",
  "qualysksa.com",
];

export const MAX_ALLOWED_DOMAINS = 10;
export const MIN_TLS_VERSIONS = ["1.0", "1.1", "1.2", "1.3"] as const;
export type MinTls = (typeof MIN_TLS_VERSIONS)[number];
/**
 * What this build offers agents: all four. Bun 1.4.5's node:tls negotiates TLS 1.0 and 1.1 on the cache port's
 * own path (Bun socket → SocketDuplex → TLSSocket, minVersion "TLSv1"), with ECDHE-ECDSA-AES256-SHA on the P-256
 * leaf; `bun bench/micro/legacy-tls-probe.ts` shows it (issue 11: an earlier note here, that BoringSSL refuses
 * them, was wrong). Note Debian's openssl client itself refuses TLS < 1.2 unless given
 * `-cipher DEFAULT:@SECLEVEL=0`. Older versions are offered only when the admin lowers `cache.min_tls`.
 */
export const OFFERED_TLS_VERSIONS = MIN_TLS_VERSIONS;

export type UpstreamProxy = {
  host: string;
  port: number;
  username: string | null;
  password: string | null;
  /**
   * How agate proves itself to the upstream proxy when `username` is set: "basic" (sent with the first CONNECT) or
   * "ntlm" (NTLMv2, a handshake on the CONNECT connection; `username` is `DOMAIN\user` or `user@domain`). Explicit,
   * not guessed from the 407: a proxy that offers both would otherwise choose for us, and a 407 that asks for the
   * other scheme says which value to set.
   */
  auth: UpstreamAuth;
};
export const UPSTREAM_AUTH = ["basic", "ntlm"] as const;
export type UpstreamAuth = (typeof UPSTREAM_AUTH)[number];

/** Squid-like `refresh_pattern`: artifacts whose origin headers are too weak get a lifetime. */
export type ArtifactRule = { host: string; path: string; max_age_s: number };

export type Config = {
  gateway: {
    name: string;
    data_dir: string;
    /** 0 = one per CPU */
    workers: number;
    /** how long established tunnels may finish after SIGTERM */
    drain_grace_s: number;
    /** all log files together stay under this; the oldest go first (and before the disk fills) */
    log_cap_bytes: number;
  };
  proxy: {
    port: number;
    listen: string;
    max_connections: number;
    idle_timeout_s: number;
    head_timeout_s: number;
    /** a CONNECT's TLS handshake (the ClientHello for a tunnel, the whole handshake when intercepted) */
    handshake_timeout_s: number;
    connect_timeout_s: number;
    max_head_bytes: number;
  };
  cache: {
    enabled: boolean;
    port: number;
    listen: string;
    min_tls: MinTls;
    allowed_domains: string[];
    /** 0 = 40% of the machine's RAM, resolved by the store */
    max_bytes: number;
    rules: ArtifactRule[];
    /** RFC 5861 stale-if-error for platform objects whose origin sends no stale-if-error of its own (0 = off) */
    stale_if_error_s: number;
    /** how long an origin has, once a request is sent, to start its response head; then 504 or stale-if-error */
    origin_timeout_s: number;
    /** heuristic lifetime of a 404/410 with no freshness and no Last-Modified (Squid's negative_ttl; 0 = off) */
    negative_ttl_s: number;
  };
  patch: {
    enabled: boolean;
    volume: string | null;
    min_volume_bytes: number;
    /**
     * false (default): the volume must be another device than data_dir (st_dev differs), the "second disk" of
     * DESIGN "Cache". true is for tests and single-disk labs: the patch store then competes with data_dir for space.
     */
    allow_same_device: boolean;
    client_networks: string[];
    agent_user_agents: string[];
    slice_bytes: number;
  };
  upstream_proxy: UpstreamProxy | null;
  hosts: Record<string, string>;
  destinations: { ports: number[] };
  /** probe_interval_s: how often the platform link probes the pod's hosts (supervisor/platform-link.ts) */
  platform: { domains: string[]; pod: string; probe_interval_s: number };
  tls: {
    upstream_ca: string | null;
    /** which CA issues the leaves agents see in cache and patch modes */
    ca: "appliance" | "common" | "customer";
    /** common: the CA certificate; customer: the root */
    ca_cert: string | null;
    /** customer: the intermediate chain, issuing certificate first */
    ca_chain: string | null;
    /** common / customer: the issuing certificate's private key (PEM, no passphrase) */
    ca_key: string | null;
  };
  /** agent_check_port: HAProxy agent-check (supervisor/agent-check.ts), null = off */
  admin: { port: number; listen: string; tls: boolean; token: string | null; agent_check_port: number | null };
  /** several gateways seen as one (issue 14): core/fleet-config.ts */
  fleet: FleetConfig;
};

export const DEFAULTS: Config = {
  gateway: { name: "agate", data_dir: "./data", workers: 0, drain_grace_s: 30, log_cap_bytes: 256 * 1024 * 1024 },
  proxy: {
    port: 1080,
    listen: "0.0.0.0",
    max_connections: 3000,
    idle_timeout_s: 3600,
    head_timeout_s: 10,
    handshake_timeout_s: 10,
    connect_timeout_s: 10,
    max_head_bytes: 16 * 1024,
  },
  cache: {
    enabled: false,
    port: 8080,
    listen: "0.0.0.0",
    min_tls: "1.2",
    allowed_domains: [],
    max_bytes: 0,
    rules: [],
    stale_if_error_s: 86_400,
    origin_timeout_s: 30,
    negative_ttl_s: 60,
  },
  patch: {
    enabled: false,
    volume: null,
    min_volume_bytes: 250 * 1000 ** 3,
    allow_same_device: false,
    client_networks: [],
    agent_user_agents: [],
    slice_bytes: 4 * 1024 * 1024,
  },
  upstream_proxy: null,
  hosts: {},
  destinations: { ports: [443] },
  platform: { domains: [...PLATFORM_DOMAINS], pod: "qg1.apps.qualys.com", probe_interval_s: 60 },
  tls: { upstream_ca: null, ca: "appliance", ca_cert: null, ca_chain: null, ca_key: null },
  admin: { port: 8443, listen: "127.0.0.1", tls: false, token: null, agent_check_port: null },
  fleet: FLEET_DEFAULTS,
};

type Raw = Record<string, unknown>;
const isObj = (v: unknown): v is Raw => typeof v === "object" && v !== null && !Array.isArray(v);
const show = (v: unknown) => (typeof v === "string" ? `'${v}'` : JSON.stringify(v));

// ---- leaf validators: each names the key and the rule -------------------------------------------------

function int(key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw new ConfigError(key, `expected an integer, got ${show(v)}`);
  if (v < min || v > max) throw new ConfigError(key, `expected ${min}–${max}, got ${v}`);
  return v;
}

function num(key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ConfigError(key, `expected a number, got ${show(v)}`);
  if (v < min || v > max) throw new ConfigError(key, `expected ${min}–${max}, got ${v}`);
  return v;
}

function bool(key: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new ConfigError(key, `expected true or false, got ${show(v)}`);
  return v;
}

function str(key: string, v: unknown, max = 1024): string {
  if (typeof v !== "string") throw new ConfigError(key, `expected a string, got ${show(v)}`);
  if (v.length > max) throw new ConfigError(key, `at most ${max} characters, got ${v.length}`);
  return v;
}

function optStr(key: string, v: unknown): string | null {
  return v === null || v === undefined || v === "" ? null : str(key, v);
}

/** A listening port: 0 means "any free port" (tests), otherwise 1–65535 and not reserved. */
export function checkPort(key: string, v: unknown, allowZero = true): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw new ConfigError(key, `expected an integer port, got ${show(v)}`);
  if (v === 0 && allowZero) return 0;
  if (v < 1 || v > 65535) throw new ConfigError(key, `${v} is out of range: a port is 1–65535`);
  if (RESERVED_PORTS.has(v)) throw new ConfigError(key, `port ${v} is reserved`);
  return v;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
export const isIPv4 = (s: string) => IPV4.test(s);
export function isIPv6(s: string): boolean {
  if (!s.includes(":") || !/^[0-9a-fA-F:.]+$/.test(s)) return false;
  const dbl = s.split("::");
  if (dbl.length > 2) return false;
  const parts = s.split(":").filter((p) => p !== "");
  const last = parts[parts.length - 1] ?? "";
  const v4tail = last.includes(".");
  if (v4tail && !isIPv4(last)) return false;
  const groups = parts.length + (v4tail ? 1 : 0);
  if (parts.some((p, i) => !(i === parts.length - 1 && v4tail) && !/^[0-9a-fA-F]{1,4}$/.test(p))) return false;
  return dbl.length === 2 ? groups < 8 : groups === 8;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * A bare domain as admins write it: "microsoft.com". Lower-cased, trailing dot dropped.
 * IDNs must be in punycode (xn--…), since agents send the ASCII form in CONNECT.
 */
export function normalizeDomain(key: string, v: unknown): string {
  const s = str(key, v, 253).trim();
  const hint = (d: string) => `write the bare domain, e.g. ${d}`;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    const bare = s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "").split(/[/:?#]/)[0]!.replace(/^www\./i, "");
    throw new ConfigError(key, `${show(s)}: ${hint(bare || "microsoft.com")}`);
  }
  if (/[/?#]/.test(s)) throw new ConfigError(key, `${show(s)}: no path; ${hint(s.split(/[/?#]/)[0] || "microsoft.com")}`);
  if (s.includes(":")) throw new ConfigError(key, `${show(s)}: no port; ${hint(s.split(":")[0] || "microsoft.com")}`);
  if (s.startsWith("*.")) throw new ConfigError(key, `${show(s)}: no wildcard, a domain already matches its subdomains; ${hint(s.slice(2))}`);
  const d = s.toLowerCase().replace(/\.$/, "");
  if (/[^\x00-\x7f]/.test(d)) throw new ConfigError(key, `${show(s)}: write an internationalised domain in punycode (xn--…)`);
  if (isIPv4(d)) throw new ConfigError(key, `${show(s)}: an IP address is not a domain`);
  const labels = d.split(".");
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l)))
    throw new ConfigError(key, `${show(s)} is not a valid domain name; ${hint("microsoft.com")}`);
  return d;
}

/** A host name (FQDN) or a dotted IPv4 address, e.g. for the upstream proxy. */
function hostOrIPv4(key: string, v: unknown): string {
  const s = str(key, v, 253).trim().toLowerCase().replace(/\.$/, "");
  if (isIPv4(s)) return s;
  const labels = s.split(".");
  if (!s || !labels.every((l) => LABEL.test(l)))
    throw new ConfigError(key, `${show(v)}: expected a host name (FQDN) or a dotted IPv4 address`);
  return s;
}

/** CIDR like "10.0.0.0/8" or "192.168.1.7" (a /32), or IPv6 "fd00::/8". */
export function checkCidr(key: string, v: unknown): string {
  const s = str(key, v, 64).trim();
  const [addr, bits, extra] = s.split("/");
  if (extra !== undefined) throw new ConfigError(key, `${show(s)} is not a CIDR block like 10.0.0.0/8`);
  const v4 = isIPv4(addr!), v6 = !v4 && isIPv6(addr!);
  if (!v4 && !v6) throw new ConfigError(key, `${show(s)} is not a CIDR block like 10.0.0.0/8`);
  if (bits !== undefined) {
    const n = Number(bits);
    if (!/^\d+$/.test(bits) || n > (v4 ? 32 : 128)) throw new ConfigError(key, `${show(s)}: prefix length must be 0–${v4 ? 32 : 128}`);
  }
  return s;
}

function strList(key: string, v: unknown, max: number): string[] {
  if (!Array.isArray(v)) throw new ConfigError(key, `expected a list, got ${show(v)}`);
  if (v.length > max) throw new ConfigError(key, `${v.length} entries, at most ${max}`);
  return v.map((x, i) => str(`${key}[${i}]`, x));
}

// ---- sections -------------------------------------------------------------------------------------------

const KNOWN: Record<string, readonly string[]> = {
  gateway: ["name", "data_dir", "workers", "drain_grace_s", "log_cap_bytes"],
  proxy: ["port", "listen", "max_connections", "idle_timeout_s", "head_timeout_s", "handshake_timeout_s", "connect_timeout_s", "max_head_bytes"],
  cache: ["enabled", "port", "listen", "min_tls", "allowed_domains", "max_bytes", "rules", "stale_if_error_s", "origin_timeout_s", "negative_ttl_s"],
  patch: ["enabled", "volume", "min_volume_bytes", "allow_same_device", "client_networks", "agent_user_agents", "slice_bytes"],
  upstream_proxy: ["host", "port", "username", "password", "auth"],
  destinations: ["ports"],
  platform: ["domains", "pod", "probe_interval_s"],
  tls: ["upstream_ca", "ca", "ca_cert", "ca_chain", "ca_key"],
  admin: ["port", "listen", "tls", "token", "agent_check_port"],
  hosts: [],
  fleet: FLEET_KEYS,
};

function section(raw: Raw, name: string): Raw {
  const v = raw[name];
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw new ConfigError(name, `expected a table [${name}], got ${show(v)}`);
  if (name !== "hosts")
    for (const k of Object.keys(v))
      if (!KNOWN[name]!.includes(k)) throw new ConfigError(`${name}.${k}`, `unknown key; known keys: ${KNOWN[name]!.join(", ")}`);
  return v;
}

/** Take the raw value or the default. */
const pick = <T>(sec: Raw, k: string, d: T): unknown => (sec[k] === undefined ? d : sec[k]);

function listenAddr(key: string, v: unknown): string {
  const s = str(key, v, 64);
  if (!isIPv4(s) && !isIPv6(s) && s !== "localhost") throw new ConfigError(key, `expected an IP address to listen on, got ${show(s)}`);
  return s;
}

/**
 * Validate a raw config object (from TOML or JSON) over `base` (the embedded defaults unless given).
 * Sections present in `raw` replace keys of `base`; missing keys keep `base`'s values.
 */
export function parseConfig(raw: unknown, base: Config = DEFAULTS): Config {
  if (!isObj(raw)) throw new ConfigError("(root)", "expected a table of sections");
  for (const k of Object.keys(raw))
    if (!(k in KNOWN)) throw new ConfigError(k, `unknown section; known sections: ${Object.keys(KNOWN).join(", ")}`);

  const g = section(raw, "gateway");
  const gateway = {
    name: str("gateway.name", pick(g, "name", base.gateway.name), 100),
    data_dir: str("gateway.data_dir", pick(g, "data_dir", base.gateway.data_dir)),
    workers: int("gateway.workers", pick(g, "workers", base.gateway.workers), 0, 256),
    drain_grace_s: num("gateway.drain_grace_s", pick(g, "drain_grace_s", base.gateway.drain_grace_s), 0, 3600),
    log_cap_bytes: int("gateway.log_cap_bytes", pick(g, "log_cap_bytes", base.gateway.log_cap_bytes), 1024 * 1024, Number.MAX_SAFE_INTEGER),
  };
  if (!gateway.data_dir) throw new ConfigError("gateway.data_dir", "must not be empty");

  const p = section(raw, "proxy");
  const proxy = {
    port: checkPort("proxy.port", pick(p, "port", base.proxy.port)),
    listen: listenAddr("proxy.listen", pick(p, "listen", base.proxy.listen)),
    max_connections: int("proxy.max_connections", pick(p, "max_connections", base.proxy.max_connections), 1, 100_000),
    idle_timeout_s: num("proxy.idle_timeout_s", pick(p, "idle_timeout_s", base.proxy.idle_timeout_s), 1, 7 * 86400),
    head_timeout_s: num("proxy.head_timeout_s", pick(p, "head_timeout_s", base.proxy.head_timeout_s), 0.1, 600),
    handshake_timeout_s: num("proxy.handshake_timeout_s", pick(p, "handshake_timeout_s", base.proxy.handshake_timeout_s), 0.1, 600),
    connect_timeout_s: num("proxy.connect_timeout_s", pick(p, "connect_timeout_s", base.proxy.connect_timeout_s), 0.1, 600),
    max_head_bytes: int("proxy.max_head_bytes", pick(p, "max_head_bytes", base.proxy.max_head_bytes), 1024, 1024 * 1024),
  };

  const c = section(raw, "cache");
  const allowedRaw = pick(c, "allowed_domains", base.cache.allowed_domains);
  const allowed = strList("cache.allowed_domains", allowedRaw, MAX_ALLOWED_DOMAINS).map((d, i) =>
    normalizeDomain(`cache.allowed_domains[${i}]`, d),
  );
  // A TOML number (min_tls = 1.2) reads as its text; anything else goes to str() as is: String() of a table from
  // smol-toml (null prototype) threw a TypeError instead of a ConfigError (issue 12, test/fuzz/config.fuzz.test.ts).
  const minTlsRaw = pick(c, "min_tls", base.cache.min_tls);
  const minTls = str("cache.min_tls", typeof minTlsRaw === "number" ? String(minTlsRaw) : minTlsRaw);
  if (!(MIN_TLS_VERSIONS as readonly string[]).includes(minTls))
    throw new ConfigError("cache.min_tls", `expected one of ${MIN_TLS_VERSIONS.join(", ")}, got ${show(minTls)}`);
  const rulesRaw = pick(c, "rules", base.cache.rules);
  if (!Array.isArray(rulesRaw)) throw new ConfigError("cache.rules", `expected a list of { host, path, max_age_s }`);
  const rules = rulesRaw.map((r, i): ArtifactRule => {
    const k = `cache.rules[${i}]`;
    if (!isObj(r)) throw new ConfigError(k, "expected a table { host, path, max_age_s }");
    const path = str(`${k}.path`, r.path, 512);
    if (!path.startsWith("/")) throw new ConfigError(`${k}.path`, `${show(path)}: a path pattern starts with /, e.g. /manifests/*`);
    return {
      host: normalizeDomain(`${k}.host`, r.host),
      path,
      max_age_s: int(`${k}.max_age_s`, r.max_age_s, 0, 365 * 86400),
    };
  });
  const cache = {
    enabled: bool("cache.enabled", pick(c, "enabled", base.cache.enabled)),
    port: checkPort("cache.port", pick(c, "port", base.cache.port)),
    listen: listenAddr("cache.listen", pick(c, "listen", base.cache.listen)),
    min_tls: minTls as MinTls,
    allowed_domains: allowed,
    max_bytes: int("cache.max_bytes", pick(c, "max_bytes", base.cache.max_bytes), 0, Number.MAX_SAFE_INTEGER),
    rules,
    stale_if_error_s: int("cache.stale_if_error_s", pick(c, "stale_if_error_s", base.cache.stale_if_error_s), 0, 365 * 86_400),
    origin_timeout_s: num("cache.origin_timeout_s", pick(c, "origin_timeout_s", base.cache.origin_timeout_s), 0.1, 3600),
    negative_ttl_s: int("cache.negative_ttl_s", pick(c, "negative_ttl_s", base.cache.negative_ttl_s), 0, 86_400),
  };
  if (new Set(allowed).size !== allowed.length) {
    const dup = allowed.find((d, i) => allowed.indexOf(d) !== i);
    throw new ConfigError("cache.allowed_domains", `${show(dup)} is listed twice`);
  }
  if (cache.enabled && cache.port !== 0 && cache.port === proxy.port)
    throw new ConfigError("cache.port", `${cache.port} is already proxy.port; the two ports differ`);

  const pt = section(raw, "patch");
  const patch = {
    enabled: bool("patch.enabled", pick(pt, "enabled", base.patch.enabled)),
    volume: optStr("patch.volume", pick(pt, "volume", base.patch.volume)),
    min_volume_bytes: int("patch.min_volume_bytes", pick(pt, "min_volume_bytes", base.patch.min_volume_bytes), 0, Number.MAX_SAFE_INTEGER),
    allow_same_device: bool("patch.allow_same_device", pick(pt, "allow_same_device", base.patch.allow_same_device)),
    client_networks: strList("patch.client_networks", pick(pt, "client_networks", base.patch.client_networks), 256).map((n, i) =>
      checkCidr(`patch.client_networks[${i}]`, n),
    ),
    agent_user_agents: strList("patch.agent_user_agents", pick(pt, "agent_user_agents", base.patch.agent_user_agents), 64),
    slice_bytes: int("patch.slice_bytes", pick(pt, "slice_bytes", base.patch.slice_bytes), 64 * 1024, 64 * 1024 * 1024),
  };
  if (patch.enabled) {
    if (!cache.enabled) throw new ConfigError("patch.enabled", "patch mode builds on cache mode: set cache.enabled = true");
    if (!patch.volume) throw new ConfigError("patch.volume", "patch mode needs the secondary volume: set patch.volume");
    if (patch.client_networks.length === 0)
      throw new ConfigError("patch.client_networks", "patch mode needs the agents' networks (CIDR list), or it would be an open proxy");
  }

  let upstream_proxy: UpstreamProxy | null = base.upstream_proxy;
  if (raw.upstream_proxy !== undefined) {
    const u = section(raw, "upstream_proxy");
    if (u.host === undefined || u.host === "" || u.host === null) upstream_proxy = null;
    else {
      upstream_proxy = {
        host: hostOrIPv4("upstream_proxy.host", u.host),
        port: int("upstream_proxy.port", u.port ?? 3128, 1, 65535),
        username: optStr("upstream_proxy.username", u.username),
        password: optStr("upstream_proxy.password", u.password),
        auth: str("upstream_proxy.auth", u.auth ?? "basic") as UpstreamAuth,
      };
      if (!UPSTREAM_AUTH.includes(upstream_proxy.auth))
        throw new ConfigError("upstream_proxy.auth", `expected one of ${UPSTREAM_AUTH.join(", ")}, got ${show(u.auth)}`);
      if (upstream_proxy.auth === "ntlm" && !upstream_proxy.username)
        throw new ConfigError("upstream_proxy.auth", "NTLM needs upstream_proxy.username (DOMAIN\\user or user@domain) and upstream_proxy.password");
      if (upstream_proxy.auth === "basic" && upstream_proxy.username?.includes(":"))
        throw new ConfigError("upstream_proxy.username", "must not contain ':' (Basic authentication separates it from the password)");
      if (upstream_proxy.password && !upstream_proxy.username)
        throw new ConfigError("upstream_proxy.password", "a password needs upstream_proxy.username");
    }
  }

  const h = section(raw, "hosts");
  const hosts: Record<string, string> = raw.hosts === undefined ? { ...base.hosts } : {};
  if (raw.hosts !== undefined)
    for (const [name, ip] of Object.entries(h)) {
      const k = `hosts.${name}`;
      const n = normalizeDomainOrHost(k, name);
      const a = str(k, ip, 64);
      if (!isIPv4(a) && !isIPv6(a)) throw new ConfigError(k, `expected an IP address, got ${show(a)}`);
      hosts[n] = a;
    }

  const d = section(raw, "destinations");
  const portsRaw = pick(d, "ports", base.destinations.ports);
  if (!Array.isArray(portsRaw) || portsRaw.length === 0)
    throw new ConfigError("destinations.ports", "expected a non-empty list of ports, e.g. [443]");
  const destinations = { ports: portsRaw.map((x, i) => int(`destinations.ports[${i}]`, x, 1, 65535)) };

  const pl = section(raw, "platform");
  const platDomains = pick(pl, "domains", base.platform.domains);
  const platform = {
    domains: strList("platform.domains", platDomains, 64).map((x, i) => normalizeDomain(`platform.domains[${i}]`, x)),
    pod: normalizeDomain("platform.pod", pick(pl, "pod", base.platform.pod)),
    // values down to 1 s are accepted for tests; a day at most, so a dead link is noticed the same day; 0 turns the
    // probe off (the link is then judged by real traffic only: never Down) — for test gateways with no platform
    probe_interval_s: int("platform.probe_interval_s", pick(pl, "probe_interval_s", base.platform.probe_interval_s), 0, 86_400),
  };

  const t = section(raw, "tls");
  const caKind = str("tls.ca", pick(t, "ca", base.tls.ca));
  if (!["appliance", "common", "customer"].includes(caKind))
    throw new ConfigError("tls.ca", `expected appliance, common or customer, got ${show(caKind)}`);
  const tls = {
    upstream_ca: optStr("tls.upstream_ca", pick(t, "upstream_ca", base.tls.upstream_ca)),
    ca: caKind as Config["tls"]["ca"],
    ca_cert: optStr("tls.ca_cert", pick(t, "ca_cert", base.tls.ca_cert)),
    ca_chain: optStr("tls.ca_chain", pick(t, "ca_chain", base.tls.ca_chain)),
    ca_key: optStr("tls.ca_key", pick(t, "ca_key", base.tls.ca_key)),
  };
  if (tls.ca !== "appliance") {
    if (!tls.ca_cert) throw new ConfigError("tls.ca_cert", `the ${tls.ca} CA needs its certificate file (PEM)`);
    if (!tls.ca_key) throw new ConfigError("tls.ca_key", `the ${tls.ca} CA needs its private key file (PEM, no passphrase)`);
  }

  const a = section(raw, "admin");
  const admin = {
    port: checkPort("admin.port", pick(a, "port", base.admin.port)),
    listen: listenAddr("admin.listen", pick(a, "listen", base.admin.listen)),
    tls: bool("admin.tls", pick(a, "tls", base.admin.tls)),
    token: optStr("admin.token", pick(a, "token", base.admin.token)),
    agent_check_port: pick(a, "agent_check_port", base.admin.agent_check_port) === null ? null : checkPort("admin.agent_check_port", pick(a, "agent_check_port", base.admin.agent_check_port), false),
  };
  if (admin.token !== null && admin.token.length < 16)
    throw new ConfigError("admin.token", "at least 16 characters (it guards the whole appliance)");
  const ports = [
    ["proxy.port", proxy.port],
    ["cache.port", cache.enabled ? cache.port : 0],
  ] as const;
  for (const [k, v] of ports)
    if (v !== 0 && v === admin.port) throw new ConfigError("admin.port", `${v} is already ${k}`);
  for (const [k, v] of [...ports, ["admin.port", admin.port] as const])
    if (v !== 0 && v === admin.agent_check_port) throw new ConfigError("admin.agent_check_port", `${v} is already ${k}`);

  const fleet = parseFleet(section(raw, "fleet"), base.fleet ?? FLEET_DEFAULTS, admin.token);

  return deepFreeze({ gateway, proxy, cache, patch, upstream_proxy, hosts, destinations, platform, tls, admin, fleet });
}

/** [hosts] keys are host names; single-label names (e.g. "origin") are allowed there. */
function normalizeDomainOrHost(key: string, v: string): string {
  const d = v.toLowerCase().replace(/\.$/, "");
  if (!d.split(".").every((l) => LABEL.test(l))) throw new ConfigError(key, `${show(v)} is not a valid host name`);
  return d;
}

/** Merge a partial object (from the admin API) onto a config, section by section, then validate. */
export function mergeConfig(base: Config, partial: unknown): Config {
  if (!isObj(partial)) throw new ConfigError("(root)", "expected a JSON object in the config's shape");
  return parseConfig(partial, base);
}

/** A copy for display and diagnostics: secrets replaced. */
export function redactConfig(c: Config): Config {
  return {
    ...c,
    upstream_proxy: c.upstream_proxy && { ...c.upstream_proxy, password: c.upstream_proxy.password ? "(set)" : null },
    admin: { ...c.admin, token: c.admin.token ? "(set)" : null },
    fleet: c.fleet && { ...c.fleet, token: c.fleet.token ? "(set)" : null },
  };
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object") {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
