/**
 * @module Destination and client policy (DESIGN.md "Connection security", "Upstream"; STYLE §8, §9).
 *
 * `compilePolicy(config)` runs once per config (at start and on every reload, in each worker): it turns the
 * domain lists into one suffix map, the client networks into numbers / bigints, and the agent User-Agent
 * patterns into matchers. `decide()` is the hot path: one pass over the host's characters, then one map
 * lookup per label suffix, no regex and no parsing. Pure: no sockets, no disk, no clock, no DNS.
 *
 * The order in which `decide()` checks a CONNECT, and the rule each step answers with:
 *   1. IP literal (v4, v6, or a numeric form a resolver would read as one, e.g. `127.1`) → "deny-ip-literal"
 *   2. malformed or non-ASCII host name (IDNs must arrive in punycode)                  → "deny-bad-host"
 *   3. cache port while cache mode is off (a listener outliving a reload)                → "deny-cache-disabled"
 *   4. patch mode on the cache port: the client must be an agent (`decideClient`)      → "deny-client-network" | "deny-user-agent"
 *   5. domain allow-list (platform domains, cache.allowed_domains), except patch mode on the cache port → "deny-domain"
 *   6. destination port in destinations.ports                                           → "deny-port"
 *   7. allowed: "platform-domain" | "allowed-domain" | "patch-any", with `mappedIp` when the name is in [hosts]
 * After DNS the worker calls `decideAddress()`: a name that resolves to a non-public address is refused
 * ("deny-private-address") unless the admin mapped that name in [hosts].
 *
 * Domain matching: a domain matches itself and its subdomains on a label boundary (`qualys.com` matches
 * `a.qualys.com`, never `evilqualys.com` nor `qualys.com.evil.net`). When several listed domains match, the
 * most specific (longest) one wins; if the very same domain is both a platform domain and an allowed
 * domain, it counts as a platform domain. `platform.pod` is not added to the list: it lies inside the
 * platform domains by default, and a config that narrows `platform.domains` should not be widened by it.
 *
 * Actions: on the proxy port every allowed destination is a byte tunnel. On the cache port platform domains
 * are intercepted (TLS terminated, cacheable), allowed domains are tunnelled untouched (never cached, so
 * there is no reason to terminate them), and in patch mode every other name is intercepted ("patch-any").
 */
import type { Config } from "./config";
import { ConfigError, printable } from "./errors";
import type { ClientInfo, Target, Verdict } from "./types";

/** Every rule a verdict can carry: stable strings for logs, admin counters and tests (STYLE §9). */
export type PolicyRule =
  | "platform-domain"
  | "allowed-domain"
  | "patch-any"
  | "deny-ip-literal"
  | "deny-bad-host"
  | "deny-cache-disabled"
  | "deny-domain"
  | "deny-port"
  | "deny-private-address"
  | "deny-client-network"
  | "deny-user-agent";

export type PolicyVerdict = Verdict & { rule: PolicyRule };

export type DomainKind = "platform" | "allowed";

/** Why an address is not public; `null` from `classifyAddress` means public. */
export type AddressClass =
  | "invalid"
  | "unspecified"
  | "loopback"
  | "private"
  | "cgnat"
  | "link-local"
  | "unique-local"
  | "site-local"
  | "multicast"
  | "broadcast"
  | "documentation"
  | "benchmarking"
  | "reserved";

/** One compiled CIDR block. IPv4-mapped IPv6 blocks (::ffff:a.b.c.d/96+n) compile to IPv4. */
export type CompiledCidr =
  | { readonly v: 4; readonly base: number; readonly mask: number; readonly source: string }
  | { readonly v: 6; readonly base: bigint; readonly mask: bigint; readonly source: string };

export type CompiledNetworks = {
  readonly v4: readonly { readonly base: number; readonly mask: number }[];
  readonly v6: readonly { readonly base: bigint; readonly mask: bigint }[];
  /** the CIDR strings as configured, for reasons */
  readonly source: readonly string[];
};

