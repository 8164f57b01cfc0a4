/**
 * @module HTTP/1.1 inside the cache port: after TLS termination (or for plain absolute-form requests), read
 * requests one at a time — keep-alive, chunked bodies, `Expect: 100-continue`, pipelined requests answered in
 * order — and hand each to the cache (fill.ts) or stream it through to the origin without buffering it whole.
 */
import type { Duplex } from "node:stream";
import { ProxyError, statusFor } from "../core/errors";
import { type Headers, type RequestHead, NEED_MORE, getHeader, parseRequestHead } from "../core/http1/head";
import { BodyDecoder, encodeChunk, framingForRequest, lastChunk, type Framing } from "../core/http1/body";
import { makeErrorResponse, serializeResponseHead } from "../core/http1/serialize";
import { parseAuthority } from "../core/connect";
import { decide, decideClient } from "../core/policy";
import type { Target, Verdict } from "../core/types";
import { type ExchangeHandle, startExchange, stripHopByHop } from "./origin-client";
import { log } from "../log";
import { invalidateAfter } from "./fill";
import type { ClientConn } from "./listener";
import { rt } from "./listener";
import { concat } from "../core/bytes";

const MAX_PIPELINE_BUFFER = 1024 * 1024;
/** Bytes queued on the socket stream under TLS before writers wait (measured: without it a fast disk read piles up GBs). */
const RAW_HIGH_WATER = 256 * 1024;
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

/** One request as the cache layer sees it. */
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
  started: number;
};

/** How the cache layer answers: a head, then body chunks with back-pressure, then the end. */
export type Responder = {
  head(status: number, headers: Headers, bodyLength: number | null, reason?: string): void;
  write(chunk: Uint8Array): boolean;
  end(): void;
  /** called once when the client can take more after write() returned false */
  onDrain(f: () => void): void;
  error(status: number, reason: string): void;
  readonly closed: boolean;
};

export type CacheLayer = (req: HttpRequest, res: Responder, session: HttpSession) => Promise<void> | void;

let cacheLayer: CacheLayer | null = null;
export const setCacheLayer = (f: CacheLayer) => (cacheLayer = f);

export class HttpSession {
  private buf: Uint8Array | null = null;
  private busy = false;
  closed = false;
  private bodyDecoder: BodyDecoder | null = null;
  private bodyExchange: ExchangeHandle | null = null;
  private bodyDone: (() => void) | null = null;
  private drainWaiters: (() => void)[] = [];
  requests = 0;

