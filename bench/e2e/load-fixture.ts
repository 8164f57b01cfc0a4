/**
 * The benchmark's load generator, spawned by bench/e2e/concurrency.ts so its sockets and CPU are its own:
 *
 *   bun bench/e2e/load-fixture.ts --mode tunnel|direct|hold --conns C [--requests R] [--batch B] ...
 *
 *   tunnel  CONNECT host:port through the proxy, expect 200, TLS handshake inside the tunnel, then wait
 *   direct  the same TLS connection straight to the origin (the baseline)
 *   hold    CONNECT only (no TLS): record each answer (status, Retry-After, how fast) and hold what was admitted
 *
 * Connections are opened in batches of B (each batch settles before the next starts), so the gateway's
 * accept queue is not flooded. Then the barrier: it prints `ready` and waits for the parent to write `go`
 * on stdin, so all C are open together (the parent samples the gateway meanwhile). On `go` each connection
 * does R sequential keep-alive `GET`s; per-request latency is recorded. `close` closes everything and exits.
 *
 * Two TLS clients are built in (`--client`): `bun` = Bun.connect + socket.upgradeTLS() (client side, which
 * Bun supports), `node` = node:net + tls.connect({ socket }). stdout carries one JSON object per line:
 * --prime sends one untimed GET on each connection as soon as it is set up (see main()).
 *   { ev: "progress", opened, failed, ms }  { ev: "ready", ... }  { ev: "done", ... }  { ev: "closed" }
 * Every wait is bounded (setup, answer and request timeouts, and --deadline-s for the whole process).
 */
import type { Socket } from "bun";
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { emitLine as emit, stdinLines } from "./child-io";
import { stats } from "./stats";
import { closedDuring, concat, connectHead, headEnd, latin1, readHead } from "./tls-client";

type Mode = "tunnel" | "direct" | "hold";
type ClientKind = "bun" | "node";

// ---- arguments ------------------------------------------------------------------------------------------

function parseArgs(argv: string[]) {
  const o = {
    mode: "tunnel" as Mode,
    client: "bun" as ClientKind,
    conns: 100,
    requests: 5,
    batch: 200,
    proxyPort: 0,
    originPort: 0,
    host: "qagpublic.qg1.apps.qualys.com",
    ca: "",
    setupTimeoutMs: 30_000,
    answerTimeoutMs: 5_000,
    requestTimeoutMs: 30_000,
    deadlineS: 600,
    autoGo: false,
    prime: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) fail(`${a} needs a value`);
      return x;
    };
    const n = () => {
      const x = Number(v());
      if (!Number.isFinite(x) || x < 0) fail(`${a} needs a non-negative number`);
      return x;
    };
    switch (a) {
      case "--mode": {
        const m = v();
        if (m !== "tunnel" && m !== "direct" && m !== "hold") fail(`--mode: tunnel, direct or hold, got ${m}`);
        o.mode = m;
        break;
      }
      case "--client": {
        const c = v();
        if (c !== "bun" && c !== "node") fail(`--client: bun or node, got ${c}`);
        o.client = c;
        break;
      }
      case "--conns": o.conns = n(); break;
      case "--requests": o.requests = n(); break;
      case "--batch": o.batch = Math.max(1, n()); break;
      case "--proxy-port": o.proxyPort = n(); break;
      case "--origin-port": o.originPort = n(); break;
      case "--host": o.host = v(); break;
      case "--ca": o.ca = v(); break;
      case "--setup-timeout-ms": o.setupTimeoutMs = n(); break;
      case "--answer-timeout-ms": o.answerTimeoutMs = n(); break;
      case "--request-timeout-ms": o.requestTimeoutMs = n(); break;
      case "--deadline-s": o.deadlineS = n(); break;
      case "--auto-go": o.autoGo = true; break;
      case "--prime": o.prime = true; break;
      default: fail(`unknown argument ${a}`);
    }
  }
  if (o.mode !== "direct" && !o.proxyPort) fail("--proxy-port is required for tunnel and hold");
  if (!o.originPort) fail("--origin-port is required");
  if (o.mode !== "hold" && !o.ca) fail("--ca is required for tunnel and direct");
  return o;
}

