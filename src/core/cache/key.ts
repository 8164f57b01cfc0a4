/**
 * @module Cache keys (RFC 9111 §2, §4.1). The primary key is the method and the normalised target URI, with GET and
 * HEAD sharing one key so a HEAD is answered from a stored GET (RFC 9110 §9.3.2: same header section, no content).
 * The secondary key is the request's values of the fields the stored response's Vary names. `hashKey` turns a key
 * into the hex name the store uses for blobs and index rows. Pure: Web APIs only.
 */
import { ProxyError, printable } from "../errors";
import type { Headers } from "./freshness";

const DEFAULT_PORTS: Record<string, string> = { "http:": "80", "https:": "443" };
const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * RFC 3986 §6.2.2 / RFC 9110 §4.2.3: percent-encodings of unreserved characters are decoded, other escapes get
 * upper-case hex, so `%7e`, `%7E` and `~` give one key.
 */
function normalisePercent(s: string): string {
  return s.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(c) ? c : "%" + hex.toUpperCase();
  });
}

/**
 * Absolute URL → its key form: lower-case scheme and host, default port dropped, no fragment, `/` for an empty path.
 * The answers for the last few thousand URLs are kept (a pure function of the string): agents ask for the same
 * manifests again and again, and WHATWG parsing was ~5 % of a worker's sampled JavaScript per 1 KiB hit.
 */
export function normaliseUrl(url: string): string {
  const known = NORMALISED.get(url);
  if (known !== undefined) return known;
  const n = normaliseUncached(url);
  if (NORMALISED.size >= NORMALISED_MAX) NORMALISED.clear(); // bounded: a burst of one-off URLs cannot grow it
  NORMALISED.set(url, n);
  return n;
}
const NORMALISED = new Map<string, string>();
const NORMALISED_MAX = 4096;

function normaliseUncached(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch (cause) {
    throw new ProxyError("PX_BAD_REQUEST", "client", `not an absolute URL: ${printable(url)}`, { cause });
  }
  // WHATWG URL already lower-cases scheme and host and drops the default port of special schemes; be explicit for
  // the rest.
  const port = u.port === "" || DEFAULT_PORTS[u.protocol] === u.port ? "" : `:${u.port}`;
  const path = normalisePercent(u.pathname === "" ? "/" : u.pathname);
  const query = normalisePercent(u.search);
  return `${u.protocol}//${u.hostname.toLowerCase()}${port}${path}${query}`;
}

/**
 * RFC 9111 §2: the primary cache key is the method and target URI. GET and HEAD share the GET key ("HEAD served
 * from a stored GET"); any other method keeps its own name (methods are case-sensitive, RFC 9110 §9.1).
 */
export function primaryKey(method: string, url: string): string {
  const m = method === "HEAD" ? "GET" : method;
  return `${m} ${normaliseUrl(url)}`;
}

function fieldValues(h: Headers, name: string): string[] {
  const out: string[] = [];
  for (const [k, v] of h) if (k.toLowerCase() === name) out.push(v);
  return out;
}

/** The field names a Vary lists, lower-cased, deduplicated, sorted; null when it contains `*`. */
function varyFields(varyHeader: string | undefined): string[] | null {
  if (varyHeader === undefined) return [];
  const names = new Set<string>();
  for (const m of varyHeader.split(",")) {
    const n = m.trim().toLowerCase();
    if (n === "*") return null;
    if (n !== "") names.add(n);
  }
  return [...names].sort();
}

/**
 * RFC 9111 §4.1: the secondary key — for each field the response varies on, the request's value, normalised the ways
 * §4.1 allows (field lines combined, whitespace runs collapsed, no whitespace around list commas). An absent field
 * only matches an absent field, so it is written without a colon. "" for no Vary; null for `Vary: *`, which never
 * matches. `varyHeader` is the stored response's Vary (all lines joined with ", ").
 */
export function varyKey(varyHeader: string | undefined, reqHeaders: Headers): string | null {
  const names = varyFields(varyHeader);
  if (names === null) return null;
  const parts: string[] = [];
  for (const n of names) {
    const values = fieldValues(reqHeaders, n);
    if (values.length === 0) {
      parts.push(n);
      continue;
    }
    const v = values
      .join(",")
      .replace(/[ \t]+/g, " ")
      .replace(/ ?, ?/g, ",")
      .replace(/^[ ,]+|[ ,]+$/g, "");
    parts.push(`${n}:${v}`);
  }
  return parts.join("\n");
}

/**
 * RFC 9111 §4.1: does a new request select a stored response? The stored response's Vary fields must have the same
 * normalised values in the new request as in the request that produced it; `Vary: *` never matches.
 */
export function matchesVary(storedVary: string | undefined, storedReqHeaders: Headers, reqHeaders: Headers): boolean {
  const a = varyKey(storedVary, storedReqHeaders);
  return a !== null && a === varyKey(storedVary, reqHeaders);
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Hex SHA-256 of a key (UTF-8), via Web Crypto. */
export async function hashKey(key: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
  let s = "";
  for (const b of digest) s += HEX[b];
  return s;
}
