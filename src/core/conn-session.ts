/**
 * @module Layer 1, sans-IO (STYLE §1, mitmproxy's layer/Playbook model): one connection on the proxy or cache
 * port as a state machine. Events come in (open, data, dialled, dialFailed, tick(now), the agent's FIN, close),
 * commands go out as plain data (writeClient, dial, pipe, intercept, refuse, close, log) and
 * `workers/listener.ts` carries them out. States, in the order a connection goes through them (STYLE §3):
 *
 *   readHead → decide → dial → tlsPeek → tunnel          (a CONNECT that the policy lets through)
 *                    ↘ intercept                          (cache port: TLS terminated by layer 2; or plain http://)
 *            ↘ refused (a canned answer, then a lingering close) → closed
 *
 * The shell owns the sockets, the admission Atomics, the clock and the byte counts; it passes them in as facts.
 * Bytes in `tunnel` and `intercept` do not come through here: the shell moves them itself (the hot path,
 * STYLE §11); this module decides when such a connection ends (idle sweep, FIN, close) and what its log says.
 */
import { HeadAccumulator, concat } from "./bytes";
import { type ErrorCode, type ErrorSide, ProxyError, statusFor } from "./errors";
import { NEED_MORE, getHeader, parseRequestHead, type Headers } from "./http1/head";
import { toRequest } from "./connect";
import { ESTABLISHED, makeErrorResponse, makeResponse } from "./http1/serialize";
import { decide, decideClient, type Policy, type PolicyRule, type PolicyVerdict } from "./policy";
import { peekClientHello } from "./tls-peek";
import { type AgentCa, type CaAsk, caRouteOf, makeCaAnswer } from "./ca-page";
import type { Target, Verdict } from "./types";
import { type PortHealth, retryAfterSeconds } from "./health";

export type PortKind = "proxy" | "cache";
export type ConnState = "readHead" | "decide" | "dial" | "tlsPeek" | "tunnel" | "intercept" | "refused" | "closed";

/** Why a connection ended: a value for logs and tests, never a message (STYLE §9). */
export type EndReason =
  | ""
  | "client-closed"
  | "origin-closed"
  | "closed"
  | "client-gone"
  | "client-error"
  | "origin-error"
  | "idle-timeout"
  | "not-tls"
  | "sni-mismatch"
  | "health"
  | "ca"
  | "draining"
  | "shutdown"
  | "mint-failed"
  | "tls-error"
  | "handshake-timeout"
  | ErrorCode
  | PolicyRule;

/** How the shell closes: `linger` shuts our write side and discards what comes until the tick ends it
 * (so the agent reads a refusal before any RST); `end` is a graceful FIN both ways; `abort` resets at once. */
export type CloseHow = "linger" | "end" | "abort";

/** The worker's facts a session reads (the WorkerRuntime satisfies this; tests pass a plain object). */
export type SessionCtx = {
  readonly config: {
    readonly proxy: { readonly max_head_bytes: number; readonly head_timeout_s: number; readonly handshake_timeout_s: number; readonly idle_timeout_s: number; readonly max_connections: number };
  };
  readonly policy: Policy;
  readonly draining: boolean;
  /** worker index, for /healthz */
  readonly index: number;
  /** the cache port can terminate TLS (cache mode on, CA loaded): else intercept verdicts tunnel, http:// is 405 */
  readonly intercepting: boolean;
  /** the active CA for `GET /ca.pem`, `/ca.der`, `/ca` on this port (core/ca-page.ts); absent or null: none loaded */
  readonly agentCa?: AgentCa | null;
  /** the supervisor's health decision (core/health.ts): what /healthz answers per port, and fail fast; absent: healthy */
  readonly health?: PortHealth | null;
};