/** Compiled and opaque: build it with `compilePolicy`, pass it back to the functions of this module. */
declare const POLICY: unique symbol;
export type Policy = { readonly [POLICY]: true };

type UaMatcher = (uaLower: string) => boolean;

type Compiled = {
  /** domain → kind; looked up once per label suffix of the host */
  domains: Map<string, DomainKind>;
  /** [hosts]: a Map, not the config's object, so a host named "constructor" is not "mapped" */
  hosts: Map<string, string>;
  ports: Set<number>;
  portsText: string;
  cacheEnabled: boolean;
  patchEnabled: boolean;
  clientNetworks: CompiledNetworks;
  agentPatterns: UaMatcher[];
  agentPatternsText: string;
};

const inner = (p: Policy) => p as unknown as Compiled;

// ---- compile ----------------------------------------------------------------------------------------------

/**
 * Build the policy for one config. Throws `ConfigError` for what `parseConfig` lets through but the policy
 * cannot use (an empty User-Agent pattern would admit every client in patch mode).
 */
export function compilePolicy(config: Config): Policy {
  const domains = new Map<string, DomainKind>();
  // Allowed first, platform second: the same domain in both lists counts as platform.
  for (const d of config.cache.allowed_domains) domains.set(normalizeListed(d), "allowed");
  for (const d of config.platform.domains) domains.set(normalizeListed(d), "platform");

  const hosts = new Map<string, string>();
  for (const [name, ip] of Object.entries(config.hosts)) hosts.set(normalizeListed(name), ip);

  const agentPatterns = config.patch.agent_user_agents.map((p, i) => compileUserAgent(p, `patch.agent_user_agents[${i}]`));
  const compiled: Compiled = {
    domains,
    hosts,
    ports: new Set(config.destinations.ports),
    portsText: config.destinations.ports.join(", "),
    cacheEnabled: config.cache.enabled,
    patchEnabled: config.patch.enabled,
    clientNetworks: compileNetworks(config.patch.client_networks, "patch.client_networks"),
    agentPatterns,
    agentPatternsText: listShort(config.patch.agent_user_agents.map((p) => JSON.stringify(p))),
  };
  return compiled as unknown as Policy;
}

const normalizeListed = (d: string) => d.toLowerCase().replace(/\.$/, "");

/**
 * An agent User-Agent pattern, matched case-insensitively:
 * - with `*`: a glob over the whole User-Agent, `*` standing for any run of characters (possibly none);
 *   every other character is literal (`.` is a dot, `?` is a question mark). `*` alone admits any client,
 *   even one that sends no User-Agent.
 * - without `*`: a plain substring anywhere in the User-Agent (`QualysAgent` matches `x QualysAgent/5 y`).
 * A missing User-Agent is matched as the empty string.
 */
