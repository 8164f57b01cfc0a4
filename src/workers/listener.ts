/**
 * @module The shared socket handlers on the proxy and cache ports (STYLE §11): one state object per socket,
 * handlers at module scope. A connection goes through these states, in this order:
 *
 *   admit → readHead → decide → dial → tlsPeek → tunnel → closed       (proxy port; cache port: see intercept)
 *                    ↘ health / refuse (a canned answer, then a lingering close)
 *
 * Pure decisions come from core (head parsing, CONNECT authority, policy, ClientHello peek); this file only
 * moves bytes and keeps counters. One JSON log line per tunnel at its end, one per refusal.
 */
import type { Socket, SocketHandler, TCPSocketListener } from "bun";
import hyperid from "hyperid";
import { ProxyError, statusFor } from "../core/errors";
import type { Config } from "../core/config";
import type { Target, Verdict } from "../core/types";
import { NEED_MORE, getHeader, parseRequestHead } from "../core/http1/head";
import { toRequest } from "../core/connect";
import { ESTABLISHED, makeErrorResponse, makeResponse } from "../core/http1/serialize";
import { compilePolicy, decide, decideClient, type Policy } from "../core/policy";
import { peekClientHello } from "../core/tls-peek";
import { log } from "../log";
import { emptyCounters } from "./protocol";
import { type PipeEnd, makePipeEnd, onPipeDrain, onPipeEnd, pipeWrite } from "./tunnel";
import { type OriginConn, dialTarget, onHandshakeClose, onHandshakeData } from "./upstream";
import { concat } from "../core/bytes";

export type PortKind = "proxy" | "cache";
type State = "readHead" | "decide" | "dial" | "tlsPeek" | "tunnel" | "intercept" | "refused" | "closed";

export type ClientConn = PipeEnd & {
  side: "client";
  id: string;
  ip: string;
  remotePort: number;
  port: PortKind;
  state: State;
  /** request head bytes, then (in tlsPeek) the ClientHello bytes, then bytes that arrive while dialling */
  buf: Uint8Array | null;
  target: Target | null;
  verdict: Verdict | null;
  via: string;
  started: number;
  endReason: string;
  /** counted in the admission budget */
  admitted: boolean;
  /** set by the cache port's interception layer */
  intercept: unknown;
};

/** Everything a worker knows; replaced wholesale on a config push. */
export const rt = {
  index: 0,
  config: null as unknown as Config,
  policy: null as unknown as Policy,
  draining: false,
  /** Int32Array over the supervisor's SharedArrayBuffer: [0] = appliance-wide, [1+i] = worker i */
  admission: null as Int32Array | null,
  clock: Date.now(),
  conns: new Set<Socket<ClientConn>>(),
  proxyIps: new Set<string>(),
  cacheIps: new Set<string>(),
  counters: emptyCounters(),
  /** the cache port's TLS interception entry point, installed by worker.ts when cache mode is on */
  onIntercept: null as null | ((sock: Socket<ClientConn>, early: Uint8Array | null) => void),
};

export function setConfig(config: Config) {
  rt.config = config;
  rt.policy = compilePolicy(config);
}

const makeId = hyperid({ urlSafe: true });
const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

// ---- admission --------------------------------------------------------------------------------------------

function admit(): boolean {
  const a = rt.admission;
  if (!a) return true;
  const prev = Atomics.add(a, 0, 1);
  if (prev >= rt.config.proxy.max_connections) {
    Atomics.sub(a, 0, 1);
    return false;
  }
  Atomics.add(a, 1 + rt.index, 1);
  return true;
}

function release() {
  const a = rt.admission;
  if (!a) return;
  Atomics.sub(a, 0, 1);
  Atomics.sub(a, 1 + rt.index, 1);
}

// ---- refusing: a canned answer, then a lingering close so the client reads it before any RST ---------------

const LINGER_MS = 2000;

function refuse(sock: Socket<ClientConn>, status: number, reason: string, rule: string, extra?: [string, string][]) {
  const c = sock.data;
  if (c.state === "refused" || c.state === "closed") return;
  c.state = "refused";
  c.endReason = rule;
  c.started = rt.clock; // the linger deadline counts from here
  bump(rt.counters.refusals, rule);
  log("info", "refused", {
    id: c.id,
    client: `${c.ip}:${c.remotePort}`,
    port: c.port,
    dest: c.target ? `${c.target.host}:${c.target.port}` : undefined,
    status,
    rule,
    reason,
  });
  sock.write(makeErrorResponse(status, reason, extra));
  sock.shutdown();
}

