/**
 * The savings benchmark's agents, spawned by bench/e2e/savings.ts so their sockets and CPU are their own:
 *
 *   bun bench/e2e/savings-client.ts --mode fetch|stampede|handshake --via cache|direct --ca FILE ...
 *
 *   fetch      --agents A requests for --path, --concurrency N connections at a time, --per-conn K requests per
 *              connection (1 = a fresh connection per agent: CONNECT + TLS + GET; K > 1 = keep-alive). Every body
 *              is checked against --expect-size and --expect-sha256 as it streams in (--size-only: the size alone,
 *              a lighter client for seeing how much of a ratio is the client's own CPU).
 *   stampede   --agents A connections opened first (CONNECT + TLS, --concurrency at a time), then one GET on each,
 *              all written together, every body checked.
 *   handshake  --agents A TLS handshakes (CONNECT + TLS, or TLS straight to the origin), --concurrency at a time,
 *              then the connection is closed. --host-pattern "h{n}.example" gives every handshake its own host
 *              name (n = --host-start + i, zero-padded to 4), so each one makes the gateway mint a leaf.
 *
 * via cache: Bun.connect to the cache port, `CONNECT host:port`, 200, then `socket.upgradeTLS()` verifying the
 * gateway's CA for `host` (as bench/e2e/load-fixture.ts does). via direct: Bun.connect with TLS straight to the
 * origin, verifying the origin's CA. Same code otherwise, so the two differ only by the gateway.
 *
 * stdout: one JSON line `{ "ev": "done", ... }` (or `{ "ev": "error", message }`); progress lines every 250
 * agents. Every wait is bounded: --timeout-ms per connection setup and per request, --deadline-s for the run.
 */
import type { Socket } from "bun";
import { readFileSync } from "node:fs";
import { emitLine } from "./child-io";
import { cpuSince, errorTally, stats } from "./stats";
import { connectHead as connectRequest, MAX_RESPONSE_HEAD_BYTES, closedDuring, readHead, settleOnce as settleSetup, tlsSocketHandlers, tunnelHandlers } from "./tls-client";

type Mode = "fetch" | "stampede" | "handshake";
type Via = "cache" | "direct";

function fail(msg: string): never {
  console.error(`savings-client: ${msg}`);
  process.exit(2);
}

function parseArgs(argv: string[]) {
  const o = {
    mode: "fetch" as Mode,
    via: "cache" as Via,
    agents: 100,
    concurrency: 50,
    perConn: 1,
    proxyPort: 0,
    originPort: 0,
    host: "qagpublic.qg1.apps.qualys.com",
    hostPattern: "",
    hostStart: 1,
    ca: "",
    path: "/",
    expectSize: -1,
    expectSha256: "",
    /** check sizes only: a lighter client, to see how much of the ratio is the client's own CPU */
    sizeOnly: false,
    timeoutMs: 60_000,
    deadlineS: 600,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => argv[++i] ?? fail(`${a} needs a value`);
    const n = () => {
      const x = Number(v());
      if (!Number.isInteger(x) || x < 0) fail(`${a} needs a non-negative integer`);
      return x;
    };
    switch (a) {
      case "--mode": {
        const m = v();
        if (m !== "fetch" && m !== "stampede" && m !== "handshake") fail(`--mode: fetch, stampede or handshake, got ${m}`);
        o.mode = m;
        break;
      }
      case "--via": {
        const m = v();
        if (m !== "cache" && m !== "direct") fail(`--via: cache or direct, got ${m}`);
        o.via = m;
        break;
      }
      case "--agents": o.agents = n(); break;
      case "--concurrency": o.concurrency = Math.max(1, n()); break;
      case "--per-conn": o.perConn = Math.max(1, n()); break;
      case "--proxy-port": o.proxyPort = n(); break;
      case "--origin-port": o.originPort = n(); break;
      case "--host": o.host = v(); break;
      case "--host-pattern": o.hostPattern = v(); break;
      case "--host-start": o.hostStart = n(); break;
      case "--ca": o.ca = v(); break;
      case "--path": o.path = v(); break;
      case "--expect-size": o.expectSize = n(); break;
      case "--expect-sha256": o.expectSha256 = v().toLowerCase(); break;
      case "--size-only": o.sizeOnly = true; break;
      case "--timeout-ms": o.timeoutMs = n(); break;
      case "--deadline-s": o.deadlineS = n(); break;
      default: fail(`unknown argument ${a}`);
    }
  }
  if (o.via === "cache" && !o.proxyPort) fail("--proxy-port is required with --via cache");
  if (!o.originPort) fail("--origin-port is required");
  if (!o.ca) fail("--ca is required");
  if (o.mode !== "handshake" && (o.expectSize < 0 || !/^[0-9a-f]{64}$/.test(o.expectSha256))) fail("--expect-size and --expect-sha256 are required for fetch and stampede");
  return o;
}

