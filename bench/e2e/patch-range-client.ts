/**
 * The patch benchmark's random-range load, spawned by bench/e2e/patch.ts so its sockets and CPU are its own:
 *
 *   bun bench/e2e/patch-range-client.ts --via cache|direct --scheme https|http --host NAME --origin-port P
 *       --path /kb/x.msu --size BYTES --seed S [--proxy-port P] [--ca FILE] [--requests 1000] [--concurrency 8]
 *       [--range-bytes 1048576] [--rng-seed 1] [--timeout-ms 30000] [--deadline-s 300]
 *
 * --concurrency keep-alive connections each send GETs with `Range: bytes=a-b` for random offsets (a seeded
 * xorshift, so runs are comparable) until --requests are done. Every 206 is checked: Content-Range names the
 * range asked for, and every body byte equals bench/e2e/patch-bytes.ts's pattern for file --seed at its offset.
 *   via cache, https  Bun.connect to the cache port, `CONNECT host:port`, 200, upgradeTLS verifying --ca (the
 *                     gateway's CA) for --host, then origin-form GETs
 *   via cache, http   Bun.connect to the cache port, absolute-form GETs (`GET http://host:port/path`)
 *   via direct        straight to the origin on 127.0.0.1 (TLS verifying --ca, the origin's CA, for https)
 * A connection the server closes (Connection: close, or a drop between requests) is reopened and counted.
 *
 * stdout: `{ "ev": "done", … }` with requests/s, MB/s and latency (request written → last body byte) and TTFB
 * percentiles in ms, or `{ "ev": "error", message }`; progress lines every 250 requests. Every wait is bounded:
 * --timeout-ms per connection setup and per request, --deadline-s for the run.
 */
import type { Socket } from "bun";
import { readFileSync } from "node:fs";
import { emitLine as emit } from "./child-io";
import { isPatchBytes } from "./patch-bytes";
import { cpuSince, errorTally, stats } from "./stats";
import { connectHead, latin1, MAX_RESPONSE_HEAD_BYTES, closedDuring, readHead, settleOnce as settleSetup, tlsSocketHandlers, tunnelHandlers } from "./tls-client";

function fail(msg: string): never {
  console.error(`patch-range-client: ${msg}`);
  process.exit(2);
}

function parseArgs(argv: string[]) {
  const o = {
    via: "cache" as "cache" | "direct",
    scheme: "https" as "https" | "http",
    host: "",
    originPort: 0,
    proxyPort: 0,
    ca: "",
    path: "",
    size: 0,
    seed: 0,
    requests: 1000,
    concurrency: 8,
    rangeBytes: 1024 * 1024,
    rngSeed: 1,
    timeoutMs: 30_000,
    deadlineS: 300,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => argv[++i] ?? fail(`${a} needs a value`);
    const n = () => {
      const x = Number(v());
      if (!Number.isSafeInteger(x) || x < 0) fail(`${a} needs a non-negative integer`);
      return x;
    };
    switch (a) {
      case "--via": {
        const m = v();
        if (m !== "cache" && m !== "direct") fail(`--via: cache or direct, got ${m}`);
        o.via = m;
        break;
      }
      case "--scheme": {
        const m = v();
        if (m !== "https" && m !== "http") fail(`--scheme: https or http, got ${m}`);
        o.scheme = m;
        break;
      }
      case "--host": o.host = v(); break;
      case "--origin-port": o.originPort = n(); break;
      case "--proxy-port": o.proxyPort = n(); break;
      case "--ca": o.ca = v(); break;
      case "--path": o.path = v(); break;
      case "--size": o.size = n(); break;
      case "--seed": o.seed = n(); break;
      case "--requests": o.requests = n(); break;
      case "--concurrency": o.concurrency = Math.max(1, n()); break;
      case "--range-bytes": o.rangeBytes = Math.max(1, n()); break;
      case "--rng-seed": o.rngSeed = n() || 1; break;
      case "--timeout-ms": o.timeoutMs = n(); break;
      case "--deadline-s": o.deadlineS = n(); break;
      default: fail(`unknown argument ${a}`);
    }
  }
  if (!o.host || !o.originPort || !o.path || !o.size) fail("--host, --origin-port, --path and --size are required");
  if (o.via === "cache" && !o.proxyPort) fail("--proxy-port is required with --via cache");
  if (o.scheme === "https" && !o.ca) fail("--ca is required with --scheme https");
  if (o.rangeBytes > o.size) fail("--range-bytes is larger than --size");
  return o;
}