export function compileUserAgent(pattern: string, key = "patch.agent_user_agents"): UaMatcher {
  const p = pattern.trim().toLowerCase();
  if (p === "") throw new ConfigError(key, "an empty User-Agent pattern would match every client; remove it or write e.g. QualysAgent");
  if (!p.includes("*")) return (ua) => ua.includes(p);
  const re = new RegExp(`^${p.split("*").map(escapeRegExp).join("[\\s\\S]*")}$`);
  return (ua) => re.test(ua);
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");

/** Compile one CIDR ("10.0.0.0/8", "192.168.1.7" = /32, "fd00::/8", "2001:db8::5" = /128). Host bits are masked off. */
export function compileCidr(cidr: string, key = "cidr"): CompiledCidr {
  const s = cidr.trim();
  const slash = s.indexOf("/");
  const addr = slash < 0 ? s : s.slice(0, slash);
  const bitsText = slash < 0 ? null : s.slice(slash + 1);
  const bad = () => new ConfigError(key, `${JSON.stringify(cidr)} is not a CIDR block like 10.0.0.0/8 or fd00::/8`);
  if (bitsText !== null && !/^\d{1,3}$/.test(bitsText)) throw bad();
  const v4 = parseIPv4(addr);
  if (v4 !== null) {
    const bits = bitsText === null ? 32 : Number(bitsText);
    if (bits > 32) throw new ConfigError(key, `${JSON.stringify(cidr)}: an IPv4 prefix length is 0–32`);
    const mask = maskV4(bits);
    return { v: 4, base: (v4 & mask) >>> 0, mask, source: s };
  }
  const w = parseIPv6Words(addr);
  if (w === null) throw bad();
  const bits = bitsText === null ? 128 : Number(bitsText);
  if (bits > 128) throw new ConfigError(key, `${JSON.stringify(cidr)}: an IPv6 prefix length is 0–128`);
  // ::ffff:a.b.c.d/96+n is an IPv4 block written the IPv6 way: clients are matched as IPv4 (see isInNetworks).
  const mapped = mappedV4(w);
  if (mapped !== null && bits >= 96) {
    const mask = maskV4(bits - 96);
    return { v: 4, base: (mapped & mask) >>> 0, mask, source: s };
  }
  const mask = maskV6(bits);
  return { v: 6, base: wordsToBigInt(w) & mask, mask, source: s };
}

export function compileNetworks(cidrs: readonly string[], key = "networks"): CompiledNetworks {
  const v4: { base: number; mask: number }[] = [];
  const v6: { base: bigint; mask: bigint }[] = [];
  cidrs.forEach((c, i) => {
    const n = compileCidr(c, `${key}[${i}]`);
    if (n.v === 4) v4.push({ base: n.base, mask: n.mask });
    else v6.push({ base: n.base, mask: n.mask });
  });
  return { v4, v6, source: [...cidrs] };
}

const maskV4 = (bits: number) => (bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0);
const ALL128 = (1n << 128n) - 1n;
const maskV6 = (bits: number) => (bits === 0 ? 0n : ALL128 ^ ((1n << BigInt(128 - bits)) - 1n));

/**
 * Is `ip` inside one of the networks? An IPv4 client, also in its IPv4-mapped IPv6 form
 * (`::ffff:10.1.2.3`, what a dual-stack listener reports), matches only IPv4 networks; `::/0` does not
 * admit IPv4 clients, `0.0.0.0/0` admits every IPv4 client. A zone id (`fe80::1%eth0`) is ignored.
 */
export function isInNetworks(ip: string, networks: CompiledNetworks): boolean {
  let v4 = parseIPv4(ip);
  if (v4 === null) {
    const w = parseIPv6Words(ip);
    if (w === null) return false;
    v4 = mappedV4(w);
    if (v4 === null) {
      if (networks.v6.length === 0) return false;
      const n = wordsToBigInt(w);
      for (const net of networks.v6) if ((n & net.mask) === net.base) return true;
      return false;
    }
  }
  for (const net of networks.v4) if (((v4 & net.mask) >>> 0) === net.base) return true;
  return false;
}

// ---- addresses ----------------------------------------------------------------------------------------------

/** Dotted-quad IPv4 → unsigned 32-bit number, or null. Strict: no leading zeros (octal?), no shorthand. */
export function parseIPv4(s: string): number | null {
  const n = s.length;
  if (n < 7 || n > 15) return null;
  let acc = 0, part = 0, digits = 0, dots = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return null;
      acc = acc * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return null; // "01": leading zero
      part = part * 10 + (c - 48);
      if (part > 255) return null;
      digits++;
    } else return null;
  }
  if (dots !== 3 || digits === 0) return null;
  return acc * 256 + part;
}

