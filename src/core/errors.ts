/**
 * @module Errors as values with a stable code and a side. Only `statusFor` maps a code to an HTTP status.
 * (Shape after undici's `lib/core/errors.js` and pingora's `ErrorSource`.)
 */

export type ErrorSide = "client" | "upstream" | "internal";
/** Every code a ProxyError can carry: a closed union, so a new one is added here, with its status if it is special. */
export const ERROR_CODES = [
  // the agent's side
  "PX_BAD_REQUEST", "PX_BAD_REQUEST_LINE", "PX_BAD_HEADER", "PX_BAD_AUTHORITY", "PX_BAD_HOST", "PX_BAD_BODY",
  "PX_BAD_CLIENT_HELLO", "PX_NOT_TLS", "PX_SNI_MISMATCH", "PX_METHOD_NOT_ALLOWED", "PX_HEAD_TIMEOUT", "PX_HEAD_TOO_LARGE",
  "PX_POLICY_DENY", "PX_CLIENT_DENY", "PX_FLEET_DENY", "PX_MISDIRECTED", "PX_NOT_IMPLEMENTED", "PX_ONLY_IF_CACHED", "PX_NOT_FOUND",
  "PX_RANGE_NOT_SATISFIABLE",
  // the appliance's state
  "PX_OVERLOADED", "PX_DRAINING", "PX_MAINTENANCE", "PX_PLATFORM_DOWN",
  // origins and the upstream proxy
  "PX_UPSTREAM_UNREACHABLE", "PX_UPSTREAM_REFUSED", "PX_UPSTREAM_PROXY", "PX_UPSTREAM_TIMEOUT", "PX_UPSTREAM_TLS",
  "PX_UPSTREAM_CLOSED", "PX_UPSTREAM_BAD_RESPONSE", "PX_BAD_STATUS_LINE", "PX_BAD_RESPONSE_HEADER",
  "PX_RESPONSE_HEAD_TOO_LARGE", "PX_DNS",
  // fills and the store
  "PX_FILL_FAILED", "PX_FILL_STALE", "PX_FILL_IDLE", "PX_STORE_CLOSED", "PX_STORE_SHORT", "PX_STORE_SCHEMA",
  "PX_STORE_CORRUPT",
  // certificates
  "PX_CA", "PX_CA_INVALID", "PX_CA_VALIDITY", "PX_CA_NOT_YET_VALID", "PX_CA_NAME", "PX_CA_EXPIRED", "PX_BAD_SERIAL",
  "PX_CA_MSI_UNAVAILABLE", // GET /ca.msi when the package cannot be built (no wixl): 503 with the package to install
  // our own bugs
  "PX_BAD_OUTGOING_HEAD", "PX_INTERNAL",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class ProxyError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly side: ErrorSide,
    msg: string,
    o?: ErrorOptions,
  ) {
    super(msg, o);
    this.name = "ProxyError";
  }
}

/** A configuration value that breaks a rule; `key` is the dotted TOML path ("proxy.port"). */
export class ConfigError extends Error {
  constructor(
    readonly key: string,
    msg: string,
  ) {
    super(`${key}: ${msg}`);
    this.name = "ConfigError";
  }
}

const SPECIAL: Partial<Record<ErrorCode, number>> = {
  PX_BAD_REQUEST: 400,
  PX_BAD_REQUEST_LINE: 400,
  PX_BAD_HEADER: 400,
  PX_BAD_AUTHORITY: 400,
  PX_METHOD_NOT_ALLOWED: 405,
  PX_HEAD_TIMEOUT: 408,
  PX_HEAD_TOO_LARGE: 431,
  PX_POLICY_DENY: 403,
  PX_CLIENT_DENY: 403,
  PX_FLEET_DENY: 403, // a peer cache request (issue 14 share_cache) from an address or with a token that is not the fleet's
  PX_OVERLOADED: 503,
  PX_DRAINING: 503,
  PX_CA_MSI_UNAVAILABLE: 503,
  PX_MAINTENANCE: 503,
  PX_PLATFORM_DOWN: 503,
  PX_UPSTREAM_UNREACHABLE: 502,
  PX_UPSTREAM_REFUSED: 502,
  PX_UPSTREAM_PROXY: 502,
  PX_UPSTREAM_TIMEOUT: 504,
  PX_FILL_IDLE: 504, // RFC 9110 §15.6.5: the origin behind the fill gave no timely answer (cache.origin_timeout_s)
  PX_DNS: 502,
  PX_NOT_FOUND: 404,
  PX_MISDIRECTED: 421,
  PX_NOT_IMPLEMENTED: 501,
  PX_ONLY_IF_CACHED: 504,
  PX_RANGE_NOT_SATISFIABLE: 416,
};

export const statusFor = (e: ProxyError): number =>
  SPECIAL[e.code] ?? { client: 400, upstream: 502, internal: 500 }[e.side];

/** Peer bytes go into messages escaped and truncated (STYLE §6). */
export function printable(bytes: Uint8Array | string, max = 64): string {
  const s = typeof bytes === "string" ? bytes : new TextDecoder("latin1").decode(bytes.subarray(0, max));
  const cut = s.length > max ? s.slice(0, max) : s;
  return JSON.stringify(cut).slice(1, -1) + (s.length > max ? "…" : "");
}
