/**
 * @module Dialling origins: directly (a [hosts] mapping or DNS, then the address policy), or through the
 * upstream proxy with CONNECT, always sending the host name (the upstream proxy may filter by domain) and
 * credentials when configured: Basic with the first CONNECT, or NTLM as a handshake on the same connection
 * (407 challenge → CONNECT again; the messages are core/proxy-auth.ts's, the crypto is node:crypto's).
 * Failures come back as ProxyError values with a reason a person can act on; the password is never in one.
 */
import { createCipheriv, createHash, createHmac, getRandomValues } from "node:crypto";
import type { Socket, SocketHandler } from "bun";
import { ProxyError, printable } from "../core/errors";
import type { Config } from "../core/config";
import { isIPv4, isIPv6 } from "../core/config";
import type { Target } from "../core/types";
import { NEED_MORE, getHeaderAll, parseResponseHead, type ResponseHead } from "../core/http1/head";
import { BodyDecoder, framingForResponse } from "../core/http1/body";
import { type NtlmCrypto, type ProxyAuthExchange, type ProxyAuthFailure, onProxyAuthRequired, openProxyAuth } from "../core/proxy-auth";
import { decideAddress, mappedAddress, type Policy, type PolicyVerdict } from "../core/policy";
import { type PipeEnd, makePipeEnd } from "./tunnel";
import { HeadAccumulator } from "./pipe";

/** Origin-side state. During the proxy handshake `hs` is set; afterwards the socket is a plain pipe end. */
export type OriginConn = PipeEnd & {
  side: "origin";
  hs: Handshake | null;
};

type Handshake = {
  /** the upstream proxy's answer head, until it is whole */
  head: HeadAccumulator;
  resolve: (r: Dialled) => void;
  reject: (e: ProxyError) => void;
  via: string;
  target: Target;
  /** `host:port` as sent in CONNECT */
  authority: string;
  /** the Proxy-Authorization exchange (Basic: one header; NTLM: negotiate, then authenticate) */
  auth: ProxyAuthExchange;
  /** a 407's body still arriving, to be skipped before the next CONNECT on this connection */
  skip: BodyDecoder | null;
  /** the Proxy-Authorization of the next CONNECT, sent once `skip` is done */
  next: string | null;
  now: number;
};

/** NTLM's hashes, from node:crypto (MD4 and RC4 are there under Bun too). */
const NTLM_CRYPTO: NtlmCrypto = {
  md4: (d) => new Uint8Array(createHash("md4").update(d).digest()),
  hmacMd5: (k, d) => new Uint8Array(createHmac("md5", k).update(d).digest()),
  rc4: (k, d) => new Uint8Array(createCipheriv("rc4", k, null).update(d)),
};
const randomBytes = (n: number) => getRandomValues(new Uint8Array(n));

function connectHead(authority: string, authorization: string | null): Uint8Array {
  let head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (authorization) head += `Proxy-Authorization: ${authorization}\r\n`;
  return textEncoder.encode(head + "\r\n");
}

export type Dialled = { sock: Socket<OriginConn>; leftover: Uint8Array | null; address: string; via: "direct" | "upstream-proxy" };

export type DialOptions = {
  config: Config;
  policy: Policy;
  handlers: SocketHandler<OriginConn>;
  now: number;
};

const textEncoder = new TextEncoder();

/** Resolve a name: [hosts] first, then DNS. Returns the address to connect to, after the address policy. */
export async function resolveTarget(target: Target, config: Config, policy: Policy): Promise<string> {
  // [hosts] through the policy's Map (a plain object would "map" constructor to Object, issue 12 defect 8)
  const mapped = mappedAddress(policy, target.host);
  if (mapped !== undefined) return mapped;
  if (target.isIp) return target.host;
  let addrs: { address: string }[];
  try {
    addrs = await Bun.dns.lookup(target.host, {});
  } catch (e) {
    throw new ProxyError("PX_DNS", "upstream", `cannot resolve ${target.host}: ${(e as Error).message}`, { cause: e });
  }
  if (!addrs.length) throw new ProxyError("PX_DNS", "upstream", `cannot resolve ${target.host}: no addresses`);
  // Refuse when any address is internal: a name that points inside the site is not a vendor's platform.
  for (const a of addrs) {
    const v = decideAddress(policy, target, a.address);
    if (v) throw new AddressRefusal(v, target.host);
  }
  return addrs[0]!.address;
}

