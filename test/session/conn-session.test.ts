/**
 * Layer 1 as scripts (mitmproxy's Playbook): events into core/conn-session with a fixed clock, the commands it
 * returns asserted as data. No sockets. Covers every row of the README's "What the proxy port answers", the SNI
 * check, admission, health, the cache port's interception, the idle sweep and the lingering close.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig } from "../../src/core/config";
import { compilePolicy } from "../../src/core/policy";
import { ProxyError } from "../../src/core/errors";
import { ESTABLISHED } from "../../src/core/http1/serialize";
import {
  type ConnCommand,
  type ConnSession,
  type PortKind,
  type SessionCtx,
  LINGER_MS,
  MAX_EARLY_BYTES,
  makeSession,
  onClientEnd,
  onClosed,
  onData,
  onDialFailed,
  onDialled,
  onDrainStart,
  onOpen,
  onTick,
} from "../../src/core/conn-session";

const NOW = 1_700_000_000_000;
const HOST = "qagpublic.qg1.apps.qualys.com"; // the SNI in the captured ClientHellos
const FIX = join(import.meta.dir, "..", "fixtures");
const HELLO_SNI = new Uint8Array(readFileSync(join(FIX, "client-hello-openssl-sni.bin")));
const HELLO_NOSNI = new Uint8Array(readFileSync(join(FIX, "client-hello-openssl-nosni.bin")));
const ascii = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array | null) => (b ? new TextDecoder("latin1").decode(b) : "");

type CtxOpts = { raw?: Record<string, unknown>; intercepting?: boolean; draining?: boolean };
function testCtx(o: CtxOpts = {}): SessionCtx & { draining: boolean } {
  const config = parseConfig({ proxy: { head_timeout_s: 10, idle_timeout_s: 60, max_head_bytes: 4096, max_connections: 100 }, ...(o.raw ?? {}) });
  return { config, policy: compilePolicy(config), draining: o.draining ?? false, index: 3, intercepting: o.intercepting ?? false };
}

function open(ctx: SessionCtx, o: { port?: PortKind; admitted?: boolean } = {}): [ConnSession, ConnCommand[]] {
  const s = makeSession(ctx, { id: "c1", ip: "10.1.2.3", remotePort: 5555, port: o.port ?? "proxy", admitted: o.admitted ?? true }, NOW);
  return [s, onOpen(s, NOW)];
}

/** The refusal the session asked for: its code, status and rule, and the answer's status line and body. */
function refusal(cmds: ConnCommand[]) {
  const r = cmds.find((c) => c.do === "refuse");
  if (!r || r.do !== "refuse") throw new Error(`no refuse command in ${JSON.stringify(cmds.map((c) => c.do))}`);
  const close = cmds.find((c) => c.do === "close");
  return { code: r.code, status: r.status, rule: r.rule, answer: text(r.bytes), close: close && close.do === "close" ? close.how : null };
}