/** The session's part of a connection's state. The shell's per-socket object extends it (one object per socket). */
export type ConnSession = {
  ctx: SessionCtx;
  id: string;
  ip: string;
  remotePort: number;
  port: PortKind;
  state: ConnState;
  /** the request head, then (in tlsPeek) the ClientHello */
  head: HeadAccumulator;
  /** bytes after the CONNECT head that arrived before the tunnel could take them */
  early: Uint8Array | null;
  /** the shell paused reading (too many early bytes) */
  paused: boolean;
  target: Target | null;
  verdict: Verdict | null;
  /** "direct" or the upstream proxy, once dialled */
  via: string;
  /** exact ms at open, for the log's `ms` */
  started: number;
  /** when the refusal was sent: the linger counts from here */
  refusedAt: number;
  /** last time bytes moved either way (the shell updates it on the hot path); the idle sweep reads it */
  lastActive: number;
  endReason: EndReason;
  /** counted in the admission budget (the shell released it on close) */
  admitted: boolean;
  /** until when the TLS handshake may take (the ClientHello in tlsPeek; the whole handshake of an intercepted
   * CONNECT), 0 when none is awaited: a silent client must not hold its admission slot until the idle timeout */
  handshakeBy: number;
  /** the shell's random number in [0, 1) for this connection: the Retry-After jitter of a fail-fast refusal */
  jitter: number;
};

export type LogLevel = "info" | "warn" | "error";

export type ConnCommand =
  | { do: "writeClient"; bytes: Uint8Array }
  | { do: "dial"; target: Target; verdict: Verdict }
  /** the ClientHello passed: start the byte pipe, sending `early` (the hello and what followed) first */
  | { do: "pipe"; early: Uint8Array }
  /** hand the connection to layer 2: `http` = a plain absolute-form request (early holds it), `connect` = TLS follows */
  | { do: "intercept"; mode: "http" | "connect"; early: Uint8Array | null }
  /** count the refusal (by rule), write `bytes` when there are any */
  | { do: "refuse"; code: ErrorCode; side: ErrorSide; status: number; rule: string; bytes: Uint8Array | null }
  | { do: "close"; reason: EndReason; how: CloseHow }
  /** the agent sent FIN in a tunnel or an intercepted connection: pass the half-close on */
  | { do: "halfClose" }
  | { do: "pause" }
  | { do: "resume" }
  | { do: "log"; level: LogLevel; msg: string; fields: Record<string, unknown> };

/** What a client may send before the tunnel is up; past it the shell stops reading until the dial ends. */
export const MAX_EARLY_BYTES = 256 * 1024;
/** How long a refused connection keeps reading (and discarding) after its answer, before we reset it. */
export const LINGER_MS = 2000;
const RETRY_AFTER: Headers = [["Retry-After", "5"]];
const MAX_HEADERS = 100;

const NONE: readonly ConnCommand[] = Object.freeze([]);
const none = NONE as ConnCommand[];

export type OpenEvent = { id: string; ip: string; remotePort: number; port: PortKind; admitted: boolean; jitter?: number };

/** A fresh session (the shell spreads it into its per-socket object, then calls `onOpen`). */
export function makeSession(ctx: SessionCtx, ev: OpenEvent, now: number): ConnSession {
  return {
    ctx,
    id: ev.id,
    ip: ev.ip,
    remotePort: ev.remotePort,
    port: ev.port,
    state: "readHead",
    head: new HeadAccumulator(),
    early: null,
    paused: false,
    target: null,
    verdict: null,
    via: "",
    started: now,
    refusedAt: 0,
    lastActive: now,
    endReason: "",
    admitted: ev.admitted,
    handshakeBy: 0,
    jitter: ev.jitter ?? 0,
  };
}

/** Draining first (a draining worker does not admit), then the appliance-wide connection budget. */
export function onOpen(s: ConnSession, now: number): ConnCommand[] {
  if (s.ctx.draining) return refuse(s, err("PX_DRAINING", "gateway is shutting down; use the next proxy"), "PX_DRAINING", now, RETRY_AFTER);
  if (!s.admitted) {
    const max = s.ctx.config.proxy.max_connections;
    return refuse(s, err("PX_OVERLOADED", `gateway at its limit of ${max} connections; use the next proxy`), "PX_OVERLOADED", now, RETRY_AFTER);
  }
  return none;
}

