/**
 * @module HTTP/1.1 framing inside the cache port, and nothing else: after TLS termination (or for plain
 * absolute-form requests), read requests one at a time — keep-alive, chunked bodies, `Expect: 100-continue`,
 * pipelined requests answered in order — and hand each to the request story with a `Responder` (how it answers)
 * and a `RequestBody` (its body, streamed on demand with back-pressure). What happens to a request is
 * `cache-request.ts`'s business; intercept.ts passes it in as `handle` so framing never imports the story it
 * serves (the story's helpers import these types: an import the other way would be a circle).
 */
import { ProxyError, statusFor } from "../core/errors";
import { type Headers, type RequestHead, NEED_MORE, getHeader, parseRequestHead } from "../core/http1/head";
import { onTlsEstablished } from "../core/conn-session";
import { BodyDecoder, encodeChunk, framingForRequest, lastChunk, type Framing } from "../core/http1/body";
import { makeErrorResponse, serializeResponseHead } from "../core/http1/serialize";
import type { Target, Verdict } from "../core/types";
import { concat } from "../core/bytes";
import { log } from "../log";
import type { ClientConn, WorkerRuntime } from "./runtime";

const MAX_PIPELINE_BUFFER = 1024 * 1024;
/** Bytes queued on the socket stream under TLS before writers wait (measured: without it a fast disk read piles up GBs). */
const RAW_HIGH_WATER = 256 * 1024;
/** A body this small rides in the head's write (a TLS record holds 16 KiB of plaintext, RFC 8446 §5.1). */
const COALESCE_BODY_BYTES = 16 * 1024 - 1024;
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

/** One request as it came off the wire, with what the connection knows about it. */
export type IncomingRequest = {
  head: RequestHead;
  /** "https" inside an intercepted CONNECT; "http" for a plain absolute-form request */
  scheme: "https" | "http";
  /** the CONNECT target (https), null for plain http */
  connectTarget: Target | null;
  /** the CONNECT's verdict (https), null for plain http: the policy decides per request */
  connectVerdict: Verdict | null;
  /** the connection's id and the agent's address */
  connId: string;
  clientIp: string;
  clientPort: number;
};

/** One routed request as the cache layer sees it. */
export type HttpRequest = {
  method: string;
  url: string; // absolute, normalised by the cache key later
  scheme: "https" | "http";
  target: Target;
  path: string;
  headers: Headers;
  version: "1.0" | "1.1";
  verdict: Verdict;
  body: Framing;
};

/** How the cache layer answers: a head, then body chunks with back-pressure, then the end. */
export type Responder = {
  head(status: number, headers: Headers, bodyLength: number | null, reason?: string): void;
  /** relay an interim 1xx before the head (dropped for HTTP/1.0 agents, RFC 9110 §15.2, and after the head) */
  interim?(status: number, headers: Headers): void;
  write(chunk: Uint8Array): boolean;
  end(): void;
  /** called once when the client can take more after write() returned false */
  onDrain(f: () => void): void;
  /** answer `status` with a short text body (plus `headers`, e.g. Cache-Status), or cut the connection when the
   * head was sent already */
  error(status: number, reason: string, headers?: Headers): void;
  readonly closed: boolean;
  /** the status sent (0 before any) and the bytes written towards the agent (head and body), for the access log */
  readonly status: number;
  readonly bytesOut: number;
};

/** Where a request body goes: the origin exchange (origin-client's ExchangeHandle has this shape). */
export type BodySink = {
  writeBody(chunk: Uint8Array): boolean;
  endBody(): void;
  /** the agent left mid-body */
  abort(): void;
  set onWritable(f: (() => void) | null);
};

/** The request's body, read from the agent only once someone wants it. */
export type RequestBody = {
  readonly framing: Framing;
  /** Stream the body to `sink` (answering `Expect: 100-continue` first), pausing the agent while the sink is full. */
  pipeTo(sink: BodySink): void;
  /** body bytes read so far (after de-framing) */
  readonly bytes: number;
};

/**
 * What the session reads and writes: a node Duplex (node:tls over the Duplex path, or the socket stream itself for
 * plain http) or intercept.ts's NativeTlsIo (Bun's native TLS socket) — the few members used here.
 */