const connect = (authority: string, extra = "") => ascii(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${extra}\r\n`);

describe("what the proxy port answers (README table)", () => {
  const ctx = testCtx();

  test("an allowed CONNECT dials, then answers 200 and peeks the ClientHello", () => {
    const [s, opened] = open(ctx);
    expect(opened).toEqual([]);
    const cmds = onData(s, connect(`${HOST}:443`), NOW);
    expect(cmds).toEqual([{ do: "dial", target: { host: HOST, port: 443, isIp: false }, verdict: expect.objectContaining({ action: "tunnel" }) }]);
    expect(s.state).toBe("dial");
    expect(onDialled(s, "direct", NOW + 5)).toEqual([{ do: "writeClient", bytes: ESTABLISHED }]);
    expect(s.state).toBe("tlsPeek");
    expect(onData(s, HELLO_SNI, NOW + 6)).toEqual([{ do: "pipe", early: HELLO_SNI }]);
    expect(s.state).toBe("tunnel");
  });

  test.each([
    ["bare LF", "CONNECT x.qualys.com:443 HTTP/1.1\nHost: x\n\n"],
    ["missing port", "CONNECT x.qualys.com HTTP/1.1\r\n\r\n"],
    ["port 0", "CONNECT x.qualys.com:0 HTTP/1.1\r\n\r\n"],
    ["port 99999", "CONNECT x.qualys.com:99999 HTTP/1.1\r\n\r\n"],
    ["userinfo", "CONNECT user:pw@x.qualys.com:443 HTTP/1.1\r\n\r\n"],
  ])("a malformed request (%s) → 400, lingering close", (_what, head) => {
    const [s] = open(ctx);
    const r = refusal(onData(s, ascii(head), NOW));
    expect(r.status).toBe(400);
    expect(r.answer).toStartWith("HTTP/1.1 400 ");
    expect(r.close).toBe("linger");
    expect(s.state).toBe("refused");
  });

  test("a domain outside the allowed domains → 403 PX_POLICY_DENY with the policy's rule and reason", () => {
    const [s] = open(ctx);
    const cmds = onData(s, connect("evil.example.com:443"), NOW);
    expect(refusal(cmds)).toMatchObject({ code: "PX_POLICY_DENY", status: 403, rule: "deny-domain", close: "linger" });
    expect(refusal(cmds).answer).toContain("CONNECT to evil.example.com:443 denied: not an allowed domain");
    expect(cmds[0]).toMatchObject({ do: "log", msg: "refused", fields: { dest: "evil.example.com:443", status: 403, rule: "deny-domain" } });
  });

  test("a port outside destinations.ports → 403 deny-port", () => {
    const [s] = open(ctx);
    const r = refusal(onData(s, connect(`${HOST}:8443`), NOW));
    expect(r).toMatchObject({ code: "PX_POLICY_DENY", status: 403, rule: "deny-port" });
    expect(r.answer).toContain("port 8443");
  });

  test("an IP literal → 403 deny-ip-literal", () => {
    const [s] = open(ctx);
    expect(refusal(onData(s, connect("10.0.0.1:443"), NOW))).toMatchObject({ code: "PX_POLICY_DENY", status: 403, rule: "deny-ip-literal" });
  });

  test("a method other than CONNECT → 405", () => {
    const [s] = open(ctx);
    expect(refusal(onData(s, ascii("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), NOW))).toMatchObject({ code: "PX_METHOD_NOT_ALLOWED", status: 405 });
  });

  test("absolute-form http:// on the proxy port → 405", () => {
    const [s] = open(ctx);
    expect(refusal(onData(s, ascii(`GET http://${HOST}/x HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`), NOW)).status).toBe(405);
  });

  test("a head over proxy.max_head_bytes → 431 as the bytes arrive, before any end of head", () => {
    const [s] = open(ctx);
    expect(onData(s, ascii(`CONNECT ${HOST}:443 HTTP/1.1\r\n`), NOW)).toEqual([]);
    const r = refusal(onData(s, ascii(`X-Pad: ${"a".repeat(5000)}`), NOW)); // no CRLFCRLF yet
    expect(r).toMatchObject({ code: "PX_HEAD_TOO_LARGE", status: 431 });
  });

  test("a head split across many reads is parsed once whole", () => {
    const [s] = open(ctx);
    const bytes = connect(`${HOST}:443`);
    for (let i = 0; i < bytes.byteLength - 1; i++) expect(onData(s, bytes.subarray(i, i + 1), NOW)).toEqual([]);
    expect(onData(s, bytes.subarray(bytes.byteLength - 1), NOW)[0]).toMatchObject({ do: "dial" });
  });

  test("a head that does not arrive within proxy.head_timeout_s → 408 on the tick after the deadline", () => {
    const [s] = open(ctx);
    onData(s, ascii("CONNECT "), NOW);
    expect(onTick(s, NOW + 10_000)).toEqual([]);
    const r = refusal(onTick(s, NOW + 10_001));
    expect(r).toMatchObject({ code: "PX_HEAD_TIMEOUT", status: 408, close: "linger" });
    expect(r.answer).toContain("within 10s");
  });

  test("past proxy.max_connections → 503 with Retry-After: 5 at open", () => {
    const [s, cmds] = open(ctx, { admitted: false });
    const r = refusal(cmds);
    expect(r).toMatchObject({ code: "PX_OVERLOADED", status: 503, rule: "PX_OVERLOADED", close: "linger" });
    expect(r.answer).toContain("Retry-After: 5\r\n");
    expect(r.answer).toContain("limit of 100 connections");
    expect(onData(s, connect(`${HOST}:443`), NOW)).toEqual([]); // lingering: discarded
  });

  test("draining → 503 PX_DRAINING with Retry-After, even when admitted", () => {
    const [, cmds] = open(testCtx({ draining: true }));
    const r = refusal(cmds);
    expect(r).toMatchObject({ code: "PX_DRAINING", status: 503 });
    expect(r.answer).toContain("Retry-After: 5\r\n");
  });

  test("the origin refuses → 502 with the reason; the upstream proxy never answers → 504", () => {
    for (const [code, status] of [["PX_UPSTREAM_UNREACHABLE", 502], ["PX_UPSTREAM_PROXY", 502], ["PX_DNS", 502], ["PX_UPSTREAM_TIMEOUT", 504]] as const) {
      const [s] = open(ctx);
      onData(s, connect(`${HOST}:443`), NOW);
      const cmds = onDialFailed(s, new ProxyError(code, "upstream", `cannot reach ${HOST}:443: connection refused`), NOW + 3);
      const r = refusal(cmds);
      expect(r).toMatchObject({ code, status });
      expect(r.answer).toContain("connection refused");
      expect(cmds.find((c) => c.do === "refuse")).toMatchObject({ side: "upstream" }); // counted as an error too
    }
  });

  test("a name resolving to a private address (the dialler's policy check) → 403", () => {
    const [s] = open(ctx);
    onData(s, connect(`${HOST}:443`), NOW);
    expect(refusal(onDialFailed(s, new ProxyError("PX_POLICY_DENY", "client", "resolves to a loopback address"), NOW)).status).toBe(403);
  });

  test("a bug in the dialler → 500 PX_INTERNAL and an error log", () => {
    const [s] = open(ctx);
    onData(s, connect(`${HOST}:443`), NOW);
    const cmds = onDialFailed(s, new TypeError("oops"), NOW);
    expect(refusal(cmds)).toMatchObject({ code: "PX_INTERNAL", status: 500 });
    expect(cmds[0]).toMatchObject({ do: "log", level: "error", msg: "internal error" });
  });
});