function refuseError(sock: Socket<ClientConn>, e: unknown) {
  if (e instanceof ProxyError) {
    const status = statusFor(e);
    refuse(sock, status, e.message, e.code);
    if (e.side !== "client") bump(rt.counters.errors, e.code);
    return;
  }
  bump(rt.counters.errors, "PX_INTERNAL");
  log("error", "internal error", { id: sock.data.id, error: String((e as Error)?.stack ?? e) });
  refuse(sock, 500, "internal error", "PX_INTERNAL");
}

// ---- client side ------------------------------------------------------------------------------------------

function onOpen(sock: Socket<ClientConn>, port: PortKind) {
  const now = rt.clock;
  const c: ClientConn = {
    ...makePipeEnd(now),
    side: "client",
    id: makeId(),
    ip: sock.remoteAddress,
    remotePort: sock.remotePort,
    port,
    state: "readHead",
    buf: null,
    target: null,
    verdict: null,
    via: "",
    started: now,
    endReason: "",
    admitted: false,
    intercept: null,
  };
  sock.data = c;
  rt.conns.add(sock);
  rt.counters.activeConnections++;
  (port === "proxy" ? rt.proxyIps : rt.cacheIps).add(c.ip);
  if (rt.draining) return refuse(sock, 503, "gateway is shutting down; use the next proxy", "PX_DRAINING", [["Retry-After", "5"]]);
  if (!admit()) {
    return refuse(
      sock,
      503,
      `gateway at its limit of ${rt.config.proxy.max_connections} connections; use the next proxy`,
      "PX_OVERLOADED",
      [["Retry-After", "5"]],
    );
  }
  c.admitted = true;
}

function onClientData(sock: Socket<ClientConn>, data: Uint8Array) {
  const c = sock.data;
  switch (c.state) {
    case "readHead":
      return onHeadBytes(sock, data);
    case "decide":
    case "dial":
      // Bytes after the CONNECT head (e.g. an eager ClientHello): keep them, in order, for the tunnel.
      c.buf = c.buf ? concat(c.buf, data) : data.slice();
      if (c.buf.byteLength > 256 * 1024) sock.pause();
      return;
    case "tlsPeek":
      return onPeekBytes(sock, data);
    case "tunnel": {
      const peer = c.peer;
      if (peer) {
        rt.counters.bytesUp += data.byteLength;
        pipeWrite(sock, peer, data, rt.clock);
      }
      return;
    }
    case "intercept": {
      const d = c.intercept as { onData(b: Uint8Array): void } | null;
      rt.counters.bytesUp += data.byteLength;
      c.lastActive = rt.clock;
      if (d) d.onData(data);
      return;
    }
    case "refused":
    case "closed":
      return; // lingering: discard
  }
}

function onHeadBytes(sock: Socket<ClientConn>, data: Uint8Array) {
  const c = sock.data;
  const buf = c.buf ? concat(c.buf, data) : data;
  let head;
  try {
    head = parseRequestHead(buf, { maxHeadBytes: rt.config.proxy.max_head_bytes, maxHeaders: 100 });
  } catch (e) {
    return refuseError(sock, e);
  }
  if (head === NEED_MORE) {
    c.buf = buf === data ? data.slice() : buf;
    return;
  }
  c.buf = buf.byteLength > head.headBytes ? buf.slice(head.headBytes) : null;
  let req;
  try {
    req = toRequest(head, { allowAbsolute: c.port === "cache" });
  } catch (e) {
    return refuseError(sock, e);
  }
  if (req.kind === "health") return answerHealth(sock, head.method === "HEAD");
  if (req.kind === "absolute") {
    // Plain-HTTP forward proxying belongs to the cache port's HTTP layer.
    if (rt.onIntercept && c.port === "cache") {
      c.target = req.target;
      c.state = "intercept";
      rt.counters.activeTunnels++;
      rt.counters.totalTunnels++;
      const early = concat(buf.subarray(0, head.headBytes), c.buf ?? new Uint8Array(0));
      c.buf = null;
      return rt.onIntercept(sock, early);
    }
    return refuse(sock, 405, "this is a proxy: send CONNECT host:port", "PX_METHOD_NOT_ALLOWED");
  }
  c.target = req.target;
  c.state = "decide";
  const client = { ip: c.ip, port: c.port, userAgent: getHeader(head.headers, "user-agent") };
  const deniedClient = decideClient(rt.policy, client);
  if (deniedClient) return refuse(sock, 403, deniedClient.reason ?? "client not allowed", deniedClient.rule);
  const v = decide(rt.policy, req.target, client);
  c.verdict = v;
  if (v.action === "deny") return refuse(sock, 403, v.reason ?? `CONNECT to ${req.target.host} denied`, v.rule);
  if (v.action === "intercept" && rt.onIntercept) {
    c.state = "intercept";
    rt.counters.activeTunnels++;
    rt.counters.totalTunnels++;
    sock.write(ESTABLISHED);
    const early = c.buf;
    c.buf = null;
    return rt.onIntercept(sock, early);
  }
  c.state = "dial";
  void dial(sock, req.target);
}