function fail(msg: string): never {
  console.error(`load-fixture: ${msg}`);
  process.exit(2);
}

const opt = parseArgs(process.argv.slice(2));
const CA = opt.ca ? readFileSync(opt.ca, "utf8") : "";
const AUTHORITY = `${opt.host}:${opt.originPort}`;
const CONNECT_HEAD = connectHead(AUTHORITY, "agate-bench");
const enc = new TextEncoder();

// ---- per-connection state ---------------------------------------------------------------------------------

type Phase = "connect" | "answer" | "tls" | "ready" | "request" | "closed";

type Conn = {
  i: number;
  phase: Phase;
  t0: number;
  tTcp: number;
  tAnswer: number;
  tSecure: number;
  status: number;
  retryAfter: boolean;
  buf: Uint8Array | null;
  /** the socket requests go over (the TLS one) */
  write: ((b: Uint8Array) => void) | null;
  close: () => void;
  settle: ((err: string | null) => void) | null;
  timer: ReturnType<typeof setTimeout> | null;
  reqStart: number;
  /** the in-flight request's completion callback */
  onResponse: ((err: string | null) => void) | null;
  /** why the setup failed (counted in errors), or null */
  err: string | null;
  /** the socket reported an error (its close follows and is what counts) */
  sockErr: boolean;
};

const errors: Record<string, number> = {};
const bump = (k: string) => (errors[k] = (errors[k] ?? 0) + 1);

function newConn(i: number): Conn {
  return {
    i,
    phase: "connect",
    t0: performance.now(),
    tTcp: 0,
    tAnswer: 0,
    tSecure: 0,
    status: 0,
    retryAfter: false,
    buf: null,
    write: null,
    close: () => {},
    settle: null,
    timer: null,
    reqStart: 0,
    onResponse: null,
    err: null,
    sockErr: false,
  };
}

/** The setup (connect → answer → TLS) of one connection ends here, once. */
function settleSetup(c: Conn, err: string | null) {
  const s = c.settle;
  if (!s) return;
  c.settle = null;
  if (c.timer) clearTimeout(c.timer);
  c.timer = null;
  if (err) {
    c.err = err;
    bump(err);
  }
  s(err);
}

function onClosed(c: Conn, why: string) {
  if (c.phase === "closed") return;
  const was = c.phase;
  c.phase = "closed";
  if (c.settle) return settleSetup(c, closedDuring(was));
  if (c.onResponse) {
    const r = c.onResponse;
    c.onResponse = null;
    return r(`request-${why}`);
  }
  if (was === "ready" && !closingAll) bump(`closed-while-waiting`);
}

/** The proxy's answer to CONNECT. Returns true when it is complete (status recorded). */
function onAnswerBytes(c: Conn, data: Uint8Array): boolean {
  const h = readHead(c, data);
  if (!h) {
    if (c.buf!.byteLength > 16 * 1024) {
      c.buf = null;
      settleSetup(c, "proxy-bad-answer");
      c.close();
    }
    return false;
  }
  const head = h.head;
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  c.status = m ? Number(m[1]) : -1;
  c.retryAfter = /\r\nretry-after:\s*\d+/i.test(head);
  c.tAnswer = performance.now();
  return true;
}

/** Response bytes on the TLS socket: one complete response (head + Content-Length body) ends the request. */
function onResponseBytes(c: Conn, data: Uint8Array) {
  if (!c.onResponse) return; // unexpected bytes: ignored
  const b = concat(c.buf, data);
  const end = headEnd(b);
  if (end < 0) {
    c.buf = b;
    return;
  }
  const head = latin1.decode(b.subarray(0, end));
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  const need = end + (cl ? Number(cl[1]) : 0);
  if (b.byteLength < need) {
    c.buf = b;
    return;
  }
  c.buf = null;
  const r = c.onResponse;
  c.onResponse = null;
  r(head.startsWith("HTTP/1.1 200") ? null : `response-${head.slice(9, 12)}`);
}