describe("the ClientHello check (domain fronting)", () => {
  const ctx = testCtx();
  const tunnelUp = (host = HOST) => {
    const [s] = open(ctx);
    onData(s, connect(`${host}:443`), NOW);
    onDialled(s, "direct", NOW);
    return s;
  };

  test("an SNI naming another host closes before any byte reaches the origin", () => {
    const s = tunnelUp("camsrepo.qg1.apps.qualys.com");
    const cmds = onData(s, HELLO_SNI, NOW);
    expect(cmds.some((c) => c.do === "pipe")).toBe(false);
    expect(refusal(cmds)).toMatchObject({ code: "PX_SNI_MISMATCH", rule: "sni-mismatch", answer: "", close: "abort" });
    expect(cmds[0]).toMatchObject({ do: "log", level: "warn", msg: "refused", fields: { rule: "sni-mismatch" } });
    expect(s.endReason).toBe("sni-mismatch");
  });

  test("no SNI passes", () => {
    const s = tunnelUp();
    expect(onData(s, HELLO_NOSNI, NOW)).toEqual([{ do: "pipe", early: HELLO_NOSNI }]);
  });

  test("bytes that are not TLS close the tunnel, nothing piped", () => {
    const s = tunnelUp();
    expect(onData(s, ascii("GET / HTTP/1.1\r\n\r\n"), NOW)).toEqual([{ do: "close", reason: "not-tls", how: "abort" }]);
  });

  test("a ClientHello in pieces is piped once whole, all of it", () => {
    const s = tunnelUp();
    expect(onData(s, HELLO_SNI.subarray(0, 10), NOW)).toEqual([]);
    expect(onData(s, HELLO_SNI.subarray(10), NOW)).toEqual([{ do: "pipe", early: HELLO_SNI }]);
  });

  test("a ClientHello sent with the CONNECT head waits for the dial, then is checked", () => {
    const [s] = open(ctx);
    const both = new Uint8Array([...connect(`${HOST}:443`), ...HELLO_SNI]);
    expect(onData(s, both, NOW)[0]).toMatchObject({ do: "dial" });
    expect(onDialled(s, "direct", NOW)).toEqual([{ do: "writeClient", bytes: ESTABLISHED }, { do: "pipe", early: HELLO_SNI }]);
  });

  test("extra CRLFs after CONNECT still tunnel (same trap as mitmproxy #4870)", () => {
    const [s] = open(ctx);
    expect(onData(s, new Uint8Array([...connect(`${HOST}:443`), 13, 10]), NOW)[0]).toMatchObject({ do: "dial" });
    onDialled(s, "direct", NOW);
    expect(onData(s, ascii("\r\n"), NOW)).toEqual([]);
    expect(onData(s, HELLO_SNI, NOW)).toEqual([{ do: "pipe", early: HELLO_SNI }]); // the CRLFs are not sent on
  });

  test("too many early bytes while dialling pause reading; the dial resumes it", () => {
    const [s] = open(ctx);
    onData(s, connect(`${HOST}:443`), NOW);
    expect(onData(s, new Uint8Array(MAX_EARLY_BYTES + 1), NOW)).toEqual([{ do: "pause" }]);
    expect(onDialled(s, "direct", NOW).slice(0, 2)).toEqual([{ do: "writeClient", bytes: ESTABLISHED }, { do: "resume" }]);
  });
});

