/**
 * @module What a parsed request head asks the proxy for: a tunnel (`CONNECT host:port`, RFC 9110 §9.3.6),
 * a forward-proxied `http://` request (absolute-form, RFC 9112 §3.2.2, only where enabled), or the load
 * balancer's `GET /healthz` sent to the port directly. Everything else is refused with a reason a person
 * can act on. Hosts come out normalised (lower case, no trailing dot, IPv6 without brackets in RFC 5952
 * form) so policy matching never sees two spellings of one name.
 */
import { ProxyError, printable } from "./errors";
import type { Target } from "./types";
import type { RequestHead } from "./http1/head";

export type AbsoluteUrl = { scheme: "http"; host: string; port: number; path: string };

export type Request =
  | { kind: "connect"; target: Target }
  | { kind: "absolute"; target: Target; url: AbsoluteUrl }
  | { kind: "health" };

const HEALTH_PATH = "/healthz";
const SCHEME = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//;
const DIGITS = /^[0-9]{1,5}$/;
const IPV4 = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/;
/** RFC 1123 host name: labels of 1–63 letters, digits and inner hyphens; at most 253 chars in all. */
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;
/** A last label a resolver would read as a number ("127.1", "2130706433", "0x7f.1"): see parseHost. */
const NUMERIC_LABEL = /^(?:[0-9]+|0x[0-9a-f]*)$/;

export function toRequest(head: RequestHead, opts: { allowAbsolute: boolean }): Request {
  const { method, target } = head;
  // RFC 9110 §9.1: methods are case-sensitive, so "connect" is an unknown method, not CONNECT.
  if (method === "CONNECT") return { kind: "connect", target: parseAuthority(target) };

  if (target.charCodeAt(0) === 47 /* "/" */) {
    const q = target.indexOf("?");
    const path = q === -1 ? target : target.slice(0, q);
    if (path === HEALTH_PATH && (method === "GET" || method === "HEAD")) return { kind: "health" };
    throw new ProxyError("PX_METHOD_NOT_ALLOWED", "client", "this is a proxy: send CONNECT host:port");
  }

  const m = SCHEME.exec(target);
  if (m === null) {
    throw new ProxyError(
      "PX_METHOD_NOT_ALLOWED",
      "client",
      `${printable(method)} ${printable(target)} is not supported: this is a proxy, send CONNECT host:port`,
    );
  }
  const scheme = m[1].toLowerCase();
  if (scheme === "https") {
    throw new ProxyError("PX_BAD_REQUEST", "client", `use CONNECT for https: got ${printable(method)} ${printable(target)}`);
  }
  if (scheme !== "http") {
    throw new ProxyError("PX_BAD_REQUEST", "client", `unsupported scheme ${printable(scheme)}: only CONNECT, or http:// where enabled`);
  }
  if (!opts.allowAbsolute) {
    throw new ProxyError(
      "PX_METHOD_NOT_ALLOWED",
      "client",
      `absolute-form http:// requests are not accepted on this port: send CONNECT host:port (got ${printable(target)})`,
    );
  }
  return parseAbsolute(target, m[0].length);
}

/** `http://authority[/path][?query]`, RFC 9112 §3.2.2. No fragment, no userinfo. */
function parseAbsolute(target: string, at: number): Request {
  let slash = at;
  while (slash < target.length) {
    const c = target.charCodeAt(slash);
    if (c === 47 /* / */ || c === 63 /* ? */) break;
    slash++;
  }
  const authority = target.slice(at, slash);
  if (target.includes("#")) {
    throw new ProxyError("PX_BAD_REQUEST", "client", `a request target has no fragment: "${printable(target)}"`);
  }
  const t = parseAuthority(authority, 80);
  let path = target.slice(slash);
  if (path === "") path = "/";
  else if (path.charCodeAt(0) === 63 /* ? */) path = `/${path}`;
  return { kind: "absolute", target: t, url: { scheme: "http", host: t.host, port: t.port, path } };
}

/**
 * `host:port` (RFC 9110 §9.3.6 authority-form) → Target. `defaultPort` makes the port optional (absolute-form);
 * without it a missing port is an error, as CONNECT requires one.
 */
export function parseAuthority(s: string, defaultPort?: number): Target {
  if (s === "") throw badAuthority(s, "empty authority, expected host:port");
  if (s.includes("/")) throw badAuthority(s, "expected host:port, not a URL or a path");
  if (s.includes("@")) {
    // RFC 9110 §4.2.4: userinfo is deprecated in http(s) URIs; a proxy seeing it is being probed or misused.
    // The message echoes only what follows the "@": the userinfo may be a password, and refusals are logged.
    throw badAuthority(s.slice(s.lastIndexOf("@") + 1), "userinfo (user@) is not allowed, expected host:port");
  }
  let hostPart: string;
  let portPart: string | undefined;
  if (s.charCodeAt(0) === 91 /* [ */) {
    const close = s.indexOf("]");
    if (close === -1) throw badAuthority(s, "unterminated [IPv6] literal");
    hostPart = s.slice(1, close);
    const rest = s.slice(close + 1);
    if (rest !== "") {
      if (rest.charCodeAt(0) !== 58 /* : */) throw badAuthority(s, "expected :port after the ]");
      portPart = rest.slice(1);
    }
    const ip = parseIpv6(hostPart);
    if (ip === null) throw badAuthority(s, "not a valid IPv6 address inside [ ]");
    return { host: ip, port: parsePort(s, portPart, defaultPort), isIp: true };
  }
  const colon = s.lastIndexOf(":");
  if (colon === -1) {
    hostPart = s;
  } else {
    hostPart = s.slice(0, colon);
    portPart = s.slice(colon + 1);
    if (hostPart.includes(":")) throw badAuthority(s, "IPv6 literals need brackets: [addr]:port");
  }
  const port = parsePort(s, portPart, defaultPort);
  return parseHost(s, hostPart, port);
}

