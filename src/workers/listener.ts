/**
 * @module The shell of layer 1 (STYLE §1, §11): Bun handlers on the proxy and cache ports that turn socket events
 * into core/conn-session events and carry out the commands it returns. Handlers are built once per listener from
 * the WorkerRuntime (no per-socket closures); each socket's state is its `ClientConn` (runtime.ts). What this file
 * decides is only how: write (through pipe.ts's `writeOrPend`), dial (upstream.ts), pipe (tunnel.ts), hand over to
 * layer 2, count, log. What to do is conn-session's.
 *
 * Byte counts are exact and per connection: `bytesIn` in the data handler (every state), `bytesOut` wherever the
 * agent is written to (the Outbox). Durations use `rt.now` (exact), not a coarse clock.
 */
import type { Socket, SocketHandler } from "bun";
import {
  type ConnCommand,
  type EndReason,
  type PortKind,
  holdsTunnel,
  makeSession,
  noteEnd,
  onClientEnd,
  onClosed,
  onData,
  onAddressDenied,
  onDialFailed,
  onDialled,
  onDrainStart,
  onOpen,
  onShutdown,
  onTick,
} from "../core/conn-session";
import type { Target } from "../core/types";
import { log } from "../log";
import type { ClientConn, WorkerRuntime } from "./runtime";
import { flushPending, writeOrPend } from "./pipe";
import { type PipeEnd, makePipeEnd, onPipeDrain, onPipeEnd, pipeWrite, shutWhenFlushed } from "./tunnel";
import { AddressRefusal, type OriginConn, dialTarget, onHandshakeClose, onHandshakeData } from "./upstream";
import { observe } from "../core/histogram";
import { interceptConnection } from "./intercept";

export type { PortKind };

/** A worker's listening side: the handlers for both ports and the per-connection operations over all sockets. */
export type Listener = {
  proxyHandlers: SocketHandler<ClientConn>;
  cacheHandlers: SocketHandler<ClientConn>;
  /** once a second: head timeouts, lingering refusals, idle tunnels (decided by conn-session) */
  sweep(now: number): void;
  /** SIGTERM: stop reading new heads; tunnels finish */
  startDrain(): void;
  /** end of the grace period or stop */
  closeAll(reason: EndReason): void;
  readonly conns: ReadonlySet<Socket<ClientConn>>;
};

type Shell = { rt: WorkerRuntime; conns: Set<Socket<ClientConn>>; originHandlers: SocketHandler<OriginConn> };

const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

export function makeListener(runtime: WorkerRuntime): Listener {
  const shell: Shell = { rt: runtime, conns: new Set(), originHandlers: null as unknown as SocketHandler<OriginConn> };
  shell.originHandlers = makeOriginHandlers(shell);
  const each = (f: (s: Socket<ClientConn>) => ConnCommand[]) => {
    for (const s of [...shell.conns]) run(shell, s, f(s));
  };
  return {
    proxyHandlers: makeClientHandlers(shell, "proxy"),
    cacheHandlers: makeClientHandlers(shell, "cache"),
    sweep: (now) => each((s) => onTick(s.data, now)),
    startDrain: () => {
      runtime.draining = true;
      each((s) => onDrainStart(s.data));
    },
    closeAll: (reason) => each((s) => onShutdown(s.data, reason)),
    conns: shell.conns,
  };
}

// ---- admission (the shell owns the Atomics; conn-session gets the answer as a fact) ------------------------