const opt = parseArgs(process.argv.slice(2));
const CA = opt.ca ? readFileSync(opt.ca, "utf8") : "";
const enc = new TextEncoder();
const CPU0 = process.cpuUsage();

const { errors, bump, count: errorCount } = errorTally();

// ---- random ranges ----------------------------------------------------------------------------------------

let rng = opt.rngSeed >>> 0 || 1;
/** xorshift32 → [0, 1); two draws make offsets beyond 2^32 possible */
function rand(): number {
  rng ^= rng << 13;
  rng ^= rng >>> 17;
  rng ^= rng << 5;
  return (rng >>> 0) / 2 ** 32;
}
const nextStart = () => Math.floor((rand() + rand() / 2 ** 32) * (opt.size - opt.rangeBytes + 1));

// ---- one connection ---------------------------------------------------------------------------------------

type Conn = {
  phase: "connect" | "answer" | "tls" | "ready" | "request" | "closed";
  buf: Uint8Array | null;
  sock: Socket<Conn> | null;
  settle: ((err: string | null) => void) | null;
  res: Resp | null;
  /** the server said Connection: close (or HTTP/1.0): reopen before the next request */
  closing: boolean;
};

type Resp = {
  start: number;
  end: number;
  reqStart: number;
  tFirstByte: number;
  headDone: boolean;
  /** file offset of the next body byte */
  pos: number;
  /** Transfer-Encoding: chunked (the direct origin's Bun.serve streams bodies that way, Content-Length or not) */
  chunks: ChunkReader | null;
  done: (err: string | null) => void;
};

/** Chunked framing (RFC 9112 §7.1), bytes in → body bytes out; `null` from push() means malformed. */
class ChunkReader {
  private left = 0; // data bytes left in the current chunk
  private state: "size" | "data" | "data-crlf" | "trailer" | "done" = "size";
  private line = "";
  get done() {
    return this.state === "done";
  }
  push(b: Uint8Array, onBody: (part: Uint8Array) => boolean): boolean {
    let i = 0;
    while (i < b.byteLength && this.state !== "done") {
      if (this.state === "data") {
        const n = Math.min(this.left, b.byteLength - i);
        if (!onBody(b.subarray(i, i + n))) return false;
        i += n;
        this.left -= n;
        if (this.left === 0) this.state = "data-crlf";
        continue;
      }
      // line-oriented states: size line, the CRLF after data, trailer lines
      const nl = b.indexOf(10, i);
      const end = nl < 0 ? b.byteLength : nl;
      this.line += latin1.decode(b.subarray(i, end));
      if (this.line.length > 1024) return false;
      i = nl < 0 ? b.byteLength : nl + 1;
      if (nl < 0) break;
      const line = this.line.replace(/\r$/, "");
      this.line = "";
      if (this.state === "size") {
        const m = /^([0-9a-fA-F]+)/.exec(line);
        if (!m) return false;
        this.left = parseInt(m[1]!, 16);
        this.state = this.left === 0 ? "trailer" : "data";
      } else if (this.state === "data-crlf") {
        if (line !== "") return false;
        this.state = "size";
      } else if (line === "") this.state = "done";
    }
    return true;
  }
}

function finishResponse(c: Conn, err: string | null) {
  const r = c.res;
  if (!r) return;
  c.res = null;
  if (c.phase === "request") c.phase = "ready";
  if (err) {
    // the stream is out of step: never reuse it
    c.phase = "closed";
    c.sock?.terminate();
  }
  r.done(err);
}

function onClosed(c: Conn) {
  const was = c.phase;
  c.phase = "closed";
  if (c.settle) return settleSetup(c, closedDuring(was));
  if (c.res) finishResponse(c, "closed-mid-response");
}

