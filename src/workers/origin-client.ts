/**
 * @module An HTTP/1.1 client towards origins for the cache port: dial (direct, [hosts], or through the upstream
 * proxy, as tunnels do), TLS as a client with `upgradeTLS` (verified against the system roots plus
 * `[tls] upstream_ca`, highest version available), then exchanges on connections kept alive for a few seconds
 * per worker (a GET on a reused connection the origin just closed is retried once), with our own head parser
 * and body decoder, so bytes reach the agent exactly as the origin sent them (no decompression, no rewriting).
 * Streaming both ways with back-pressure: the request body is written as it arrives (pipe.ts's writeOrPend, the
 * one mechanism), the response body is handed on chunk by chunk and the socket pauses while the sink is full.
 * The pool, its reuse count and the trusted roots are an `OriginPool` object kept in the WorkerRuntime
 * (`rt.origins`), never module state; session tests put a recording double with the `Origins` shape there.
 */
import type { Socket, SocketHandler } from "bun";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { ProxyError } from "../core/errors";
import type { Config } from "../core/config";
import type { Target } from "../core/types";
import { type Headers, type ResponseHead, NEED_MORE, parseResponseHead } from "../core/http1/head";
import { BodyDecoder, encodeChunk, framingForResponse, lastChunk, type Framing } from "../core/http1/body";
import { serializeRequestHead } from "../core/http1/serialize";
import { type Policy, mappedAddress } from "../core/policy";
import { dialTarget, onHandshakeClose, onHandshakeData, type OriginConn } from "./upstream";
import { concat } from "../core/bytes";
import { flushPending, writeOrPend } from "./pipe";

export type ResponseSink = {
  onHead(head: ResponseHead): void;
  /** an interim 1xx (100, 102, 103 Early Hints) before the final head, in order (RFC 9110 §15.2) */
  onInterim?(head: ResponseHead): void;
  /** return false to pause the origin until `exchange.resume()` */
  onData(chunk: Uint8Array): boolean;
  onEnd(): void;
  onError(e: ProxyError): void;
};

export type OriginRequest = {
  scheme: "https" | "http";
  target: Target;
  method: string;
  path: string;
  headers: Headers;
  /** framing of the body we will write: none, a known length, or chunked */
  body: Framing;
};

/** `raw`: the TCP socket under an upgraded TLS one; its events belong to the TLS socket and are ignored here. */
type ExchangeConn = OriginConn & { ex: Exchange | null; raw?: boolean };

export const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-authenticate",
  "proxy-authorization",
]);

/** Drop hop-by-hop fields (RFC 9110 §7.6.1), including those the Connection header names. */
export function stripHopByHop(h: Headers, extra: string[] = []): Headers {
  const named = new Set(extra);
  for (const [k, v] of h) if (k.toLowerCase() === "connection") for (const n of v.split(",")) named.add(n.trim().toLowerCase());
  return h.filter(([k]) => {
    const l = k.toLowerCase();
    return !HOP_BY_HOP.has(l) && !named.has(l);
  });
}

/** The system roots plus `[tls] upstream_ca`, read once per setting (kept in the pool). */
function trustedCas(pool: OriginPool, config: Config): string[] {
  const key = config.tls.upstream_ca ?? "";
  if (pool.trust?.key === key) return pool.trust.ca;
  const ca = [...tls.rootCertificates];
  if (config.tls.upstream_ca) ca.push(readFileSync(config.tls.upstream_ca, "utf8"));
  pool.trust = { key, ca };
  return ca;
}

