/**
 * @module One probe of a platform host, the way real traffic reaches it: DNS (`[hosts]` first, for the target and for
 * the upstream proxy's own address) → TCP → CONNECT through the upstream proxy with its authentication (Basic, or
 * the NTLM handshake on the same connection) when one is set → a TLS handshake with the host's name, verified against
 * the system roots plus `[tls] upstream_ca`. Used by the admin's diagnostics and the supervisor's platform link.
 *
 * It reuses workers/upstream.ts's `dialTarget` (the same exchange the tunnels and fills use, so a probe that passes
 * means agents' traffic gets through) and origin-client.ts's TLS step (`upgradeTLS`, client side). A failure names
 * the hop that failed and a reason a person can act on; the upstream proxy's password is never in it.
 */
import { readFileSync } from "node:fs";
import tls from "node:tls";
import type { Socket, SocketHandler } from "bun";
import type { Config } from "../core/config";
import { isIPv4, isIPv6 } from "../core/config";
import { ProxyError } from "../core/errors";
import { compilePolicy, mappedAddress, type Policy } from "../core/policy";
import { type OriginConn, UpstreamProxyRefusal, dialTarget, onHandshakeClose, onHandshakeData, resolveTarget } from "./upstream";

export type ProbeHop = "dns" | "tcp" | "upstream-proxy" | "tls";
export type ProbeResult =
  | { host: string; port: number; ok: true; ms: number; via: "direct" | "upstream"; tlsVersion?: string }
  | { host: string; port: number; ok: false; hop: ProbeHop; reason: string; status?: number; ms: number; via: "direct" | "upstream" };

/** A probe's whole budget unless the caller gives one: DNS, TCP, CONNECT (and its 407 legs) and TLS together. */
export const DEFAULT_PROBE_TIMEOUT_MS = 5000;

type Failure = { ok: false; hop: ProbeHop; reason: string; status?: number };
type Outcome = { ok: true; tlsVersion?: string } | Failure;
/** What one probe is doing now (for the timeout's hop) and the sockets to close when it ends. */
type Run = { hop: ProbeHop; sockets: Socket<unknown>[]; over: boolean };
type TlsConn = { run: Run; settle: ((o: Outcome) => void) | null };

// One compiled policy per Config object (a Config is frozen; a reload makes a new one).
const policies = new WeakMap<Config, Policy>();
function policyFor(config: Config): Policy {
  let p = policies.get(config);
  if (!p) policies.set(config, (p = compilePolicy(config)));
  return p;
}