/** IPv6 text (RFC 4291 §2.2, with `::`, an embedded IPv4 tail, optional `[ ]` and `%zone`) → 8 words, or null. */
export function parseIPv6Words(text: string): number[] | null {
  let s = text;
  if (s.charCodeAt(0) === 91 && s.charCodeAt(s.length - 1) === 93) s = s.slice(1, -1);
  const pct = s.indexOf("%");
  if (pct >= 0) s = s.slice(0, pct);
  if (s.length < 2 || s.length > 45) return null;
  const dbl = s.indexOf("::");
  if (dbl >= 0 && s.indexOf("::", dbl + 1) >= 0) return null;
  const head = dbl >= 0 ? s.slice(0, dbl) : s;
  const tail = dbl >= 0 ? s.slice(dbl + 2) : "";
  const h = head === "" ? [] : parseGroups(head, dbl < 0);
  const t = tail === "" ? [] : parseGroups(tail, true);
  if (h === null || t === null) return null;
  if (dbl < 0) return h.length === 8 ? h : null;
  if (h.length + t.length > 7) return null;
  const words = h.slice();
  for (let i = h.length + t.length; i < 8; i++) words.push(0);
  for (const x of t) words.push(x);
  return words;
}

function parseGroups(s: string, v4TailAllowed: boolean): number[] | null {
  const parts = s.split(":");
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (i === parts.length - 1 && v4TailAllowed && p.includes(".")) {
      const v4 = parseIPv4(p);
      if (v4 === null) return null;
      out.push(v4 >>> 16, v4 & 0xffff);
      continue;
    }
    if (p.length < 1 || p.length > 4) return null;
    let x = 0;
    for (let j = 0; j < p.length; j++) {
      const d = hexDigit(p.charCodeAt(j));
      if (d < 0) return null;
      x = x * 16 + d;
    }
    out.push(x);
  }
  return out;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

const wordsToBigInt = (w: number[]) => {
  let n = 0n;
  for (const x of w) n = (n << 16n) | BigInt(x);
  return n;
};

/** ::ffff:a.b.c.d → a.b.c.d as a number; anything else → null. */
function mappedV4(w: number[]): number | null {
  return w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff ? w[6]! * 65536 + w[7]! : null;
}

// IANA IPv4 special-purpose registry (RFC 6890 and successors): everything here is refused after DNS.
const V4_SPECIAL: readonly (readonly [base: number, bits: number, cls: AddressClass])[] = (
  [
    ["0.0.0.0", 32, "unspecified"],
    ["0.0.0.0", 8, "reserved"], // "this network" (RFC 791); Linux connects 0.x to the host itself
    ["10.0.0.0", 8, "private"],
    ["100.64.0.0", 10, "cgnat"], // RFC 6598 shared address space
    ["127.0.0.0", 8, "loopback"],
    ["169.254.0.0", 16, "link-local"], // also where cloud metadata services live (169.254.169.254)
    ["172.16.0.0", 12, "private"],
    ["192.0.0.0", 24, "reserved"], // IETF protocol assignments
    ["192.0.2.0", 24, "documentation"],
    ["192.88.99.0", 24, "reserved"], // deprecated 6to4 relay anycast (RFC 7526)
    ["192.168.0.0", 16, "private"],
    ["198.18.0.0", 15, "benchmarking"],
    ["198.51.100.0", 24, "documentation"],
    ["203.0.113.0", 24, "documentation"],
    ["224.0.0.0", 4, "multicast"],
    ["255.255.255.255", 32, "broadcast"],
    ["240.0.0.0", 4, "reserved"],
  ] as const
).map(([a, bits, cls]) => {
  const mask = maskV4(bits);
  return [(parseIPv4(a)! & mask) >>> 0, mask, cls] as const;
});

function classifyV4(ip: number): AddressClass | null {
  for (const [base, mask, cls] of V4_SPECIAL) if (((ip & mask) >>> 0) === base) return cls;
  return null;
}