function parsePort(s: string, p: string | undefined, defaultPort: number | undefined): number {
  if (p === undefined) {
    if (defaultPort === undefined) throw badAuthority(s, "missing port, expected host:port");
    return defaultPort;
  }
  if (!DIGITS.test(p)) throw badAuthority(s, p === "" ? "empty port" : "port must be 1-65535");
  const n = Number(p);
  if (n < 1 || n > 65535) throw badAuthority(s, "port must be 1-65535");
  return n;
}

function parseHost(s: string, raw: string, port: number): Target {
  // Case-insensitive on purpose, so upper-case names pass before lower-casing (one regex on the hot path).
  if (!DNS_NAME.test(raw)) return parseOddHost(s, raw, port);
  const host = raw.toLowerCase();
  // WHATWG URL and inet_aton read "127.1", "2130706433" or "0x7f.0.0.1" as IPv4 addresses; a resolver
  // that does the same would dial loopback behind the policy's back. No real TLD is numeric (RFC 3696 §2).
  if (NUMERIC_LABEL.test(host.slice(host.lastIndexOf(".") + 1))) {
    if (IPV4.test(host)) return { host, port, isIp: true };
    throw badAuthority(s, "looks like an IP address but is not a dotted quad a.b.c.d (no leading zeros)");
  }
  return { host, port, isIp: false };
}

/** The slow path: a trailing dot, or a name that breaks a rule (then say which). */
function parseOddHost(s: string, raw: string, port: number): Target {
  for (let i = 0; i < raw.length; i++) {
    if (raw.charCodeAt(i) > 0x7f) throw badAuthority(s, "non-ASCII host name: use its punycode (xn--) form");
  }
  if (raw.endsWith(".") && raw.length > 1 && DNS_NAME.test(raw.slice(0, -1))) return parseHost(s, raw.slice(0, -1), port);
  if (raw === "" || raw === ".") throw badAuthority(s, "empty host");
  if (raw.length > 253) throw badAuthority(s, "host name longer than 253 characters");
  throw badAuthority(s, "not a valid host name (labels of a-z, 0-9, '-', 1-63 long)");
}

/** RFC 4291 §2.2 text → RFC 5952 canonical text, or null. No zone ids (they mean nothing to a proxy). */
function parseIpv6(s: string): string | null {
  if (s.length < 2 || s.length > 45) return null;
  const groups: number[] = [];
  let gap = -1;
  const parts = s.toLowerCase().split(":");
  let i = 0;
  // "::" at the start or end shows up as two empty parts; a lone ":" there is an error.
  if (parts[0] === "") {
    if (parts[1] !== "") return null;
    i = 1;
  }
  if (parts[parts.length - 1] === "" && parts[parts.length - 2] !== "") return null;
  for (; i < parts.length; i++) {
    const p = parts[i];
    if (p === "") {
      if (gap !== -1) {
        // the second empty part of a trailing "::"
        if (i === parts.length - 1 && gap === groups.length && parts[i - 1] === "") continue;
        return null;
      }
      gap = groups.length;
      continue;
    }
    if (i === parts.length - 1 && p.includes(".")) {
      const m = IPV4.exec(p);
      if (m === null) return null;
      groups.push((Number(m[1]) << 8) | Number(m[2]), (Number(m[3]) << 8) | Number(m[4]));
      continue;
    }
    if (!/^[0-9a-f]{1,4}$/.test(p)) return null;
    groups.push(parseInt(p, 16));
  }
  if (gap === -1 ? groups.length !== 8 : groups.length > 7) return null;
  if (gap !== -1) groups.splice(gap, 0, ...new Array<number>(8 - groups.length).fill(0));
  return formatIpv6(groups);
}

function formatIpv6(g: number[]): string {
  // RFC 5952 §5: IPv4-mapped addresses keep the dotted tail.
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${g[6] >> 8}.${g[6] & 255}.${g[7] >> 8}.${g[7] & 255}`;
  }
  // RFC 5952 §4.2: compress the longest run of two or more zero groups, the first one on a tie.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best === -1) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

function badAuthority(s: string, why: string): ProxyError {
  return new ProxyError("PX_BAD_AUTHORITY", "client", `${why}: "${printable(s)}"`);
}