const opt = parseArgs(process.argv.slice(2));
const CA = readFileSync(opt.ca, "utf8");
const enc = new TextEncoder();
const emit = (o: Record<string, unknown>) => {
  if (o.ev === "done") o.clientCpuS = cpuSince(CPU0); // the run's CPU, without start-up
  emitLine(o);
};

const { errors, bump, count: errorCount } = errorTally();

const hostFor = (i: number) => (opt.hostPattern ? opt.hostPattern.replace("{n}", String(opt.hostStart + i).padStart(4, "0")) : opt.host);

// ---- one connection ---------------------------------------------------------------------------------------

type Phase = "connect" | "answer" | "tls" | "ready" | "request" | "closed";

type Conn = {
  host: string;
  phase: Phase;
  t0: number;
  tTcp: number;
  tAnswer: number;
  tSecure: number;
  buf: Uint8Array | null;
  tls: Socket<Conn> | null;
  raw: Socket<Conn> | null;
  /** setup (connect → TLS) outcome */
  settle: ((err: string | null) => void) | null;
  /** the in-flight response */
  res: Resp | null;
};

type Resp = {
  reqStart: number;
  headDone: boolean;
  tFirstByte: number;
  need: number;
  got: number;
  hasher: Bun.CryptoHasher;
  done: (err: string | null) => void;
};

function finishResponse(c: Conn, err: string | null) {
  const r = c.res;
  if (!r) return;
  c.res = null;
  if (c.phase === "request") c.phase = "ready";
  r.done(err);
}

function closeConn(c: Conn) {
  if (c.phase === "closed") return;
  c.phase = "closed";
  (c.tls ?? c.raw)?.end();
}

function onClosed(c: Conn) {
  if (c.phase === "closed" && !c.settle && !c.res) return;
  const was = c.phase;
  c.phase = "closed";
  if (c.settle) return settleSetup(c, closedDuring(was));
  if (c.res) finishResponse(c, "closed-mid-response");
}

/** Response bytes: the head, then a Content-Length body hashed as it arrives. */
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
    if (!head.startsWith("HTTP/1.1 200")) return finishResponse(c, `response-${head.slice(9, 12)}`);
    const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (!cl) return finishResponse(c, "response-no-content-length");
    r.need = Number(cl[1]);
    if (r.need !== opt.expectSize) return finishResponse(c, "response-wrong-size");
    r.headDone = true;
    body = h.rest;
  }
  if (!body.byteLength) {
    if (r.got === r.need) checkBody(c, r);
    return;
  }
  if (r.got + body.byteLength > r.need) return finishResponse(c, "response-extra-bytes");
  if (!opt.sizeOnly) r.hasher.update(body);
  r.got += body.byteLength;
  if (r.got === r.need) checkBody(c, r);
}

function checkBody(c: Conn, r: Resp) {
  finishResponse(c, opt.sizeOnly || r.hasher.digest("hex") === opt.expectSha256 ? null : "body-sha256-mismatch");
}

// ---- Bun sockets: handlers at module scope, state on socket.data ------------------------------------------