function classifyV6(w: number[]): AddressClass | null {
  const w0 = w[0]!;
  const v4 = mappedV4(w);
  if (v4 !== null) return classifyV4(v4);
  // 64:ff9b::/96 NAT64 (RFC 6052) and 2002::/16 6to4 (RFC 3056) carry an IPv4 address: judge that one.
  if (w0 === 0x64 && w[1] === 0xff9b && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0) return classifyV4(w[6]! * 65536 + w[7]!);
  if (w0 === 0x2002) return classifyV4(w[1]! * 65536 + w[2]!);
  // Only 2000::/3 is global unicast; name the rest for the reason.
  if ((w0 & 0xe000) !== 0x2000) {
    if (w.every((x, i) => x === 0 || (i === 7 && x === 1))) return w[7] === 1 ? "loopback" : "unspecified";
    if ((w0 & 0xfe00) === 0xfc00) return "unique-local"; // fc00::/7
    if ((w0 & 0xffc0) === 0xfe80) return "link-local"; // fe80::/10
    if ((w0 & 0xffc0) === 0xfec0) return "site-local"; // fec0::/10, deprecated by RFC 3879
    if ((w0 & 0xff00) === 0xff00) return "multicast"; // ff00::/8
    return "reserved"; // ::/8 (incl. IPv4-compatible), 100::/64 discard, 64:ff9b:1::/48 local NAT64, 5f00::/16 …
  }
  if (w0 === 0x2001 && w[1]! < 0x200) return "reserved"; // 2001::/23 IETF protocol assignments, incl. Teredo 2001::/32
  if (w0 === 0x2001 && w[1] === 0xdb8) return "documentation"; // 2001:db8::/32
  if (w0 === 0x3fff && w[1]! < 0x1000) return "documentation"; // 3fff::/20 (RFC 9637)
  return null;
}

/**
 * Why an address is not a public destination, or null when it is. Covers IPv4 (loopback, RFC 1918,
 * CGNAT, link-local, unspecified, multicast, broadcast, documentation, benchmarking, reserved) and IPv6
 * (::, ::1, unique-local fc00::/7, link-local fe80::/10, site-local, multicast, everything outside
 * 2000::/3), judging IPv4-mapped (::ffff:127.0.0.1), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) forms by
 * the IPv4 address inside. Text that is not an IP address is "invalid".
 */
export function classifyAddress(ip: string): AddressClass | null {
  const v4 = parseIPv4(ip);
  if (v4 !== null) return classifyV4(v4);
  const w = parseIPv6Words(ip);
  return w === null ? "invalid" : classifyV6(w);
}

export function isPublicAddress(ip: string): boolean {
  return classifyAddress(ip) === null;
}

// ---- host names -------------------------------------------------------------------------------------------

const HOST_BAD = 0, HOST_NON_ASCII = 1, HOST_NUMERIC = 2;
type HostProblem = typeof HOST_BAD | typeof HOST_NON_ASCII | typeof HOST_NUMERIC;

/**
 * Lower-case the host and drop one trailing dot, in one pass over its characters, or say what is wrong.
 * Accepts letters, digits, `-`, `_` (seen in real CDN names), labels of 1–63 characters, 253 in all.
 * A last label that is all digits or 0x-hex is an address in disguise: resolvers read `127.1`,
 * `2130706433` and `0x7f000001` as 127.0.0.1, and no top-level domain is numeric (RFC 3696 §2).
 */
function normalizeHost(raw: string): string | HostProblem {
  let n = raw.length;
  if (n > 0 && raw.charCodeAt(n - 1) === 46) n--;
  if (n === 0 || n > 253) return HOST_BAD;
  let upper = false, labelLen = 0, labelStart = 0;
  for (let i = 0; i < n; i++) {
    const c = raw.charCodeAt(i);
    if (c === 46) {
      if (labelLen === 0) return HOST_BAD;
      labelLen = 0;
      labelStart = i + 1;
      continue;
    }
    if (c > 127) return HOST_NON_ASCII;
    if (c >= 65 && c <= 90) upper = true;
    else if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95)) return HOST_BAD;
    if (++labelLen > 63) return HOST_BAD;
  }
  if (labelLen === 0) return HOST_BAD;
  if (isNumericLabel(raw, labelStart, n)) return HOST_NUMERIC;
  const h = n === raw.length ? raw : raw.slice(0, n);
  return upper ? h.toLowerCase() : h;
}