describe("health, the cache port, admission budget", () => {
  test("GET /healthz sent to the port: 200 with the worker's facts; HEAD has no body; draining answers 503", () => {
    const [s] = open(testCtx());
    const cmds = onData(s, ascii("GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"), NOW);
    expect(cmds.map((c) => c.do)).toEqual(["writeClient", "close"]);
    const answer = text((cmds[0] as { bytes: Uint8Array }).bytes);
    expect(answer).toStartWith("HTTP/1.1 200 ");
    expect(answer).toEndWith(JSON.stringify({ status: "ok", port: "proxy", worker: 3 }));
    const [h] = open(testCtx());
    expect(text((onData(h, ascii("HEAD /healthz HTTP/1.1\r\n\r\n"), NOW)[0] as { bytes: Uint8Array }).bytes)).toEndWith("\r\n\r\n");
    const ctx = testCtx();
    const [d] = open(ctx);
    ctx.draining = true; // SIGTERM after the connection opened
    const drained = text((onData(d, ascii("GET /healthz HTTP/1.1\r\n\r\n"), NOW)[0] as { bytes: Uint8Array }).bytes);
    expect(drained).toStartWith("HTTP/1.1 503 ");
    expect(drained).toContain('"status":"draining"');
  });

  const cacheCtx = (intercepting = true) => testCtx({ raw: { cache: { enabled: true, allowed_domains: ["microsoft.com"] } }, intercepting });

  test("cache port: a platform CONNECT answers 200 and is intercepted with the bytes after the head", () => {
    const [s] = open(cacheCtx(), { port: "cache" });
    const cmds = onData(s, new Uint8Array([...connect(`${HOST}:443`), ...HELLO_SNI]), NOW);
    expect(cmds).toEqual([{ do: "writeClient", bytes: ESTABLISHED }, { do: "intercept", mode: "connect", early: HELLO_SNI }]);
    expect(s.state).toBe("intercept");
    expect(s.verdict).toMatchObject({ action: "intercept", rule: "platform-domain" });
  });

  test("cache port: an allowed (non-platform) domain is tunnelled, not intercepted", () => {
    const [s] = open(cacheCtx(), { port: "cache" });
    expect(onData(s, connect("www.microsoft.com:443"), NOW)[0]).toMatchObject({ do: "dial", verdict: { action: "tunnel", rule: "allowed-domain" } });
  });

  test("cache port: plain absolute-form http:// goes to layer 2 whole (head included); without TLS termination 405", () => {
    const req = ascii(`GET http://${HOST}/a HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
    const [s] = open(cacheCtx(), { port: "cache" });
    expect(onData(s, req, NOW)).toEqual([{ do: "intercept", mode: "http", early: req }]);
    expect(s.verdict).toBeNull();
    const [off] = open(cacheCtx(false), { port: "cache" });
    expect(refusal(onData(off, req, NOW)).status).toBe(405);
  });

  test("an agent's FIN in an intercepted connection is passed on, not a close", () => {
    const [s] = open(cacheCtx(), { port: "cache" });
    onData(s, connect(`${HOST}:443`), NOW);
    expect(onClientEnd(s)).toEqual([{ do: "halfClose" }]);
  });

  test("patch mode: a client outside patch.client_networks → 403 PX_CLIENT_DENY", () => {
    const ctx = testCtx({ raw: { cache: { enabled: true }, patch: { enabled: true, volume: "/mnt/p", client_networks: ["192.168.0.0/16"] } }, intercepting: true });
    const [s] = open(ctx, { port: "cache" });
    expect(refusal(onData(s, connect(`${HOST}:443`), NOW))).toMatchObject({ code: "PX_CLIENT_DENY", status: 403, rule: "deny-client-network" });
  });
});

describe("time: the idle sweep, lingering, and the log line", () => {
  const ctx = testCtx();
  const tunnel = () => {
    const [s] = open(ctx);
    onData(s, connect(`${HOST}:443`), NOW);
    onDialled(s, "direct", NOW + 2);
    onData(s, HELLO_SNI, NOW + 3);
    return s;
  };

  test("a tunnel idle past proxy.idle_timeout_s is ended gracefully; activity moves the deadline", () => {
    const s = tunnel();
    expect(onTick(s, NOW + 60_003)).toEqual([]);
    s.lastActive = NOW + 30_000; // the shell saw bytes (either way)
    expect(onTick(s, NOW + 60_004)).toEqual([]);
    expect(onTick(s, NOW + 90_001)).toEqual([{ do: "close", reason: "idle-timeout", how: "end" }]);
    expect(s.endReason).toBe("idle-timeout");
  });

  test("a refusal lingers LINGER_MS, then the tick aborts it", () => {
    const [s] = open(ctx);
    onData(s, connect("evil.example.com:443"), NOW + 100);
    expect(onTick(s, NOW + 100 + LINGER_MS)).toEqual([]);
    expect(onTick(s, NOW + 101 + LINGER_MS)).toEqual([{ do: "close", reason: "deny-domain", how: "abort" }]);
  });

  test("draining ends connections still reading a head, and leaves tunnels alone", () => {
    const [s] = open(ctx);
    expect(onDrainStart(s)).toEqual([{ do: "close", reason: "draining", how: "end" }]);
    expect(onDrainStart(tunnel())).toEqual([]);
  });

  test("the tunnel's log line carries the shell's exact bytes and the exact duration from open", () => {
    const s = tunnel();
    const [line] = onClosed(s, { bytesIn: 1234, bytesOut: 98765 }, NOW + 7);
    expect(line).toEqual({
      do: "log",
      level: "info",
      msg: "tunnel",
      fields: {
        id: "c1",
        client: "10.1.2.3:5555",
        port: "proxy",
        dest: `${HOST}:443`,
        decision: "tunnel",
        rule: "platform-domain",
        via: "direct",
        up: 1234,
        down: 98765,
        ms: 7,
        end: "closed",
      },
    });
    expect(s.state).toBe("closed");
    expect(onClosed(s, { bytesIn: 0, bytesOut: 0 }, NOW + 8)).toEqual([]); // once
  });

  test("a refused connection logs its refusal, not a tunnel line", () => {
    const [s] = open(ctx);
    onData(s, connect("evil.example.com:443"), NOW);
    expect(onClosed(s, { bytesIn: 10, bytesOut: 10 }, NOW + 1)).toEqual([]);
  });
});