/** hold mode: an answer ends the setup; a refusal is closed by us (phase "closed" first, so it is no error). */
function onHoldAnswer(c: Conn) {
  settleSetup(c, null);
  if (c.status === 200) {
    c.phase = "ready";
    return;
  }
  c.phase = "closed";
  c.close();
}

// ---- the Bun client: Bun.connect, then socket.upgradeTLS() ------------------------------------------------

const bunTlsHandlers = {
  open(s: Socket<Conn>) {
    if (!s.data.tTcp) s.data.tTcp = performance.now(); // direct mode: TCP is up, the handshake starts
  },
  handshake(s: Socket<Conn>, ok: boolean, authErr: Error | null) {
    const c = s.data;
    if (!ok || authErr) {
      settleSetup(c, "tls-handshake");
      s.terminate();
      return;
    }
    c.tSecure = performance.now();
    c.phase = "ready";
    c.write = (b) => void s.write(b);
    c.close = () => s.terminate();
    settleSetup(c, null);
  },
  data(s: Socket<Conn>, d: Uint8Array) {
    onResponseBytes(s.data, d);
  },
  close(s: Socket<Conn>) {
    onClosed(s.data, "closed");
  },
  end(s: Socket<Conn>) {
    s.end();
  },
  error(s: Socket<Conn>) {
    s.data.sockErr = true;
  },
  connectError(s: Socket<Conn>) {
    settleSetup(s.data, "tcp-connect");
  },
};

const bunPlainHandlers = {
  open(s: Socket<Conn>) {
    const c = s.data;
    c.tTcp = performance.now();
    c.close = () => s.terminate();
    if (opt.mode === "direct") return;
    c.phase = "answer";
    s.write(CONNECT_HEAD);
  },
  data(s: Socket<Conn>, d: Uint8Array) {
    const c = s.data;
    if (c.phase !== "answer") return;
    if (!onAnswerBytes(c, d)) return;
    if (opt.mode === "hold") return onHoldAnswer(c);
    if (c.status !== 200) {
      settleSetup(c, `proxy-status-${c.status}`);
      s.end();
      return;
    }
    c.phase = "tls";
    s.upgradeTLS<Conn>({ data: c, tls: { ca: CA, serverName: opt.host }, socket: bunTlsHandlers } as never);
  },
  close(s: Socket<Conn>) {
    if (s.data.phase !== "tls" && s.data.phase !== "ready" && s.data.phase !== "request") onClosed(s.data, "closed");
    else if (opt.mode === "hold") onClosed(s.data, "closed");
  },
  end(s: Socket<Conn>) {
    s.end();
  },
  error(s: Socket<Conn>) {
    s.data.sockErr = true;
  },
  connectError(s: Socket<Conn>) {
    settleSetup(s.data, "tcp-connect");
  },
};

function openBun(c: Conn) {
  const port = opt.mode === "direct" ? opt.originPort : opt.proxyPort;
  if (opt.mode === "direct") {
    c.phase = "tls";
    Bun.connect<Conn>({ hostname: "127.0.0.1", port, data: c, tls: { ca: CA, serverName: opt.host }, socket: bunTlsHandlers } as never).catch(
      () => settleSetup(c, "tcp-connect"),
    );
    return;
  }
  Bun.connect<Conn>({ hostname: "127.0.0.1", port, data: c, socket: bunPlainHandlers } as never).catch(() => settleSetup(c, "tcp-connect"));
}

// ---- the node client: node:net, then tls.connect({ socket }) ----------------------------------------------

function nodeSecure(c: Conn, t: tls.TLSSocket) {
  t.on("secureConnect", () => {
    c.tSecure = performance.now();
    c.phase = "ready";
    c.write = (b) => void t.write(b);
    c.close = () => t.destroy();
    settleSetup(c, null);
  });
  t.on("data", (d: Buffer) => onResponseBytes(c, d));
  t.on("error", () => {
    if (c.settle) settleSetup(c, "tls-handshake");
  });
  t.on("close", () => onClosed(c, "closed"));
}

