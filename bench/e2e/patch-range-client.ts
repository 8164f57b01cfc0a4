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
import { isPatchBytes } from "./patch-bytes";

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
const latin1 = new TextDecoder("latin1");
const CPU0 = process.cpuUsage();
const emit = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + "\n");

const errors: Record<string, number> = {};
const bump = (k: string) => (errors[k] = (errors[k] ?? 0) + 1);
const errorCount = () => Object.values(errors).reduce((a, b) => a + b, 0);

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

function concat(a: Uint8Array | null, b: Uint8Array): Uint8Array {
  if (!a) return b.slice();
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

function headEnd(b: Uint8Array): number {
  for (let i = 3; i < b.byteLength; i++) if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i + 1;
  return -1;
}

function settleSetup(c: Conn, err: string | null) {
  const s = c.settle;
  if (!s) return;
  c.settle = null;
  s(err);
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
  if (c.settle) return settleSetup(c, was === "connect" ? "tcp-connect" : was === "answer" ? "proxy-closed" : "tls-closed");
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
    const b = concat(c.buf, data);
    const end = headEnd(b);
    if (end < 0) {
      c.buf = b;
      if (b.byteLength > 64 * 1024) finishResponse(c, "response-head-too-long");
      return;
    }
    c.buf = null;
    const head = latin1.decode(b.subarray(0, end));
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
    body = b.subarray(end);
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

const appHandlers = {
  open(s: Socket<Conn>) {
    const c = s.data;
    if (opt.scheme === "http") {
      // plain: the socket is ready as soon as it is open (the TLS variant settles in handshake)
      c.sock = s;
      c.phase = "ready";
      settleSetup(c, null);
    }
  },
  handshake(s: Socket<Conn>, ok: boolean, authErr: Error | null) {
    const c = s.data;
    if (!ok || authErr) {
      bump(`tls-verify: ${authErr?.message ?? "failed"}`.slice(0, 80));
      settleSetup(c, "tls-handshake");
      s.terminate();
      return;
    }
    c.sock = s;
    c.phase = "ready";
    settleSetup(c, null);
  },
  data(s: Socket<Conn>, d: Uint8Array) {
    onResponseBytes(s.data, d);
  },
  close(s: Socket<Conn>) {
    onClosed(s.data);
  },
  end(s: Socket<Conn>) {
    s.end();
  },
  error(_s: Socket<Conn>) {},
  connectError(s: Socket<Conn>) {
    settleSetup(s.data, "tcp-connect");
  },
};

const AUTHORITY = `${opt.host}:${opt.originPort}`;
const CONNECT_HEAD = enc.encode(`CONNECT ${AUTHORITY} HTTP/1.1\r\nHost: ${AUTHORITY}\r\nUser-Agent: agate-bench-patch\r\n\r\n`);

/** cache + https: the plain socket until the CONNECT answer, then upgradeTLS. */
const connectHandlers = {
  open(s: Socket<Conn>) {
    const c = s.data;
    c.phase = "answer";
    s.write(CONNECT_HEAD);
  },
  data(s: Socket<Conn>, d: Uint8Array) {
    const c = s.data;
    if (c.phase !== "answer") return;
    const b = concat(c.buf, d);
    const end = headEnd(b);
    if (end < 0) {
      c.buf = b;
      if (b.byteLength > 16 * 1024) (settleSetup(c, "proxy-bad-answer"), s.terminate());
      return;
    }
    c.buf = null;
    const head = latin1.decode(b.subarray(0, end));
    if (!/^HTTP\/1\.[01] 200/.test(head)) {
      settleSetup(c, `proxy-status-${head.slice(9, 12)}`);
      s.end();
      return;
    }
    c.phase = "tls";
    s.upgradeTLS<Conn>({ data: c, tls: { ca: CA, serverName: opt.host }, socket: appHandlers } as never);
  },
  close(s: Socket<Conn>) {
    const c = s.data;
    if (c.phase === "connect" || c.phase === "answer") onClosed(c);
  },
  end(s: Socket<Conn>) {
    s.end();
  },
  error(_s: Socket<Conn>) {},
  connectError(s: Socket<Conn>) {
    settleSetup(s.data, "tcp-connect");
  },
};

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

function stats(xs: ArrayLike<number>) {
  const a = Float64Array.from(xs).sort();
  const q = (p: number) => (a.length ? a[Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1))]! : null);
  let sum = 0;
  for (const x of a) sum += x;
  const r = (x: number | null) => (x === null ? null : Math.round(x * 1000) / 1000);
  return { n: a.length, p50: r(q(50)), p90: r(q(90)), p99: r(q(99)), max: r(q(100)), mean: r(a.length ? sum / a.length : null) };
}

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
  const u = process.cpuUsage(CPU0);
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
    clientCpuS: { user: Math.round(u.user / 1e4) / 100, sys: Math.round(u.system / 1e4) / 100 },
  });
} catch (e) {
  emit({ ev: "error", message: String((e as Error)?.stack ?? e) });
  process.exit(3);
}
clearTimeout(deadline);
await Bun.sleep(50);
process.exit(0);