async function dial(sock: Socket<ClientConn>, target: Target) {
  const c = sock.data;
  let d;
  try {
    d = await dialTarget(target, { config: rt.config, policy: rt.policy, handlers: originHandlers, now: rt.clock });
  } catch (e) {
    if (c.closed) return;
    return refuseError(sock, e);
  }
  const origin = d.sock;
  if (c.closed || c.state !== "dial") {
    origin.terminate();
    return;
  }
  c.via = d.via;
  origin.data.peer = sock as unknown as Socket<PipeEnd>;
  c.peer = origin as unknown as Socket<PipeEnd>;
  sock.write(ESTABLISHED);
  if (d.leftover) {
    rt.counters.bytesDown += d.leftover.byteLength;
    pipeWrite(origin as unknown as Socket<PipeEnd>, sock as unknown as Socket<PipeEnd>, d.leftover, rt.clock);
  }
  c.state = "tlsPeek";
  rt.counters.activeTunnels++;
  rt.counters.totalTunnels++;
  sock.resume();
  const early = c.buf;
  c.buf = null;
  if (early) onPeekBytes(sock, early);
}

/** Domain fronting is closed: the ClientHello's SNI must name the CONNECT host (no SNI passes). */
function onPeekBytes(sock: Socket<ClientConn>, data: Uint8Array) {
  const c = sock.data;
  const buf = c.buf ? concat(c.buf, data) : data;
  let hello;
  try {
    hello = peekClientHello(buf);
  } catch (e) {
    c.buf = null;
    return endTunnel(sock, "not-tls", true);
  }
  if (hello === NEED_MORE) {
    c.buf = buf === data ? data.slice() : buf;
    return;
  }
  c.buf = null;
  const host = c.target!.host;
  if (hello.sni !== null && hello.sni !== host) {
    bump(rt.counters.refusals, "sni-mismatch");
    log("warn", "refused", {
      id: c.id,
      client: `${c.ip}:${c.remotePort}`,
      dest: `${host}:${c.target!.port}`,
      rule: "sni-mismatch",
      reason: `TLS ClientHello names ${hello.sni}, not the CONNECT host ${host} (domain fronting)`,
    });
    return endTunnel(sock, "sni-mismatch", true);
  }
  c.state = "tunnel";
  rt.counters.bytesUp += buf.byteLength;
  pipeWrite(sock as unknown as Socket<PipeEnd>, c.peer!, buf === data ? data : buf, rt.clock);
}

function answerHealth(sock: Socket<ClientConn>, headOnly: boolean) {
  const c = sock.data;
  c.state = "refused";
  c.endReason = "health";
  const ok = !rt.draining;
  const body = JSON.stringify({ status: ok ? "ok" : "draining", port: c.port, worker: rt.index });
  sock.write(
    makeResponse(
      ok ? 200 : 503,
      [
        ["Content-Type", "application/json"],
        ["Cache-Control", "no-store"],
        ["Connection", "close"],
      ],
      headOnly ? undefined : body,
    ),
  );
  sock.shutdown();
}

/** Close a tunnel from our side (policy, idle, drain); logs once in onClientClose. */
function endTunnel(sock: Socket<ClientConn>, reason: string, abort = false) {
  const c = sock.data;
  c.endReason ||= reason;
  const peer = c.peer;
  if (peer && !peer.data.closed) abort ? peer.terminate() : peer.end();
  if (!c.closed) abort ? sock.terminate() : sock.end();
}

function onClientClose(sock: Socket<ClientConn>) {
  const c = sock.data;
  if (!c || c.closed) return;
  c.closed = true;
  const wasTunnel = c.state === "tunnel" || c.state === "tlsPeek" || c.state === "intercept";
  if (c.state === "intercept") (c.intercept as { destroy(): void } | null)?.destroy();
  const prev = c.state;
  c.state = "closed";
  rt.conns.delete(sock);
  rt.counters.activeConnections--;
  if (c.admitted) release();
  const peer = c.peer;
  if (peer && !peer.data.closed) {
    if (peer.data.pending) peer.data.shutdownAfterFlush = true;
    else peer.end();
  }
  if (wasTunnel) {
    rt.counters.activeTunnels--;
    log("info", "tunnel", {
      id: c.id,
      client: `${c.ip}:${c.remotePort}`,
      port: c.port,
      dest: `${c.target!.host}:${c.target!.port}`,
      decision: c.verdict?.action ?? "forward",
      rule: c.verdict?.rule,
      via: c.via,
      up: peer?.data.bytesOut ?? 0,
      down: c.bytesOut,
      ms: Date.now() - c.started,
      end: c.endReason || (c.readEnded ? "client-closed" : "closed"),
    });
  } else if (prev === "dial" || prev === "decide") {
    c.endReason ||= "client-gone";
  }
}

