/**
 * @module Issue 12's defects as session scripts, fixed clock, no sockets: a silent CONNECT loses its slot after
 * `proxy.handshake_timeout_s` (layer 1's tick), every request head inside a connection is bounded by
 * `proxy.head_timeout_s` however slowly it trickles (HttpSession over a recording Duplex), bad request targets
 * and Host fields inside a tunnel are 400/421 with a reason, and a plain-HTTP connection is not logged as a tunnel.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { Duplex } from "node:stream";
import { parseConfig, type Config } from "../../src/core/config";
import { compilePolicy } from "../../src/core/policy";
import { ESTABLISHED } from "../../src/core/http1/serialize";
import type { Headers, RequestHead } from "../../src/core/http1/head";
import {
  type ConnCommand,
  type ConnSession,
  type SessionCtx,
  makeSession,
  onClosed,
  onData,
  onDialled,
  onTick,
  onTlsEstablished,
} from "../../src/core/conn-session";
import { HttpSession, type IncomingRequest, type RequestHandler, type Responder, type RequestBody } from "../../src/workers/http-session";
import { makeCacheServices, onCacheRequest } from "../../src/workers/cache-request";
import { emptyCounters } from "../../src/workers/protocol";
import type { ClientConn, WorkerRuntime } from "../../src/workers/runtime";
import type { Origins } from "../../src/workers/origin-client";
import { setLogSink } from "../../src/log";

const NOW = 1_700_000_000_000;
const HOST = "qagpublic.qg1.apps.qualys.com";
const ascii = (s: string) => new TextEncoder().encode(s);
const latin1 = (parts: Uint8Array[]) => Buffer.concat(parts).toString("latin1");

function ctxOf(raw: Record<string, unknown> = {}, intercepting = true): SessionCtx {
  const config = parseConfig({ proxy: { head_timeout_s: 10, handshake_timeout_s: 5, idle_timeout_s: 3600 }, cache: { enabled: true }, ...raw });
  return { config, policy: compilePolicy(config), draining: false, index: 0, intercepting };
}

const closes = (cmds: ConnCommand[]) => cmds.filter((c) => c.do === "close").map((c) => (c.do === "close" ? [c.reason, c.how] : null));

describe("defect 2: a silent CONNECT does not hold its slot", () => {
  test("cache port: no TLS handshake within handshake_timeout_s after 200 → closed on the next tick; trickled bytes do not extend it", () => {
    const s = makeSession(ctxOf(), { id: "c1", ip: "10.0.0.9", remotePort: 4000, port: "cache", admitted: true }, NOW);
    const cmds = onData(s, ascii(`CONNECT ${HOST}:443 HTTP/1.1\r\nHost: ${HOST}:443\r\n\r\n`), NOW);
    expect(cmds.map((c) => c.do)).toEqual(["writeClient", "intercept"]);
    expect(s.state).toBe("intercept");
    expect(onTick(s, NOW + 5000)).toEqual([]); // at the deadline: not yet
    onData(s, ascii("\x16"), NOW + 4000); // a byte of a ClientHello that never completes is activity, not a handshake
    expect(closes(onTick(s, NOW + 5001))).toEqual([["handshake-timeout", "abort"]]);
    expect(s.endReason).toBe("handshake-timeout");
  });

  test("once the handshake is done, only the idle timeout applies", () => {
    const s = makeSession(ctxOf(), { id: "c2", ip: "10.0.0.9", remotePort: 4001, port: "cache", admitted: true }, NOW);
    onData(s, ascii(`CONNECT ${HOST}:443 HTTP/1.1\r\nHost: ${HOST}:443\r\n\r\n`), NOW);
    onTlsEstablished(s);
    expect(onTick(s, NOW + 60_000)).toEqual([]);
    expect(closes(onTick(s, NOW + 3_600_001))).toEqual([["idle-timeout", "end"]]);
  });

  test("proxy port: a tunnel whose ClientHello never comes is closed after handshake_timeout_s, not after an hour", () => {
    const s = makeSession(ctxOf({}, false), { id: "c3", ip: "10.0.0.9", remotePort: 4002, port: "proxy", admitted: true }, NOW);
    expect(onData(s, ascii(`CONNECT ${HOST}:443 HTTP/1.1\r\nHost: ${HOST}:443\r\n\r\n`), NOW).map((c) => c.do)).toEqual(["dial"]);
    expect(onDialled(s, "direct", NOW + 100)).toEqual([{ do: "writeClient", bytes: ESTABLISHED }]);
    expect(onTick(s, NOW + 5000)).toEqual([]);
    expect(closes(onTick(s, NOW + 5101))).toEqual([["handshake-timeout", "abort"]]);
  });
});

describe("defect 9: a plain-HTTP connection is not a tunnel", () => {
  test("its close is logged as a connection of mode http, with no decision of 'forward'", () => {
    const s = makeSession(ctxOf(), { id: "c4", ip: "10.0.0.9", remotePort: 4003, port: "cache", admitted: true }, NOW);
    expect(onData(s, ascii(`GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n`), NOW).map((c) => c.do)).toEqual(["intercept"]);
    const logs = onClosed(s, { bytesIn: 60, bytesOut: 200 }, NOW + 10);
    expect(logs.map((c) => (c.do === "log" ? [c.msg, c.fields.mode, c.fields.decision] : c.do))).toEqual([["connection", "http", undefined]]);
  });
});

// ───────────────────────────── HttpSession over a recording Duplex ─────────────────────────────

/** The agent's side of a connection: `send` pushes bytes in, `out` is what the session wrote back. */
class AgentDuplex extends Duplex {
  readonly out: Uint8Array[] = [];
  ended = false;
  override _read() {}
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.out.push(new Uint8Array(chunk));
    cb();
  }
  override _final(cb: () => void) {
    this.ended = true;
    cb();
  }
  send(s: string) {
    this.push(Buffer.from(s, "latin1"));
  }
}