function openNode(c: Conn) {
  if (opt.mode === "direct") {
    c.phase = "tls";
    const t = tls.connect({ host: "127.0.0.1", port: opt.originPort, servername: opt.host, ca: CA });
    c.close = () => t.destroy();
    t.once("connect", () => (c.tTcp = performance.now()));
    nodeSecure(c, t);
    return;
  }
  const s = net.connect({ host: "127.0.0.1", port: opt.proxyPort });
  c.close = () => s.destroy();
  s.once("connect", () => {
    c.tTcp = performance.now();
    c.phase = "answer";
    s.write(CONNECT_HEAD);
  });
  const onData = (d: Buffer) => {
    if (c.phase !== "answer" || !onAnswerBytes(c, d)) return;
    s.off("data", onData);
    if (opt.mode === "hold") return onHoldAnswer(c);
    if (c.status !== 200) {
      settleSetup(c, `proxy-status-${c.status}`);
      s.end();
      return;
    }
    c.phase = "tls";
    const t = tls.connect({ socket: s, servername: opt.host, ca: CA });
    c.close = () => t.destroy();
    nodeSecure(c, t);
  };
  s.on("data", onData);
  s.on("error", () => {
    if (c.settle) settleSetup(c, closedDuring(c.phase));
  });
  s.on("close", () => {
    if (c.phase !== "tls" && c.phase !== "ready" && c.phase !== "request") onClosed(c, "closed");
    else if (opt.mode === "hold") onClosed(c, "closed");
  });
}

// ---- the run ----------------------------------------------------------------------------------------------

function setup(c: Conn): Promise<string | null> {
  return new Promise((res) => {
    c.settle = res;
    const ms = opt.mode === "hold" ? opt.answerTimeoutMs : opt.setupTimeoutMs;
    c.timer = setTimeout(() => {
      settleSetup(c, opt.mode === "hold" ? "answer-timeout" : "setup-timeout");
      c.close();
    }, ms);
    try {
      (opt.client === "bun" ? openBun : openNode)(c);
    } catch (e) {
      settleSetup(c, "tcp-connect");
    }
  });
}

function request(c: Conn, n: number): Promise<number> {
  return new Promise((res, rej) => {
    if (c.phase !== "ready" || !c.write) return rej("request-not-open");
    c.phase = "request";
    const timer = setTimeout(() => {
      if (!c.onResponse) return;
      c.onResponse = null;
      rej("request-timeout");
      c.close();
    }, opt.requestTimeoutMs);
    c.reqStart = performance.now();
    c.onResponse = (err) => {
      clearTimeout(timer);
      if (c.phase === "request") c.phase = "ready";
      if (err) rej(err);
      else res(performance.now() - c.reqStart);
    };
    c.write(enc.encode(`GET /c/${c.i}/${n} HTTP/1.1\r\nHost: ${opt.host}\r\nUser-Agent: agate-bench\r\n\r\n`));
  });
}

let closingAll = false;
const lines: string[] = [];
let lineWaiter = null as ((l: string) => void) | null;
void (async () => {
  for await (const l of stdinLines()) {
    if (lineWaiter) {
      const w = lineWaiter;
      lineWaiter = null;
      w(l);
    } else lines.push(l);
  }
  // stdin closed: the parent is gone; do not linger.
  if (lineWaiter) lineWaiter("close");
  else lines.push("close");
})();

const nextCommand = (): Promise<string> =>
  lines.length ? Promise.resolve(lines.shift()!) : new Promise((res) => (lineWaiter = res));

