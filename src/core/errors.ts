/**
 * @module Errors as values with a stable code and a side. Only `statusFor` maps a code to an HTTP status.
 * (Shape after undici's `lib/core/errors.js` and pingora's `ErrorSource`.)
 */

export type ErrorSide = "client" | "upstream" | "internal";
export type ErrorCode = `PX_${string}`;

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

const SPECIAL: Record<string, number> = {
  PX_BAD_REQUEST: 400,
  PX_BAD_REQUEST_LINE: 400,
  PX_BAD_HEADER: 400,
  PX_BAD_AUTHORITY: 400,
  PX_METHOD_NOT_ALLOWED: 405,
  PX_HEAD_TIMEOUT: 408,
  PX_HEAD_TOO_LARGE: 431,
  PX_POLICY_DENY: 403,
  PX_CLIENT_DENY: 403,
  PX_OVERLOADED: 503,
  PX_DRAINING: 503,
  PX_UPSTREAM_UNREACHABLE: 502,
  PX_UPSTREAM_REFUSED: 502,
  PX_UPSTREAM_PROXY: 502,
  PX_UPSTREAM_TIMEOUT: 504,
  PX_DNS: 502,
  PX_NOT_FOUND: 404,
  PX_MISDIRECTED: 421,
  PX_NOT_IMPLEMENTED: 501,
  PX_ONLY_IF_CACHED: 504,
};

export const statusFor = (e: ProxyError): number =>
  SPECIAL[e.code] ?? { client: 400, upstream: 502, internal: 500 }[e.side];

/** Peer bytes go into messages escaped and truncated (STYLE §6). */
export function printable(bytes: Uint8Array | string, max = 64): string {
  const s = typeof bytes === "string" ? bytes : new TextDecoder("latin1").decode(bytes.subarray(0, max));
  const cut = s.length > max ? s.slice(0, max) : s;
  return JSON.stringify(cut).slice(1, -1) + (s.length > max ? "…" : "");
}