const tlsHandlers = tlsSocketHandlers<Conn>({
  open(s) {
    if (!s.data.tTcp) s.data.tTcp = performance.now(); // direct: TCP is up, the handshake starts
  },
  secure(s, c) {
    c.tSecure = performance.now();
    c.tls = s;
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

const CONNECT_HEADS = new Map<string, Uint8Array>();
function connectHead(host: string) {
  let h = CONNECT_HEADS.get(host);
  if (!h) {
    h = connectRequest(`${host}:${opt.originPort}`, "agate-bench-savings");
    if (CONNECT_HEADS.size < 10_000) CONNECT_HEADS.set(host, h);
  }
  return h;
}

const plainHandlers = tunnelHandlers<Conn>({
  head: (c) => connectHead(c.host),
  tls: (c) => ({ ca: CA, serverName: c.host }),
  tlsHandlers,
  settle: settleSetup,
  onClosed,
  onOpen(s, c) {
    c.tTcp = performance.now();
    c.raw = s;
  },
  onAnswer(c) {
    c.tAnswer = performance.now();
  },
});

function open(host: string): Promise<{ c: Conn; err: string | null }> {
  const c: Conn = { host, phase: "connect", t0: performance.now(), tTcp: 0, tAnswer: 0, tSecure: 0, buf: null, tls: null, raw: null, settle: null, res: null };
  return new Promise((res) => {
    const timer = setTimeout(() => {
      if (!c.settle) return;
      settleSetup(c, "setup-timeout");
      (c.tls ?? c.raw)?.terminate();
    }, opt.timeoutMs);
    c.settle = (err) => {
      clearTimeout(timer);
      if (err) bump(err);
      res({ c, err });
    };
    const p =
      opt.via === "direct"
        ? ((c.phase = "tls"), Bun.connect<Conn>({ hostname: "127.0.0.1", port: opt.originPort, data: c, tls: { ca: CA, serverName: host }, socket: tlsHandlers } as never))
        : Bun.connect<Conn>({ hostname: "127.0.0.1", port: opt.proxyPort, data: c, socket: plainHandlers } as never);
    p.then(
      (s: Socket<Conn>) => {
        if (opt.via === "direct") c.raw = s;
      },
      () => settleSetup(c, "tcp-connect"),
    );
  });
}

/** One GET on an open connection; resolves with { ms, ttfbMs } or an error code. */
function get(c: Conn, close: boolean): Promise<{ ms: number; ttfbMs: number } | string> {
  return new Promise((res) => {
    if (c.phase !== "ready" || !c.tls) return res("request-not-open");
    c.phase = "request";
    const reqStart = performance.now();
    const timer = setTimeout(() => {
      if (!c.res) return;
      finishResponse(c, "request-timeout");
      c.tls?.terminate();
    }, opt.timeoutMs);
    const r: Resp = {
      reqStart,
      headDone: false,
      tFirstByte: 0,
      need: 0,
      got: 0,
      hasher: new Bun.CryptoHasher("sha256"),
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
    c.tls.write(enc.encode(`GET ${opt.path} HTTP/1.1\r\nHost: ${c.host}\r\nUser-Agent: agate-bench-savings\r\nAccept: */*\r\n${close ? "Connection: close\r\n" : ""}\r\n`));
  });
}

// ---- statistics -------------------------------------------------------------------------------------------

const setupFigures = (cs: Conn[]) => ({
  tcpMs: stats(cs.map((c) => c.tTcp - c.t0)),
  connectAnswerMs: opt.via === "cache" ? stats(cs.map((c) => c.tAnswer - c.tTcp)) : null,
  handshakeMs: stats(cs.map((c) => c.tSecure - (opt.via === "cache" ? c.tAnswer : c.tTcp))),
  setupMs: stats(cs.map((c) => c.tSecure - c.t0)),
});


// ---- the modes --------------------------------------------------------------------------------------------

/** Run `n` jobs, `concurrency` at a time; each job index is taken exactly once. */
async function pool(n: number, concurrency: number, job: (i: number) => Promise<void>) {
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < n; i = next++) await job(i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
}

let progressed = 0;
function progress(t0: number) {
  progressed++;
  if (progressed % 250 === 0) emit({ ev: "progress", done: progressed, errors: errorCount(), ms: Math.round(performance.now() - t0) });
}

async function runFetch() {
  const conns = Math.ceil(opt.agents / opt.perConn);
  const agentMs: number[] = [];
  const requestMs: number[] = [];
  const ttfbMs: number[] = [];
  const opened: Conn[] = [];
  let ok = 0;
  let failed = 0;
  const t0 = performance.now();
  await pool(conns, opt.concurrency, async (k) => {
    const n = Math.min(opt.perConn, opt.agents - k * opt.perConn);
    const { c, err } = await open(opt.host);
    if (err) {
      failed += n;
      return;
    }
    opened.push(c);
    for (let r = 0; r < n; r++) {
      const res = await get(c, opt.perConn === 1);
      if (typeof res === "string") {
        failed += n - r;
        break;
      }
      ok++;
      requestMs.push(res.ms);
      ttfbMs.push(res.ttfbMs);
      // fresh connections: the agent's whole download, CONNECT and handshake included
      if (opt.perConn === 1) agentMs.push(performance.now() - c.t0);
      progress(t0);
    }
    closeConn(c);
  });
  const wallMs = performance.now() - t0;
  emit({
    ev: "done",
    mode: "fetch",
    via: opt.via,
    agents: opt.agents,
    connections: conns,
    perConn: opt.perConn,
    concurrency: opt.concurrency,
    requestsOk: ok,
    requestsFailed: failed,
    bytes: ok * opt.expectSize,
    wallMs: Math.round(wallMs),
    requestsPerSecond: Math.round((ok / wallMs) * 1000 * 10) / 10,
    MBps: Math.round(((ok * opt.expectSize) / 1e6 / (wallMs / 1000)) * 10) / 10,
    latencyMs: stats(opt.perConn === 1 ? agentMs : requestMs),
    requestMs: stats(requestMs),
    ttfbMs: stats(ttfbMs),
    ...setupFigures(opened),
    errors: { ...errors },
    errorCount: errorCount(),
  });
}

async function runStampede() {
  const conns: Conn[] = [];
  let setupFailed = 0;
  const t0 = performance.now();
  await pool(opt.agents, opt.concurrency, async () => {
    const { c, err } = await open(opt.host);
    if (err) setupFailed++;
    else conns.push(c);
  });
  const rampMs = performance.now() - t0;
  const t1 = performance.now();
  // All GETs written in one turn of the event loop: the gateway sees them as concurrent first requests.
  const results = await Promise.all(conns.map((c) => get(c, true)));
  const wallMs = performance.now() - t1;
  const okMs = results.filter((r): r is { ms: number; ttfbMs: number } => typeof r !== "string");
  for (const c of conns) closeConn(c);
  emit({
    ev: "done",
    mode: "stampede",
    via: opt.via,
    agents: opt.agents,
    opened: conns.length,
    setupFailed,
    rampMs: Math.round(rampMs),
    requestsOk: okMs.length,
    requestsFailed: opt.agents - okMs.length,
    wallMs: Math.round(wallMs),
    latencyMs: stats(okMs.map((r) => r.ms)),
    ttfbMs: stats(okMs.map((r) => r.ttfbMs)),
    ...setupFigures(conns),
    errors: { ...errors },
    errorCount: errorCount(),
  });
}

async function runHandshakes() {
  const done: Conn[] = [];
  let failed = 0;
  const t0 = performance.now();
  await pool(opt.agents, opt.concurrency, async (i) => {
    const { c, err } = await open(hostFor(i));
    if (err) failed++;
    else done.push(c);
    closeConn(c);
    progress(t0);
  });
  const wallMs = performance.now() - t0;
  emit({
    ev: "done",
    mode: "handshake",
    via: opt.via,
    agents: opt.agents,
    distinctHosts: opt.hostPattern ? opt.agents : 1,
    concurrency: opt.concurrency,
    handshakesOk: done.length,
    handshakesFailed: failed,
    wallMs: Math.round(wallMs),
    handshakesPerSecond: Math.round((done.length / wallMs) * 1000 * 10) / 10,
    ...setupFigures(done),
    errors: { ...errors },
    errorCount: errorCount(),
  });
}

const CPU0 = process.cpuUsage();
const deadline = setTimeout(() => {
  emit({ ev: "error", message: `deadline of ${opt.deadlineS}s passed`, errors });
  process.exit(3);
}, opt.deadlineS * 1000);

try {
  if (opt.mode === "fetch") await runFetch();
  else if (opt.mode === "stampede") await runStampede();
  else await runHandshakes();
} catch (e) {
  emit({ ev: "error", message: String((e as Error)?.stack ?? e) });
  process.exit(3);
}
clearTimeout(deadline);
// Let the close_notify / FIN of the last connections go out before exiting.
await Bun.sleep(50);
process.exit(0);