export function onData(s: ConnSession, bytes: Uint8Array, now: number): ConnCommand[] {
  switch (s.state) {
    case "readHead":
      return onHeadBytes(s, bytes, now);
    case "decide":
    case "dial": {
      // Bytes after the CONNECT head (an eager ClientHello): keep them, in order, for the tunnel.
      const all = s.early ? concat(s.early, bytes) : bytes.slice();
      s.early = all;
      if (all.byteLength > MAX_EARLY_BYTES && !s.paused) {
        s.paused = true;
        return [{ do: "pause" }];
      }
      return none;
    }
    case "tlsPeek":
      return onPeekBytes(s, bytes, now);
    case "tunnel":
    case "intercept":
      // The shell moves these bytes itself (hot path); nothing to decide per chunk.
      s.lastActive = now;
      return none;
    case "refused":
    case "closed":
      return none; // lingering: discard
  }
}

function onHeadBytes(s: ConnSession, bytes: Uint8Array, now: number): ConnCommand[] {
  const all = s.head.push(bytes);
  let head;
  try {
    // The limit is checked on what has arrived so far, so an endless head fails as it grows (STYLE §6).
    head = parseRequestHead(all, { maxHeadBytes: s.ctx.config.proxy.max_head_bytes, maxHeaders: MAX_HEADERS });
  } catch (e) {
    return refuseError(s, e, now);
  }
  if (head === NEED_MORE) {
    s.head.keep(all, bytes);
    return none;
  }
  s.head.clear();
  const rest = all.byteLength > head.headBytes ? all.slice(head.headBytes) : null;
  const caAsk = caRouteOf(head.method, head.target);
  if (caAsk !== null) return answerCa(s, caAsk, head.method === "HEAD", getHeader(head.headers, "host") ?? null, now);
  let req;
  try {
    req = toRequest(head, { allowAbsolute: s.port === "cache" });
  } catch (e) {
    return refuseError(s, e, now);
  }
  if (req.kind === "health") return answerHealth(s, head.method === "HEAD", now);
  // Maintenance: every new request is refused at once, with a jittered Retry-After (issue 10).
  const ff = s.ctx.health?.failFast;
  if (ff && ff.scope === "all") return failFast(s, ff.code, ff.reason, now);
  if (req.kind === "absolute") {
    // Plain-HTTP forward proxying belongs to the cache port's HTTP layer (which re-reads the head).
    if (s.port === "cache" && s.ctx.intercepting) {
      s.target = req.target;
      s.state = "intercept";
      return [{ do: "intercept", mode: "http", early: all === bytes ? bytes.slice() : all }];
    }
    return refuse(s, err("PX_METHOD_NOT_ALLOWED", "this is a proxy: send CONNECT host:port"), "PX_METHOD_NOT_ALLOWED", now);
  }

  s.target = req.target;
  s.state = "decide";
  const client = { ip: s.ip, port: s.port, userAgent: getHeader(head.headers, "user-agent") };
  const deniedClient = decideClient(s.ctx.policy, client);
  if (deniedClient) return refuse(s, err("PX_CLIENT_DENY", deniedClient.reason ?? "client not allowed"), deniedClient.rule, now);
  const v = decide(s.ctx.policy, req.target, client);
  s.verdict = v;
  if (v.action === "deny") return refuse(s, err("PX_POLICY_DENY", v.reason ?? `CONNECT to ${req.target.host} denied`), v.rule, now);
  // The platform link is Down: answer now, not after connect_timeout_s, so the agent moves to its next proxy.
  if (ff && ff.scope === "platform" && v.rule === "platform-domain") return failFast(s, ff.code, ff.reason, now);
  if (v.action === "intercept" && s.ctx.intercepting) {
    s.state = "intercept";
    s.handshakeBy = handshakeDeadline(s, now);
    return [{ do: "writeClient", bytes: ESTABLISHED }, { do: "intercept", mode: "connect", early: rest }];
  }
  s.state = "dial";
  s.early = rest;
  return [{ do: "dial", target: req.target, verdict: v }];
}