/**
 * A name refused after DNS: the verdict (rule `deny-private-address`) travels as a value, so the refusal is logged and
 * counted with its rule, not with the error code PX_POLICY_DENY (issue 12 follow-up).
 */
export class AddressRefusal extends ProxyError {
  constructor(
    readonly verdict: PolicyVerdict,
    host: string,
  ) {
    super("PX_POLICY_DENY", "client", verdict.reason ?? `${host} resolves to an internal address`);
  }
}

/** Connect a TCP socket with a deadline; the socket's `data` starts as a fresh OriginConn. */
async function connectWithTimeout(
  hostname: string,
  port: number,
  opts: DialOptions,
  what: string,
): Promise<Socket<OriginConn>> {
  const data: OriginConn = { ...makePipeEnd(opts.now), side: "origin", hs: null };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const connectOpts: Bun.TCPSocketConnectOptions<OriginConn> = { hostname, port, data, allowHalfOpen: true, socket: opts.handlers };
  const p = Bun.connect<OriginConn>(connectOpts);
  const deadline = new Promise<never>((_, rej) => {
    timer = setTimeout(() => {
      timedOut = true;
      rej(new ProxyError("PX_UPSTREAM_TIMEOUT", "upstream", `${what} did not answer within ${opts.config.proxy.connect_timeout_s}s`));
    }, opts.config.proxy.connect_timeout_s * 1000);
  });
  try {
    return await Promise.race([p, deadline]);
  } catch (e) {
    if (e instanceof ProxyError) {
      p.then((s) => s.terminate(), () => {});
      throw e;
    }
    const code = (e as { code?: string }).code ?? "";
    const why = code === "ECONNREFUSED" ? "connection refused" : code === "ETIMEDOUT" ? "timed out" : (e as Error).message;
    if (code === "ETIMEDOUT" || timedOut) throw new ProxyError("PX_UPSTREAM_TIMEOUT", "upstream", `${what} did not answer: ${why}`, { cause: e });
    throw new ProxyError("PX_UPSTREAM_UNREACHABLE", "upstream", `cannot reach ${what}: ${why}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
}

/** Dial the target directly or through the upstream proxy. */
export async function dialTarget(target: Target, opts: DialOptions): Promise<Dialled> {
  const up = opts.config.upstream_proxy;
  if (!up) {
    const address = await resolveTarget(target, opts.config, opts.policy);
    const host = isIPv6(address) ? address : address;
    const sock = await connectWithTimeout(host, target.port, opts, `${target.host}:${target.port}`);
    return { sock, leftover: null, address, via: "direct" };
  }
  // The upstream proxy's own address: [hosts] applies to it too (nested gateways), else DNS.
  const proxyAddr = mappedAddress(opts.policy, up.host) ?? up.host;
  const via = `upstream proxy ${up.host}:${up.port}`;
  const sock = await connectWithTimeout(proxyAddr, up.port, opts, via);
  const authority = `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`;
  const { exchange, authorization } = openProxyAuth(
    up.username ? { scheme: up.auth, username: up.username, password: up.password ?? "" } : null,
  );
  return new Promise<Dialled>((resolve, reject) => {
    const timer = setTimeout(() => {
      if (!sock.data.hs) return;
      sock.data.hs = null;
      sock.terminate();
      reject(new ProxyError("PX_UPSTREAM_TIMEOUT", "upstream", `${via} did not answer CONNECT ${authority} within ${opts.config.proxy.connect_timeout_s}s`));
    }, opts.config.proxy.connect_timeout_s * 1000);
    sock.data.hs = {
      head: new HeadAccumulator(),
      via,
      target,
      authority,
      auth: exchange,
      skip: null,
      next: null,
      now: opts.now,
      resolve: (r) => (clearTimeout(timer), resolve(r)),
      reject: (e) => (clearTimeout(timer), reject(e)),
    };
    sock.write(connectHead(authority, authorization));
  });
}

/** Origin `data` while the upstream proxy handshake is in progress. */
export function onHandshakeData(sock: Socket<OriginConn>, chunk: Uint8Array): void {
  const hs = sock.data.hs!;
  if (hs.skip) {
    // The rest of a 407's body: once it is over, CONNECT again on this connection (the NTLM handshake's 2nd leg).
    let r;
    try {
      r = hs.skip.push(chunk);
    } catch (e) {
      return fail(sock, hs, `${hs.via} sent a malformed 407 body: ${(e as Error).message}`);
    }
    if (!r.done) return;
    hs.skip = null;
    sock.write(connectHead(hs.authority, hs.next));
    hs.next = null;
    if (!r.rest) return;
    chunk = r.rest.slice();
  }
  const buf = hs.head.push(chunk);
  let res;
  try {
    res = parseResponseHead(buf);
  } catch (e) {
    return fail(sock, hs, `${hs.via} sent a malformed answer: ${(e as Error).message}`);
  }
  if (res === NEED_MORE) {
    hs.head.keep(buf, chunk);
    return;
  }
  hs.head.clear();
  if (res.status === 200) {
    sock.data.hs = null;
    const leftover = buf.byteLength > res.headBytes ? buf.slice(res.headBytes) : null;
    hs.resolve({ sock, leftover, address: hs.via, via: "upstream-proxy" });
    return;
  }
  const refused = `${hs.via} refused CONNECT ${hs.target.host}:${hs.target.port}: ${res.status} ${printable(res.reason, 80)}`;
  if (res.status === 407) return onProxyAuth407(sock, hs, res, buf.subarray(res.headBytes), refused);
  // The upstream's own one-line reason, when its body already arrived with the head.
  const said = new TextDecoder("latin1").decode(buf.subarray(res.headBytes, res.headBytes + 300)).split(/\r?\n/)[0]!.trim();
  const hint = res.status === 403 ? ` (the upstream proxy does not allow ${hs.target.host})` : "";
  fail(sock, hs, `${refused}${said ? ` (${printable(said, 200)})` : ""}${hint}`, res.status);
}

/** A 407: the exchange says what to send next (NTLM's AUTHENTICATE) or why it ends (core/proxy-auth.ts). */
function onProxyAuth407(sock: Socket<OriginConn>, hs: Handshake, res: ResponseHead, after: Uint8Array, refused: string): void {
  let step;
  try {
    step = onProxyAuthRequired(hs.auth, getHeaderAll(res.headers, "proxy-authenticate"), {
      crypto: NTLM_CRYPTO,
      random: randomBytes,
      now: hs.now,
    });
  } catch (e) {
    return fail(sock, hs, `${refused}: ${(e as Error).message}`, 407);
  }
  if (step.next === "fail") return fail(sock, hs, `${refused}: ${step.detail}`, 407, step.reason);
  // NTLM authenticates the connection (RFC 4559 §4 for its HTTP use): the next CONNECT must go on this one.
  const conn = getHeaderAll(res.headers, "connection").join(",").toLowerCase();
  const framing = framingForResponse("CONNECT", res.status, res.headers);
  if (/\bclose\b/.test(conn) || (res.version === "1.0" && !/\bkeep-alive\b/.test(conn)) || framing.kind === "close")
    return fail(sock, hs, `${refused}: it closes the connection after its NTLM challenge, and NTLM needs the same connection kept open`, 407);
  const body = new BodyDecoder(framing);
  hs.skip = body;
  hs.next = step.authorization;
  if (after.byteLength || body.done) onHandshakeData(sock, after.slice());
}

/** The upstream proxy's "no" as values (its status, why the auth failed), so diagnostics need not read the message. */
export class UpstreamProxyRefusal extends ProxyError {
  constructor(
    msg: string,
    readonly status: number | null,
    readonly authFailure: ProxyAuthFailure | null,
  ) {
    super("PX_UPSTREAM_PROXY", "upstream", msg);
  }
}

function fail(sock: Socket<OriginConn>, hs: Handshake, msg: string, status: number | null = null, auth: ProxyAuthFailure | null = null): void {
  sock.data.hs = null;
  sock.terminate();
  hs.reject(new UpstreamProxyRefusal(msg, status, auth));
}

/** Origin closed during the handshake. */
export function onHandshakeClose(sock: Socket<OriginConn>): void {
  const hs = sock.data.hs;
  if (!hs) return;
  sock.data.hs = null;
  const during = hs.auth.creds?.scheme === "ntlm" ? ` (during the NTLM handshake, after ${hs.auth.sent === 1 ? "NEGOTIATE" : "AUTHENTICATE"})` : "";
  hs.reject(new ProxyError("PX_UPSTREAM_PROXY", "upstream", `${hs.via} closed the connection before answering CONNECT${during}`));
}