function makeClientHandlers(port: PortKind): SocketHandler<ClientConn> {
  return {
    open: (s) => onOpen(s, port),
    data: onClientData,
    drain: (s) => {
      if (s.data.state === "tunnel" || s.data.state === "tlsPeek") onPipeDrain(s as unknown as Socket<PipeEnd>);
      else if (s.data.state === "intercept") (s.data.intercept as { onDrain(): void } | null)?.onDrain();
    },
    end: (s) => {
      const c = s.data;
      if (c.state === "tunnel" || c.state === "tlsPeek") {
        c.endReason ||= "client-closed";
        if (onPipeEnd(s as unknown as Socket<PipeEnd>)) endTunnel(s, "closed");
      } else if (c.state === "intercept") {
        c.readEnded = true;
        (c.intercept as { push(b: null): void } | null)?.push(null);
      } else {
        c.readEnded = true;
        s.end();
      }
    },
    close: onClientClose,
    error: (s, e) => {
      if (s.data) s.data.endReason ||= `client-error: ${(e as Error).message}`;
    },
    timeout: (s) => s.terminate(),
  };
}

export const proxyHandlers = makeClientHandlers("proxy");
export const cacheHandlers = makeClientHandlers("cache");

// ---- origin side ------------------------------------------------------------------------------------------

export const originHandlers: SocketHandler<OriginConn> = {
  open() {},
  data(s, data) {
    if (s.data.hs) return onHandshakeData(s, data);
    const peer = s.data.peer;
    if (!peer) return;
    rt.counters.bytesDown += data.byteLength;
    pipeWrite(s as unknown as Socket<PipeEnd>, peer, data, rt.clock);
  },
  drain: (s) => onPipeDrain(s as unknown as Socket<PipeEnd>),
  end(s) {
    if (s.data.hs) return;
    const peer = s.data.peer as Socket<ClientConn> | null;
    if (peer) peer.data.endReason ||= "origin-closed";
    if (onPipeEnd(s as unknown as Socket<PipeEnd>) && peer) endTunnel(peer, "closed");
  },
  close(s) {
    s.data.closed = true;
    if (s.data.hs) return onHandshakeClose(s);
    const peer = s.data.peer as Socket<ClientConn> | null;
    if (peer && !peer.data.closed) {
      peer.data.endReason ||= "origin-closed";
      if (peer.data.pending) peer.data.shutdownAfterFlush = true;
      else peer.end();
    }
  },
  error(s, e) {
    const peer = s.data.peer as Socket<ClientConn> | null;
    if (peer) peer.data.endReason ||= `origin-error: ${(e as Error).message}`;
  },
  connectError() {},
  timeout: (s) => s.terminate(),
};

// ---- timers: head timeout, idle tunnels, lingering closes --------------------------------------------------

/** Runs every second: the coarse clock, 408 for slow heads, idle tunnels, lingering refusals. */
export function sweep(now: number) {
  rt.clock = now;
  const headMs = rt.config.proxy.head_timeout_s * 1000;
  const idleMs = rt.config.proxy.idle_timeout_s * 1000;
  for (const s of rt.conns) {
    const c = s.data;
    switch (c.state) {
      case "readHead":
        if (now - c.started > headMs) {
          refuse(s, 408, `request head did not arrive within ${rt.config.proxy.head_timeout_s}s`, "PX_HEAD_TIMEOUT");
        }
        break;
      case "refused":
        if (now - c.started > LINGER_MS) s.terminate();
        break;
      case "tunnel":
      case "tlsPeek":
      case "intercept": {
        const last = Math.max(c.lastActive, c.peer?.data.lastActive ?? 0);
        if (now - last > idleMs) endTunnel(s, "idle-timeout");
        break;
      }
    }
  }
}

/** SIGTERM: stop listening (done by worker.ts), refuse new requests on open sockets, let tunnels finish. */
export function startDrain() {
  rt.draining = true;
  for (const s of rt.conns) if (s.data.state === "readHead") s.end();
}

/** End of the grace period: close whatever is left. */
export function closeAll(reason: string) {
  for (const s of [...rt.conns]) endTunnel(s, reason, true);
}

export type Listeners = { proxy: TCPSocketListener<ClientConn> | null; cache: TCPSocketListener<ClientConn> | null };