function onResponseBytes(c: Conn, data: Uint8Array) {
  const r = c.res;
  if (!r) {
    if (data.byteLength) bump("unexpected-bytes");
    return;
  }
  if (!r.tFirstByte) r.tFirstByte = performance.now();
  let body = data;
  if (!r.headDone) {
    const h = readHead(c, data);
    if (!h) {
      if (c.buf!.byteLength > MAX_RESPONSE_HEAD_BYTES) finishResponse(c, "response-head-too-long");
      return;
    }
    const head = h.head;
    if (!/^HTTP\/1\.[01] 206 /.test(head)) return finishResponse(c, `response-${head.slice(9, 12)}`);
    const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    const chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
    const cr = /\r\ncontent-range:\s*bytes (\d+)-(\d+)\/(\d+)/i.exec(head);
    if ((!cl && !chunked) || !cr) return finishResponse(c, "response-no-length-or-range");
    if (Number(cr[1]) !== r.start || Number(cr[2]) !== r.end || Number(cr[3]) !== opt.size) return finishResponse(c, "response-wrong-content-range");
    if (chunked) r.chunks = new ChunkReader();
    else if (Number(cl![1]) !== r.end - r.start + 1) return finishResponse(c, "response-wrong-length");
    if (/\r\nconnection:\s*close/i.test(head) || head.startsWith("HTTP/1.0")) c.closing = true;
    r.headDone = true;
    body = h.rest;
  }
  if (!body.byteLength) return;
  if (r.chunks) {
    let bad: string | null = null;
    const framed = r.chunks.push(body, (part) => {
      bad = takeBody(r, part);
      return bad === null;
    });
    if (bad) return finishResponse(c, bad);
    if (!framed) return finishResponse(c, "response-bad-chunking");
    if (r.chunks.done) finishResponse(c, r.pos === r.end + 1 ? null : "response-short");
    return;
  }
  const bad = takeBody(r, body);
  if (bad) return finishResponse(c, bad);
  if (r.pos === r.end + 1) finishResponse(c, null);
}

/** Body bytes at r.pos: checked against the pattern; an error code, or null. */
function takeBody(r: Resp, part: Uint8Array): string | null {
  if (r.pos + part.byteLength > r.end + 1) return "response-extra-bytes";
  if (!isPatchBytes(part, r.pos, opt.seed)) return "body-bytes-mismatch";
  r.pos += part.byteLength;
  return null;
}

const appHandlers = tlsSocketHandlers<Conn>({
  open(s) {
    const c = s.data;
    if (opt.scheme === "http") {
      // plain: the socket is ready as soon as it is open (the TLS variant settles in handshake)
      c.sock = s;
      c.phase = "ready";
      settleSetup(c, null);
    }
  },
  secure(s, c) {
    c.sock = s;
    c.phase = "ready";
    settleSetup(c, null);
  },
  data(s, d) {
    onResponseBytes(s.data, d);
  },
  settle: settleSetup,
  onClosed,
  bump,
});

const AUTHORITY = `${opt.host}:${opt.originPort}`;
const CONNECT_HEAD = connectHead(AUTHORITY, "agate-bench-patch");

/** cache + https: the plain socket until the CONNECT answer, then upgradeTLS. */
const connectHandlers = tunnelHandlers<Conn>({
  head: () => CONNECT_HEAD,
  tls: () => ({ ca: CA, serverName: opt.host }),
  tlsHandlers: appHandlers,
  settle: settleSetup,
  onClosed,
});

let opened = 0;
function open(): Promise<Conn | null> {
  const c: Conn = { phase: "connect", buf: null, sock: null, settle: null, res: null, closing: false };
  opened++;
  return new Promise((res) => {
    const timer = setTimeout(() => {
      if (!c.settle) return;
      settleSetup(c, "setup-timeout");
      c.sock?.terminate();
    }, opt.timeoutMs);
    c.settle = (err) => {
      clearTimeout(timer);
      if (err) bump(err);
      res(err ? null : c);
    };
    const tls = opt.scheme === "https" ? { ca: CA, serverName: opt.host } : undefined;
    const p =
      opt.via === "direct"
        ? Bun.connect<Conn>({ hostname: "127.0.0.1", port: opt.originPort, data: c, tls, socket: appHandlers } as never)
        : opt.scheme === "https"
          ? Bun.connect<Conn>({ hostname: "127.0.0.1", port: opt.proxyPort, data: c, socket: connectHandlers } as never)
          : Bun.connect<Conn>({ hostname: "127.0.0.1", port: opt.proxyPort, data: c, socket: appHandlers } as never);
    p.then(
      (s: Socket<Conn>) => {
        c.sock ??= s;
      },
      () => settleSetup(c, "tcp-connect"),
    );
  });
}