async function main() {
  const deadline = setTimeout(() => {
    emit({ ev: "error", message: `deadline of ${opt.deadlineS}s passed` });
    process.exit(3);
  }, opt.deadlineS * 1000);
  const t0 = performance.now();
  const conns: Conn[] = [];
  let opened = 0;
  let failed = 0;
  for (let start = 0; start < opt.conns; start += opt.batch) {
    const batch: Conn[] = [];
    for (let i = start; i < Math.min(opt.conns, start + opt.batch); i++) batch.push(newConn(i));
    conns.push(...batch);
    const errs = await Promise.all(batch.map(setup));
    // --prime: one untimed GET right after the set-up. Bun.serve (the origin fixture) closes a TLS connection that
    // has sent no request within ~10 s whatever its idleTimeout (measured: a node:tls client that sends nothing is
    // closed 12 s after connecting, one that sent a GET is still open at 25 s), so a ramp longer than that (9,000
    // with a CPU-bound neighbour: 15–30 s) loses its first connections at the barrier ("closed-while-waiting").
    if (opt.prime) await Promise.all(batch.map((c, k) => (errs[k] ? null : request(c, -1).catch((e) => (bump(`prime-${e}`), (errs[k] = String(e)))))));
    for (const e of errs) e ? failed++ : opened++;
    emit({ ev: "progress", opened, failed, ms: Math.round(performance.now() - t0) });
  }
  const rampMs = performance.now() - t0;
  const ok = conns.filter((c) => !c.err);
  const summary: Record<string, unknown> = {
    ev: "ready",
    mode: opt.mode,
    client: opt.client,
    conns: opt.conns,
    opened,
    failed,
    rampMs: Math.round(rampMs),
    errors: { ...errors },
  };
  if (opt.mode === "hold") {
    const byStatus: Record<string, number> = {};
    for (const c of ok) byStatus[c.status] = (byStatus[c.status] ?? 0) + 1;
    const refused = ok.filter((c) => c.status === 503);
    Object.assign(summary, {
      byStatus,
      refusedWithRetryAfter: refused.filter((c) => c.retryAfter).length,
      // time from the TCP connect to the complete answer head
      refusalMs: stats(refused.map((c) => c.tAnswer - c.tTcp)),
      admittedMs: stats(ok.filter((c) => c.status === 200).map((c) => c.tAnswer - c.tTcp)),
      stillOpen: ok.filter((c) => c.status === 200 && c.phase === "ready").length,
    });
  } else {
    Object.assign(summary, {
      tcpMs: stats(ok.map((c) => c.tTcp - c.t0)),
      connectAnswerMs: opt.mode === "tunnel" ? stats(ok.map((c) => c.tAnswer - c.tTcp)) : null,
      handshakeMs: stats(ok.map((c) => c.tSecure - (opt.mode === "tunnel" ? c.tAnswer : c.tTcp))),
      setupMs: stats(ok.map((c) => c.tSecure - c.t0)),
    });
  }
  emit(summary);

  if (opt.mode !== "hold") {
    const cmd = opt.autoGo ? "go" : await nextCommand();
    if (cmd === "go") {
      // Anything that closed while waiting at the barrier is an error already counted; the rest go together.
      const open = conns.filter((c) => !c.err && c.phase === "ready");
      const stillOpenAtGo = open.length;
      const lat = new Float64Array(open.length * opt.requests);
      let nLat = 0;
      let reqOk = 0;
      let reqFailed = 0;
      const t1 = performance.now();
      await Promise.all(
        open.map(async (c) => {
          for (let r = 0; r < opt.requests; r++) {
            try {
              lat[nLat++] = await request(c, r);
              reqOk++;
            } catch (e) {
              bump(String(e));
              reqFailed += opt.requests - r;
              return;
            }
          }
        }),
      );
      const reqMs = performance.now() - t1;
      emit({
        ev: "done",
        stillOpenAtGo,
        requestsOk: reqOk,
        requestsFailed: reqFailed + (opt.conns - stillOpenAtGo) * opt.requests,
        requestPhaseMs: Math.round(reqMs),
        requestsPerSecond: Math.round(reqOk / (reqMs / 1000)),
        latencyMs: stats(lat.subarray(0, nLat)),
        errors: { ...errors },
      });
    }
    if (cmd !== "close") while ((await nextCommand()) !== "close") {}
  } else {
    while ((await nextCommand()) !== "close") {}
  }
  closingAll = true;
  // hold mode: how many admitted connections the gateway kept open for the whole hold
  const stillOpen = conns.filter((c) => !c.err && c.status === 200 && c.phase === "ready").length;
  for (const c of conns) if (c.phase !== "closed") c.close();
  emit({ ev: "closed", stillOpen });
  clearTimeout(deadline);
  process.exit(0);
}

await main();