/** The system roots plus `[tls] upstream_ca`, read per probe (a file the admin replaced is read again). */
function trustedCas(config: Config): string[] | Failure {
  const ca = [...tls.rootCertificates];
  if (!config.tls.upstream_ca) return ca;
  try {
    ca.push(readFileSync(config.tls.upstream_ca, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    return { ok: false, hop: "tls", reason: `cannot read tls.upstream_ca ${config.tls.upstream_ca} (${code})` };
  }
  return ca;
}

const fail = (hop: ProbeHop, reason: string, status?: number): Failure =>
  status === undefined ? { ok: false, hop, reason } : { ok: false, hop, reason, status };

/** Probe host:port once, within `timeoutMs` (the hop under way when it runs out is the one reported). */
export async function probeHost(config: Config, host: string, port: number, opts: { timeoutMs?: number } = {}): Promise<ProbeResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const via = config.upstream_proxy ? "upstream" : "direct";
  const t0 = performance.now();
  const run: Run = { hop: "dns", sockets: [], over: false };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<Outcome>((res) => {
    timer = setTimeout(() => res(fail(run.hop, timeoutReason(config, host, port, run.hop, timeoutMs))), timeoutMs);
  });
  let out: Outcome;
  try {
    out = await Promise.race([probeSteps(config, host, port, run), deadline]);
  } catch (e) {
    out = fail(run.hop, (e as Error).message); // a bug of ours, not the network's: still a result, not a throw
  } finally {
    clearTimeout(timer);
    run.over = true;
    for (const s of run.sockets) s.terminate();
  }
  const ms = Math.round(performance.now() - t0);
  if (out.ok) return out.tlsVersion ? { host, port, ok: true, ms, via, tlsVersion: out.tlsVersion } : { host, port, ok: true, ms, via };
  const r: ProbeResult = { host, port, ok: false, hop: out.hop, reason: out.reason, ms, via };
  if (out.status !== undefined) r.status = out.status;
  return r;
}

function timeoutReason(config: Config, host: string, port: number, hop: ProbeHop, ms: number): string {
  const up = config.upstream_proxy;
  const upName = up ? `upstream proxy ${up.host}:${up.port}` : "";
  const what: Record<ProbeHop, string> = {
    dns: `resolving ${up ? up.host : host}`,
    tcp: `connecting to ${up ? upName : `${host}:${port}`}`,
    "upstream-proxy": `${upName} answering CONNECT ${host}:${port}`,
    tls: `the TLS handshake with ${host}`,
  };
  return `no answer within ${ms} ms while ${what[hop]}`;
}

async function probeSteps(config: Config, host: string, port: number, run: Run): Promise<Outcome> {
  const ca = trustedCas(config);
  if (!Array.isArray(ca)) return ca;
  const policy = policyFor(config);
  const up = config.upstream_proxy;
  // DNS for the upstream proxy's own name here, so a name that does not resolve is reported as DNS, not TCP.
  if (up && mappedAddress(policy, up.host) === undefined && !isIPv4(up.host) && !isIPv6(up.host)) {
    try {
      const a = await Bun.dns.lookup(up.host, {});
      if (!a.length) throw new Error("no addresses");
    } catch (e) {
      return fail("dns", `cannot resolve the upstream proxy's name ${up.host} (${(e as Error).message}); fix the resolver or map it in [hosts]`);
    }
  }
  const target = { host, port, isIp: isIPv4(host) || isIPv6(host) };
  if (!up) {
    // Direct: resolve here too ([hosts], then DNS, then the address policy, as dialTarget does), so a TCP timeout is
    // reported as TCP; dialTarget's own lookup is then answered from the mapping or Bun's DNS cache.
    try {
      await resolveTarget(target, config, policy);
    } catch (e) {
      return dialFailure(config, host, port, run, e);
    }
  }
  if (run.over) return fail(run.hop, "cancelled");
  run.hop = "tcp";
  const handlers: SocketHandler<OriginConn> = {
    open(s) {
      run.sockets.push(s as Socket<unknown>);
      if (up) run.hop = "upstream-proxy";
    },
    data(s, d) {
      if (s.data.hs) onHandshakeData(s, d);
    },
    close(s) {
      if (s.data.hs) onHandshakeClose(s);
    },
    error() {},
    connectError() {},
  };
  let sock: Socket<OriginConn>;
  try {
    const d = await dialTarget(target, { config, policy, handlers, now: Date.now() });
    sock = d.sock;
  } catch (e) {
    return dialFailure(config, host, port, run, e);
  }
  if (run.over) {
    sock.terminate();
    return fail(run.hop, "cancelled");
  }
  run.hop = "tls";
  return new Promise<Outcome>((resolve) => {
    const data: TlsConn = { run, settle: resolve };
    const end = (o: Outcome) => {
      const settle = data.settle;
      data.settle = null;
      settle?.(o);
    };
    const tlsHandlers: SocketHandler<TlsConn> = {
      open() {},
      data() {},
      handshake(s, success, authError) {
        if (!success || authError)
          return end(
            fail("tls", `TLS with ${host} failed: ${authError ? authError.message : "handshake failed"} (is its CA trusted? the system roots plus tls.upstream_ca are)`),
          );
        end({ ok: true, tlsVersion: s.getTLSVersion() });
      },
      close(_s, err) {
        end(fail("tls", `${host} closed the connection during the TLS handshake${err ? `: ${(err as Error).message}` : ""}`));
      },
      error(_s, err) {
        end(fail("tls", `TLS with ${host} failed: ${(err as Error).message}`));
      },
    };
    // The raw socket's events now belong to the TLS layer (origin-client.ts does the same).
    sock.data.hs = null;
    const [, tlsSock] = sock.upgradeTLS<TlsConn>({
      data,
      tls: { serverName: host, ca, rejectUnauthorized: true },
      socket: tlsHandlers,
    });
    run.sockets.push(tlsSock as Socket<unknown>);
  });
}

/** A dial's error → the hop and a reason. The upstream proxy's refusals carry their status as a value. */
function dialFailure(config: Config, host: string, port: number, run: Run, e: unknown): Failure {
  const up = config.upstream_proxy;
  if (e instanceof UpstreamProxyRefusal) {
    const status = e.status ?? undefined;
    if (e.authFailure === "credentials-rejected" && up?.username)
      return fail(
        "upstream-proxy",
        `upstream proxy ${up.host}:${up.port} refused the ${up.auth === "ntlm" ? "NTLM" : "Basic"} credentials for ${up.username} (${status ?? 407}); check upstream_proxy.username${up.auth === "ntlm" ? " (DOMAIN\\user or user@domain)" : ""} and upstream_proxy.password`,
        status,
      );
    return fail("upstream-proxy", e.message, status);
  }
  if (!(e instanceof ProxyError)) return fail(run.hop, (e as Error).message);
  if (e.code === "PX_DNS") return fail("dns", `${e.message}; fix the resolver or map ${host} in [hosts]`);
  if (e.code === "PX_POLICY_DENY") return fail("dns", `${e.message} (map ${host} in [hosts] if that address is intended)`);
  if (e.code === "PX_UPSTREAM_PROXY") return fail("upstream-proxy", e.message);
  // TCP: to the target, or to the upstream proxy (before it opened; after, it is the proxy that went silent)
  return fail(run.hop === "upstream-proxy" ? "upstream-proxy" : "tcp", e.message);
}