class Exchange {
  sock: Socket<ExchangeConn> | null = null;
  buf: Uint8Array | null = null;
  head: ResponseHead | null = null;
  decoder: BodyDecoder | null = null;
  finished = false;
  paused = false;
  bodyChunked: boolean;
  bytesIn = 0;
  /** the request (head and body) has been written whole */
  bodySent: boolean;
  /** the socket came from the idle pool: a close before any byte may be the server's idle timeout */
  reused = false;
  /** set by startExchange: connect again on a fresh connection (idempotent requests on a dead pooled one) */
  retry: (() => void) | null = null;
  /** the response-head deadline (`cache.origin_timeout_s`), running from the end of the request to the final head */
  headTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly pool: OriginPool,
    readonly req: OriginRequest,
    readonly sink: ResponseSink,
    /** seconds the origin has, once the request is sent, to start its final response head */
    readonly headTimeoutS: number,
  ) {
    this.bodyChunked = req.body.kind === "chunked";
    this.bodySent = req.body.kind === "none";
  }

  onBytes(data: Uint8Array) {
    if (this.finished) return;
    this.bytesIn += data.byteLength;
    try {
      if (!this.head) {
        const buf = this.buf ? concat(this.buf, data) : data;
        const head = parseResponseHead(buf, { maxHeadBytes: 64 * 1024, maxHeaders: 200 });
        if (head === NEED_MORE) {
          this.buf = buf === data ? data.slice() : buf;
          return;
        }
        this.buf = null;
        if (head.status >= 100 && head.status < 200) {
          // Interim responses (100, 102, 103 Early Hints): handed to the sink, which relays them to its agent
          // (RFC 9110 §15.2: a proxy MUST forward 1xx unless it asked for them itself); never stored. 101 only
          // follows an Upgrade, which agate never sends upstream.
          this.sink.onInterim?.(head);
          if (this.finished) return;
          // An interim response (102 Processing above all, RFC 9110 §15.2.3) says the origin is at work: the
          // deadline starts again, so a long job that reports progress is not cut.
          this.armHeadDeadline();
          const rest = buf.subarray(head.headBytes);
          if (rest.byteLength) this.onBytes(rest.slice());
          return;
        }
        this.head = head;
        this.clearHeadDeadline();
        this.decoder = new BodyDecoder(framingForResponse(this.req.method, head.status, head.headers), "upstream");
        this.sink.onHead(head);
        if (this.finished) return;
        const rest = buf.subarray(head.headBytes);
        if (rest.byteLength) this.feed(rest);
        else if (this.decoder.done) this.finish();
        return;
      }
      this.feed(data);
    } catch (e) {
      this.fail(e instanceof ProxyError ? e : new ProxyError("PX_UPSTREAM_BAD_RESPONSE", "upstream", (e as Error).message));
    }
  }

  private feed(data: Uint8Array) {
    const r = this.decoder!.push(data);
    let more = true;
    for (const c of r.chunks) if (c.byteLength) more = this.sink.onData(c) && more;
    if (r.rest) this.trailing = true; // bytes after the response: this connection is not reusable
    if (r.done) return this.finish();
    if (!more) this.pause();
  }

  /**
   * An origin that accepts the connection and then says nothing (or stops mid-head) fails the exchange with
   * PX_UPSTREAM_TIMEOUT once `headTimeoutS` passes, so RFC 5861 §4's "times out" reaches stale-if-error and an agent
   * with nothing stored gets 504 (RFC 9110 §15.6.5) instead of waiting for the hour-long idle timeout. Only the head
   * is timed: a body's pace is the tails' idle limit's business (store.ts tailIdleMs).
   */
  armHeadDeadline() {
    this.clearHeadDeadline();
    if (this.finished || this.head !== null || !this.bodySent) return;
    this.headTimer = setTimeout(() => {
      this.headTimer = null;
      if (this.head !== null) return;
      const what = this.bytesIn > 0 ? `stopped after ${this.bytesIn} bytes of its response head` : "sent no response";
      this.fail(new ProxyError("PX_UPSTREAM_TIMEOUT", "upstream", `${this.req.target.host} ${what} within ${this.headTimeoutS}s of the request (cache.origin_timeout_s)`));
    }, this.headTimeoutS * 1000);
  }

  clearHeadDeadline() {
    if (this.headTimer !== null) clearTimeout(this.headTimer);
    this.headTimer = null;
  }

  pause() {
    if (!this.paused) {
      this.paused = true;
      this.sock?.pause();
    }
  }

  resume() {
    if (this.paused) {
      this.paused = false;
      this.sock?.resume();
    }
  }

  onClose() {
    if (this.finished) return;
    if (!this.head && this.reused && this.bytesIn === 0 && this.retry && (this.req.method === "GET" || this.req.method === "HEAD")) {
      // The origin closed an idle kept-alive connection as we reused it: one more try on a new one.
      const again = this.retry;
      this.retry = null;
      this.sock = null;
      return again();
    }
    if (!this.head) return this.fail(new ProxyError("PX_UPSTREAM_CLOSED", "upstream", `${this.req.target.host} closed the connection without answering`));
    try {
      this.decoder!.end();
      this.finish();
    } catch (e) {
      this.fail(e as ProxyError);
    }
  }

  finish() {
    if (this.finished) return;
    this.finished = true;
    this.clearHeadDeadline();
    const sock = this.sock;
    const h = this.head;
    const reusable =
      sock !== null &&
      h !== null &&
      h.version === "1.1" &&
      this.bodySent &&
      !this.trailing &&
      this.decoder?.framing.kind !== "close" &&
      !/\bclose\b/i.test(h.headers.find(([k]) => k.toLowerCase() === "connection")?.[1] ?? "");
    if (sock) sock.data.ex = null;
    if (reusable && !sock.data.closed) {
      if (this.paused) sock.resume();
      this.pool.release(this.poolKey, sock);
    } else sock?.end();
    this.sink.onEnd();
  }

  poolKey = "";
  trailing = false;

  fail(e: ProxyError) {
    if (this.finished) return;
    this.finished = true;
    this.clearHeadDeadline();
    this.sock?.terminate();
    this.sink.onError(e);
  }

  /** Request body bytes (already de-framed); returns false when the caller should wait for `onWritable`. */
  writeBody(chunk: Uint8Array): boolean {
    const s = this.sock;
    if (!s || this.finished) return true;
    const parts = this.bodyChunked ? encodeChunk(chunk) : [chunk];
    let ok = true;
    for (const p of parts) ok = writeAll(s, p) && ok;
    return ok;
  }

  endBody() {
    const s = this.sock;
    if (!s || this.finished) return;
    if (this.bodyChunked) writeAll(s, lastChunk());
    this.bodySent = true;
    this.armHeadDeadline(); // the request is whole: the origin's turn
  }

  onWritable: (() => void) | null = null;
}