/** The origin (or the upstream proxy's tunnel) is connected: answer the CONNECT, then check the ClientHello. */
export function onDialled(s: ConnSession, via: string, now: number): ConnCommand[] {
  if (s.state !== "dial") return [{ do: "close", reason: s.endReason || "client-gone", how: "abort" }];
  s.via = via;
  s.state = "tlsPeek";
  s.lastActive = now;
  s.handshakeBy = handshakeDeadline(s, now);
  const out: ConnCommand[] = [{ do: "writeClient", bytes: ESTABLISHED }];
  if (s.paused) {
    s.paused = false;
    out.push({ do: "resume" });
  }
  const early = s.early;
  s.early = null;
  if (early) out.push(...onPeekBytes(s, early, now));
  return out;
}

export function onDialFailed(s: ConnSession, e: unknown, now: number): ConnCommand[] {
  if (s.state !== "dial") return none;
  return refuseError(s, e, now);
}

/**
 * The name resolved to a non-public address (the worker ran `decideAddress` after DNS): refused like a policy
 * deny, with its rule in the log line, the refusal counter and the answer's Proxy-Status (RFC 9209 §2.3,
 * `destination_ip_prohibited`; `details` carries the rule).
 */
export function onAddressDenied(s: ConnSession, v: PolicyVerdict, now: number): ConnCommand[] {
  if (s.state !== "dial") return none;
  const why = v.reason ?? `${s.target ? dest(s) : "the destination"} resolves to an internal address`;
  return refuse(s, err("PX_POLICY_DENY", why), v.rule, now, [["Proxy-Status", `agate; error=destination_ip_prohibited; details="${v.rule}"`]]);
}

/** Domain fronting is closed: the ClientHello's SNI must name the CONNECT host (no SNI passes). */
function onPeekBytes(s: ConnSession, bytes: Uint8Array, now: number): ConnCommand[] {
  s.lastActive = now;
  let all = s.head.push(bytes);
  // Some clients send extra CRLFs after the CONNECT head (same trap as mitmproxy #4870): they are not part of
  // the TLS stream, so they are dropped here rather than sent to the origin or read as "not TLS".
  let skip = 0;
  while (skip < all.byteLength && (all[skip] === 13 || all[skip] === 10)) skip++;
  if (skip === all.byteLength) {
    s.head.clear();
    return none;
  }
  if (skip > 0) all = all.subarray(skip);
  let hello;
  try {
    hello = peekClientHello(all);
  } catch {
    s.head.clear();
    s.endReason ||= "not-tls";
    return [{ do: "close", reason: "not-tls", how: "abort" }];
  }
  if (hello === NEED_MORE) {
    s.head.keep(all, bytes);
    return none;
  }
  s.head.clear();
  const host = s.target!.host;
  if (hello.sni !== null && hello.sni !== host) {
    const reason = `TLS ClientHello names ${hello.sni}, not the CONNECT host ${host} (domain fronting)`;
    s.endReason ||= "sni-mismatch";
    const e = err("PX_SNI_MISMATCH", reason);
    return [
      { do: "log", level: "warn", msg: "refused", fields: { id: s.id, client: `${s.ip}:${s.remotePort}`, port: s.port, dest: dest(s), rule: "sni-mismatch", reason } },
      { do: "refuse", code: e.code, side: e.side, status: statusFor(e), rule: "sni-mismatch", bytes: null },
      { do: "close", reason: "sni-mismatch", how: "abort" },
    ];
  }
  s.state = "tunnel";
  s.handshakeBy = 0; // the rest of the handshake is between the agent and the origin
  return [{ do: "pipe", early: all === bytes ? bytes.slice() : all }];
}

/** `GET /healthz` sent to the port: the load balancer's question, answered from the worker's facts. */
function answerHealth(s: ConnSession, headOnly: boolean, now: number): ConnCommand[] {
  s.state = "refused";
  s.refusedAt = now;
  s.endReason = "health";
  // 200 only when this port can serve now (core/health.ts decides, the supervisor pushes it); draining is the
  // worker's own fact and wins at once.
  const v = s.ctx.health?.ports[s.port];
  const ok = !s.ctx.draining && (v?.ok ?? true);
  const reasons = s.ctx.draining ? ["draining: shutting down", ...(v?.reasons ?? [])] : (v?.reasons ?? []);
  const base = { status: ok ? "ok" : s.ctx.draining ? "draining" : "down", port: s.port, worker: s.ctx.index };
  const body = JSON.stringify(reasons.length ? { ...base, reasons } : base);
  const headers: Headers = [
    ["Content-Type", "application/json"],
    ["Cache-Control", "no-store"],
    ["Connection", "close"],
  ];
  const status = ok ? 200 : statusFor(err("PX_DRAINING", "draining"));
  const bytes = makeResponse(status, headers, headOnly ? undefined : body);
  return [
    { do: "writeClient", bytes },
    { do: "close", reason: "health", how: "linger" },
  ];
}