let now = NOW;
let logLines: any[] = [];
beforeEach(() => {
  now = NOW;
  logLines = [];
  setLogSink((line) => logLines.push(JSON.parse(line)));
});
afterEach(() => setLogSink((line) => process.stdout.write(line + "\n")));

const NO_ORIGINS: Origins = {
  start: () => Promise.reject(new Error("no origin in this script")),
  reuses: 0,
  close() {},
};

function runtime(raw: Record<string, unknown> = {}): WorkerRuntime {
  const config: Config = parseConfig({ proxy: { head_timeout_s: 10 }, cache: { enabled: true }, ...raw });
  let ids = 0;
  return {
    ...makeCacheServices(),
    origins: NO_ORIGINS,
    index: 0,
    bootId: "boot",
    config,
    policy: compilePolicy(config),
    draining: false,
    admission: null,
    intercepting: true,
    now: () => now,
    makeId: () => `id-${++ids}`,
    counters: emptyCounters(),
    proxyIps: new Set(),
    cacheIps: new Set(),
  } as WorkerRuntime;
}

const conn = () => ({ id: "conn-1", ip: "10.0.0.7", remotePort: 50123, endReason: "", verdict: null }) as unknown as ClientConn;

/** A story that answers every request 200 "ok" at once. */
const answerOk: RequestHandler = async (_rt, _inc, res) => {
  res.head(200, [], 2);
  res.write(ascii("ok"));
  res.end();
};

const tick = () => new Promise<void>((r) => setImmediate(r));