export interface SessionIo {
  on(ev: string, f: (...a: any[]) => void): unknown;
  once(ev: string, f: (...a: any[]) => void): unknown;
  write(b: Uint8Array): boolean;
  end(): unknown;
  pause(): unknown;
  resume(): unknown;
  destroy(): unknown;
  readonly writableNeedDrain: boolean;
  readonly writableLength: number;
}

export type RequestHandler = (rt: WorkerRuntime, inc: IncomingRequest, res: Responder, body: RequestBody) => Promise<void>;

export class HttpSession {
  private buf: Uint8Array | null = null;
  private busy = false;
  closed = false;
  private bodyDecoder: BodyDecoder | null = null;
  private bodySink: BodySink | null = null;
  private bodyBytes = 0;
  private drainWaiters: (() => void)[] = [];
  private clientEnded = false;
  requests = 0;
  /** a response head was sent for the current request */
  private answering = false;
  /** when the head being read started (its first byte, or the end of the TLS handshake for the first one); 0 = none */
  private headSince = 0;
  private headTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly rt: WorkerRuntime,
    readonly io: SessionIo,
    readonly conn: ClientConn,
    readonly scheme: "https" | "http",
    readonly connectTarget: Target | null,
    /** the socket's own stream under TLS: node:tls does not pass its back-pressure up, so we watch it too */
    readonly raw: SessionIo,
    readonly handle: RequestHandler,
  ) {
    if (raw !== io) raw.on("drain", () => this.flushDrainWaiters());
    if (scheme === "https") {
      // node:tls emits "secure" once the server handshake is done: the handshake deadline ends, the head's begins
      // (an agent that finishes TLS and then says nothing holds a slot as surely as one that never starts it).
      io.once("secure", () => {
        onTlsEstablished(conn);
        if (this.requests === 0 && !this.buf) this.startHeadClock();
      });
    }
    io.on("data", (d: Buffer) => this.onData(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)));
    io.on("drain", () => this.flushDrainWaiters());
    io.on("end", () => {
      if (!this.busy) this.close();
      else {
        this.clientEnded = true;
        this.cutBody();
      }
    });
    io.on("close", () => this.close());
    io.on("error", () => {
      if (this.conn.endReason === "") this.conn.endReason = "tls-error";
      this.close();
    });
  }

  /** Wake writers once neither the TLS layer nor the socket stream is over its mark. */
  private flushDrainWaiters() {
    if (this.congested()) return;
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  /** Stop reading from the agent: the TLS layer and the socket stream under it (node:tls does not pass pause down). */
  private pauseInput() {
    this.io.pause();
    if (this.raw !== this.io) this.raw.pause();
  }

  private resumeInput() {
    if (this.raw !== this.io) this.raw.resume();
    this.io.resume();
  }

  congested(): boolean {
    return this.io.writableNeedDrain || this.raw.writableLength > RAW_HIGH_WATER;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.stopHeadClock();
    if (this.bodyDecoder) this.bodySink?.abort();
    this.io.destroy();
  }

  private onData(d: Uint8Array) {
    if (this.bodyDecoder) return this.onBodyBytes(d);
    this.buf = this.buf ? concat(this.buf, d) : d.slice();
    if (!this.busy && this.headSince === 0) this.startHeadClock();
    if (this.busy) {
      if (this.buf.byteLength > MAX_PIPELINE_BUFFER) this.pauseInput();
      return;
    }
    this.pump();
  }

  private pump() {
    while (!this.busy && !this.closed && this.buf && this.buf.byteLength) {
      let head: RequestHead | typeof NEED_MORE;
      let framing: Framing;
      try {
        head = parseRequestHead(this.buf, { maxHeadBytes: this.rt.config.proxy.max_head_bytes, maxHeaders: 100 });
        if (head === NEED_MORE) {
          if (this.headSince === 0) this.startHeadClock();
          return this.checkHeadClock(); // a byte every few seconds is activity, but not a head
        }
        framing = framingForRequest(head.headers);
      } catch (e) {
        return this.fatal(e);
      }
      this.stopHeadClock();
      const rest = this.buf.byteLength > head.headBytes ? this.buf.subarray(head.headBytes) : null;
      this.busy = true;
      this.requests++;
      // Without a body, what follows the head is the next pipelined request; with one, it is the body's start.
      this.buf = framing.kind === "none" ? rest : null;
      void this.run(head, framing, framing.kind === "none" ? null : rest);
    }
    if (!this.busy && this.clientEnded) this.close();
  }

  /**
   * `proxy.head_timeout_s` bounds each whole request head on this connection (layer 1 bounds only the first head of
   * a plain connection, and nothing inside TLS): checked as bytes arrive, and by a timer for a silent agent.
   */
  private startHeadClock() {
    this.headSince = this.rt.now();
    if (this.headTimer) clearTimeout(this.headTimer);
    this.headTimer = setTimeout(() => this.checkHeadClock(true), this.rt.config.proxy.head_timeout_s * 1000);
    this.headTimer.unref?.();
  }

  private stopHeadClock() {
    this.headSince = 0;
    if (this.headTimer) clearTimeout(this.headTimer);
    this.headTimer = null;
  }

  private checkHeadClock(fromTimer = false) {
    if (this.headSince === 0 || this.busy || this.closed) return;
    const limit = this.rt.config.proxy.head_timeout_s;
    // The timer was set for the deadline itself: when it fires, the head is late whatever the clock says.
    if (!fromTimer && this.rt.now() - this.headSince < limit * 1000) return;
    this.stopHeadClock();
    if (this.conn.endReason === "") this.conn.endReason = "PX_HEAD_TIMEOUT";
    this.fatal(new ProxyError("PX_HEAD_TIMEOUT", "client", `request head did not arrive within ${limit}s`));
  }

  private async run(head: RequestHead, framing: Framing, early: Uint8Array | null) {
    const c = this.conn;
    const inc: IncomingRequest = {
      head,
      scheme: this.scheme,
      connectTarget: this.connectTarget,
      connectVerdict: this.connectTarget ? c.verdict : null,
      connId: c.id,
      clientIp: c.ip,
      clientPort: c.remotePort,
    };
    const res = this.makeResponder(head);
    this.bodyBytes = 0;
    const session = this;
    const body: RequestBody = {
      framing,
      get bytes() {
        return session.bodyBytes;
      },
      pipeTo: (sink) => this.pipeBody(head, framing, early, sink),
    };
    try {
      await this.handle(this.rt, inc, res, body);
    } catch (e) {
      // the story answers its own errors; this is the last line of defence
      log("error", "request failed", { id: c.id, error: String((e as Error)?.stack ?? e) });
      if (!res.closed) this.answerError(res, new ProxyError("PX_INTERNAL", "internal", "internal error"));
    }
    // every path of the story answers; never leave an agent hanging
    if (!res.closed) this.answerError(res, new ProxyError("PX_INTERNAL", "internal", "internal error: no answer"));
  }

  private answerError(res: Responder, e: ProxyError) {
    res.error(statusFor(e), e.message);
  }

  private fatal(e: unknown) {
    const pe = e instanceof ProxyError ? e : new ProxyError("PX_INTERNAL", "internal", String(e));
    this.stopHeadClock();
    if (!this.closed) {
      this.io.write(makeErrorResponse(statusFor(pe), pe.message));
      this.io.end();
    }
    this.closed = true;
  }

  private pipeBody(head: RequestHead, framing: Framing, early: Uint8Array | null, sink: BodySink) {
    if (framing.kind === "none") return;
    if (getHeader(head.headers, "expect")?.toLowerCase() === "100-continue") this.io.write(CONTINUE);
    this.bodySink = sink;
    this.bodyDecoder = new BodyDecoder(framing, "client");
    sink.onWritable = () => this.resumeInput();
    // Body bytes that arrived while the story was deciding sit in buf, after those that came with the head.
    const first = early && this.buf ? concat(early, this.buf) : (early ?? this.buf);
    this.buf = null;
    if (first) this.onBodyBytes(first);
    if (this.clientEnded) this.cutBody();
  }

  /**
   * The agent half-closed while its body was incomplete: the body can never end, so the exchange fails now (the
   * sink aborts, the agent gets 400) instead of holding the connection and an origin connection until idle_timeout_s
   * (issue 12, mutation run: "Content-Length: 99999999" then FIN hung).
   */
  private cutBody() {
    const dec = this.bodyDecoder;
    if (!dec || dec.done) return;
    try {
      dec.end();
    } catch (e) {
      this.bodyDecoder = null;
      this.bodySink?.abort();
      // an answer already under way (an origin that answered before the body ended) can only be cut
      if (this.answering) this.close();
      else this.fatal(e);
    }
  }

  private onBodyBytes(d: Uint8Array) {
    const dec = this.bodyDecoder!;
    const sink = this.bodySink!;
    let r;
    try {
      r = dec.push(d);
    } catch (e) {
      this.bodyDecoder = null;
      sink.abort();
      return this.fatal(e);
    }
    let ok = true;
    for (const c of r.chunks) {
      if (!c.byteLength) continue;
      this.bodyBytes += c.byteLength;
      ok = sink.writeBody(c) && ok;
    }
    if (!ok) this.pauseInput();
    if (r.done) {
      this.bodyDecoder = null;
      this.bodySink = null;
      sink.endBody();
      if (r.rest) this.buf = this.buf ? concat(this.buf, r.rest) : r.rest.slice();
    }
  }

  /** The response is complete: next request. */
  private next() {
    this.busy = false;
    this.answering = false;
    this.bodySink = null;
    this.resumeInput();
    queueMicrotask(() => this.pump());
  }

  private makeResponder(req: RequestHead): Responder {
    const session = this;
    const io = this.io;
    let chunked = false;
    let ended = false;
    let headSent = false;
    let status = 0;
    let bytesOut = 0;
    let keepAlive = req.version === "1.1" && !/\bclose\b/i.test(getHeader(req.headers, "connection") ?? "");
    // A head for a small body waits for that body and goes out with it: one write, so one TLS record and one sendto
    // instead of two (bench/micro/hit-path.bench.ts: 6.1 → 3.9 µs per 1 KiB hit through node:tls, both ends; strace
    // of a worker showed two sendto per hit before). Any other write, end or error sends it first.
    let heldHead: Uint8Array | null = null;
    const send = (b: Uint8Array) => {
      if (heldHead !== null) {
        const h = heldHead;
        heldHead = null;
        bytesOut += h.byteLength;
        if (b.byteLength <= COALESCE_BODY_BYTES) b = concat(h, b);
        else io.write(h);
      }
      bytesOut += b.byteLength;
      io.write(b);
    };
    const flushHead = () => {
      if (heldHead === null) return;
      const h = heldHead;
      heldHead = null;
      bytesOut += h.byteLength;
      io.write(h);
    };
    return {
      get closed() {
        return session.closed || ended;
      },
      get status() {
        return status;
      },
      get bytesOut() {
        return bytesOut;
      },
      interim(st, headers) {
        if (headSent || ended || session.closed || req.version !== "1.1" || st < 100 || st > 199 || st === 101) return;
        send(serializeResponseHead({ status: st, headers }));
      },
      head(st, headers, bodyLength, reason) {
        const h: Headers = [...headers];
        if (req.method === "HEAD" || st === 204 || st === 304) {
          // no body framing to add
        } else if (bodyLength !== null) h.push(["Content-Length", String(bodyLength)]);
        else if (req.version === "1.1") {
          chunked = true;
          h.push(["Transfer-Encoding", "chunked"]);
        } else keepAlive = false;
        if (!keepAlive) h.push(["Connection", "close"]);
        headSent = true;
        session.answering = true;
        status = st;
        const bytes = serializeResponseHead({ status: st, reason, headers: h });
        if (!chunked && bodyLength !== null && bodyLength > 0 && bodyLength <= COALESCE_BODY_BYTES && req.method !== "HEAD" && st !== 204 && st !== 304) heldHead = bytes;
        else send(bytes);
      },
      write(chunk) {
        if (session.closed) return true;
        session.rt.counters.bytesDown += chunk.byteLength;
        if (chunked) {
          for (const p of encodeChunk(chunk)) send(p);
        } else send(chunk);
        return !session.congested();
      },
      end() {
        if (ended) return;
        ended = true;
        if (!session.closed) flushHead();
        if (chunked && !session.closed) send(lastChunk());
        if (!keepAlive) {
          io.end();
          session.closed = true;
          return;
        }
        session.next();
      },
      onDrain(f) {
        if (!session.congested()) return queueMicrotask(f);
        session.drainWaiters.push(f);
      },
      error(st, reason, extra) {
        if (ended) return;
        ended = true;
        if (headSent) {
          // Mid-body: the only honest signal left is to cut the connection.
          if (!session.closed) flushHead();
          session.close();
          return;
        }
        status = st;
        if (!session.closed) {
          send(makeErrorResponse(st, reason, extra));
          io.end();
        }
        session.closed = true;
      },
    };
  }
}