/** `GET /ca.pem`, `/ca.der`, `/ca`, `/ca.msi`, `/ca-bundle.pem` sent to the port: the CA agents install, no token (issue 11, core/ca-page.ts). */
function answerCa(s: ConnSession, ask: CaAsk, headOnly: boolean, host: string | null, now: number): ConnCommand[] {
  const bytes = makeCaAnswer(s.ctx.agentCa ?? null, ask, { headOnly, host });
  if (!(bytes instanceof Uint8Array)) return refuse(s, err(bytes.refuse, bytes.reason), bytes.refuse, now);
  s.state = "refused";
  s.refusedAt = now;
  s.endReason = "ca";
  return [
    { do: "writeClient", bytes },
    { do: "close", reason: "ca", how: "linger" },
  ];
}

/** Once a second (and in tests, whenever): slow heads, lingering refusals, idle connections. */
export function onTick(s: ConnSession, now: number): ConnCommand[] {
  const p = s.ctx.config.proxy;
  switch (s.state) {
    case "readHead":
      if (now - s.started > p.head_timeout_s * 1000) {
        return refuse(s, err("PX_HEAD_TIMEOUT", `request head did not arrive within ${p.head_timeout_s}s`), "PX_HEAD_TIMEOUT", now);
      }
      return none;
    case "refused":
      return now - s.refusedAt > LINGER_MS ? [{ do: "close", reason: s.endReason, how: "abort" }] : none;
    case "tlsPeek":
    case "tunnel":
    case "intercept":
      // Bytes trickling in do not extend the handshake: its deadline is fixed when the CONNECT is answered.
      if (s.handshakeBy !== 0 && now > s.handshakeBy) {
        s.endReason ||= "handshake-timeout";
        return [
          { do: "log", level: "info", msg: "refused", fields: { id: s.id, client: `${s.ip}:${s.remotePort}`, port: s.port, dest: dest(s), rule: "handshake-timeout", reason: `TLS handshake not done within ${p.handshake_timeout_s}s` } },
          { do: "close", reason: "handshake-timeout", how: "abort" },
        ];
      }
      if (now - s.lastActive > p.idle_timeout_s * 1000) {
        s.endReason ||= "idle-timeout";
        return [{ do: "close", reason: "idle-timeout", how: "end" }];
      }
      return none;
    default:
      return none;
  }
}

/** Layer 2 finished the TLS handshake of an intercepted CONNECT: no handshake deadline any more. */
export function onTlsEstablished(s: ConnSession): void {
  s.handshakeBy = 0;
}

const handshakeDeadline = (s: ConnSession, now: number) => now + s.ctx.config.proxy.handshake_timeout_s * 1000;

/** The agent sent FIN. */
export function onClientEnd(s: ConnSession): ConnCommand[] {
  switch (s.state) {
    case "tlsPeek":
    case "tunnel":
      s.endReason ||= "client-closed";
      return [{ do: "halfClose" }];
    case "intercept":
      return [{ do: "halfClose" }];
    case "closed":
      return none;
    default:
      return [{ do: "close", reason: s.endReason || "client-closed", how: "end" }];
  }
}

/** The shell saw why the connection is ending (origin closed, a socket error); the first reason wins. */
export function noteEnd(s: ConnSession, reason: EndReason): void {
  s.endReason ||= reason;
}

/** SIGTERM: connections still reading a head are ended; tunnels are left to finish. */
export function onDrainStart(s: ConnSession): ConnCommand[] {
  return s.state === "readHead" ? [{ do: "close", reason: "draining", how: "end" }] : none;
}