/** An origin connection that broke (reset, TLS error) once the exchange started. */
function cutShort(ex: Exchange, e: Error): ProxyError {
  const what = ex.head ? `after ${ex.decoder?.received ?? 0} body bytes` : "before answering";
  return new ProxyError("PX_UPSTREAM_CLOSED", "upstream", `${ex.req.target.host} broke the connection ${what}: ${e.message}`, { cause: e });
}

/** Write everything, keeping what the kernel did not take as the connection's pending bytes (pipe.ts). */
function writeAll(s: Socket<ExchangeConn>, data: Uint8Array): boolean {
  return writeOrPend(s, s.data, data);
}

function flush(s: Socket<ExchangeConn>) {
  if (flushPending(s, s.data)) s.data.ex?.onWritable?.();
}

const exchangeHandlers: SocketHandler<ExchangeConn> = {
  open() {},
  data(s, data) {
    if (s.data.hs) return onHandshakeData(s as unknown as Socket<OriginConn>, data);
    if (s.data.raw) return;
    if (s.data.ex) return s.data.ex.onBytes(data);
    // bytes on an idle kept-alive connection: it is not in a state we can reuse
    s.data.closed = true;
    s.terminate();
  },
  drain: flush,
  end(s) {
    if (s.data.raw) return;
    if (s.data.ex) return s.data.ex.onClose();
    s.data.closed = true; // the origin closed an idle kept-alive connection
    s.terminate();
  },
  close(s, err) {
    s.data.closed = true;
    if (s.data.hs) return onHandshakeClose(s as unknown as Socket<OriginConn>);
    const ex = s.data.ex;
    // Bun passes the error (ECONNRESET…) to close, not to `error`: a reset is never the end of a body, not even a
    // close-delimited one (RFC 9112 §6.3 ¶8: only a clean close ends it), or a half object would be stored as whole.
    // (Before the head, onClose decides: a reset on a reused idle connection is retried once.)
    if (ex && ex.head && err) return ex.fail(cutShort(ex, err as Error));
    ex?.onClose();
  },
  error(s, e) {
    const ex = s.data.ex;
    if (!ex) return;
    if (!ex.head) ex.fail(new ProxyError("PX_UPSTREAM_TLS", "upstream", `${ex.req.target.host}: ${(e as Error).message}`));
    else ex.fail(cutShort(ex, e)); // mid-body: the answer is broken, whatever its framing
  },
  connectError() {},
  handshake(s, success, authError) {
    const ex = s.data.ex;
    if (!ex) return;
    if (!success || authError) {
      ex.fail(
        new ProxyError(
          "PX_UPSTREAM_TLS",
          "upstream",
          `TLS to ${ex.req.target.host} failed: ${authError ? authError.message : "handshake failed"} (is the origin's CA trusted? see tls.upstream_ca)`,
        ),
      );
    }
  },
  timeout: (s) => s.terminate(),
};

export type ExchangeHandle = {
  writeBody(chunk: Uint8Array): boolean;
  endBody(): void;
  resume(): void;
  abort(): void;
  set onWritable(f: (() => void) | null);
};

// ---- kept-alive connections to origins, per worker --------------------------------------------------------------

/** Below the shortest common server keep-alive (Apache: 5 s), so a reused connection is rarely one the origin is closing. */
const IDLE_S = 4;
const MAX_IDLE_PER_KEY = 16;

/** `ca`: trust only these roots instead of the system's and `[tls] upstream_ca` (a fleet peer's cache port, workers/peer-fill.ts). */
export type OriginEnv = { config: Config; policy: Policy; ca?: string[] };

/** What the cache-port code needs from the origin side: the pool, or a test's recording double. */
export interface Origins {
  /** Start one exchange: the sink gets the response. Rejects on dial/TLS failure. */
  start(req: OriginRequest, sink: ResponseSink, env: OriginEnv): Promise<ExchangeHandle>;
  /** requests sent on a kept-alive connection (for tests and stats) */
  readonly reuses: number;
  /** drop the idle connections */
  close(): void;
}