function isNumericLabel(s: string, from: number, to: number): boolean {
  let i = from;
  let hex = false;
  if (to - from > 2 && s.charCodeAt(i) === 48 && (s.charCodeAt(i + 1) | 0x20) === 120) {
    hex = true;
    i += 2;
  }
  for (; i < to; i++) {
    const c = s.charCodeAt(i);
    if (hex ? hexDigit(c) < 0 : c < 48 || c > 57) return false;
  }
  return true;
}

/** The most specific listed domain the (already normalised) host falls under, walking its label suffixes. */
function lookupDomain(c: Compiled, host: string): DomainKind | null {
  let i = 0;
  for (;;) {
    const kind = c.domains.get(i === 0 ? host : host.slice(i));
    if (kind !== undefined) return kind;
    const dot = host.indexOf(".", i);
    if (dot < 0) return null;
    i = dot + 1;
  }
}

/** Which list a host falls under: case-insensitive, trailing dot tolerated; null for anything else (or non-ASCII). */
export function matchDomain(policy: Policy, host: string): DomainKind | null {
  const h = normalizeHost(host);
  return typeof h === "string" ? lookupDomain(inner(policy), h) : null;
}

// ---- decisions ----------------------------------------------------------------------------------------------

// The common verdicts are shared and frozen: the hot path allocates only when it attaches a mappedIp.
const V_PLATFORM_TUNNEL: PolicyVerdict = Object.freeze({ action: "tunnel", rule: "platform-domain" });
const V_PLATFORM_INTERCEPT: PolicyVerdict = Object.freeze({ action: "intercept", rule: "platform-domain", cacheable: true });
const V_ALLOWED_TUNNEL: PolicyVerdict = Object.freeze({ action: "tunnel", rule: "allowed-domain" });
const V_PATCH_ANY: PolicyVerdict = Object.freeze({ action: "intercept", rule: "patch-any", cacheable: true });

const deny = (rule: PolicyRule, reason: string): PolicyVerdict => ({ action: "deny", rule, reason });