  constructor(
    readonly io: Duplex,
    readonly conn: ClientConn,
    readonly scheme: "https" | "http",
    readonly connectTarget: Target | null,
    /** the socket's own stream under TLS: node:tls does not pass its back-pressure up, so we watch it too */
    readonly raw: Duplex = io,
  ) {
    if (raw !== io) raw.on("drain", () => this.flushDrainWaiters());
    io.on("data", (d: Buffer) => this.onData(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)));
    io.on("drain", () => this.flushDrainWaiters());
    io.on("end", () => {
      if (!this.busy) this.close();
      else this.clientEnded = true;
    });
    io.on("close", () => this.close());
    io.on("error", (e: Error) => {
      this.conn.endReason ||= `tls: ${e.message}`;
      this.close();
    });
  }

  private clientEnded = false;

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
    this.bodyExchange?.abort();
    this.io.destroy();
  }

  private onData(d: Uint8Array) {
    if (this.bodyDecoder) return this.onBodyBytes(d);
    this.buf = this.buf ? concat(this.buf, d) : d.slice();
    if (this.busy) {
      if (this.buf.byteLength > MAX_PIPELINE_BUFFER) this.pauseInput();
      return;
    }
    this.pump();
  }

  private pump() {
    while (!this.busy && !this.closed && this.buf && this.buf.byteLength) {
      let head: RequestHead | typeof NEED_MORE;
      try {
        head = parseRequestHead(this.buf, { maxHeadBytes: rt.config.proxy.max_head_bytes, maxHeaders: 100 });
      } catch (e) {
        return this.fatal(e);
      }
      if (head === NEED_MORE) return;
      const rest = this.buf.byteLength > head.headBytes ? this.buf.subarray(head.headBytes) : null;
      this.buf = null;
      this.busy = true;
      this.requests++;
      void this.handle(head, rest);
    }
    if (!this.busy && this.clientEnded) this.close();
  }

  private fatal(e: unknown) {
    const pe = e instanceof ProxyError ? e : new ProxyError("PX_INTERNAL", "internal", String(e));
    if (!this.closed) {
      this.io.write(makeErrorResponse(statusFor(pe), pe.message));
      this.io.end();
    }
    this.closed = true;
  }

  /** Resolve where the request goes; inside a tunnel the Host must be the CONNECT host. */
  private route(head: RequestHead): { target: Target; path: string; url: string; verdict: Verdict } {
    const c = this.conn;
    if (this.connectTarget) {
      const t = this.connectTarget;
      let path = head.target;
      if (!path.startsWith("/")) {
        // absolute-form inside the tunnel: accept only for the same host
        const u = new URL(path);
        if (u.hostname.toLowerCase() !== t.host) throw new ProxyError("PX_MISDIRECTED", "client", `request for ${u.hostname} inside a tunnel to ${t.host}`);
        path = u.pathname + u.search;
      }
      const host = getHeader(head.headers, "host");
      if (host !== undefined) {
        const h = host.toLowerCase().replace(/:\d+$/, "").replace(/\.$/, "");
        if (h !== t.host) throw new ProxyError("PX_MISDIRECTED", "client", `Host ${h} does not match the CONNECT host ${t.host}`);
      }
      const port = t.port === 443 ? "" : `:${t.port}`;
      return { target: t, path, url: `https://${t.host}${port}${path}`, verdict: c.verdict! };
    }
    // Plain forward proxying: absolute-form only, and the policy decides per request.
    let u: URL;
    try {
      u = new URL(head.target);
    } catch {
      throw new ProxyError("PX_BAD_REQUEST", "client", "send requests in absolute form (GET http://host/path) or CONNECT host:port");
    }
    if (u.protocol !== "http:") throw new ProxyError("PX_BAD_REQUEST", "client", "use CONNECT for https");
    const target = parseAuthority(u.host, 80);
    const client = { ip: c.ip, port: "cache" as const, userAgent: getHeader(head.headers, "user-agent") };
    const denied = decideClient(rt.policy, client);
    if (denied) throw new ProxyError("PX_CLIENT_DENY", "client", denied.reason ?? "client not allowed");
    const v = decide(rt.policy, target, client);
    if (v.action === "deny") throw new ProxyError("PX_POLICY_DENY", "client", v.reason ?? `${target.host} denied`);
    const path = u.pathname + u.search;
    return { target, path, url: `http://${u.host}${path}`, verdict: v };
  }

  private async handle(head: RequestHead, rest: Uint8Array | null) {
    let req: HttpRequest;
    try {
      const r = this.route(head);
      req = {
        method: head.method,
        url: r.url,
        scheme: this.connectTarget ? "https" : "http",
        target: r.target,
        path: r.path,
        headers: head.headers,
        version: head.version,
        verdict: r.verdict,
        body: framingForRequest(head.headers),
        started: Date.now(),
      };
    } catch (e) {
      this.respondError(e, rest);
      return;
    }
    const res = this.makeResponder(req);
    const cacheable = req.verdict.cacheable && (req.method === "GET" || req.method === "HEAD") && req.body.kind === "none";
    try {
      if (cacheable && cacheLayer) {
        this.buf = rest;
        await cacheLayer(req, res, this);
      } else {
        await this.passThrough(req, res, rest);
      }
    } catch (e) {
      if (!res.closed) {
        const pe = e instanceof ProxyError ? e : new ProxyError("PX_INTERNAL", "internal", String((e as Error)?.message ?? e));
        if (!(e instanceof ProxyError)) log("error", "request failed", { id: this.conn.id, url: req.url, error: String((e as Error)?.stack ?? e) });
        res.error(statusFor(pe), pe.message);
      }
    }
  }

  private respondError(e: unknown, rest: Uint8Array | null) {
    const pe = e instanceof ProxyError ? e : new ProxyError("PX_INTERNAL", "internal", String(e));
    // The request's body (if any) was not read: the connection cannot be reused.
    void rest;
    log("info", "refused", { id: this.conn.id, client: this.conn.ip, port: "cache", status: statusFor(pe), rule: pe.code, reason: pe.message });
    if (!this.closed) {
      this.io.write(makeErrorResponse(statusFor(pe), pe.message));
      this.io.end();
    }
    this.closed = true;
  }

  /** Not cacheable: stream the request body to the origin and the response back, both with back-pressure. */
  passThrough(req: HttpRequest, res: Responder, rest: Uint8Array | null): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let exchange: ExchangeHandle | null = null;
      const expect = getHeader(req.headers, "expect");
      startExchange(
        { scheme: req.scheme, target: req.target, method: req.method, path: req.path, headers: req.headers, body: req.body },
        {
          onHead: (h) => {
            invalidateAfter(req, h.status, h.headers);
            const noBody = req.method === "HEAD" || h.status === 204 || h.status === 304;
            if (noBody) return res.head(h.status, stripHopByHop(h.headers), null, h.reason); // Content-Length kept as the origin said
            const len = getHeader(h.headers, "content-length");
            const headers = stripHopByHop(h.headers).filter(([k]) => k.toLowerCase() !== "content-length");
            res.head(h.status, headers, len !== undefined && /^\d+$/.test(len) ? Number(len) : null, h.reason);
          },
          onData: (chunk) => {
            const ok = res.write(chunk);
            if (!ok) res.onDrain(() => exchange?.resume());
            return ok;
          },
          onEnd: () => {
            res.end();
            resolve();
          },
          onError: (e) => {
            if (!res.closed) res.error(statusFor(e), e.message);
            resolve();
          },
        },
        { config: rt.config, policy: rt.policy },
      ).then(
        (ex) => {
          exchange = ex;
          if (req.body.kind === "none") {
            this.buf = rest;
            return;
          }
          if (expect?.toLowerCase() === "100-continue") this.io.write(CONTINUE);
          this.bodyExchange = ex;
          this.bodyDecoder = new BodyDecoder(req.body, "client");
          ex.onWritable = () => this.resumeInput();
          this.bodyDone = () => {
            ex.endBody();
          };
          // Body bytes that arrived while we were dialling sit in buf, after those that came with the head.
          const early = rest && this.buf ? concat(rest, this.buf) : (rest ?? this.buf);
          this.buf = null;
          if (early) this.onBodyBytes(early);
        },
        (e) => reject(e),
      );
    });
  }

  private onBodyBytes(d: Uint8Array) {
    const dec = this.bodyDecoder!;
    let r;
    try {
      r = dec.push(d);
    } catch (e) {
      this.bodyExchange?.abort();
      return this.fatal(e);
    }
    let ok = true;
    for (const c of r.chunks) if (c.byteLength) ok = this.bodyExchange!.writeBody(c) && ok;
    if (!ok) this.pauseInput();
    if (r.done) {
      this.bodyDecoder = null;
      const done = this.bodyDone;
      this.bodyDone = null;
      this.bodyExchange = null;
      done?.();
      if (r.rest) this.buf = this.buf ? concat(this.buf, r.rest) : r.rest.slice();
    }
  }

  /** Called by the cache layer (or pass-through) when a response is complete: next request. */
  private next() {
    this.busy = false;
    this.resumeInput();
    queueMicrotask(() => this.pump());
  }

  private makeResponder(req: HttpRequest): Responder {
    const session = this;
    let chunked = false;
    let ended = false;
    let headSent = false;
    let keepAlive = req.version === "1.1" && !/\bclose\b/i.test(getHeader(req.headers, "connection") ?? "");
    const r: Responder = {
      get closed() {
        return session.closed || ended;
      },
      head(status, headers, bodyLength, reason) {
        const h: Headers = [...headers];
        if (req.method === "HEAD" || status === 204 || status === 304) {
          // no body framing to add
        } else if (bodyLength !== null) h.push(["Content-Length", String(bodyLength)]);
        else if (req.version === "1.1") {
          chunked = true;
          h.push(["Transfer-Encoding", "chunked"]);
        } else keepAlive = false;
        if (!keepAlive) h.push(["Connection", "close"]);
        headSent = true;
        session.io.write(serializeResponseHead({ status, reason, headers: h }));
      },
      write(chunk) {
        if (session.closed) return true;
        rt.counters.bytesDown += chunk.byteLength;
        if (chunked) {
          for (const p of encodeChunk(chunk)) session.io.write(p);
        } else session.io.write(chunk);
        return !session.congested();
      },
      end() {
        if (ended) return;
        ended = true;
        if (chunked && !session.closed) session.io.write(lastChunk());
        if (!keepAlive) {
          session.io.end();
          session.closed = true;
          return;
        }
        session.next();
      },
      onDrain(f) {
        if (!session.congested()) return queueMicrotask(f);
        session.drainWaiters.push(f);
      },
      error(status, reason) {
        if (ended) return;
        ended = true;
        log("info", "request failed", { id: session.conn.id, url: req.url, status, reason, head_sent: headSent });
        if (headSent) {
          // Mid-body: the only honest signal left is to cut the connection.
          session.close();
          return;
        }
        if (!session.closed) {
          session.io.write(makeErrorResponse(status, reason));
          session.io.end();
        }
        session.closed = true;
      },
    };
    return r;
  }
}