/** End of the grace period, or stop: close whatever is left. */
export function onShutdown(s: ConnSession, reason: EndReason): ConnCommand[] {
  if (s.state === "closed") return none;
  s.endReason ||= reason;
  return [{ do: "close", reason, how: "abort" }];
}

/** True while the connection counts as a tunnel (active tunnels, the tunnel log line). */
export const holdsTunnel = (s: ConnSession): boolean => s.state === "tlsPeek" || s.state === "tunnel" || s.state === "intercept";

/** The byte counts the shell measured, exact both ways. */
export type CloseFacts = { bytesIn: number; bytesOut: number };

/** The socket closed: one log line for a tunnel or an intercepted connection, with exact bytes and duration. */
export function onClosed(s: ConnSession, facts: CloseFacts, now: number): ConnCommand[] {
  const prev = s.state;
  if (prev === "closed") return none;
  s.state = "closed";
  if (prev === "intercept" && s.verdict === null) {
    // Plain http:// requests (no CONNECT): not a tunnel, and no decision of ours: each request had its own
    // access line with its own verdict, a refused one included.
    const fields = { id: s.id, client: `${s.ip}:${s.remotePort}`, port: s.port, mode: "http", up: facts.bytesIn, down: facts.bytesOut, ms: now - s.started, end: s.endReason || "closed" };
    return [{ do: "log", level: "info", msg: "connection", fields }];
  }
  if (prev === "tlsPeek" || prev === "tunnel" || prev === "intercept") {
    return [
      {
        do: "log",
        level: "info",
        msg: "tunnel",
        fields: {
          id: s.id,
          client: `${s.ip}:${s.remotePort}`,
          port: s.port,
          dest: dest(s),
          decision: s.verdict?.action ?? "forward",
          rule: s.verdict?.rule,
          via: s.via,
          up: facts.bytesIn,
          down: facts.bytesOut,
          ms: now - s.started,
          end: s.endReason || "closed",
        },
      },
    ];
  }
  if (prev === "dial" || prev === "decide") s.endReason ||= "client-gone";
  return none;
}

// ---- refusing ---------------------------------------------------------------------------------------------

/** 503 at once with a jittered Retry-After (RFC 9110 §10.2.3), so refused agents do not return in lockstep. */
function failFast(s: ConnSession, code: "PX_MAINTENANCE" | "PX_PLATFORM_DOWN", reason: string, now: number): ConnCommand[] {
  return refuse(s, err(code, reason), code, now, [["Retry-After", String(retryAfterSeconds(s.jitter))]]);
}

function err(code: ErrorCode, msg: string): ProxyError {
  return new ProxyError(code, "client", msg);
}

function refuseError(s: ConnSession, e: unknown, now: number): ConnCommand[] {
  if (e instanceof ProxyError) return refuse(s, e, e.code, now);
  const internal = new ProxyError("PX_INTERNAL", "internal", "internal error", { cause: e });
  return [
    { do: "log", level: "error", msg: "internal error", fields: { id: s.id, error: String((e as Error)?.stack ?? e) } },
    ...refuse(s, internal, "PX_INTERNAL", now),
  ];
}

/** A canned answer whose status comes from `statusFor`, then a lingering close. */
function refuse(s: ConnSession, e: ProxyError, rule: ErrorCode | PolicyRule, now: number, extra?: Headers): ConnCommand[] {
  if (s.state === "refused" || s.state === "closed") return none;
  s.state = "refused";
  s.refusedAt = now;
  s.endReason = rule;
  const status = statusFor(e);
  return [
    {
      do: "log",
      level: "info",
      msg: "refused",
      fields: { id: s.id, client: `${s.ip}:${s.remotePort}`, port: s.port, dest: s.target ? dest(s) : undefined, status, rule, reason: e.message },
    },
    { do: "refuse", code: e.code, side: e.side, status, rule, bytes: makeErrorResponse(status, e.message, extra) },
    { do: "close", reason: rule, how: "linger" },
  ];
}

function dest(s: ConnSession): string {
  return `${s.target!.host}:${s.target!.port}`;
}