/** host:port as a person would type it, escaped and truncated since it comes from the peer (STYLE §6). */
function authority(host: string, port: number): string {
  const h = printable(host, 253);
  return host.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/**
 * Decide a CONNECT (see the module header for the order of checks). Never resolves DNS: when the verdict
 * is not "deny", the worker dials `mappedIp` if set, else resolves the name and calls `decideAddress`.
 * In patch mode on the cache port the client is checked here too (`decideClient`), so a missed early
 * check can never make the gateway an open proxy.
 */
export function decide(policy: Policy, target: Target, client: ClientInfo): PolicyVerdict {
  const c = inner(policy);
  const port = target.port;
  // A ':' can only be an IPv6 literal (Target hosts carry no port); anything else with one is malformed.
  if (target.isIp || (target.host.includes(":") && parseIPv6Words(target.host) !== null))
    return deny(
      "deny-ip-literal",
      `CONNECT to ${authority(target.host, port)} denied: IP addresses are refused; connect by host name (an admin can map a name to an address in [hosts])`,
    );
  const host = normalizeHost(target.host);
  if (typeof host !== "string") {
    const at = authority(target.host, port);
    if (host === HOST_NUMERIC)
      return deny("deny-ip-literal", `CONNECT to ${at} denied: a numeric host is an IP address in disguise; connect by host name`);
    if (host === HOST_NON_ASCII)
      return deny("deny-bad-host", `CONNECT to ${at} denied: host names must be ASCII; write an internationalised name in punycode (xn--…)`);
    return deny("deny-bad-host", `CONNECT to ${at} denied: not a valid host name (letters, digits, '-', '_' in dot-separated labels)`);
  }

  const onCache = client.port === "cache";
  if (onCache && !c.cacheEnabled)
    return deny("deny-cache-disabled", `CONNECT to ${authority(host, port)} denied: cache mode is off (cache.enabled = false); use the proxy port`);
  const patchAny = onCache && c.patchEnabled;
  if (patchAny) {
    const who = decideClient(policy, client);
    if (who !== null) return who;
  }

  const kind = lookupDomain(c, host);
  if (kind === null && !patchAny)
    return deny(
      "deny-domain",
      `CONNECT to ${authority(host, port)} denied: not an allowed domain (the platform's domains, or one of cache.allowed_domains)`,
    );
  if (!c.ports.has(port))
    return deny(
      "deny-port",
      `CONNECT to ${authority(host, port)} denied: port ${port} is not an allowed destination port (allowed: ${c.portsText})`,
    );

  const v =
    kind === "platform" ? (onCache ? V_PLATFORM_INTERCEPT : V_PLATFORM_TUNNEL) : kind === "allowed" ? V_ALLOWED_TUNNEL : V_PATCH_ANY;
  if (c.hosts.size === 0) return v;
  const mappedIp = c.hosts.get(host);
  return mappedIp === undefined ? v : { ...v, mappedIp };
}

/**
 * [hosts]: the address the admin mapped `host` to, or undefined. A Map, never the config's plain object: a host
 * named "constructor" or "__proto__" must not find Object's own properties (issue 12, defect 8).
 */
export function mappedAddress(policy: Policy, host: string): string | undefined {
  const c = inner(policy);
  return c.hosts.size === 0 ? undefined : c.hosts.get(normalizeListed(host));
}

/**
 * After DNS: refuse a name that resolved to a non-public address (see `classifyAddress`), unless the admin
 * mapped the name in [hosts] (then private addresses are intended). null = fine to dial.
 */
export function decideAddress(policy: Policy, target: Target, ip: string): PolicyVerdict | null {
  const host = normalizeHost(target.host);
  if (typeof host === "string" && inner(policy).hosts.has(host)) return null;
  const cls = classifyAddress(ip);
  if (cls === null) return null;
  const at = authority(target.host, target.port);
  const what = cls === "invalid" ? "not an IP address" : `${/^[aeiu]/.test(cls) ? "an" : "a"} ${cls} address`;
  return deny(
    "deny-private-address",
    `CONNECT to ${at} denied: the name resolves to ${printable(ip, 64)}, ${what}; map the name in [hosts] if this destination is intended`,
  );
}

/**
 * Who may use the cache port in patch mode (DESIGN.md: "only agents may connect"): the client's IP must be
 * in patch.client_networks, and when patch.agent_user_agents is not empty its User-Agent must match one of
 * them (see `compileUserAgent`). null = admitted. The proxy port, and the cache port outside patch mode,
 * always admit (their destinations are restricted instead).
 */
export function decideClient(policy: Policy, client: ClientInfo): PolicyVerdict | null {
  const c = inner(policy);
  if (client.port !== "cache" || !c.patchEnabled) return null;
  if (!isInNetworks(client.ip, c.clientNetworks))
    return deny(
      "deny-client-network",
      `client ${printable(client.ip, 64)} denied on the cache port: patch mode admits only patch.client_networks (${listShort(c.clientNetworks.source)})`,
    );
  if (c.agentPatterns.length > 0) {
    const ua = client.userAgent === undefined ? "" : client.userAgent.toLowerCase();
    for (const m of c.agentPatterns) if (m(ua)) return null;
    return deny(
      "deny-user-agent",
      `client ${printable(client.ip, 64)} denied on the cache port: User-Agent ${client.userAgent === undefined ? "(none)" : `"${printable(client.userAgent, 80)}"`} matches none of patch.agent_user_agents (${c.agentPatternsText})`,
    );
  }
  return null;
}

function listShort(xs: readonly string[], max = 5): string {
  return xs.length <= max ? xs.join(", ") : `${xs.slice(0, max).join(", ")}, … ${xs.length - max} more`;
}