describe("defect 3: head_timeout_s bounds every request head, however it trickles", () => {
  test("the first head sent a byte at a time: 408 once head_timeout_s has passed, although every byte was activity", async () => {
    const io = new AgentDuplex();
    new HttpSession(runtime(), io, conn(), "http", null, io, answerOk);
    const head = "GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n";
    for (const ch of head) {
      io.send(ch);
      now += 400; // 2 s a byte in the issue; the clock is ours
      await tick();
      if (io.out.length) break;
    }
    expect(latin1(io.out)).toStartWith("HTTP/1.1 408 ");
    expect(io.ended).toBe(true);
  });

  test("the second request of a kept-alive connection gets its own deadline from its first byte", async () => {
    const io = new AgentDuplex();
    new HttpSession(runtime(), io, conn(), "http", null, io, answerOk);
    io.send("GET http://a.example/1 HTTP/1.1\r\nHost: a.example\r\n\r\n");
    await tick();
    await tick();
    expect(latin1(io.out)).toStartWith("HTTP/1.1 200 ");
    io.out.length = 0;
    now += 60_000; // idle between requests is the idle timeout's business, not the head's
    io.send("GET http://a.example/2 HTTP/1.1\r\n");
    await tick();
    expect(io.out.length).toBe(0);
    now += 10_001;
    io.send("Host: a.exa");
    await tick();
    expect(latin1(io.out)).toStartWith("HTTP/1.1 408 ");
  });

  test("a head that completes in time is answered", async () => {
    const io = new AgentDuplex();
    new HttpSession(runtime(), io, conn(), "http", null, io, answerOk);
    io.send("GET http://a.example/1 HTTP/1.1\r\n");
    now += 9_000;
    await tick();
    io.send("Host: a.example\r\n\r\n");
    await tick();
    await tick();
    expect(latin1(io.out)).toStartWith("HTTP/1.1 200 ");
  });
});

// ───────────────────────────── the request story's refusals ─────────────────────────────

function recorder() {
  const r = { status: 0, reason: "", headSent: false };
  const res: Responder = {
    head(st) {
      r.status = st;
      r.headSent = true;
    },
    write: () => true,
    end() {},
    onDrain: (f) => queueMicrotask(f),
    error(st, reason) {
      r.status = st;
      r.reason = reason;
    },
    get closed() {
      return r.status !== 0;
    },
    get status() {
      return r.status;
    },
    bytesOut: 0,
  };
  return { res, r };
}
const NO_BODY: RequestBody = { framing: { kind: "none" }, bytes: 0, pipeTo() {} };

async function inTunnel(target: string, headers: Headers, version: "1.0" | "1.1" = "1.1") {
  const rt = runtime();
  const head: RequestHead = { method: "GET", target, version, headers, headBytes: 40 };
  const inc: IncomingRequest = {
    head,
    scheme: "https",
    connectTarget: { host: HOST, port: 443, isIp: false },
    connectVerdict: { action: "intercept", rule: "platform-domain", cacheable: true },
    connId: "conn-1",
    clientIp: "10.0.0.7",
    clientPort: 50123,
  };
  const { res, r } = recorder();
  const before = logLines.length;
  await onCacheRequest(rt, inc, res, NO_BODY);
  const access = logLines.slice(before).filter((l) => l.msg === "access");
  return { status: r.status, reason: r.reason, access };
}

describe("defects 6 and 9 inside a tunnel: a bad target or Host is the agent's error, with the reason", () => {
  test.each([
    ["*", 400],
    [`${HOST}:443/x`, 400],
    [`https://${HOST}:99999/x`, 400],
    [`https://${HOST}:0/x`, 421],
    [`https://${HOST}:8443/x`, 421],
    [`ftp://${HOST}/x`, 400],
  ])("target %s → %d, never 500", async (target, status) => {
    const a = await inTunnel(target, [["Host", HOST]]);
    expect({ status: a.status, lines: a.access.length, phase: a.access[0]?.phase }).toEqual({ status, lines: 1, phase: "bypass:refused" });
    expect(a.reason).not.toContain("Invalid URL");
  });

  test.each([
    ["two Host fields", [["Host", HOST], ["Host", "evil.example"]] as Headers],
    ["no Host", [] as Headers],
  ])("%s on HTTP/1.1 → 400 with PX_BAD_HOST in the access line", async (_what, headers) => {
    const a = await inTunnel("/x", headers);
    expect({ status: a.status, reason: a.access[0]?.reason }).toEqual({ status: 400, reason: "PX_BAD_HOST" });
  });
});