const requestTarget = opt.via === "cache" && opt.scheme === "http" ? `http://${AUTHORITY}${opt.path}` : opt.path;

function get(c: Conn, start: number): Promise<{ ms: number; ttfbMs: number } | string> {
  return new Promise((res) => {
    const end = start + opt.rangeBytes - 1;
    c.phase = "request";
    const reqStart = performance.now();
    const timer = setTimeout(() => {
      if (c.res) finishResponse(c, "request-timeout");
    }, opt.timeoutMs);
    const r: Resp = {
      start,
      end,
      reqStart,
      tFirstByte: 0,
      headDone: false,
      pos: start,
      chunks: null,
      done: (err) => {
        clearTimeout(timer);
        if (err) {
          bump(err);
          return res(err);
        }
        res({ ms: performance.now() - reqStart, ttfbMs: r.tFirstByte - reqStart });
      },
    };
    c.res = r;
    c.sock!.write(enc.encode(`GET ${requestTarget} HTTP/1.1\r\nHost: ${AUTHORITY}\r\nUser-Agent: agate-bench-patch\r\nAccept: */*\r\nRange: bytes=${start}-${end}\r\n\r\n`));
  });
}

// ---- the run ----------------------------------------------------------------------------------------------

const deadline = setTimeout(() => {
  emit({ ev: "error", message: `deadline of ${opt.deadlineS}s passed`, errors });
  process.exit(3);
}, opt.deadlineS * 1000);

try {
  const latency: number[] = [];
  const ttfb: number[] = [];
  let next = 0;
  let ok = 0;
  let failed = 0;
  let reopened = 0;
  const t0 = performance.now();
  const lane = async () => {
    let c: Conn | null = null;
    for (let i = next++; i < opt.requests; i = next++) {
      if (!c || c.phase !== "ready" || c.closing) {
        if (c) {
          reopened++;
          c.sock?.end();
        }
        c = await open();
        if (!c) {
          failed++;
          continue;
        }
      }
      const r = await get(c, nextStart());
      if (typeof r === "string") {
        failed++;
        continue;
      }
      ok++;
      latency.push(r.ms);
      ttfb.push(r.ttfbMs);
      if ((ok + failed) % 250 === 0) emit({ ev: "progress", done: ok + failed, failed, ms: Math.round(performance.now() - t0) });
    }
    c?.sock?.end();
  };
  await Promise.all(Array.from({ length: Math.min(opt.concurrency, opt.requests) }, lane));
  const wallMs = performance.now() - t0;
  const clientCpuS = cpuSince(CPU0);
  emit({
    ev: "done",
    via: opt.via,
    scheme: opt.scheme,
    requests: opt.requests,
    concurrency: opt.concurrency,
    rangeBytes: opt.rangeBytes,
    requestsOk: ok,
    requestsFailed: failed,
    connectionsOpened: opened,
    reopenedAfterClose: reopened,
    wallMs: Math.round(wallMs),
    rangesPerSecond: Math.round((ok / wallMs) * 1000 * 10) / 10,
    MBps: Math.round(((ok * opt.rangeBytes) / 1e6 / (wallMs / 1000)) * 10) / 10,
    latencyMs: stats(latency),
    ttfbMs: stats(ttfb),
    errors: { ...errors },
    errorCount: errorCount(),
    clientCpuS,
  });
} catch (e) {
  emit({ ev: "error", message: String((e as Error)?.stack ?? e) });
  process.exit(3);
}
clearTimeout(deadline);
await Bun.sleep(50);
process.exit(0);