function admit(rt: WorkerRuntime): boolean {
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

function release(rt: WorkerRuntime) {
  const a = rt.admission;
  if (!a) return;
  Atomics.sub(a, 0, 1);
  Atomics.sub(a, 1 + rt.index, 1);
}

// ---- carrying out conn-session's commands ------------------------------------------------------------------

function run(shell: Shell, sock: Socket<ClientConn>, cmds: ConnCommand[]): void {
  for (const cmd of cmds) exec(shell, sock, cmd);
}

/** A client that got a tunnel: an agent (`cacheIps` feed active and total agents), and a proxy-port user. */
function noteServed(rt: WorkerRuntime, c: ClientConn) {
  rt.cacheIps.add(c.ip);
  if (c.port === "proxy") rt.proxyIps.add(c.ip);
}

function exec(shell: Shell, sock: Socket<ClientConn>, cmd: ConnCommand): void {
  const c = sock.data;
  const { rt } = shell;
  switch (cmd.do) {
    case "writeClient":
      writeOrPend(sock, c, cmd.bytes);
      return;
    case "dial":
      void dial(shell, sock, cmd.target);
      return;
    case "pipe": {
      const peer = c.peer;
      if (!peer) return;
      rt.counters.bytesUp += cmd.early.byteLength;
      pipeWrite(sock as unknown as Socket<PipeEnd>, peer, cmd.early, rt.now());
      return;
    }
    case "intercept":
      rt.counters.activeTunnels++;
      rt.counters.totalTunnels++;
      if (c.port === "proxy") rt.proxyIps.add(c.ip); // agents: counted by cache-request.ts when answered
      interceptConnection(rt, sock, cmd.early);
      return;
    case "refuse":
      bump(rt.counters.refusals, cmd.rule);
      if (cmd.side !== "client") bump(rt.counters.errors, cmd.code);
      if (cmd.bytes) writeOrPend(sock, c, cmd.bytes);
      return;
    case "close":
      noteEnd(c, cmd.reason);
      return close(sock, cmd.how);
    case "halfClose":
      if (c.state === "intercept") c.intercept?.onEnd();
      else if (onPipeEnd(sock as unknown as Socket<PipeEnd>)) close(sock, "end");
      return;
    case "pause":
      sock.pause();
      return;
    case "resume":
      sock.resume();
      return;
    case "log":
      log(cmd.level, cmd.msg, cmd.fields);
      return;
    default: {
      const never: never = cmd;
      throw new Error(`unknown command ${(never as { do: string }).do}`);
    }
  }
}

/** linger: shut our write side (the agent reads the answer before any RST), discard until the sweep aborts. */
function close(sock: Socket<ClientConn>, how: "linger" | "end" | "abort") {
  const c = sock.data;
  if (how === "linger") {
    if (!c.closed) shutWhenFlushed(sock as unknown as Socket<PipeEnd>); // after the answer's pending bytes
    return;
  }
  const peer = c.peer;
  if (peer && !peer.data.closed) how === "abort" ? peer.terminate() : peer.end();
  if (c.closed) return;
  if (c.state === "intercept" && c.intercept?.close) return c.intercept.close(how);
  how === "abort" ? sock.terminate() : sock.end();
}

async function dial(shell: Shell, sock: Socket<ClientConn>, target: Target) {
  const { rt } = shell;
  const c = sock.data;
  let d;
  try {
    d = await dialTarget(target, { config: rt.config, policy: rt.policy, handlers: shell.originHandlers, now: rt.now() });
  } catch (e) {
    if (c.closed) return;
    if (e instanceof AddressRefusal) return run(shell, sock, onAddressDenied(c, e.verdict, rt.now()));
    return run(shell, sock, onDialFailed(c, e, rt.now()));
  }
  const origin = d.sock;
  if (c.closed || c.state !== "dial") {
    origin.terminate();
    return;
  }
  origin.data.peer = sock as unknown as Socket<PipeEnd>;
  c.peer = origin as unknown as Socket<PipeEnd>;
  rt.counters.activeTunnels++;
  rt.counters.totalTunnels++;
  noteServed(rt, c);
  // Real traffic counts for the platform link: a tunnel to a platform host is a "connected on" (issue 10).
  if (c.verdict?.rule === "platform-domain") rt.platformSeen.add(target.host);
  const cmds = onDialled(c, d.via, rt.now()); // [writeClient(200 Connection established), …]
  // The answer to the CONNECT goes first, then whatever the upstream proxy sent after its own 200.
  exec(shell, sock, cmds[0]!);
  if (d.leftover) {
    rt.counters.bytesDown += d.leftover.byteLength;
    pipeWrite(origin as unknown as Socket<PipeEnd>, sock as unknown as Socket<PipeEnd>, d.leftover, rt.now());
  }
  run(shell, sock, cmds.slice(1));
}

// ---- client side ------------------------------------------------------------------------------------------

function makeClientHandlers(shell: Shell, port: PortKind): SocketHandler<ClientConn> {
  const { rt } = shell;
  return {
    open(sock) {
      const now = rt.now();
      const admitted = !rt.draining && admit(rt);
      const c: ClientConn = {
        ...makePipeEnd(now),
        ...makeSession(rt, { id: rt.makeId(), ip: sock.remoteAddress, remotePort: sock.remotePort, port, admitted, jitter: rt.random() }, now),
        bytesIn: 0,
        intercept: null,
      };
      sock.data = c;
      shell.conns.add(sock);
      rt.counters.activeConnections++;
      // Client IPs are counted when the client is served (a tunnel, an intercepted connection, a cache-port
      // answer), not here: /healthz probes and refused clients are not agents (issue 10).
      run(shell, sock, onOpen(c, now));
    },
    data(sock, data) {
      const c = sock.data;
      c.bytesIn += data.byteLength;
      // The hot path (STYLE §11): bytes of an established tunnel or an intercepted connection go straight on.
      if (c.state === "tunnel") {
        const peer = c.peer;
        if (peer) {
          rt.counters.bytesUp += data.byteLength;
          pipeWrite(sock as unknown as Socket<PipeEnd>, peer, data, rt.now());
        }
        return;
      }
      if (c.state === "intercept") {
        rt.counters.bytesUp += data.byteLength;
        c.lastActive = rt.now();
        c.intercept?.onData(data);
        return;
      }
      run(shell, sock, onData(c, data, rt.now()));
    },
    drain(sock) {
      const c = sock.data;
      if (c.state === "intercept") {
        // Layer 2 writes through writeOrPend(sock, conn, …): flush what it left pending, then tell it to go on.
        if (flushPending(sock, c)) c.intercept?.onDrain();
        return;
      }
      // Refusals and the CONNECT answer are pending bytes too; in a tunnel, flushing resumes the origin.
      onPipeDrain(sock as unknown as Socket<PipeEnd>);
    },
    end(sock) {
      const c = sock.data;
      c.readEnded = true;
      run(shell, sock, onClientEnd(c));
    },
    close(sock) {
      const c = sock.data;
      if (!c || c.closed) return;
      c.closed = true;
      const wasTunnel = holdsTunnel(c);
      if (c.state === "intercept") c.intercept?.destroy();
      shell.conns.delete(sock);
      rt.counters.activeConnections--;
      if (c.admitted) release(rt);
      const peer = c.peer;
      if (peer && !peer.data.closed) {
        if (peer.data.pending) peer.data.shutdownAfterFlush = true;
        else peer.end();
      }
      if (wasTunnel) {
        rt.counters.activeTunnels--;
        observe((rt.counters.durations ??= {}), c.port === "proxy" ? "connection:proxy" : "connection:cache", (rt.now() - c.started) / 1000);
      }
      if (!c.endReason && c.readEnded) noteEnd(c, "client-closed");
      run(shell, sock, onClosed(c, { bytesIn: c.bytesIn, bytesOut: c.bytesOut }, rt.now()));
    },
    error(sock) {
      if (sock.data) noteEnd(sock.data, "client-error");
    },
    timeout: (sock) => sock.terminate(),
  };
}

// ---- origin side ------------------------------------------------------------------------------------------

function makeOriginHandlers(shell: Shell): SocketHandler<OriginConn> {
  const { rt } = shell;
  return {
    open() {},
    data(s, data) {
      if (s.data.hs) return onHandshakeData(s, data);
      const peer = s.data.peer;
      if (!peer) return;
      rt.counters.bytesDown += data.byteLength;
      pipeWrite(s as unknown as Socket<PipeEnd>, peer, data, rt.now());
    },
    drain: (s) => onPipeDrain(s as unknown as Socket<PipeEnd>),
    end(s) {
      if (s.data.hs) return;
      const peer = s.data.peer as unknown as Socket<ClientConn> | null;
      if (peer) noteEnd(peer.data, "origin-closed");
      if (onPipeEnd(s as unknown as Socket<PipeEnd>) && peer) close(peer, "end");
    },
    close(s) {
      s.data.closed = true;
      if (s.data.hs) return onHandshakeClose(s);
      const peer = s.data.peer as unknown as Socket<ClientConn> | null;
      if (peer && !peer.data.closed) {
        noteEnd(peer.data, "origin-closed");
        if (peer.data.pending) peer.data.shutdownAfterFlush = true;
        else peer.end();
      }
    },
    error(s) {
      const peer = s.data.peer as unknown as Socket<ClientConn> | null;
      if (peer) noteEnd(peer.data, "origin-error");
    },
    connectError() {},
    timeout: (s) => s.terminate(),
  };
}