/** One worker's kept-alive connections to origins (lives in `rt.origins`). */
export class OriginPool implements Origins {
  readonly idle = new Map<string, Socket<ExchangeConn>[]>();
  reuses = 0;
  trust: { key: string; ca: string[] } | null = null;

  start(req: OriginRequest, sink: ResponseSink, env: OriginEnv): Promise<ExchangeHandle> {
    return startExchange(this, req, sink, env);
  }

  release(key: string, sock: Socket<ExchangeConn>) {
    let list = this.idle.get(key);
    if (!list) this.idle.set(key, (list = []));
    if (list.length >= MAX_IDLE_PER_KEY) return void sock.end();
    sock.timeout(IDLE_S);
    list.push(sock);
  }

  takeIdle(key: string): Socket<ExchangeConn> | null {
    const list = this.idle.get(key);
    while (list && list.length) {
      const s = list.pop()!;
      if (!s.data.closed && s.readyState === 1) return s;
    }
    return null;
  }

  close() {
    for (const list of this.idle.values()) for (const s of list) s.end();
    this.idle.clear();
  }
}

/** Start one exchange: reuse a kept-alive connection or dial (TLS included), send the head; the sink gets the
 * response. Rejects on dial/TLS failure. */
async function startExchange(pool: OriginPool, req: OriginRequest, sink: ResponseSink, env: OriginEnv): Promise<ExchangeHandle> {
  const ex = new Exchange(pool, req, sink, env.config.cache.origin_timeout_s);
  const up = env.config.upstream_proxy;
  ex.poolKey = `${req.scheme}|${req.target.host}|${req.target.port}|${up ? `${up.host}:${up.port}` : mappedAddress(env.policy, req.target.host) ?? "dns"}`;
  const authority = req.target.port === (req.scheme === "https" ? 443 : 80) ? req.target.host : `${req.target.host}:${req.target.port}`;
  const headers: Headers = [["Host", authority], ...stripHopByHop(req.headers).filter(([k]) => {
    const l = k.toLowerCase();
    return l !== "host" && l !== "expect" && l !== "content-length";
  })];
  if (req.body.kind === "length") headers.push(["Content-Length", String(req.body.length)]);
  if (req.body.kind === "chunked") headers.push(["Transfer-Encoding", "chunked"]);
  const head = serializeRequestHead(req.method, req.path, headers);

  const dialFresh = async (): Promise<Socket<ExchangeConn>> => {
    const d = await dialTarget(req.target, {
      config: env.config,
      policy: env.policy,
      handlers: exchangeHandlers as unknown as SocketHandler<OriginConn>,
      now: Date.now(),
    });
    let sock = d.sock as unknown as Socket<ExchangeConn>;
    sock.data.ex = ex;
    if (req.scheme === "https") {
      const data: ExchangeConn = { ...sock.data, ex, pending: null };
      const [, tlsSock] = sock.upgradeTLS<ExchangeConn>({
        data,
        tls: { serverName: req.target.host, ca: env.ca ?? trustedCas(pool, env.config), rejectUnauthorized: true },
        socket: exchangeHandlers,
      });
      sock.data.ex = null;
      sock.data.raw = true;
      sock = tlsSock;
    }
    return sock;
  };
  const send = (sock: Socket<ExchangeConn>, reused: boolean) => {
    // A pooled socket carries the idle pool's short timeout: give it the exchange's (timeout(0) is not "off" here).
    if (reused) sock.timeout(env.config.proxy.idle_timeout_s);
    sock.data.ex = ex;
    ex.sock = sock;
    writeAll(sock, head);
    ex.armHeadDeadline(); // a request without a body is whole now (one with a body: at endBody)
  };

  const pooled = pool.takeIdle(ex.poolKey);
  if (pooled) {
    pool.reuses++;
    ex.reused = true;
    ex.retry = () => {
      ex.reused = false;
      dialFresh().then((s) => send(s, false), (e) => ex.fail(e instanceof ProxyError ? e : new ProxyError("PX_UPSTREAM_UNREACHABLE", "upstream", String(e))));
    };
    send(pooled, true);
  } else send(await dialFresh(), false);
  return {
    writeBody: (c) => ex.writeBody(c),
    endBody: () => ex.endBody(),
    resume: () => ex.resume(),
    abort: () => {
      if (!ex.finished) {
        ex.finished = true;
        ex.clearHeadDeadline();
        ex.sock?.terminate();
      }
    },
    set onWritable(f: (() => void) | null) {
      ex.onWritable = f;
    },
  };
}
